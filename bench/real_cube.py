"""Score the cube that ``microflow pair`` wrote for the committed real Sentinel-2 pair.

    microflow pair data/real-s2-t33uuu-north/pre_*.tif data/real-s2-t33uuu-north/post_*.tif \\
        --out /tmp/real.zarr
    python -m bench.real_cube /tmp/real.zarr

Reads ``east``/``north`` (offset removed, denoised) and ``valid`` of the cube's first pair,
converts to px with the cube's pixel size, and scores them as ``bench.real`` scores a
field: share of the valid pixels off by > 0.5 px from their own median and from zero (the
offset is removed, so the truth is 0), cloud-free pixels valid and cloud pixels valid
under ``bench.real.cloud_mask``, and the offset the run fitted (from the provenance).
Also: the share off by > 2 px from 0, the robust spread (1.4826·MAD) per component of the
valid cloud-free field after a least-squares plane, and σ's coverage: the share of the
valid cloud-free pixels whose raw field (``east_raw``/``north_raw`` minus the fitted
offset) is within 2σ (``east_sigma``/``north_sigma``), per component, against the
constant offset and against a plane fitted to the raw field (the true offset varies by
~0.1 px over the strip).
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from bench.real import cloud_mask, load_real_pair, score_field


def score_cube(path: str, pair: int = 0) -> dict[str, float]:
    """Scores of ``pair`` of the cube at ``path``: shares (0–1) ``off_median``,
    ``off_zero``, ``clear_valid``, ``cloud_valid``, and the fitted offset ``offset_dx``,
    ``offset_dy`` (px; NaN when no ramp was removed)."""
    import xarray as xr

    ds = xr.open_zarr(path).isel(pair=pair)
    pre, post = load_real_pair()
    if ds.east.shape != pre.shape:
        raise ValueError(f"{path}: {ds.east.shape} is not the real pair's grid {pre.shape}")
    res = abs(float(ds.x[1] - ds.x[0]))
    dx, dy = ds.east.values / res, -ds.north.values / res  # east = dx·res, north = −dy·res
    valid = ds.valid.values == 1
    data = np.isfinite(pre) & np.isfinite(post)
    s = score_field("cube", dx, dy, valid, data, cloud_mask(pre), 0.0, "")
    prov = json.loads(str(ds.provenance.values))
    fit = prov.get("ramp_fit", {})
    if isinstance(fit, str):
        fit = json.loads(fit)
    out = {"off_median": s.off05_own,
           "off_zero": float((np.hypot(dx, dy)[valid & data] > 0.5).mean()),
           "off_zero_2px": float((np.hypot(dx, dy)[valid & data] > 2.0).mean()),
           "clear_valid": s.coverage, "cloud_valid": s.cloud_valid,
           "offset_dx": fit.get("dx_px", {}).get("offset", float("nan")),
           "offset_dy": fit.get("dy_px", {}).get("offset", float("nan"))}
    clear = valid & data & ~cloud_mask(pre)
    raw = (ds.east_raw.values / res, -ds.north_raw.values / res)
    sig = (ds.east_sigma.values / res, ds.north_sigma.values / res)
    for name, den, r, sg in (("dx", dx, raw[0], sig[0]), ("dy", dy, raw[1], sig[1])):
        out[f"spread_plane_{name}"] = _plane_spread(den, clear)
        e_const = np.abs(r - np.median(r[clear]))
        e_plane = np.abs(_minus_plane(r, clear))
        out[f"within_2sigma_{name}"] = float(np.mean(e_const[clear] <= 2 * sg[clear]))
        out[f"within_2sigma_plane_{name}"] = float(np.mean(e_plane[clear] <= 2 * sg[clear]))
    return out


def _minus_plane(v: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``v`` minus the robust least-squares plane of its ``mask`` pixels (px)."""
    rows, cols = np.nonzero(mask)
    a = np.stack([np.ones(rows.size), rows, cols], 1).astype(np.float64)
    y = v[mask].astype(np.float64)
    keep = np.ones(y.size, bool)
    for _ in range(3):  # drop the outliers beyond 3 robust σ and refit
        c = np.linalg.lstsq(a[keep], y[keep], rcond=None)[0]
        res = y - a @ c
        keep = np.abs(res) <= 3 * 1.4826 * np.median(np.abs(res)) + 1e-9
    rr, cc = np.mgrid[:v.shape[0], :v.shape[1]]
    return v - (c[0] + c[1] * rr + c[2] * cc)


def _plane_spread(v: np.ndarray, mask: np.ndarray) -> float:
    """1.4826·MAD (px) of ``v`` over ``mask`` after a robust plane."""
    res = _minus_plane(v, mask)[mask]
    return float(1.4826 * np.median(np.abs(res - np.median(res))))


def report(scores: dict[str, float]) -> str:
    """The scores as three lines."""
    return (f"valid pixels off by > 0.5 px: {scores['off_median']:.2%} from their median, "
            f"{scores['off_zero']:.2%} from 0; by > 2 px: {scores['off_zero_2px']:.3%}\n"
            f"spread after a plane (1.4826 MAD, cloud-free valid): dx "
            f"{scores['spread_plane_dx']:.3f} px, dy {scores['spread_plane_dy']:.3f} px\n"
            f"raw within 2σ of the constant offset: dx {scores['within_2sigma_dx']:.1%}, dy "
            f"{scores['within_2sigma_dy']:.1%}; of a plane: dx "
            f"{scores['within_2sigma_plane_dx']:.1%}, dy {scores['within_2sigma_plane_dy']:.1%}\n"
            f"cloud-free pixels valid {scores['clear_valid']:.1%}, cloud pixels valid "
            f"{scores['cloud_valid']:.1%}\n"
            f"co-registration offset removed: ({scores['offset_dx']:+.3f}, "
            f"{scores['offset_dy']:+.3f}) px")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("cube", help="the .zarr `microflow pair` wrote for the real pair")
    p.add_argument("--pair", type=int, default=0)
    args = p.parse_args(argv)
    try:
        print(report(score_cube(args.cube, args.pair)))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
