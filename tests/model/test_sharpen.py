"""Fault sharpening: a smeared step comes out sharp; a smooth field is left alone."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from model.config import get_config
from model.microflow import MicroFlow
from model.normalize import normalize
from model.registry import load_model, save_weights
from model.sharpen import (
    BLOCK_PX,
    SharpenConfig,
    SharpenPass,
    _sharpen_blocks,
    _sharpen_dense,
    sharpen_field,
    steep,
)
from model.synthetic import resample_post

STEP_PX, H, W = 3.0, 96, 128  # a 3 px eastward step across a vertical fault at col 64


def _fault_pair(texture, step_px: float = STEP_PX):
    def fn(cols, rows):
        return np.where(cols >= W / 2, step_px, 0.0), np.zeros_like(rows)

    post, _ = resample_post(texture, fn, (H, W), origin=(40, 40))
    pre = texture[40:40 + H, 40:40 + W]
    cols = np.arange(W)[None, :].repeat(H, 0)
    truth = np.stack([np.where(cols >= W / 2, step_px, 0.0), np.zeros((H, W))])
    smeared = np.stack([step_px * (0.5 + 0.5 * np.tanh((cols - W / 2 + 0.5) / 4.0)),
                        np.zeros((H, W))])
    as_t = [torch.from_numpy(np.asarray(x, np.float32))[None] for x in (pre, post)]
    return normalize(as_t[0][None]), normalize(as_t[1][None]), truth, smeared


def test_a_smeared_fault_step_comes_out_sharp(texture):
    pre_n, post_n, truth, smeared = _fault_pair(texture)
    out = sharpen_field(pre_n, post_n, torch.from_numpy(smeared[None].astype(np.float32)))
    near = np.zeros((H, W), bool)
    near[8:-8, W // 2 - 8:W // 2 + 8] = True

    def err(f):
        return float(np.hypot(*(f - truth))[near].mean())

    # pixels within the match window's half-width of the trace stay ambiguous (the gap the
    # step opens in post has no source), so the gain is in the smeared band beyond them
    assert err(out[0].numpy()) < 0.85 * err(smeared)


def test_a_field_below_the_gradient_gate_is_returned_unchanged(texture):
    pre_n, post_n, _, _ = _fault_pair(texture)
    rows, cols = np.mgrid[:H, :W].astype(np.float32)
    smooth = torch.from_numpy(np.stack([0.02 * cols, -0.01 * rows]))[None]  # < 0.08 px/px
    assert not steep(smooth, SharpenConfig().min_gradient).any()
    assert torch.equal(sharpen_field(pre_n, post_n, smooth), smooth)


def test_only_steep_pixels_change_and_only_to_a_nearby_value_of_the_field(texture):
    pre_n, post_n, _, smeared = _fault_pair(texture)
    flow = torch.from_numpy(smeared[None].astype(np.float32))
    one_pass = SharpenConfig(passes=(SharpenPass(6, 3),))
    out = sharpen_field(pre_n, post_n, flow, one_pass)
    changed = (out != flow).any(1, keepdim=True)
    assert changed.any()
    assert not (changed & ~steep(flow, SharpenConfig().min_gradient)).any()
    lo, hi = float(flow.min()), float(flow.max())
    assert lo <= float(out.min()) and float(out.max()) <= hi


def test_the_sharpen_switch_round_trips_through_the_weights_file(tmp_path):
    model = MicroFlow(replace(get_config("tiny"), sharpen=True))
    save_weights(model, tmp_path / "m.safetensors")
    assert load_model(tmp_path / "m.safetensors", device="cpu").config.sharpen


def test_scoring_only_steep_blocks_gives_the_field_of_scoring_every_pixel(texture):
    pre_n, post_n, _, smeared = _fault_pair(texture)
    rng = np.random.default_rng(3)
    # two images, sides not multiples of the block, the step near the right border too
    crop = (slice(None), slice(None), slice(0, 90), slice(20, 128))
    a = torch.cat([pre_n, post_n])[crop]
    b = torch.cat([post_n, pre_n])[crop]
    flow = torch.from_numpy(np.stack([smeared, smeared[:, ::-1] + rng.normal(0, 0.05, (2, H, W))
                                      ]).astype(np.float32))[crop]
    config = SharpenConfig()
    gate = steep(flow, config.min_gradient)
    blocks = F.max_pool2d(gate.float(), BLOCK_PX, ceil_mode=True)[:, 0].nonzero()
    assert 0 < len(blocks) < gate.shape[0] * 6 * 7  # some blocks skipped
    for one in (SharpenPass(6, 3), SharpenPass(2, 2, shift=2), SharpenPass(1, 1, shift=1)):
        dense = _sharpen_dense(a, b, flow, gate, one, config.penalty)
        assert (dense != flow).any()
        assert torch.equal(_sharpen_blocks(a, b, flow, gate, blocks, one, config.penalty),
                           dense), one
        assert torch.equal(sharpen_field(a, b, flow, replace(config, passes=(one,))), dense)


def test_later_passes_carry_clean_values_nearer_a_wide_smear(texture):
    pre_n, post_n, truth, _ = _fault_pair(texture)
    cols = np.arange(W)[None, :].repeat(H, 0)
    half = 15  # a linear smear over ±15 px: beyond one pass's 6 px reach, steep throughout
    ramp = np.stack([STEP_PX * np.clip(0.5 + (cols - W / 2 + 0.5) / (2 * half), 0, 1),
                     np.zeros((H, W))])
    flow = torch.from_numpy(ramp[None].astype(np.float32))
    band = np.zeros((H, W), bool)
    band[8:-8, W // 2 - half:W // 2 + half] = True

    def err(config):
        out = sharpen_field(pre_n, post_n, flow, config)[0].numpy()
        return float(np.hypot(*(out - truth))[band].mean())

    wide = SharpenPass(6, 3)
    assert err(SharpenConfig(passes=(wide, wide))) < 0.8 * err(SharpenConfig(passes=(wide,)))


def test_narrow_last_passes_put_a_misplaced_step_back_on_the_trace(texture):
    """A sharp step 2–3 px off the trace, either way, as the network leaves some: the
    narrow passes (windows of 5 × 5 px and less) put it back nearer the trace than the
    wide passes alone do."""
    band = np.zeros((H, W), bool)
    band[8:-8, W // 2 - 4:W // 2 + 4] = True
    config = SharpenConfig()
    wide = replace(config, passes=tuple(p for p in config.passes if p.radius >= 3))
    assert 0 < len(wide.passes) < len(config.passes)
    cols = np.arange(W)[None, :].repeat(H, 0)
    errors = {"all": [], "wide": []}
    for step in (3.0, 6.0):
        pre_n, post_n, truth, _ = _fault_pair(texture, step)
        for off in (-3, -2, 2, 3):
            moved = np.stack([np.where(cols >= W / 2 + off, step, 0.0), np.zeros((H, W))])
            flow = torch.from_numpy(moved[None].astype(np.float32))
            for name, c in (("all", config), ("wide", wide)):
                out = sharpen_field(pre_n, post_n, flow, c)[0].numpy()
                errors[name].append(float(np.hypot(*(out - truth))[band].mean()))
    assert np.mean(errors["all"]) < 0.8 * np.mean(errors["wide"])


def test_a_pass_without_a_window_is_refused():
    with pytest.raises(ValueError, match="radius"):
        SharpenPass(1, 0)
