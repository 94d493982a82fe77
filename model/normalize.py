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


MAD_TO_STD = 1.4826
"""1.4826 × the median absolute deviation estimates the std of a normal distribution."""


def image_stats(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Robust centre and scale ``(B, C, 1, 1)`` of each image of ``(B, C, H, W)``.

    The median and 1.4826 × the median absolute deviation of the finite pixels: unlike
    the mean and std, they are not dragged by clouds, saturated or changed areas (a
    cloudy quarter of a real Sentinel-2 scene squashed the ground's contrast by half).
    """
    flat = images.flatten(-2).float()
    center = torch.nanmedian(flat, dim=-1).values
    scale = torch.nanmedian((flat - center[..., None]).abs(), dim=-1).values * MAD_TO_STD
    # all-NaN images give NaN: make them neutral (every pixel is masked anyway)
    center = torch.nan_to_num(center, nan=0.0)
    scale = torch.nan_to_num(scale, nan=1.0)
    return center[..., None, None].to(images.dtype), scale[..., None, None].to(images.dtype)


def robust_stats(values: np.ndarray) -> tuple[float, float]:
    """Median and 1.4826 × MAD (same units as ``values``) of the finite values of an array.

    The scene-wide counterpart of :func:`image_stats`, for tiles of a larger image.
    Raises ValueError if no value is finite.
    """
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        raise ValueError("image has no valid (finite, non-nodata) pixel")
    center = float(np.median(v))
    return center, float(np.median(np.abs(v - center)) * MAD_TO_STD)


def normalize(images: torch.Tensor, stats: tuple[torch.Tensor, torch.Tensor] | None = None,
              eps: float = 1e-6) -> torch.Tensor:
    """Normalise ``(B, C, H, W)`` images to zero median and unit robust scale.

    ``stats`` = ``(center, scale)`` broadcastable to the images; by default each image's
    own (``image_stats``). Passing scene-wide statistics makes a tile normalise exactly as
    the whole scene does, which keeps tiled inference seamless. NaN pixels become 0.
    """
    center, scale = image_stats(images) if stats is None else stats
    valid = torch.isfinite(images)
    out = (images - center) / (scale + eps)
    return torch.where(valid, out, torch.zeros_like(out))
