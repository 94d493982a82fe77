"""Per-pixel uncertainty σ of a MicroFlow field, from evidence the model already has.

Five cheap features are computed on each tile, from the normalised images and the last
two refinement iterates (no extra network pass):

- ``ncc7``, ``ncc15``: ``1 − NCC`` of ``pre`` against ``warp(post, d)`` in 7 and 15 px
  windows (photometric consistency after warping, as correlators use their SNR; land
  cover that changed, clouds and shadows match badly whatever ``d`` is);
- ``residual``: the 7 px mean of ``|pre − warp(post, d)|`` (normalised units);
- ``iteration_change``: ``log(1e-3 + |df_n − df_{n-1}|₁)``: the refinement has not settled;
- ``roughness``: ``log(1e-3 + |d − box₇(d)|₁)``: the field is locally noisy.

σ is log-linear in them, ``σ = k · exp(c₀ + Σ cᵢ fᵢ)`` (px, one standard deviation, the
same for ``dx`` and ``dy``), with ``c`` fitted by least squares of ``log(|error| + 0.01)``
on generated pairs with known truth (faults, realistic temporal change), and ``k`` set so
that ``|error| ≤ 2σ`` holds for :data:`COVERAGE_TARGET` of those pixels. The fit is stored
beside the weights (``<name>.sigma.json``) by ``python -m bench.calibrate_sigma``.

σ says how well the field is measured *between the two images*. It does not cover the
co-registration offset or ramp between the acquisitions, which is common to every pixel.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from .ncc import box_mean, one_minus_ncc
from .warp import warp

FEATURES = ("ncc7", "ncc15", "residual", "iteration_change", "roughness")
COVERAGE_TARGET = 0.92
"""Share of calibration pixels (per component) with ``|error| ≤ 2σ``."""
DEFAULT_MAX_SIGMA_PX = 0.15
"""Pixels whose σ exceeds this (px) are flagged low confidence: their 2σ bound passes
0.3 px. Chosen on the development Sentinel-2 pair with the step-21,000 model (README,
"Real imagery"): 0.25 left 15.3 % of the cloud pixels valid and 7.6 % of the valid pixels
off by > 0.5 px; 0.15 left 8.1 % and 3.4 %, with 90.2 % of the cloud-free pixels valid
(a false displacement is worse than a missing one). Re-checked with the step-37,800 model
and fault sharpening (``python -m bench.sigma_table``): 9.2 % and 2.7 %, 92.3 % valid."""
@torch.no_grad()
def sigma_features(pre_n: torch.Tensor, post_n: torch.Tensor, flow: torch.Tensor,
                   previous: torch.Tensor, warp_mode: str = "bicubic") -> torch.Tensor:
    """The :data:`FEATURES` ``(B, 5, H, W)`` of a tile.

    ``pre_n``, ``post_n``: ``(B, 1, H, W)`` normalised images (NaN already 0);
    ``flow``, ``previous``: the last two iterates ``(B, 2, H, W)`` px.
    """
    a = pre_n.float()
    d = flow.float()
    b = warp(post_n.float(), d, mode=warp_mode)
    feats = [
        one_minus_ncc(a, b, 7),
        one_minus_ncc(a, b, 15),
        box_mean((a - b).abs(), 7),
        torch.log(1e-3 + (d - previous.float()).abs().sum(1, keepdim=True)),
        torch.log(1e-3 + (d - box_mean(d, 7)).abs().sum(1, keepdim=True)),
    ]
    return torch.cat(feats, dim=1)


@dataclass(frozen=True)
class SigmaModel:
    """``σ = scale · exp(coef[0] + Σ coef[i+1] · feature_i)`` px, floored at ``floor_px``."""

    coef: tuple[float, ...]
    scale: float
    floor_px: float = 0.01
    calibration: str = ""

    def __post_init__(self) -> None:
        if len(self.coef) != len(FEATURES) + 1:
            raise ValueError(f"coef needs {len(FEATURES) + 1} values, got {len(self.coef)}")
        if not (self.scale > 0 and self.floor_px > 0):
            raise ValueError("scale and floor_px must be > 0")

    def predict(self, features: torch.Tensor) -> torch.Tensor:
        """σ ``(B, 1, H, W)`` px from features ``(B, 5, H, W)``."""
        c = torch.tensor(self.coef[1:], dtype=features.dtype, device=features.device)
        z = self.coef[0] + (features * c[None, :, None, None]).sum(1, keepdim=True)
        return (self.scale * torch.exp(z.clamp(max=10.0))).clamp(min=self.floor_px)

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "features": list(FEATURES)}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> SigmaModel:
        d = json.loads(text)
        if tuple(d.pop("features", FEATURES)) != FEATURES:
            raise ValueError("σ calibration was made for other features; recalibrate")
        d["coef"] = tuple(d["coef"])
        return cls(**d)


# A conservative fallback for weights with no calibration file (untrained models, tests):
# the coefficients of the shipped model's first calibration, with a doubled scale.
UNCALIBRATED = SigmaModel(coef=(-3.0, 1.0, 0.3, 0.3, 0.2, 0.5), scale=2.0,
                          calibration="uncalibrated fallback")


def sigma_path(weights_path: str | Path) -> Path:
    """Where the σ calibration of a weights file lives: ``<stem>.sigma.json`` beside it."""
    p = Path(weights_path)
    return p.with_name(f"{p.stem}.sigma.json")


def load_sigma_model(weights_path: str | Path | None) -> SigmaModel:
    """The calibration stored beside ``weights_path``, else :data:`UNCALIBRATED`."""
    if weights_path is not None and sigma_path(weights_path).is_file():
        return SigmaModel.from_json(sigma_path(weights_path).read_text())
    return UNCALIBRATED


def fit_sigma_model(features: np.ndarray, abs_errors: np.ndarray,
                    coverage: float = COVERAGE_TARGET, calibration: str = "") -> SigmaModel:
    """Fit a :class:`SigmaModel` on pixels with known truth.

    ``features``: ``(N, 5)``; ``abs_errors``: ``(N, 2)`` ``|d − d_true|`` per component,
    px. Least squares of ``log(|e| + 0.01)`` on the features (both components), then the
    scale that puts ``coverage`` of the component errors within 2σ.
    """
    x = np.asarray(features, dtype=np.float64)
    e = np.asarray(abs_errors, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != len(FEATURES) or e.shape != (len(x), 2):
        raise ValueError(f"expected features (N, {len(FEATURES)}) and errors (N, 2), got "
                         f"{x.shape} and {e.shape}")
    design = np.concatenate([np.ones((len(x), 1)), x], axis=1)
    coef, *_ = np.linalg.lstsq(np.repeat(design, 2, axis=0),
                               np.log(e.reshape(-1) + 0.01), rcond=None)
    base = np.exp(design @ coef)
    scale = float(np.quantile(e / (2.0 * base[:, None]), coverage))
    return SigmaModel(coef=tuple(float(c) for c in coef), scale=scale,
                      calibration=calibration)
