"""How correlated MicroFlow's errors are between Landsat 8 bands B2, B3 and B4.

    python -m bench.band_correlation [--split val] [--pairs 12] [--size 160]

The same crop of B2, B3 and B4 of one scene is warped by the same field with the same
temporal change (same seed per band; the generator's ranges and realistic change in turn),
each band is estimated on its own (``estimate_displacement``, raw field, σ), and per
component the Pearson correlation of the per-band errors ``d_b − d_true`` is measured
between every two bands (pixels more than 8 px from the border, valid truth). It prints
the mean correlation ``ρ`` per component, the effective number of independent bands
``n_eff = 3 / (1 + 2ρ)``, the bands' local texture correlation
(``model.bands.texture_correlation``), and the 2σ coverage of the combined field with
``ρ = 0`` (independent bands) and with ``model.bands.band_rho``. This is where
``model.bands.RHO_LANDSAT_RGB`` comes from (fitted on the ``val`` split).
"""

from __future__ import annotations

import argparse

import numpy as np


def measure(split: str = "val", pairs: int = 12, size: int = 160, seed: int = 11,
            weights: str | None = None) -> dict[str, float]:
    """Error correlation between bands, ``n_eff`` and combined-σ coverage (see above)."""
    from model.bands import band_rho, combine_bands, effective_bands, texture_correlation
    from model.inference import estimate_displacement
    from model.synthetic import RANGES, make_pair
    from model.temporal_change import RealisticChange
    from pipeline.textures import load_split

    scenes: dict[str, list] = {}
    for t in load_split(split):
        scenes.setdefault(t.name.split("_")[2], []).append(t)
    groups = [v for v in scenes.values() if len(v) == 3]
    rng = np.random.default_rng(seed)
    side = size + 32
    corr: list[list[float]] = [[], []]
    tex, cover0, cover_rho = [], [[], []], [[], []]
    ranges = list(RANGES)
    for i in range(pairs):
        bands = groups[i % len(groups)]
        h, w = bands[0].image.shape
        for _ in range(1000):
            r, c = int(rng.integers(0, h - side)), int(rng.integers(0, w - side))
            crops = [t.image[r:r + side, c:c + side] for t in bands]
            if all(np.isfinite(x).all() and x.std() > 0 for x in crops):
                break
        crops = [(x - x.mean()) / x.std() for x in crops]
        pair_seed = int(rng.integers(2**31))
        ps = [make_pair(x, np.random.default_rng(pair_seed), (size, size),
                        ranges[i % len(ranges)], i % 3 != 2, change=RealisticChange())
              for x in crops]
        out = [estimate_displacement(p.pre, p.post, denoise=False, return_sigma=True,
                                     weights=weights, device="cpu") for p in ps]
        flows, sigmas = np.stack([o[0] for o in out]), np.stack([o[1] for o in out])
        keep = ps[0].valid.copy()
        keep[:8] = keep[-8:] = False
        keep[:, :8] = keep[:, -8:] = False
        err = flows - ps[0].flow[None]
        for k in range(2):
            e = err[:, k][:, keep]
            corr[k] += [float(np.corrcoef(e[a], e[b])[0, 1])
                        for a in range(3) for b in range(a + 1, 3)]
        pre = np.stack([p.pre for p in ps])
        tex.append(float(np.median(texture_correlation(pre)[keep])))
        for rho, cov in ((0.0, cover0), (band_rho(pre), cover_rho)):
            comb, s = combine_bands(flows, sigmas, rho=rho)
            for k in range(2):
                cov[k].append(float(np.mean(np.abs(comb[k] - ps[0].flow[k])[keep]
                                            <= 2 * s[k][keep])))
    rho = [float(np.mean(c)) for c in corr]
    out = {"split": split, "pairs": pairs}
    for k, name in enumerate(("dx", "dy")):
        out[f"rho_{name}"] = rho[k]
        out[f"n_eff_{name}"] = effective_bands(3, rho[k])
        out[f"within_2sigma_rho0_{name}"] = float(np.mean(cover0[k]))
        out[f"within_2sigma_band_rho_{name}"] = float(np.mean(cover_rho[k]))
    out["texture_correlation_median"] = float(np.median(tex))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--split", default="val", choices=["train", "val", "test"])
    p.add_argument("--pairs", type=int, default=12)
    p.add_argument("--size", type=int, default=160, help="pair side, px")
    p.add_argument("--weights", help="model name or .safetensors (default: best shipped)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    for k, v in measure(args.split, args.pairs, args.size, weights=args.weights).items():
        print(f"{k}: {v:.3f}" if isinstance(v, float) else f"{k}: {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
