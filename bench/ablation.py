"""Inference variants of one set of weights on a validation sample file (EPE per range).

    python -m bench.ablation --val ~/.cache/microflow/samples/val-160-0.npz

Compares the model as shipped (its own start and sharpening, ``final_iterates``) with: the
frequency correlator's field as the start (``model.correlator_start``) without and with
one pass of fault sharpening (``model.sharpen``), that start sharpened before the network, the
coarse-to-fine start, no coarse-to-fine start, one more pyramid level, more refinement
iterations, the average over the four flips (test-time augmentation), and fp32 instead
of bf16 (the last four from the coarse-to-fine start). EPE in px over valid pixels more
than 8 px from the border, per range, overall and within 3 px of the fault; 16 pairs per
range by default.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from model.correlator_start import correlator_init
from model.dataset import RANGE_NAMES, load_samples
from model.inference import final_iterates, flip_average
from model.microflow import MicroFlow
from model.normalize import normalize
from model.precision import use_bf16
from model.registry import load_model
from model.sharpen import SharpenConfig, SharpenPass, sharpen_field
from model.train import evaluate


def correlator_started(model: MicroFlow, pre: torch.Tensor, post: torch.Tensor
                       ) -> torch.Tensor:
    """The model's last iterate from the correlator's field as ``df_0``."""
    return model(pre, post, init=correlator_init(pre, post))[-1]


SHARPENED_START = SharpenConfig(passes=(SharpenPass(16, 4),), min_gradient=0.0)
"""The correlator's start sharpened before the network (candidates one correlator step
away); tried, not kept (README)."""


def sharpened_start(pre: torch.Tensor, post: torch.Tensor) -> torch.Tensor:
    """The correlator's field as ``df_0``, fault-sharpened with :data:`SHARPENED_START`."""
    return sharpen_field(normalize(pre), normalize(post), correlator_init(pre, post),
                         SHARPENED_START)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--val", required=True, help="val .npz from `microflow data`")
    p.add_argument("--weights", default=None, help="model name or .safetensors")
    p.add_argument("--per-range", type=int, default=16)
    args = p.parse_args(argv)
    s = load_samples(args.val)
    sel = np.concatenate([np.flatnonzero(s.range_idx == i)[:args.per_range]
                          for i in range(len(RANGE_NAMES))])
    model = load_model(args.weights, device="cpu").eval()
    levels = model.config.pyramid_levels
    bf16 = use_bf16(torch.device("cpu"))
    one_pass = SharpenConfig(passes=(SharpenPass(6, 3),))
    variants = {  # name -> (method, bf16 autocast)
        "as shipped": (lambda a, b: final_iterates(model, a, b, bf16=bf16)[0], bf16),
        "correlator start": (lambda a, b: correlator_started(model, a, b), bf16),
        "+ sharpening, one 6 px pass": (
            lambda a, b: sharpen_field(normalize(a), normalize(b),
                                       correlator_started(model, a, b), one_pass), bf16),
        "sharpened start": (lambda a, b: model(a, b, init=sharpened_start(a, b))[-1], bf16),
        "coarse-to-fine": (lambda a, b: model(a, b)[-1], bf16),
        "single scale": (lambda a, b: model(a, b, levels=0)[-1], bf16),
        f"{levels + 1} pyramid levels": (lambda a, b: model(a, b, levels=levels + 1)[-1], bf16),
        "5 iterations": (lambda a, b: model(a, b, iterations=5)[-1], bf16),
        "4-flip average": (lambda a, b: flip_average(lambda x, y: model(x, y)[-1], a, b),
                           bf16),
        "fp32": (lambda a, b: model(a, b)[-1], False),
    }
    print(f"{model.weights_name}, {len(sel)} pairs of {args.val}")
    for name, (fn, autocast) in variants.items():
        t0 = time.perf_counter()
        errs = evaluate(model, s, torch.device("cpu"), autocast, predict=fn, border=8,
                        indices=sel)
        per = " ".join(f"{k} {v:.3f}" for k, v in errs.items() if k != "all")
        print(f"{name:>18}: all {errs['all']:.3f} | {per} | "
              f"{time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
