"""The stack of pairs (model.stack): noise falls with independent pairs, less with shared
dates, σ stays calibrated, and pairs that disagree are flagged instead of averaged."""

import numpy as np
import pytest

from model.stack import (
    MEASURED,
    PAIRS_DISAGREE,
    TOO_FEW_PAIRS,
    StackConfig,
    box_sum,
    date_correlation,
    stack_component,
    stack_field,
)

H = W = 96


def _pairs(rng, pres, posts, sd_date, sd_pair, truth=0.0):
    """Fields of pairs ``(pres[k], posts[k])`` whose error is one draw per date plus one per
    pair, with calibrated σ."""
    e_pre = rng.normal(0, sd_date, (max(pres) + 1, H, W))
    e_post = rng.normal(0, sd_date, (max(posts) + 1, H, W))
    v = np.stack([truth + e_pre[i] + e_post[j] + rng.normal(0, sd_pair, (H, W))
                  for i, j in zip(pres, posts, strict=True)])
    return v, np.full_like(v, np.sqrt(2 * sd_date**2 + sd_pair**2))


def _coverage(err, sigma):
    ok = np.isfinite(err)
    return float((np.abs(err[ok]) <= 2 * sigma[ok]).mean())


def test_independent_pairs_lower_the_noise_by_the_square_root_of_their_number():
    rng = np.random.default_rng(1)
    v, s = _pairs(rng, [0, 1, 2, 3], [0, 1, 2, 3], 0.05, 0.05)
    r = stack_component(v, s, [0, 1, 2, 3], [0, 1, 2, 3])
    single = np.sqrt((v**2).mean())
    stacked = np.sqrt(np.nanmean(r.value**2))
    assert stacked == pytest.approx(single / 2, rel=0.08)
    assert np.nanmedian(r.sigma) == pytest.approx(s[0, 0, 0] / 2, rel=0.05)
    assert (r.flag == MEASURED).mean() > 0.99 and (r.count == 4).mean() > 0.98


def test_pairs_that_share_dates_gain_less_and_their_sigma_says_so():
    rng = np.random.default_rng(2)
    pres, posts = [0, 1, 2, 0, 1, 2], [0, 0, 0, 1, 1, 1]  # 3 pre x 2 post dates
    v, s = _pairs(rng, pres, posts, 0.07, 0.0)
    r = stack_component(v, s, pres, posts)
    single = np.sqrt((v**2).mean())
    stacked = np.sqrt(np.nanmean(r.value**2))
    # all error from dates: var = σd²/3 + σd²/2 of 2σd², i.e. 1/√(12/5) of one pair
    assert stacked == pytest.approx(single * np.sqrt(5 / 12), rel=0.08)
    assert stacked > single / np.sqrt(6) * 1.3  # not the 1/√6 of independent pairs
    assert _coverage(r.value, r.sigma) == pytest.approx(_coverage(v[0], s[0]), abs=0.03)
    # treated as independent, the same pairs would claim far too small a σ
    naive = stack_component(v, s, [0, 1, 2, 3, 4, 5], [0, 1, 2, 3, 4, 5],
                            StackConfig(pool_px=1))
    assert _coverage(r.value, naive.sigma) < _coverage(r.value, r.sigma) - 0.1


def test_an_outlier_pair_is_left_out_and_two_pairs_that_disagree_are_flagged():
    rng = np.random.default_rng(3)
    v, s = _pairs(rng, [0, 1, 2], [0, 1, 2], 0.0, 0.05, truth=1.0)
    v[2, :20] += 2.0  # a parcel that changed in one pair: 40 σ off
    r = stack_component(v, s, [0, 1, 2], [0, 1, 2])
    assert (r.count[:20] == 2).mean() > 0.98 and (r.count[30:] == 3).mean() > 0.98
    assert np.nanmax(np.abs(r.value[:20] - 1.0)) < 0.3  # never pulled by the outlier
    two = stack_component(v[1:], s[1:], [1, 2], [1, 2])
    assert (two.flag[:20] == PAIRS_DISAGREE).all() and np.isnan(two.value[:20]).all()
    assert (two.flag[30:] == MEASURED).mean() > 0.99


def test_spread_beyond_the_pairs_sigma_raises_the_stack_sigma():
    rng = np.random.default_rng(4)
    v, s = _pairs(rng, [0, 1, 2, 3], [0, 1, 2, 3], 0.0, 0.1)
    r = stack_component(v, s / 2, [0, 1, 2, 3], [0, 1, 2, 3])  # σ half what it is
    # the pairs scatter 4x (in variance) more than their σ says; the 3σ cut trims a little
    assert 3.0 < np.nanmedian(r.inflation) < 4.5
    assert _coverage(r.value, r.sigma) > 0.9
    assert _coverage(r.value, stack_component(v, s / 2, [0, 1, 2, 3], [0, 1, 2, 3],
                                              StackConfig(pool_px=1)).sigma) > 0.85


def test_a_pixel_seen_by_too_few_pairs_is_not_measured_and_both_components_agree():
    rng = np.random.default_rng(5)
    v, s = _pairs(rng, [0, 1], [0, 1], 0.0, 0.05)
    v[1, :10] = np.nan  # a cloud in one pair
    out = stack_field(v, v.copy(), s, s, [0, 1], [0, 1])
    assert (out["flag"][:10] == TOO_FEW_PAIRS).all()
    assert np.isnan(out["east"][:10]).all() and np.isnan(out["north_sigma"][:10]).all()
    assert (out["flag"][10:] == MEASURED).mean() > 0.99 and out["count"].max() == 2


def test_date_correlation_counts_shared_scenes_and_box_sum_cuts_at_the_edge():
    c = date_correlation(["a", "b", "a"], ["x", "x", "y"], 0.5)
    np.testing.assert_allclose(c, [[1, 0.5, 0.5], [0.5, 1, 0], [0.5, 0, 1]])
    ones = np.ones((5, 6))
    b = box_sum(ones, 3)
    assert b[0, 0] == 4 and b[2, 2] == 9 and b[4, 5] == 4


def test_a_chunk_with_its_context_equals_the_whole():
    rng = np.random.default_rng(6)
    v, s = _pairs(rng, [0, 1, 2], [0, 0, 1], 0.03, 0.05)
    s[:, 40:] *= 0.5  # σ too small on one side: the spread raises it there
    cfg = StackConfig()
    whole = stack_component(v, s, [0, 1, 2], [0, 0, 1], cfg)
    c = cfg.context_px
    part = stack_component(v[:, :, 32 - c:64 + c], s[:, :, 32 - c:64 + c], [0, 1, 2],
                           [0, 0, 1], cfg)
    np.testing.assert_allclose(part.sigma[:, c:-c], whole.sigma[:, 32:64], rtol=1e-6)
    np.testing.assert_allclose(part.value[:, c:-c], whole.value[:, 32:64], rtol=1e-6)
