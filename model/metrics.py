"""Accuracy and smoothness metrics of displacement fields (pixels)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def _check(pred: np.ndarray, truth: np.ndarray) -> None:
    if pred.shape != truth.shape or pred.ndim != 3 or pred.shape[0] != 2:
        raise ValueError(f"expected two (2, H, W) fields, got {pred.shape} and {truth.shape}")


def endpoint_error(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per-pixel end-point error ``(H, W)``: ``|pred − truth|`` (px)."""
    _check(pred, truth)
    return np.hypot(pred[0] - truth[0], pred[1] - truth[1])


def epe(pred: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean end-point error (px) over ``mask`` (all finite pixels if None); NaN if empty."""
    e = endpoint_error(pred, truth)
    keep = np.isfinite(e) if mask is None else (mask & np.isfinite(e))
    return float(e[keep].mean()) if keep.any() else float("nan")


def epe_per_range(pred: np.ndarray, truth: np.ndarray,
                  ranges: dict[str, tuple[float, float]]) -> dict[str, float]:
    """EPE (px) over the pixels whose true magnitude lies in each ``[low, high)`` range."""
    mag = np.hypot(truth[0], truth[1])
    return {name: epe(pred, truth, (mag >= lo) & (mag < hi)) for name, (lo, hi) in ranges.items()}


FAULT_NEIGHBOURHOOD_PX = 3.0
"""Distance from the surface trace (px) within which a pixel counts as "at the fault"
(the benchmark's fault-neighbourhood EPE, the smoothness metric, the trainer's fault
weight)."""


def near_fault(fault_mask: np.ndarray, k: float) -> np.ndarray:
    """Pixels within ``k`` px of any pixel of ``fault_mask`` ``(H, W)`` bool."""
    if not fault_mask.any():
        return np.zeros_like(fault_mask, dtype=bool)
    return ndimage.distance_transform_edt(~fault_mask) <= k


def gradient_norm(field: np.ndarray) -> np.ndarray:
    """``‖∇f‖`` per pixel ``(H, W)`` of a ``(2, H, W)`` field: Frobenius norm of the
    forward-difference Jacobian (px/px, Neumann boundary)."""
    gx = np.diff(field, axis=-1, append=field[..., -1:])
    gy = np.diff(field, axis=-2, append=field[..., -1:, :])
    return np.sqrt((gx**2 + gy**2).sum(axis=0))


def smoothness(field: np.ndarray, fault_mask: np.ndarray, k: float = FAULT_NEIGHBOURHOOD_PX
               ) -> tuple[float, float]:
    """Mean ``‖∇f‖`` near the fault (within ``k`` px of the trace) and away from it.

    Compare with the same numbers for the true field: a good estimate is as smooth
    as the truth away from the fault and keeps the truth's jump near it.
    """
    g = gradient_norm(field)
    near = near_fault(fault_mask, k)
    far = ~near & np.isfinite(g)
    near &= np.isfinite(g)
    return (float(g[near].mean()) if near.any() else float("nan"),
            float(g[far].mean()) if far.any() else float("nan"))
