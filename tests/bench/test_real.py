"""The real-imagery scores: off-by shares, spread, coverage and cloud validity."""

import numpy as np
import pytest

from bench.real import CLOUD_DN, README_OFFSET, cloud_mask, load_real_pair, score_field


def test_the_committed_real_pair_loads_with_nodata_as_nan():
    pre, post = load_real_pair()
    assert pre.shape == post.shape == (1152, 1856)
    assert np.isnan(pre[:, 0]).any()  # the wedge outside the swath on the west edge
    assert np.nanmin(pre) > 0 and np.nanmin(post) > 0
    cloud = cloud_mask(pre)
    h, w = pre.shape
    assert cloud[:h // 2, w // 2:].mean() > 2 * cloud[h // 2:, :w // 2].mean()  # NE quarter


def test_cloud_mask_is_bright_pre_pixels_dilated():
    pre = np.full((40, 40), 1000.0, np.float32)
    pre[20, 20] = CLOUD_DN + 1
    pre[0, 0] = np.nan
    m = cloud_mask(pre)
    assert m[20, 20] and m[20, 25] and not m[20, 26] and not m[0, 0]


def test_scores_count_shares_spread_coverage_and_clouds():
    rng = np.random.default_rng(0)
    shape = (100, 100)
    dx = np.full(shape, README_OFFSET[0]) + rng.normal(0, 0.05, shape)
    dy = np.full(shape, README_OFFSET[1]) + rng.normal(0, 0.05, shape)
    dx[:10] += 0.7  # 10 % off by 0.7 px
    dx[10:15] += 2.0  # 5 % off by 2 px
    data = np.ones(shape, bool)
    data[:, 95:] = False  # nodata: excluded everywhere
    cloud = np.zeros(shape, bool)
    cloud[50:70] = True
    valid = np.ones(shape, bool)
    valid[50:60] = False  # half the cloud flagged
    valid[80:90] = False  # and 10 rows of clear ground
    s = score_field("m", dx, dy, valid, data, cloud, 1.0, "every pixel")
    assert s.off05_own == pytest.approx(15 / 80, abs=0.01)
    assert s.off1_own == pytest.approx(5 / 80, abs=0.01)
    assert s.off05_readme == pytest.approx(s.off05_own, abs=0.01)
    assert s.median[0] == pytest.approx(README_OFFSET[0], abs=0.02)
    assert s.spread[1] == pytest.approx(0.05, rel=0.15)
    assert s.coverage == pytest.approx(70 / 80)
    assert s.cloud_valid == pytest.approx(0.5)
