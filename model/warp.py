"""Differentiable warping, and the project's displacement sign convention.

Convention (DESIGN.md): ``d = (dx, dy)`` on the ``pre`` grid is such that

    post(row + dy, col + dx) ≈ pre(row, col)

so ``warp(post, d)(row, col) = post(row + dy, col + dx)`` resamples ``post`` back onto
the ``pre`` grid, and matches ``pre`` where ``d`` is right.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pixel_grid(height: int, width: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Pixel coordinates ``(2, H, W)``: channel 0 is the column, channel 1 the row."""
    rows = torch.arange(height, device=device, dtype=dtype)
    cols = torch.arange(width, device=device, dtype=dtype)
    r, c = torch.meshgrid(rows, cols, indexing="ij")
    return torch.stack([c, r])


def warp(post: torch.Tensor, d: torch.Tensor, mode: str = "bicubic") -> torch.Tensor:
    """Resample ``post`` at ``(row + dy, col + dx)``.

    Args:
        post: ``(B, C, H, W)`` image.
        d: ``(B, 2, H, W)`` displacement ``(dx, dy)`` in pixels on the ``pre`` grid.
        mode: ``"bicubic"`` or ``"bilinear"``; samples outside the image take the border.

    Returns:
        ``(B, C, H, W)``, the warped ``post`` (≈ ``pre`` when ``d`` is the true field).
    """
    if post.ndim != 4 or d.ndim != 4 or d.shape[1] != 2:
        raise ValueError(f"expected post (B,C,H,W) and d (B,2,H,W), got {tuple(post.shape)}, "
                         f"{tuple(d.shape)}")
    if post.shape[0] != d.shape[0] or post.shape[-2:] != d.shape[-2:]:
        raise ValueError(f"post {tuple(post.shape)} and d {tuple(d.shape)} do not match")
    _, _, h, w = post.shape
    base = pixel_grid(h, w, device=d.device, dtype=d.dtype)
    pos = base.unsqueeze(0) + d  # (B, 2, H, W): absolute (col, row) to sample
    # align_corners=True: -1 and +1 are the centres of the first and last pixels.
    gx = 2.0 * pos[:, 0] / max(w - 1, 1) - 1.0
    gy = 2.0 * pos[:, 1] / max(h - 1, 1) - 1.0
    grid = torch.stack([gx, gy], dim=-1)
    return F.grid_sample(post, grid.to(post.dtype), mode=mode, padding_mode="border",
                         align_corners=True)
