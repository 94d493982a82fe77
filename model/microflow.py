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
        init: torch.Tensor | None = None,
        levels: int | None = None,
    ) -> list[torch.Tensor]:
        """Estimates ``df_1..df_n``.

        ``stats`` = ``((pre_mean, pre_std), (post_mean, post_std))``, each broadcastable
        to ``(B, 1, 1, 1)``: scene-wide statistics for tiles of a larger image; by default
        each image is normalised by its own. ``post`` is normalised once, before warping:
        resampling does not change its radiometry, and it keeps tiles consistent.
        ``init`` is an optional ``(B, 2, H, W)`` starting field ``df_0`` (px). Without it,
        ``df_0`` is 0, or with ``levels`` (default ``config.pyramid_levels``) > 0 the
        coarse-to-fine estimate of ``coarse_init`` (no gradient flows through it).
        """
        if pre.ndim != 4 or pre.shape[1] != 1 or pre.shape != post.shape:
            raise ValueError(f"expected pre and post of equal shape (B, 1, H, W), got "
                             f"{tuple(pre.shape)} and {tuple(post.shape)}")
        n = self.config.iterations if iterations is None else iterations
        levels = self.config.pyramid_levels if levels is None else levels
        if init is None and levels > 0:
            init = self.coarse_init(pre, post, levels, iterations, stats)
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
        if init is not None:
            if init.shape != (pre.shape[0], 2, h, w):
                raise ValueError(f"init must be (B, 2, H, W) = {(pre.shape[0], 2, h, w)}, "
                                 f"got {tuple(init.shape)}")
            flow = F.pad(init.float(), (0, pw, 0, ph), mode="replicate") if ph or pw \
                else init.float()
        flows = []
        for i in range(n):
            src = flow.detach() if self.config.detach_between else flow
            if i == 0 and init is None:
                warped = post_n
            else:
                with torch.autocast(device_type=pre.device.type, enabled=False):
                    warped = warp(post_n.float(), src.float(), mode=self.config.warp_mode)
            x = torch.cat([pre_n, warped.to(pre_n.dtype)], dim=1)
            inc = self.backbone(i)(x.contiguous(memory_format=torch.channels_last))
            flow = src + inc.float()
            flows.append(flow[..., :h, :w])
        return flows

    @torch.no_grad()
    def coarse_init(
        self,
        pre: torch.Tensor,
        post: torch.Tensor,
        levels: int,
        iterations: int | None = None,
        stats: tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
        | None = None,
    ) -> torch.Tensor:
        """``df_0`` ``(B, 2, H, W)`` px from the model run on 2x average-pooled images.

        The coarse field (itself coarse-to-fine with ``levels - 1``) is upsampled
        bilinearly (pixel centres aligned) and doubled. Odd sizes are padded by
        replicating the last row/column; NaN pixels stay NaN in the pooled images.
        """
        h, w = pre.shape[-2:]
        pad = (0, w % 2, 0, h % 2)
        a = F.avg_pool2d(F.pad(pre, pad, mode="replicate") if any(pad) else pre, 2)
        b = F.avg_pool2d(F.pad(post, pad, mode="replicate") if any(pad) else post, 2)
        coarse = self.forward(a, b, iterations, stats, levels=levels - 1)[-1].float()
        up = F.interpolate(coarse, scale_factor=2, mode="bilinear", align_corners=False)
        return 2.0 * up[..., :h, :w]
