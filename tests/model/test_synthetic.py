from dataclasses import replace

import numpy as np
import pytest
import torch

from model.metrics import near_fault
from model.okada import Fault
from model.synthetic import (
    RANGES,
    SyntheticPair,
    fault_field,
    fractal_texture,
    make_pair,
    resample_post,
    trace_mask,
    visible_in_post,
)
from model.warp import warp


def _warp_error(pair):
    post = torch.from_numpy(pair.post)[None, None]
    d = torch.from_numpy(pair.flow)[None]
    return np.abs(warp(post, d)[0, 0].numpy() - pair.pre)


def _pair_from_fault(texture, fault):
    """``fault`` (pixel units) over a 128² crop of ``texture`` at (40, 40): its
    displacement function and the pair, ``valid`` as the ``post``-grid fixed point gives
    it (:func:`resample_post`)."""
    fn = fault_field(fault)
    rows, cols = np.mgrid[0:128, 0:128].astype(float)
    flow = np.stack(fn(cols, rows)).astype(np.float32)
    post, valid = resample_post(texture, fn, (128, 128), origin=(40, 40))
    pre = texture[40:168, 40:168].astype(np.float32)
    return fn, SyntheticPair(pre, post, flow, trace_mask(fault, (128, 128)), valid)


@pytest.mark.parametrize("rng_name", ["translation", "very_small", "small", "large"])
def test_pairs_follow_the_convention_and_the_range(texture, rng_name):
    rng = np.random.default_rng(3)
    for _ in range(3):
        pair = make_pair(texture, rng, (128, 160), rng_name)
        assert pair.pre.shape == pair.post.shape == (128, 160)
        assert pair.flow.shape == (2, 128, 160) and pair.flow.dtype == np.float32
        lo, hi = RANGES[rng_name]
        peak = np.percentile(np.hypot(*pair.flow), 99.5)
        assert peak <= hi + 1e-3 and (rng_name == "translation" or peak >= lo - 1e-3)
        # warp(post, d) = pre away from the image border and from the fault trace
        keep = np.zeros_like(pair.valid)
        keep[14:-14, 14:-14] = True
        keep &= ~near_fault(pair.fault_mask, 3) & pair.valid
        assert _warp_error(pair)[keep].mean() < 0.05


def test_fixed_point_is_exact_right_next_to_a_surface_rupture(texture):
    """post is built from x + d(x) = y with d evaluated exactly, so pixels 2-4 px from a
    strike-slip trace with a 6 px jump (inside the smoothing window of any interpolated
    shortcut) are right."""
    _, pair = _pair_from_fault(texture, Fault(
        east=64.3, north=-64.0, top_depth=0.0, strike_deg=20.0, dip_deg=90.0,
        length=2000.0, width=400.0, rake_deg=180.0, slip=6.0))
    flow, mask, valid = pair.flow, pair.fault_mask, pair.valid
    assert np.ptp(flow) > 5.0
    band = near_fault(mask, 4) & ~near_fault(mask, 2)
    band[:14] = band[-14:] = False
    assert band.sum() > 200
    assert np.median(_warp_error(pair)[band]) < 0.05
    assert valid.mean() > 0.99


def test_surface_ruptures_have_a_trace_and_blind_faults_do_not(texture):
    rng = np.random.default_rng(5)
    kinds = set()
    for _ in range(20):
        pair = make_pair(texture, rng, (96, 96), "small")
        surface = pair.params["fault"].top_depth == 0
        assert pair.fault_mask.any() == surface or not surface
        kinds.add(surface)
    assert kinds == {True, False}


def test_temporal_change_alters_radiometry_not_the_truth(texture):
    a = make_pair(texture, np.random.default_rng(9), (96, 96), "small", temporal_change=False)
    b = make_pair(texture, np.random.default_rng(9), (96, 96), "small", temporal_change=True)
    np.testing.assert_array_equal(a.flow, b.flow)
    assert np.abs(a.post - b.post).mean() > 0.05


def test_bad_generator_input_is_rejected(texture):
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="displacement_range"):
        make_pair(texture, rng, (64, 64), "huge")
    with pytest.raises(ValueError, match="too small"):
        make_pair(texture[:80, :80], rng, (64, 64), "small")
    bad = texture.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        make_pair(bad, rng, (64, 64), "small")


def test_fractal_texture_is_normalised():
    t = fractal_texture((64, 80), np.random.default_rng(0))
    assert t.shape == (64, 80) and abs(t.mean()) < 1e-5 and abs(t.std() - 1) < 1e-4


def test_realistic_change_is_frequent_and_strong(texture):
    from model.temporal_change import RealisticChange

    rng = np.random.default_rng(11)
    n_parcels, diffs = 0, []
    for _ in range(12):
        seed = int(rng.integers(1 << 30))
        clean = make_pair(texture, np.random.default_rng(seed), (96, 96), "small")
        pair = make_pair(texture, np.random.default_rng(seed), (96, 96), "small",
                         temporal_change=True, change=RealisticChange())
        np.testing.assert_array_equal(pair.flow, clean.flow)  # truth untouched
        n_parcels += "parcels" in pair.params["effects"]
        # post relative to pre, compared with the clean pair's, in units of pre's std
        rel = (pair.post - pair.pre) / pair.pre.std() - (clean.post - clean.pre)
        diffs.append(np.abs(rel).mean())
    assert n_parcels >= 8
    assert np.median(diffs) > 0.3


def test_generate_samples_mixes_in_realistic_change_and_records_it(texture):
    from model.dataset import SampleSet, generate_samples

    tex = [texture.astype(np.float32)]
    s = generate_samples(tex, 16, 64, np.random.default_rng(2), change_fraction=1.0,
                         realistic_fraction=0.75)
    assert s.change.all() and 6 <= s.realistic.sum() < 16
    # without realistic change the random stream is the one from before it existed:
    # per pair a texture index, a change coin, then the pair
    old = generate_samples(tex, 6, 64, np.random.default_rng(3))
    rng = np.random.default_rng(3)
    for i in range(6):
        name = list(RANGES)[i % len(RANGES)]
        k = int(rng.integers(1))
        pair = make_pair(tex[k], rng, (64, 64), name, temporal_change=rng.random() < 0.5)
        np.testing.assert_array_equal(old.post[i], pair.post)
    assert not old.realistic.any()
    d = old.to_dict()
    del d["realistic"]  # a sample file written before the field existed
    loaded = SampleSet.from_dict(d)
    assert loaded.realistic.shape == (6,) and not loaded.realistic.any()


def test_ground_hidden_under_a_converging_fault_is_not_valid(texture):
    """A thrust whose sides move 8 px towards each other: post shows one side of the
    overlap, so the other side's pre pixels there cannot be measured. They are marked not
    valid on the pre grid, and only they: where valid, warp(post, d) is pre."""
    size = (128, 128)
    fn, pair = _pair_from_fault(texture, Fault(
        east=64.3, north=-64.0, top_depth=0.0, strike_deg=0.0, dip_deg=30.0,
        length=2000.0, width=400.0, rake_deg=90.0, slip=9.0))
    valid = visible_in_post(fn, size)
    pair = replace(pair, valid=valid)
    flow = pair.flow
    jump = flow[0, 64, 70] - flow[0, 64, 58]
    assert jump < -6  # the east side moves west onto the west side: they converge
    hidden = ~valid
    hidden[:, :14] = hidden[:, -14:] = False
    hidden[:14] = hidden[-14:] = False
    assert hidden.sum() > 4 * 100  # a band at least 4 px wide along 100 rows
    assert near_fault(pair.fault_mask, 12)[hidden].all()  # only next to the trace
    err = _warp_error(pair)
    core = np.zeros_like(valid)
    core[14:-14, 14:-14] = True
    assert err[core & valid & ~near_fault(pair.fault_mask, 1)].mean() < 0.05
    assert err[hidden].mean() > 10 * err[core & valid].mean()
    # a uniform shift hides nothing
    assert visible_in_post(lambda c, r: (np.full_like(c, 2.5), np.full_like(r, -1.5)),
                           size).all()


def test_an_opening_fault_shows_new_ground_in_its_gap_not_ground_from_beside_it(texture):
    """A normal fault whose sides move 5.7 px apart: no ground lands in the gap post
    opens. What post shows there matches no nearby pre ground under any shift up to 12 px,
    so no pre pixel is seen twice; every pre pixel is still seen once, and valid."""
    fn, pair = _pair_from_fault(texture, Fault(
        east=64.3, north=-64.0, top_depth=0.0, strike_deg=0.0, dip_deg=50.0,
        length=2000.0, width=400.0, rake_deg=-90.0, slip=9.0))
    assert pair.flow[0, 64, 70] - pair.flow[0, 64, 58] > 5  # the sides move apart
    gap = ~pair.valid  # resample_post's mask: where no ground lands in post
    gap[:20] = gap[-20:] = False
    assert gap.sum() > 4 * 88 and near_fault(pair.fault_mask, 6)[gap].all()
    beside = np.roll(gap, 8, axis=1)  # 8 px east of the gap: ground seen once

    def best_match(mask):  # best correlation of post[mask] with pre shifted by ≤ 12 px
        r, c = np.nonzero(mask)
        return max(np.corrcoef(pair.post[r, c], pair.pre[r + sr, c + sc])[0, 1]
                   for sr in range(-12, 13) for sc in range(-12, 13))

    assert best_match(beside) > 0.99  # ground beside the gap is found
    assert best_match(gap) < 0.5  # (0.79 when the gap repeated ground from its sides)
    assert visible_in_post(fn, (128, 128)).all()
