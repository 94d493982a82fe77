"""Training loss of MicroFlow."""

from __future__ import annotations

import torch


def sequence_weights(n: int, gamma: float = 0.8) -> list[float]:
    """Weights ``γ^(n-i)`` for iterations ``i = 1..n`` (the last estimate weighs 1)."""
    if n < 1 or not 0 < gamma <= 1:
        raise ValueError(f"need n >= 1 and 0 < gamma <= 1, got n={n}, gamma={gamma}")
    return [gamma ** (n - i) for i in range(1, n + 1)]


def sequence_loss(
    flows: list[torch.Tensor],
    target: torch.Tensor,
    gamma: float = 0.8,
    valid: torch.Tensor | None = None,
    sample_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """``L = Σ_i γ^(n-i) · mean|df_i − df_gt|`` (L1 over both components and pixels).

    Args:
        flows: the ``n`` estimates, each ``(B, 2, H, W)`` pixels.
        target: ``(B, 2, H, W)`` true ``(dx, dy)`` in pixels.
        gamma: decay; earlier iterations weigh less.
        valid: optional ``(B, 1, H, W)`` mask of pixels that count, or non-negative
            per-pixel weights (the L1 is then their weighted mean per pair).
        sample_weight: optional ``(B,)`` per-pair weight (for example ``1/range`` so that
            large displacements do not dominate); the mean is then a weighted mean.
    """
    weights = sequence_weights(len(flows), gamma)
    if valid is None:
        valid = torch.ones_like(target[:, :1])
    valid = valid.to(target.dtype)
    per_pixel_norm = valid.sum(dim=(1, 2, 3)).clamp(min=1) * target.shape[1]
    sw = torch.ones(target.shape[0], device=target.device, dtype=target.dtype) \
        if sample_weight is None else sample_weight.to(target.dtype)
    total = target.new_zeros(())
    for w, flow in zip(weights, flows, strict=True):
        err = ((flow.float() - target).abs() * valid).sum(dim=(1, 2, 3)) / per_pixel_norm
        total = total + w * (err * sw).sum() / sw.sum()
    return total
