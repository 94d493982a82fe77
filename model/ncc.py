"""Windowed normalised cross-correlation: the match score of σ's features and of fault
sharpening.

Images are the normalised ones (median / 1.4826·MAD), so variances are in those units².
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

VAR_FLOOR = 1e-4
"""Normalised units²: a flat window gets NCC ~ 0, not a division by 0."""


def box_mean(x: torch.Tensor, k: int, pad: bool = True) -> torch.Tensor:
    """Mean of ``(N, C, H, W)`` ``x`` over ``k × k`` windows, separable (2k, not k², adds
    per pixel). ``pad``: same size, border replicated; else only the windows that fit,
    ``(H − k + 1, W − k + 1)``."""
    if pad:
        p = k // 2
        x = F.pad(x, (p, p, p, p), mode="replicate")
    return F.avg_pool2d(F.avg_pool2d(x, (1, k), stride=1), (k, 1), stride=1)


def one_minus_ncc(a: torch.Tensor, b: torch.Tensor, k: int, pad: bool = True) -> torch.Tensor:
    """``1 − NCC`` (0 = identical up to gain and offset, 2 = inverted) of ``(N, 1, H, W)``
    images over ``k × k`` windows (``k`` odd); shapes as :func:`box_mean`."""
    ma, mb = box_mean(a, k, pad), box_mean(b, k, pad)
    va = (box_mean(a * a, k, pad) - ma * ma).clamp(min=VAR_FLOOR)
    vb = (box_mean(b * b, k, pad) - mb * mb).clamp(min=VAR_FLOOR)
    return 1.0 - (box_mean(a * b, k, pad) - ma * mb) / torch.sqrt(va * vb)
