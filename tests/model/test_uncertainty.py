"""Per-pixel σ: features, fitting, and calibration of the shipped model on unseen pairs."""

import numpy as np
import pytest
import rasterio
import torch
from scipy import stats as sstats

from model.synthetic import make_pair
from model.temporal_change import RealisticChange
from model.uncertainty import (
    DEFAULT_MAX_SIGMA_PX,
    FEATURES,
    UNCALIBRATED,
    SigmaModel,
    fit_sigma_model,
    sigma_features,
)

TEST_AREA = "pipeline/demo_data/landsat8_224077_b4_test_area.tif"


def test_features_flag_a_changed_patch_and_not_a_matched_one(rng):
    img = torch.from_numpy(rng.standard_normal((1, 1, 96, 96)).astype(np.float32))
    post = img.clone()
    post[..., 30:60, 30:60] = torch.from_numpy(
        rng.standard_normal((30, 30)).astype(np.float32))  # land cover replaced
    zero = torch.zeros(1, 2, 96, 96)
    f = sigma_features(img, post, zero, zero)
    assert f.shape == (1, len(FEATURES), 96, 96)
    inside, outside = f[0, :, 40:50, 40:50].mean((1, 2)), f[0, :, 5:20, 70:90].mean((1, 2))
    for name in ("ncc7", "ncc15", "residual"):
        k = FEATURES.index(name)
        assert inside[k] > outside[k] + 0.5, name


def test_fit_recovers_a_known_log_linear_sigma(rng):
    n = 40000
    x = rng.uniform(0, 1, (n, len(FEATURES)))
    true = np.exp(-2.0 + x @ np.array([1.5, 0.0, 0.5, 0.0, 1.0]))
    errs = np.abs(rng.standard_normal((n, 2))) * true[:, None]
    sm = fit_sigma_model(x, errs)
    sigma = sm.predict(torch.from_numpy(x).T[None, :, :, None])[0, 0, :, 0].numpy()
    assert np.corrcoef(np.log(sigma), np.log(true))[0, 1] > 0.99
    within = np.mean(errs <= 2 * sigma[:, None])
    assert 0.91 <= within <= 0.93  # the coverage target, 0.92


def test_sigma_model_round_trips_through_json():
    assert SigmaModel.from_json(UNCALIBRATED.to_json()) == UNCALIBRATED
    with pytest.raises(ValueError):
        SigmaModel(coef=(1.0, 2.0), scale=1.0)


def _unseen_pairs(n: int, size: int = 160):
    """Faults on the committed Landsat test-area crop (never in training or calibration),
    alternately with realistic temporal change and without change, as in the
    calibration's mix."""
    with rasterio.open(TEST_AREA) as src:
        tex = src.read(1).astype(np.float64)
    tex = (tex - tex.mean()) / tex.std()
    rng = np.random.default_rng(7)
    ranges = ["very_small", "small", "large", "translation"]
    return [make_pair(tex, rng, (size, size), ranges[i % 4], temporal_change=i % 2 == 0,
                      change=RealisticChange()) for i in range(n)]


def test_shipped_sigma_is_calibrated_on_unseen_pairs():
    """Issue 12: rank correlation with the error ≥ 0.5 and |error| ≤ 2σ for 85–98 % of
    the pixels, per component, on pairs from an area no calibration pair came from."""
    from model.inference import estimate_displacement

    errs, sigmas = [], []
    for p in _unseen_pairs(16):
        flow, sigma = estimate_displacement(p.pre, p.post, denoise=False, device="cpu",
                                            return_sigma=True)
        keep = p.valid.copy()
        keep[:8] = keep[-8:] = False
        keep[:, :8] = keep[:, -8:] = False
        errs.append(np.abs(flow - p.flow)[:, keep])
        sigmas.append(sigma[:, keep])
    e, s = np.concatenate(errs, 1), np.concatenate(sigmas, 1)
    assert np.isfinite(s).all() and (s > 0).all()
    assert sstats.spearmanr(s[0], e.max(0)).statistic >= 0.5
    for k in range(2):
        assert 0.85 <= np.mean(e[k] <= 2 * s[k]) <= 0.98, k


def test_return_sigma_gives_nan_where_the_field_is_missing(rng):
    from model.inference import estimate_displacement

    pre = rng.standard_normal((96, 96)).astype(np.float32)
    post = pre.copy()
    post[:10] = np.nan
    flow, sigma = estimate_displacement(pre, post, weights="untrained:tiny", device="cpu",
                                        return_sigma=True)
    assert flow.shape == sigma.shape == (2, 96, 96)
    assert np.isnan(sigma[:, :10]).all() and np.isfinite(sigma[:, 10:]).all()
    assert np.isnan(flow[:, :10]).all()


def test_on_the_real_pair_clouds_and_mismatches_get_the_largest_sigma():
    """Issue 12: on the committed Sentinel-2 pair (no earthquake: the truth is the
    co-registration offset), σ ranks the error and is largest on the clouds."""
    from scipy import ndimage

    from model.inference import estimate_displacement

    folder = "data/real-s2-t33uuu-north/"
    with rasterio.open(folder + "pre_S2A_20160529_T33UUU_north.tif") as src:
        pre = src.read(1, window=((0, 512), (1000, 1512)))
    with rasterio.open(folder + "post_S2A_20160608_T33UUU_north.tif") as src:
        post = src.read(1, window=((0, 512), (1000, 1512)))
    flow, sigma = estimate_displacement(pre, post, nodata=0, denoise=False, device="cpu",
                                        return_sigma=True)
    inner = np.zeros(pre.shape, bool)
    inner[16:-16, 16:-16] = True
    cloud = ndimage.binary_dilation(pre > 2000, iterations=5) & inner  # DN: bright = cloud
    clear = ~ndimage.binary_dilation(pre > 2000, iterations=15) & inner
    assert cloud.mean() > 0.1 and clear.mean() > 0.1  # the crop has both
    s = sigma.max(0)
    assert np.median(s[cloud]) > 3 * np.median(s[clear])  # measured 4.6x
    assert np.mean(s[cloud] > DEFAULT_MAX_SIGMA_PX) > 0.5  # most are flagged low confidence
    offset = np.median(flow[:, clear], axis=1)  # the co-registration offset
    assert abs(offset[0] + 0.64) < 0.15 and abs(offset[1] - 1.75) < 0.25
    err = np.abs(flow - offset[:, None, None]).max(0)
    assert sstats.spearmanr(s[inner], err[inner]).statistic >= 0.5
