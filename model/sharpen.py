"""Fault sharpening: where the field is steep, each pixel takes the nearby value that fits best.

A network's (or a correlator's) field smears a step of displacement over a few pixels on
either side of a fault. Where the field's gradient exceeds ``min_gradient``, each pixel
chooses among its own value and the field's values ``step`` px away in the 8 directions
the one under which ``post``, warped, matches ``pre`` best: the least ``1 − NCC`` over a
``(2 radius + 1)²`` window, with ``penalty`` added to every value but its own. On each side
of a fault the values from that side match, so the step comes out sharp; elsewhere the
field is left exactly as it was. No training and no extra network pass: 9 warps.

Measured on the 128 validation pairs (``val-160-0-r0.75.npz``), shipped step-21,000
weights with the correlator start: EPE within 3 px of the fault 1.109 → 0.954 px, overall
0.181 → 0.176 px (README, "What was tried").
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .warp import warp


@dataclass(frozen=True)
class SharpenConfig:
    """Candidate spacing, match window, stay-put penalty and the steepness gate."""

    step: int = 6  # px between a pixel and its 8 candidate values
    radius: int = 3  # NCC window half-width (px)
    penalty: float = 0.02  # added to 1 − NCC of every candidate but the pixel's own value
    min_gradient: float = 0.08  # px of displacement per px: only steeper pixels may change


def _box(x: torch.Tensor, r: int) -> torch.Tensor:
    return F.avg_pool2d(F.pad(x, (r, r, r, r), mode="replicate"), 2 * r + 1, stride=1)


def _mismatch(a: torch.Tensor, b: torch.Tensor, r: int) -> torch.Tensor:
    """``1 − NCC`` of ``(B, 1, H, W)`` images over ``(2r+1)²`` windows."""
    ma, mb = _box(a, r), _box(b, r)
    va = (_box(a * a, r) - ma * ma).clamp_min(1e-6)
    vb = (_box(b * b, r) - mb * mb).clamp_min(1e-6)
    return 1.0 - (_box(a * b, r) - ma * mb) / torch.sqrt(va * vb)


def steep(flow: torch.Tensor, min_gradient: float) -> torch.Tensor:
    """``(B, 1, H, W)`` bool: where the ``(B, 2, H, W)`` field's gradient norm (central
    differences, px/px, both components) exceeds ``min_gradient``."""
    gx = torch.zeros_like(flow)
    gy = torch.zeros_like(flow)
    gx[..., :, 1:-1] = 0.5 * (flow[..., :, 2:] - flow[..., :, :-2])
    gy[..., 1:-1, :] = 0.5 * (flow[..., 2:, :] - flow[..., :-2, :])
    return (gx * gx + gy * gy).sum(1, keepdim=True) > min_gradient ** 2


@torch.no_grad()
def sharpen_field(pre_n: torch.Tensor, post_n: torch.Tensor, flow: torch.Tensor,
                  config: SharpenConfig = SharpenConfig()) -> torch.Tensor:
    """The sharpened ``(B, 2, H, W)`` float32 field (px).

    ``pre_n``, ``post_n``: ``(B, 1, H, W)`` normalised images (NaN set to 0); ``flow``:
    ``(B, 2, H, W)`` px ``(dx, dy)``. Candidates past the edge repeat the edge value.
    """
    flow = flow.float()
    a, b = pre_n.float(), post_n.float()
    gate = steep(flow, config.min_gradient)
    if not bool(gate.any()):
        return flow
    s = config.step
    h, w = flow.shape[-2:]
    padded = F.pad(flow, (s, s, s, s), mode="replicate")
    best = flow.clone()
    best_cost = _mismatch(a, warp(b, flow, mode="bilinear"), config.radius)
    for oy in (-s, 0, s):
        for ox in (-s, 0, s):
            if oy == ox == 0:
                continue
            cand = padded[..., s + oy:s + oy + h, s + ox:s + ox + w]
            cost = _mismatch(a, warp(b, cand, mode="bilinear"), config.radius) + config.penalty
            better = (cost < best_cost) & gate
            best_cost = torch.where(better, cost, best_cost)
            best = torch.where(better.expand_as(best), cand, best)
    return best
