"""Fault sharpening: where the field is steep, each pixel takes the nearby value that fits best.

A network's (or a correlator's) field smears a step of displacement over a few pixels on
either side of a fault. Where the field's gradient exceeds ``min_gradient``, each pixel
chooses among its own value and the field's values ``step`` px away in the 8 directions
the one under which ``post``, warped, matches ``pre`` best: the least ``1 − NCC`` over a
``(2 radius + 1)²`` window, with ``penalty`` added to every value but its own. On each side
of a fault the values from that side match, so the step comes out sharp; elsewhere the
field is left exactly as it was. No training and no extra network pass: 9 warps a pass.
Passes repeat (:class:`SharpenPass`), each on the last one's field: the wide ones move
values from clean ground towards the trace a spacing at a time, the narrow last ones
(5 × 5 and 3 × 3 px windows, each also tried shifted off the pixel so that it can sit on
one side of the trace) place the step within the pixels that a 7 × 7 window straddles.

Measured on the 128 validation pairs (``val-160-0-r0.75.npz``), shipped step-21,000
weights with the correlator start, EPE within 3 px of the fault / overall: 1.109 / 0.181
px unsharpened, 0.954 / 0.176 with one pass of 6 px, 0.875 / 0.174 with passes of 6, 6
and 3 px, 0.795 / 0.172 with the two narrow passes added, 0.783 / 0.169 with their
windows shifted (README, "What was tried"). With the generator's later fixes (hidden
ground not valid; new ground in an opening's gap) and the step-37,800 weights, mean of
the per-pair EPE within 3 px of the fault in the large range / overall: 2.260 / 0.153 px
unsharpened, 1.611 / 0.146 with these five passes (the default), 1.497 / 0.142 with four
wide passes of windows shifted by 3 px before the narrow ones; but not better on the
benchmark (0.940 against 0.918 px on Landsat, 0.699 against 0.728 on the unseen texture)
and 47 % slower on the cloudy real strip, so not the default.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .ncc import one_minus_ncc
from .warp import warp


@dataclass(frozen=True)
class SharpenPass:
    """One pass: candidates ``step`` px away, ``(2 radius + 1)²`` match windows, each
    candidate scored by the best of its window and the four windows ``shift`` px off it
    (0: the centred window only), so that a pixel beside the trace can be judged on its
    own side of it."""

    step: int
    radius: int
    shift: int = 0

    def __post_init__(self) -> None:
        if self.step < 1 or self.radius < 1 or self.shift < 0:
            raise ValueError(f"a pass needs step and radius >= 1 px and shift >= 0, got {self}")


@dataclass(frozen=True)
class SharpenConfig:
    """The passes, the stay-put penalty and the steepness gate."""

    passes: tuple[SharpenPass, ...] = (SharpenPass(6, 3), SharpenPass(6, 3), SharpenPass(3, 3),
                                       SharpenPass(2, 2, shift=2), SharpenPass(1, 1, shift=1))
    penalty: float = 0.02  # added to 1 − NCC of every candidate but the pixel's own value
    min_gradient: float = 0.08  # px of displacement per px: only steeper pixels may change


def _mismatch(a: torch.Tensor, b: torch.Tensor, r: int) -> torch.Tensor:
    """``1 − NCC`` of ``(B, 1, H, W)`` images over ``(2r+1)²`` windows, replicate-padded."""
    return one_minus_ncc(a, b, 2 * r + 1)


def steep(flow: torch.Tensor, min_gradient: float) -> torch.Tensor:
    """``(B, 1, H, W)`` bool: where the ``(B, 2, H, W)`` field's gradient norm (central
    differences, px/px, both components) exceeds ``min_gradient``."""
    gx = torch.zeros_like(flow)
    gy = torch.zeros_like(flow)
    gx[..., :, 1:-1] = 0.5 * (flow[..., :, 2:] - flow[..., :, :-2])
    gy[..., 1:-1, :] = 0.5 * (flow[..., 2:, :] - flow[..., :-2, :])
    return (gx * gx + gy * gy).sum(1, keepdim=True) > min_gradient ** 2


BLOCK_PX = 16
"""Side of the blocks the candidates are scored on: only blocks holding a steep pixel are
computed, each with its match window's margin (2–5 % of them on a 1024² Okada pair,
31 % on the cloudy real strip: 22× and 2.6× faster than scoring every pixel)."""
DENSE_ABOVE = 0.75
"""Share of steep blocks above which the whole image is scored at once (cheaper than
gathering overlapping blocks)."""


def _offsets(step: int) -> list[tuple[int, int]]:
    return [(oy, ox) for oy in (-step, 0, step) for ox in (-step, 0, step) if oy or ox]


@torch.no_grad()
def sharpen_field(pre_n: torch.Tensor, post_n: torch.Tensor, flow: torch.Tensor,
                  config: SharpenConfig = SharpenConfig()) -> torch.Tensor:
    """The sharpened ``(B, 2, H, W)`` float32 field (px).

    ``pre_n``, ``post_n``: ``(B, 1, H, W)`` normalised images (NaN set to 0); ``flow``:
    ``(B, 2, H, W)`` px ``(dx, dy)``. Candidates past the edge repeat the edge value.
    One pass per entry of ``config.passes``. Each scores only the :data:`BLOCK_PX` blocks
    that hold a steep pixel (the whole image at once where more than :data:`DENSE_ABOVE`
    of them do); both give the same field.
    """
    flow = flow.float()
    a, b = pre_n.float(), post_n.float()
    for one in config.passes:
        flow = sharpen_pass(a, b, flow, one, config)
    return flow


def sharpen_pass(a: torch.Tensor, b: torch.Tensor, flow: torch.Tensor, one: SharpenPass,
                 config: SharpenConfig = SharpenConfig()) -> torch.Tensor:
    """One pass of :func:`sharpen_field` (float32 ``(B, 1, H, W)`` images,
    ``(B, 2, H, W)`` field, px); ``config`` gives the penalty and the gate."""
    gate = steep(flow, config.min_gradient)
    if not bool(gate.any()):
        return flow
    blocks = F.max_pool2d(gate.float(), BLOCK_PX, ceil_mode=True)[:, 0].nonzero()
    if len(blocks) > DENSE_ABOVE * gate.shape[0] * math.ceil(gate.shape[-2] / BLOCK_PX) \
            * math.ceil(gate.shape[-1] / BLOCK_PX):
        return _sharpen_dense(a, b, flow, gate, one, config.penalty)
    return _sharpen_blocks(a, b, flow, gate, blocks, one, config.penalty)


def _shifted_min(cost: torch.Tensor, shift: int) -> torch.Tensor:
    """Per pixel, the least of ``cost`` ``(B, 1, H, W)`` there and ``shift`` px up, down,
    left and right of it (replicate-padded); ``cost`` itself for ``shift`` 0."""
    if shift == 0:
        return cost
    return _least_of_shifts(F.pad(cost, (shift,) * 4, mode="replicate"), shift)


def _least_of_shifts(cost: torch.Tensor, shift: int) -> torch.Tensor:
    """``cost`` ``(N, 1, h + 2 shift, w + 2 shift)`` with a ``shift`` margin: per core
    pixel, the least of the values there and ``shift`` px up, down, left and right."""
    h, w = cost.shape[-2] - 2 * shift, cost.shape[-1] - 2 * shift
    return torch.stack([cost[..., shift + oy:shift + oy + h, shift + ox:shift + ox + w]
                        for oy, ox in _shifts(shift)]).amin(0)


def _shifts(shift: int) -> list[tuple[int, int]]:
    return [(0, 0), (-shift, 0), (shift, 0), (0, -shift), (0, shift)]


def _sharpen_dense(a: torch.Tensor, b: torch.Tensor, flow: torch.Tensor, gate: torch.Tensor,
                   one: SharpenPass, penalty: float) -> torch.Tensor:
    """Every pixel scored: 9 warps of the whole image, replicate-padded match windows."""
    s, radius = one.step, one.radius
    h, w = flow.shape[-2:]
    padded = F.pad(flow, (s, s, s, s), mode="replicate")
    best = flow.clone()
    best_cost = _shifted_min(_mismatch(a, warp(b, flow, mode="bilinear"), radius), one.shift)
    for oy, ox in _offsets(s):
        cand = padded[..., s + oy:s + oy + h, s + ox:s + ox + w]
        cost = _shifted_min(_mismatch(a, warp(b, cand, mode="bilinear"), radius),
                            one.shift) + penalty
        better = (cost < best_cost) & gate
        best_cost = torch.where(better, cost, best_cost)
        best = torch.where(better.expand_as(best), cand, best)
    return best


def _sample(img: torch.Tensor, cols: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``img`` ``(1, 1, H, W)`` bilinear at absolute ``(cols, rows)`` ``(N, L, L)`` px,
    border-clamped as :func:`model.warp.warp` does; ``(N, 1, L, L)``."""
    h, w = img.shape[-2:]
    n, ln = cols.shape[0], cols.shape[-1]
    gx = 2.0 * cols / max(w - 1, 1) - 1.0
    gy = 2.0 * rows / max(h - 1, 1) - 1.0
    grid = torch.stack([gx, gy], dim=-1).reshape(1, n * ln, ln, 2)
    out = F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out.reshape(n, 1, ln, ln)


def _sharpen_blocks(a: torch.Tensor, b: torch.Tensor, flow: torch.Tensor, gate: torch.Tensor,
                    blocks: torch.Tensor, one: SharpenPass, penalty: float) -> torch.Tensor:
    """Score only ``blocks`` (``(N, 3)``: batch, block row, block column), each with a
    ``radius + shift`` margin taken as the dense path sees it (indices clamped to the
    image)."""
    h, w = flow.shape[-2:]
    r, n, sh = one.radius, BLOCK_PX, one.shift
    m = r + sh
    span = torch.arange(n + 2 * m, device=flow.device)
    out = flow.clone()
    for bi in blocks[:, 0].unique().tolist():
        sel = blocks[blocks[:, 0] == bi]
        rows = sel[:, 1:2] * n - m + span  # (N, L) unclamped
        cols = sel[:, 2:3] * n - m + span
        ri = rows.clamp(0, h - 1)[:, :, None]  # (N, L, 1), (N, 1, L): broadcast to (N, L, L)
        ci = cols.clamp(0, w - 1)[:, None, :]
        window = _BlockWindow(a[bi, 0][ri, ci][:, None], b[bi:bi + 1], flow[bi], ri, ci, one,
                              rows, cols)
        best, best_cost = window.score(ri, ci)
        g = gate[bi, 0][ri[:, m:m + n], ci[:, :, m:m + n]][:, None]
        for oy, ox in _offsets(one.step):
            cand, cost = window.score((ri + oy).clamp(0, h - 1), (ci + ox).clamp(0, w - 1))
            better = (cost + penalty < best_cost) & g
            best_cost = torch.where(better, cost + penalty, best_cost)
            best = torch.where(better[:, 0][None], cand, best)
        inside = (rows[:, m:m + n, None] < h) & (cols[:, None, m:m + n] < w)
        core_rows = ri[:, m:m + n].expand(-1, -1, n)[inside]
        core_cols = ci[:, :, m:m + n].expand(-1, n, -1)[inside]
        out[bi][:, core_rows, core_cols] = best[:, inside]
    return out


class _BlockWindow:
    """One image's blocks with their margins: ``pre`` gathered, ``post`` sampled on demand."""

    def __init__(self, a_blocks: torch.Tensor, post: torch.Tensor, flow: torch.Tensor,
                 rows: torch.Tensor, cols: torch.Tensor, one: SharpenPass,
                 rows_unclamped: torch.Tensor, cols_unclamped: torch.Tensor) -> None:
        self.a, self.post, self.flow, self.one = a_blocks, post, flow, one
        self.rows = rows.expand(-1, -1, cols.shape[-1]).float()
        self.cols = cols.expand(-1, rows.shape[1], -1).float()
        # where a cost position lies past the image, the dense path (replicate padding)
        # reads the cost of the nearest pixel inside: index that position instead
        r, size = one.radius, rows.shape[1] - 2 * one.radius
        self.cost_rows = self._inside(rows_unclamped[:, r:r + size], rows[:, r:r + size, 0])
        self.cost_cols = self._inside(cols_unclamped[:, r:r + size], cols[:, 0, r:r + size])

    @staticmethod
    def _inside(unclamped: torch.Tensor, clamped: torch.Tensor) -> torch.Tensor:
        return torch.arange(unclamped.shape[1], device=unclamped.device) + clamped - unclamped

    def score(self, field_rows: torch.Tensor, field_cols: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """The field taken at ``(field_rows, field_cols)`` for every window pixel, as
        ``(2, N, n, n)`` candidates over the block cores, and their ``(N, 1, n, n)``
        ``1 − NCC`` (the best over the shifted windows)."""
        f = self.flow[:, field_rows, field_cols]  # (2, N, L, L)
        moved = _sample(self.post, self.cols + f[0], self.rows + f[1])
        cost = _mismatch_valid(self.a, moved, self.one.radius)  # (N, 1, n + 2 sh, n + 2 sh)
        k = torch.arange(cost.shape[0], device=cost.device)[:, None, None]
        cost = cost[k, 0, self.cost_rows[:, :, None], self.cost_cols[:, None, :]][:, None]
        sh = self.one.shift
        n, m = cost.shape[-1] - 2 * sh, self.one.radius + sh
        return f[:, :, m:m + n, m:m + n], _least_of_shifts(cost, sh)


def _mismatch_valid(a: torch.Tensor, b: torch.Tensor, r: int) -> torch.Tensor:
    """``1 − NCC`` of ``(N, 1, L, L)`` blocks over ``(2r+1)²`` windows, no padding:
    ``(N, 1, L − 2r, L − 2r)``."""
    return one_minus_ncc(a, b, 2 * r + 1, pad=False)
