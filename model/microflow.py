"""MicroFlow: iterative refinement of a displacement field with explicit warping.

    df_0 = 0
    df_i = df_{i-1} + g_i([pre, warp(post, df_{i-1})]),   i = 1..n

``g_i`` is a correlation-free U-Net (``network.UNet``), with weights shared across
iterations or one per iteration (Bertrand et al. 2025).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import MicroFlowConfig
from .network import UNet
from .normalize import normalize
from .warp import warp


class MicroFlow(nn.Module):
    """The MicroFlow model.

    ``forward(pre, post)`` takes ``(B, 1, H, W)`` images (any H, W; NaN allowed) and
    returns the list of the ``n`` estimates ``df_i``, each ``(B, 2, H, W)`` = ``(dx, dy)``
    in pixels, with ``post(row + dy, col + dx) ≈ pre(row, col)``.
    """

    def __init__(self, config: MicroFlowConfig) -> None:
        super().__init__()
        self.config = config
        n_nets = 1 if config.shared_weights else config.iterations
        self.backbones = nn.ModuleList(UNet(config) for _ in range(n_nets))

    def backbone(self, i: int) -> UNet:
        """The network ``g_i`` used at iteration ``i`` (0-based)."""
        return self.backbones[0 if self.config.shared_weights else i]

    def forward(
        self,
        pre: torch.Tensor,
        post: torch.Tensor,
        iterations: int | None = None,
        stats: tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
        | None = None,
    ) -> list[torch.Tensor]:
        """Estimates ``df_1..df_n``.

        ``stats`` = ``((pre_mean, pre_std), (post_mean, post_std))``, each broadcastable
        to ``(B, 1, 1, 1)``: scene-wide statistics for tiles of a larger image; by default
        each image is normalised by its own. ``post`` is normalised once, before warping:
        resampling does not change its radiometry, and it keeps tiles consistent.
        """
        if pre.ndim != 4 or pre.shape[1] != 1 or pre.shape != post.shape:
            raise ValueError(f"expected pre and post of equal shape (B, 1, H, W), got "
                             f"{tuple(pre.shape)} and {tuple(post.shape)}")
        n = self.config.iterations if iterations is None else iterations
        h, w = pre.shape[-2:]
        m = self.config.multiple
        ph, pw = (-h) % m, (-w) % m
        pre_n = normalize(pre, None if stats is None else stats[0])
        post_n = normalize(post, None if stats is None else stats[1])
        if ph or pw:  # pad to a multiple of 2**depth, reflecting content; crop back below
            mode = "reflect" if (ph < h and pw < w) else "replicate"
            pre_n = F.pad(pre_n, (0, pw, 0, ph), mode=mode)
            post_n = F.pad(post_n, (0, pw, 0, ph), mode=mode)
        flow = pre_n.new_zeros((pre.shape[0], 2, h + ph, w + pw))
        flows = []
        for i in range(n):
            src = flow.detach() if self.config.detach_between else flow
            if i == 0:
                warped = post_n
            else:
                with torch.autocast(device_type=pre.device.type, enabled=False):
                    warped = warp(post_n.float(), src.float(), mode=self.config.warp_mode)
            inc = self.backbone(i)(torch.cat([pre_n, warped.to(pre_n.dtype)], dim=1))
            flow = src + inc.float()
            flows.append(flow[..., :h, :w])
        return flows
