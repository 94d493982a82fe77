"""Per-image normalisation robust to integer input and nodata (NaN)."""

from __future__ import annotations

import numpy as np
import torch


def as_float_image(image: np.ndarray, nodata: float | None = None) -> np.ndarray:
    """2-D array of any real dtype (e.g. uint16 DN) to float32 with NaN for nodata.

    ``nodata`` (for example 0 for Landsat/Sentinel-2 fill) also becomes NaN.
    """
    a = np.asarray(image)
    if a.ndim != 2:
        raise ValueError(f"expected a 2-D image (H, W), got shape {a.shape}")
    if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool) or np.iscomplexobj(a):
        raise TypeError(f"expected a real numeric image, got dtype {a.dtype}")
    out = a.astype(np.float32, copy=True)
    if nodata is not None:
        out[a == nodata] = np.nan
    out[~np.isfinite(out)] = np.nan
    return out


def image_stats(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std ``(B, C, 1, 1)`` of each image of ``(B, C, H, W)`` over finite pixels."""
    valid = torch.isfinite(images)
    x = torch.where(valid, images, torch.zeros_like(images))
    n = valid.sum(dim=(-2, -1), keepdim=True).clamp(min=1)
    mean = x.sum(dim=(-2, -1), keepdim=True) / n
    var = (torch.where(valid, x - mean, torch.zeros_like(x)) ** 2).sum(
        dim=(-2, -1), keepdim=True) / n
    return mean, var.sqrt()


def normalize(images: torch.Tensor, stats: tuple[torch.Tensor, torch.Tensor] | None = None,
              eps: float = 1e-6) -> torch.Tensor:
    """Normalise ``(B, C, H, W)`` images to zero mean and unit std.

    ``stats`` = ``(mean, std)`` broadcastable to the images; by default each image's own
    (``image_stats``). Passing scene-wide statistics makes a tile normalise exactly as
    the whole scene does, which keeps tiled inference seamless. NaN pixels become 0.
    """
    mean, std = image_stats(images) if stats is None else stats
    valid = torch.isfinite(images)
    out = (images - mean) / (std + eps)
    return torch.where(valid, out, torch.zeros_like(out))
