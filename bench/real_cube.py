"""Score the cube that ``microflow pair`` wrote for the committed real Sentinel-2 pair.

    microflow pair data/real-s2-t33uuu-north/pre_*.tif data/real-s2-t33uuu-north/post_*.tif \\
        --out /tmp/real.zarr
    python -m bench.real_cube /tmp/real.zarr

Reads ``east``/``north`` (offset removed, denoised) and ``valid`` of the cube's first pair,
converts to px with the cube's pixel size, and scores them as ``bench.real`` scores a
field: share of the valid pixels off by > 0.5 px from their own median and from zero (the
offset is removed, so the truth is 0), cloud-free pixels valid and cloud pixels valid
under ``bench.real.cloud_mask``, and the offset the run fitted (from the provenance).
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
    fit = json.loads(str(ds.provenance.values)).get("ramp_fit", {})
    return {"off_median": s.off05_own,
            "off_zero": float((np.hypot(dx, dy)[valid & data] > 0.5).mean()),
            "clear_valid": s.coverage, "cloud_valid": s.cloud_valid,
            "offset_dx": fit.get("dx_px", {}).get("offset", float("nan")),
            "offset_dy": fit.get("dy_px", {}).get("offset", float("nan"))}


def report(scores: dict[str, float]) -> str:
    """The scores as three lines."""
    return (f"valid pixels off by > 0.5 px: {scores['off_median']:.1%} from their median, "
            f"{scores['off_zero']:.1%} from 0\n"
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
