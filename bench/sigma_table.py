"""The max-σ table on the real pair: what each threshold keeps, and how much of it is off.

    python -m bench.sigma_table [--weights NAME] [--max-sigma 0.12 0.15 0.18 0.2 0.25]

Runs ``estimate_displacement(..., return_sigma=True)`` (raw field) on the committed
Sentinel-2 strip once and scores it with ``bench.real.score_field`` at each threshold:
share of the valid pixels off by > 0.5 px from their own median, cloud-free pixels valid,
cloud pixels valid (the scoring cloud mask of ``bench.real``), with σ alone (radius 0) and
with the neighbourhood rule (``model.uncertainty.low_confidence``). Also prints the raw
field's share off over every data pixel and over the cloud-free ones, before any mask.
This is how ``model.uncertainty.DEFAULT_MAX_SIGMA_PX`` was chosen (README, Real imagery).
"""

from __future__ import annotations

import argparse

import numpy as np

from bench.real import cloud_mask, load_real_pair, score_field
from model.inference import estimate_displacement
from model.uncertainty import CROWD_RADIUS_PX, low_confidence


def sigma_table(weights: str | None, thresholds: list[float],
                radii: tuple[int, ...] = (CROWD_RADIUS_PX,)) -> list[str]:
    """Lines of the table (one per threshold and neighbourhood radius, px; 0 = σ alone)
    after the raw-field line."""
    pre, post = load_real_pair()
    data = np.isfinite(pre) & np.isfinite(post)
    cloud = cloud_mask(pre)
    flow, sigma = estimate_displacement(pre, post, denoise=False, return_sigma=True,
                                        weights=weights)
    finite = np.isfinite(flow).all(0)
    every = score_field("raw", flow[0], flow[1], finite, data, cloud, 0.0, "")
    clear = score_field("raw", flow[0], flow[1], finite & ~cloud, data, cloud, 0.0, "")
    lines = [f"raw field, every data pixel: {every.off05_own:.1%} off by > 0.5 px; "
             f"cloud-free pixels: {clear.off05_own:.1%}"]
    for t in thresholds:
        for radius in radii:
            valid = finite & ~low_confidence(sigma, t, radius)
            s = score_field("microflow", flow[0], flow[1], valid, data, cloud, 0.0, "")
            own = np.hypot(flow[0] - s.median[0], flow[1] - s.median[1])
            lines.append(f"max σ {t:g} px, neighbourhood radius {radius} px: off > 0.5 px "
                         f"{s.off05_own:.2%}, off > 2 px {np.mean(own[valid & data] > 2):.3%}, "
                         f"cloud-free valid {s.coverage:.1%}, cloud valid {s.cloud_valid:.1%}")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", help="model name or .safetensors (default: best shipped)")
    p.add_argument("--max-sigma", type=float, nargs="+",
                   default=[0.12, 0.15, 0.18, 0.2, 0.25], metavar="PX")
    p.add_argument("--radius", type=int, nargs="+", default=[0, CROWD_RADIUS_PX],
                   metavar="PX", help="neighbourhood radii of the low-confidence rule, px "
                   f"(0: σ alone; default 0 and {CROWD_RADIUS_PX})")
    args = p.parse_args(argv)
    print("\n".join(sigma_table(args.weights, args.max_sigma, tuple(args.radius))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
