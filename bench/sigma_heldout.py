"""σ of the cube on held-out synthetic pairs written as 10 m GeoTIFFs, through `microflow pair`.

    python -m bench.sigma_heldout [--pairs 4] [--size 256] [--out /tmp/sigma_heldout]

Faults on the committed Landsat test-area crop (never in training or calibration), with
realistic temporal change, are written as float32 GeoTIFFs (10 m, UTM), run through the
public command, and the cube's ``east_raw``/``north_raw`` are compared with the truth over
the valid pixels (true-valid, more than 8 px from the border): per component, the share
within 2σ (``east_sigma``/``north_sigma``) and Spearman(σ, |error|), and per pair the
share of true-valid pixels the cube marks valid.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np

TEST_AREA = Path(__file__).resolve().parent.parent / "pipeline" / "demo_data" / \
    "landsat8_224077_b4_test_area.tif"
RES = 10.0


def run(pairs: int, size: int, out: Path, seed: int = 21) -> dict[str, float]:
    """The scores described in the module docstring."""
    import rasterio
    import xarray as xr
    from rasterio.transform import from_origin
    from scipy import stats as sstats

    from model.synthetic import make_pair
    from model.temporal_change import RealisticChange

    with rasterio.open(TEST_AREA) as src:
        tex = src.read(1).astype(np.float64)
    tex = (tex - tex.mean()) / tex.std()
    rng = np.random.default_rng(seed)
    ranges = ["small", "very_small", "large", "small"]  # small twice: the common case
    errs, sigmas, kept = [], [], []
    for i in range(pairs):
        p = make_pair(tex, rng, (size, size), ranges[i % 4], temporal_change=True,
                      change=RealisticChange())
        d = out / f"pair{i}"
        d.mkdir(parents=True, exist_ok=True)
        for name, img in (("pre", p.pre), ("post", p.post)):
            with rasterio.open(d / f"{name}.tif", "w", driver="GTiff", width=size,
                               height=size, count=1, dtype="float32", crs="EPSG:32611",
                               transform=from_origin(500000, 4000000, RES, RES)) as dst:
                dst.write(img.astype(np.float32), 1)
        subprocess.run([sys.executable, "-m", "flows.cli", "pair", str(d / "pre.tif"),
                        str(d / "post.tif"), "--out", str(d / "c.zarr"), "--workers", "1",
                        "--no-quicklooks", "-q", "--overwrite"], check=True)
        ds = xr.open_zarr(d / "c.zarr").isel(pair=0)
        raw = np.stack([ds.east_raw.values / RES, -ds.north_raw.values / RES])
        sig = np.stack([ds.east_sigma.values / RES, ds.north_sigma.values / RES])
        keep = p.valid & np.isfinite(raw).all(0) & np.isfinite(sig).all(0)
        keep[:8] = keep[-8:] = False
        keep[:, :8] = keep[:, -8:] = False
        errs.append(np.abs(raw - p.flow)[:, keep])
        sigmas.append(sig[:, keep])
        kept.append(float((ds.valid.values == 1)[p.valid].mean()))
    e, s = np.concatenate(errs, 1), np.concatenate(sigmas, 1)
    result = {"valid_share_mean": float(np.mean(kept))}
    for k, name in enumerate(("east", "north")):
        result[f"within_2sigma_{name}"] = float(np.mean(e[k] <= 2 * s[k]))
        result[f"spearman_{name}"] = float(sstats.spearmanr(s[k], e[k]).statistic)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=4)
    p.add_argument("--size", type=int, default=256, help="pair side, px (default 256)")
    p.add_argument("--out", default="/tmp/sigma_heldout", help="work folder")
    args = p.parse_args(argv)
    for k, v in run(args.pairs, args.size, Path(args.out)).items():
        print(f"{k}: {v:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
