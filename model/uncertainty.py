"""Per-pixel uncertainty σ of a MicroFlow field, per component, from evidence the model has.

Features are computed on each tile from the normalised images, the last two refinement
iterates and the start field ``df_0`` (the correlator's field the network refined): no
extra network pass. Three are shared by both components:

- ``ncc7``, ``ncc15``: ``1 − NCC`` of ``pre`` against ``warp(post, d)`` in 7 and 15 px
  windows (photometric consistency after warping; changed land cover, clouds and shadows
  match badly whatever ``d`` is);
- ``residual``: the 7 px mean of ``|pre − warp(post, d)|`` (normalised units);
- ``ncc7_31``: the 31 px mean of ``ncc7``: how much of the correlator start's window
  (32 px) matches badly. On the real Sentinel-2 strip the false blobs that pass σ are
  where the start itself is wrong (94 % of them), next to clouds and changed parcels that
  filled its window, and the network refined that wrong start; this feature sees them.

Six are computed for each component ``c`` (``dx`` or ``dy``) on its own:

- ``iteration_change``: ``log(1e-3 + |d_c − d_c'|)``, ``d'`` the previous iterate: the
  refinement has not settled along that axis;
- ``roughness``: ``log(1e-3 + |d_c − box₇(d_c)|)``: the component is locally noisy;
- ``start_change``: ``log(1e-3 + |d_c − d0_c|)``: the network moved away from the
  correlator's start (a consistency check: a false match of the network on a changed
  parcel rarely agrees with the 32 px windows of the correlator);
- ``start_change31``: the 31 px maximum of ``|d_c − d0_c|`` (log), so a parcel-sized
  blob that left the start is flagged as a whole, not only at its rim;
- ``gradient``: ``log(1e-3 + box₇((∂_c pre)²))``: texture along the axis (the aperture
  problem: stripes along ``x`` constrain ``dy`` and not ``dx``);
- ``lk_residual``: ``log(box₇((pre − warp)²) + 1e-3) − log(box₇((∂_c pre)²) + 1e-3)``: the
  Lucas–Kanade linearised error of that component, residual over texture along the axis.

Each component has its own log-linear model, ``σ_c = k_c · exp(a_c + Σ b_c,i f_c,i)`` (px,
one standard deviation), over the shared features and its own six, with ``a_c, b_c``
fitted by least squares of ``log(|e_c| + 0.01)`` on generated pairs with known truth
(faults, realistic temporal change), and ``k_c`` set so that ``|e_c| ≤ 2σ_c`` holds for
:data:`COVERAGE_TARGET` of those pixels. The fit is stored beside the weights
(``<name>.sigma.json``) by ``python -m bench.calibrate_sigma``.

σ says how well the field is measured *between the two images*. It does not cover the
co-registration offset or ramp between the acquisitions, which is common to every pixel.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .ncc import box_mean, one_minus_ncc
from .warp import warp

SHARED_FEATURES = ("ncc7", "ncc15", "residual", "ncc7_31")
COMPONENT_FEATURES = ("iteration_change", "roughness", "start_change", "start_change31",
                      "gradient", "lk_residual")
FEATURES = SHARED_FEATURES + tuple(f"{n}_{c}" for c in ("dx", "dy")
                                   for n in COMPONENT_FEATURES)
"""Channel order of :func:`sigma_features`: the shared ones, then ``dx``'s, then ``dy``'s."""
N_COMPONENT_INPUTS = len(SHARED_FEATURES) + len(COMPONENT_FEATURES)
COVERAGE_TARGET = 0.92
"""Share of calibration pixels (per component) with ``|error| ≤ 2σ``."""
DEFAULT_MAX_SIGMA_PX = 0.15
"""Pixels whose σ exceeds this (px) are flagged low confidence: their 2σ bound passes
0.3 px (README, "Real imagery"; ``python -m bench.sigma_table`` gives the table)."""
CROWD_RADIUS_PX = 12
"""px: a pixel is also flagged low confidence when more than :data:`CROWD_SHARE` of the
``(2r + 1)²`` square around it is (:func:`low_confidence`)."""
CROWD_SHARE = 0.2
"""See :data:`CROWD_RADIUS_PX`. On the development Sentinel-2 strip (raw field, the
calibration of issue 20, max σ 0.15 px) the false blobs that pass σ sit among
low-confidence pixels: with this rule 0.31 % of the valid pixels are off by > 0.5 px
instead of 1.1 %, none by > 2 px instead of 0.075 %, 5.0 % of the cloud pixels are valid
instead of 6.9 %, for 84.3 % of the cloud-free pixels valid instead of 88.6 %
(docs/uncertainty.md)."""
BLOB_WINDOW = 31
"""px: window of the ``start_change31`` feature (a parcel-sized neighbourhood)."""


def low_confidence(sigma: np.ndarray, max_sigma: float = DEFAULT_MAX_SIGMA_PX,
                   radius: int = CROWD_RADIUS_PX, share: float = CROWD_SHARE) -> np.ndarray:
    """``(H, W)`` bool: σ ``(2, H, W)`` px of either component above ``max_sigma``, or more
    than ``share`` of the ``(2·radius + 1)²`` square around the pixel so (the square is
    cut at the array's border; NaN σ counts as not low confidence). ``radius`` 0: σ only.

    The second part is a consistency check on the field: a false match on a changed parcel
    or beside a cloud is surrounded by pixels whose σ says so, even where its own σ is
    small (it refined a wrong start, which made its residual look fine).
    """
    from scipy.ndimage import uniform_filter

    with np.errstate(invalid="ignore"):
        low = (np.asarray(sigma) > max_sigma).any(axis=0)
    if radius <= 0 or not low.any():
        return low
    size = 2 * radius + 1
    rows, cols = (uniform_filter(np.ones(n, np.float32), size, mode="constant")
                  for n in low.shape)  # share of the square inside the array
    frac = uniform_filter(low.astype(np.float32), size, mode="constant")
    return low | (frac > share * rows[:, None] * cols[None, :])


def _component_inputs(features: torch.Tensor, k: int) -> torch.Tensor:
    """The ``(B, N_COMPONENT_INPUTS, H, W)`` inputs of component ``k`` (0 dx, 1 dy)."""
    n_s, n_c = len(SHARED_FEATURES), len(COMPONENT_FEATURES)
    return torch.cat([features[:, :n_s], features[:, n_s + k * n_c:n_s + (k + 1) * n_c]], 1)


def component_inputs(features: np.ndarray, k: int) -> np.ndarray:
    """Rows ``(N, len(FEATURES))`` → the ``(N, N_COMPONENT_INPUTS)`` inputs of component k."""
    n_s, n_c = len(SHARED_FEATURES), len(COMPONENT_FEATURES)
    return np.concatenate([features[:, :n_s], features[:, n_s + k * n_c:n_s + (k + 1) * n_c]],
                          axis=1)


def _window_1d(x: torch.Tensor, k: int, dim: int, op: str) -> torch.Tensor:
    """Centred ``k``-px (odd) running mean or max of ``x`` along ``dim``, the border
    replicated; O(1) (mean: cumulative sum) or O(log k) (max: doubling) per pixel."""
    h = k // 2
    n = x.shape[dim]
    first, last = x.narrow(dim, 0, 1), x.narrow(dim, n - 1, 1)
    xp = torch.cat([first.expand_as(x.narrow(dim, 0, h)) if h else first[:0], x,
                    last.expand_as(x.narrow(dim, 0, h)) if h else last[:0]], dim)
    if op == "mean":
        c = torch.cumsum(xp.double(), dim)
        c = torch.cat([torch.zeros_like(c.narrow(dim, 0, 1)), c], dim)
        return ((c.narrow(dim, k, n) - c.narrow(dim, 0, n)) / k).to(x.dtype)
    m, w = xp, 1
    while 2 * w <= k:  # m[i] = max(xp[i : i + 2w])
        m = torch.maximum(m.narrow(dim, 0, m.shape[dim] - w), m.narrow(dim, w, m.shape[dim] - w))
        w *= 2
    if w < k:
        m = torch.maximum(m.narrow(dim, 0, n), m.narrow(dim, k - w, n))
    return m.narrow(dim, 0, n)


def _window(x: torch.Tensor, k: int, op: str = "mean") -> torch.Tensor:
    """``k × k`` (odd) running mean or max of ``(N, C, H, W)`` ``x``, border replicated
    (the mean equals ``model.ncc.box_mean``, faster for large ``k``), separable."""
    return _window_1d(_window_1d(x, k, -1, op), k, -2, op)


@torch.no_grad()
def sigma_features(pre_n: torch.Tensor, post_n: torch.Tensor, flow: torch.Tensor,
                   previous: torch.Tensor, start: torch.Tensor | None = None,
                   warp_mode: str = "bicubic") -> torch.Tensor:
    """The :data:`FEATURES` ``(B, 16, H, W)`` of a tile.

    ``pre_n``, ``post_n``: ``(B, 1, H, W)`` normalised images (NaN already 0);
    ``flow``, ``previous``: the last two iterates ``(B, 2, H, W)`` px; ``start``: the
    start field ``df_0`` ``(B, 2, H, W)`` px (None: zeros, for models with no start).
    """
    a = pre_n.float()
    d = flow.float()
    d0 = torch.zeros_like(d) if start is None else start.float()
    b = warp(post_n.float(), d, mode=warp_mode)
    diff = a - b
    ncc7 = one_minus_ncc(a, b, 7)
    gx = F.pad(a[..., :, 2:] - a[..., :, :-2], (1, 1, 0, 0), mode="replicate") / 2
    gy = F.pad(a[..., 2:, :] - a[..., :-2, :], (0, 0, 1, 1), mode="replicate") / 2
    # every 7 px mean in one pass: |diff|, diff², gx², gy², dx, dy
    b7 = box_mean(torch.cat([diff.abs(), diff * diff, gx * gx, gy * gy, d], 1), 7)
    shared = [ncc7, one_minus_ncc(a, b, 15), b7[:, :1], _window(ncc7, BLOB_WINDOW)]
    res2 = torch.log(b7[:, 1:2] + 1e-3)
    moved = (d - d0).abs()
    moved_wide = _window(moved, BLOB_WINDOW, "max")
    per = []
    for k in range(2):
        dk = d[:, k:k + 1]
        grad = torch.log(b7[:, 2 + k:3 + k] + 1e-3)
        per += [torch.log(1e-3 + (dk - previous[:, k:k + 1].float()).abs()),
                torch.log(1e-3 + (dk - b7[:, 4 + k:5 + k]).abs()),
                torch.log(1e-3 + moved[:, k:k + 1]),
                torch.log(1e-3 + moved_wide[:, k:k + 1]),
                grad, res2 - grad]
    return torch.cat(shared + per, dim=1)


@dataclass(frozen=True)
class SigmaModel:
    """Per component ``c``: ``σ_c = scale[c] · exp(coef[c][0] + Σ coef[c][i+1] · x_c,i)``
    px, floored at ``floor_px``, with ``x_c`` the shared features and component ``c``'s
    own (:data:`N_COMPONENT_INPUTS` of them)."""

    coef: tuple[tuple[float, ...], tuple[float, ...]]
    scale: tuple[float, float]
    floor_px: float = 0.01
    calibration: str = ""

    def __post_init__(self) -> None:
        if len(self.coef) != 2 or any(np.ndim(c) != 1 or len(c) != N_COMPONENT_INPUTS + 1
                                      for c in self.coef):
            raise ValueError(f"coef needs two rows of {N_COMPONENT_INPUTS + 1} values")
        if np.ndim(self.scale) != 1 or len(self.scale) != 2 or not (
                min(self.scale) > 0 and self.floor_px > 0):
            raise ValueError("scale (two values) and floor_px must be > 0")

    def predict(self, features: torch.Tensor) -> torch.Tensor:
        """σ ``(B, 2, H, W)`` = ``(σx, σy)`` px from features ``(B, 16, H, W)``."""
        out = []
        for k in range(2):
            x = _component_inputs(features, k)
            c = torch.tensor(self.coef[k][1:], dtype=features.dtype, device=features.device)
            z = self.coef[k][0] + (x * c[None, :, None, None]).sum(1, keepdim=True)
            out.append(self.scale[k] * torch.exp(z.clamp(max=10.0)))
        return torch.cat(out, dim=1).clamp(min=self.floor_px)

    def predict_rows(self, features: np.ndarray) -> np.ndarray:
        """σ ``(N, 2)`` px from feature rows ``(N, 16)``."""
        t = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float64).T)
        return self.predict(t[None, :, :, None])[0, :, :, 0].numpy().T

    def to_json(self) -> str:
        return json.dumps({"coef": [list(c) for c in self.coef], "scale": list(self.scale),
                           "floor_px": self.floor_px, "calibration": self.calibration,
                           "features": list(FEATURES)}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> SigmaModel:
        d = json.loads(text)
        if tuple(d.pop("features", ())) != FEATURES:
            raise ValueError("σ calibration was made for other features; recalibrate "
                             "(python -m bench.calibrate_sigma)")
        d["coef"] = tuple(tuple(c) for c in d["coef"])
        d["scale"] = tuple(d["scale"])
        return cls(**d)


# A conservative fallback for weights with no calibration file (untrained models, tests):
# wide σ (the residual and the component's roughness and moves raise it).
_FALLBACK = (-2.0, 0.8, 0.3, 0.3, 0.5, 0.2, 0.3, 0.2, 0.1, 0.0, 0.0)
UNCALIBRATED = SigmaModel(coef=(_FALLBACK, _FALLBACK), scale=(2.0, 2.0),
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
                    coverage: float = COVERAGE_TARGET, calibration: str = "",
                    sample_weight: np.ndarray | None = None) -> SigmaModel:
    """Fit a :class:`SigmaModel` on pixels with known truth.

    ``features``: ``(N, 16)`` (:data:`FEATURES`); ``abs_errors``: ``(N, 2)``
    ``|d − d_true|`` per component, px; ``sample_weight``: optional ``(N,)`` weights of
    the rows (e.g. to balance clean and changed pairs). Per component: weighted least
    squares of ``log(|e_c| + 0.01)`` on its inputs, then the scale that puts ``coverage``
    of its errors within 2σ.
    """
    x = np.asarray(features, dtype=np.float64)
    e = np.asarray(abs_errors, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != len(FEATURES) or e.shape != (len(x), 2):
        raise ValueError(f"expected features (N, {len(FEATURES)}) and errors (N, 2), got "
                         f"{x.shape} and {e.shape}")
    w = np.ones(len(x)) if sample_weight is None else np.asarray(sample_weight, np.float64)
    coefs, scales = [], []
    for k in range(2):
        design = np.concatenate([np.ones((len(x), 1)), component_inputs(x, k)], axis=1)
        sw = np.sqrt(w)[:, None]
        coef, *_ = np.linalg.lstsq(design * sw, np.log(e[:, k] + 0.01) * sw[:, 0],
                                   rcond=None)
        base = np.exp(np.minimum(design @ coef, 10.0))
        scales.append(_weighted_quantile(e[:, k] / (2.0 * base), w, coverage))
        coefs.append(tuple(float(c) for c in coef))
    return SigmaModel(coef=(coefs[0], coefs[1]), scale=(scales[0], scales[1]),
                      calibration=calibration)


def _weighted_quantile(v: np.ndarray, w: np.ndarray, q: float) -> float:
    order = np.argsort(v)
    cum = np.cumsum(w[order])
    return float(v[order][np.searchsorted(cum, q * cum[-1])])
