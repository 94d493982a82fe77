"""Calibrate a model's per-pixel σ on generated pairs with known truth.

    python -m bench.calibrate_sigma --val VAL.npz [VAL2.npz ...] [--weights NAME]

fits :class:`model.uncertainty.SigmaModel` on the validation samples (faults, clean and
realistic temporal change; pixels within 8 px of the border and pixels without a defined
truth are left out), writes ``<weights stem>.sigma.json`` beside the weights, and prints
the calibration's rank correlation and 2σ coverage per component.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import torch
from scipy import stats as sstats

from model.dataset import SampleSet, load_samples
from model.inference import final_iterates, get_model
from model.normalize import normalize
from model.precision import use_bf16
from model.registry import default_model_name, resolve_weights
from model.uncertainty import FEATURES, SigmaModel, fit_sigma_model, sigma_features, sigma_path

log = logging.getLogger(__name__)
BORDER = 8  # px left out along the border (the model sees no context there)


@torch.no_grad()
def collect(model, samples: SampleSet, batch: int = 8, every: int = 2
            ) -> tuple[np.ndarray, np.ndarray]:
    """Features ``(N, len(FEATURES))`` and ``|error|`` ``(N, 2)`` px of every ``every``-th
    valid pixel, from the field as inference makes it (start, bf16 where used, sharpening)."""
    bf16 = use_bf16(next(model.parameters()).device)
    feats, errs = [], []
    for i in range(0, len(samples), batch):
        a = torch.from_numpy(samples.pre[i:i + batch][:, None])
        b = torch.from_numpy(samples.post[i:i + batch][:, None])
        flow, previous, start = final_iterates(model, a, b, bf16=bf16, with_start=True)
        f = sigma_features(normalize(a), normalize(b), flow, previous, start,
                           model.config.warp_mode)
        err = (flow - torch.from_numpy(samples.flow[i:i + batch])).abs()
        valid = samples.valid[i:i + batch].copy()
        valid[:, :BORDER] = valid[:, -BORDER:] = False
        valid[:, :, :BORDER] = valid[:, :, -BORDER:] = False
        sel = np.flatnonzero(valid.ravel())[::every]
        feats.append(f.permute(0, 2, 3, 1).reshape(-1, len(FEATURES)).numpy()[sel])
        errs.append(err.permute(0, 2, 3, 1).reshape(-1, 2).numpy()[sel])
    return np.concatenate(feats), np.concatenate(errs)


def report(sm: SigmaModel, feats: np.ndarray, errs: np.ndarray) -> dict[str, float]:
    """Spearman(σ, |error|) and the share of ``|error| ≤ 2σ`` per component."""
    sigma = sm.predict_rows(feats)
    out = {}
    for k, name in enumerate(("dx", "dy")):
        out[f"spearman_{name}"] = float(sstats.spearmanr(sigma[:, k], errs[:, k]).statistic)
        out[f"within_2sigma_{name}"] = float(np.mean(errs[:, k] <= 2 * sigma[:, k]))
        out[f"median_sigma_{name}_px"] = float(np.median(sigma[:, k]))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--val", nargs="+", required=True, help="sample .npz from microflow data")
    p.add_argument("--weights", help="model name or .safetensors (default: best shipped)")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--every", type=int, default=2,
                   help="use every N-th valid pixel of each sample (default 2)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    name = args.weights or default_model_name("cpu")
    path = resolve_weights(name)
    model = get_model(str(path), torch.device("cpu"))
    parts = [collect(model, load_samples(v), every=args.every) for v in args.val]
    feats = np.concatenate([f for f, _ in parts])
    errs = np.concatenate([e for _, e in parts])
    sm = fit_sigma_model(feats, errs, calibration=f"{len(errs)} pixels of "
                         + ", ".join(Path(v).name for v in args.val))
    sigma_path(path).write_text(sm.to_json() + "\n")
    log.info("wrote %s: %s", sigma_path(path), report(sm, feats, errs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
