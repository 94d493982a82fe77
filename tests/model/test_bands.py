"""Several bands: robust, confidence-weighted combination whose disagreement feeds σ."""

import numpy as np
import pytest

from model.bands import combine_bands


def _bands(values, sigmas, shape=(4, 5)):
    """(B, 2, H, W) flows and σ, constant per band (values/sigmas are per band)."""
    f = np.stack([np.full((2, *shape), v, np.float32) for v in values])
    s = np.stack([np.full((2, *shape), x, np.float32) for x in sigmas])
    return f, s


def test_one_corrupted_band_of_three_is_rejected():
    rng = np.random.default_rng(0)
    truth = rng.normal(0.0, 1.0, (2, 32, 32))
    flows = np.stack([truth + rng.normal(0, 0.05, truth.shape) for _ in range(3)])
    sig = np.full(flows.shape, 0.05)
    flows[1, :, 8:24, 8:24] += 2.0  # band 1 sees a change the others do not
    out, sigma = combine_bands(flows, sig)
    good = np.delete(flows, 1, axis=0)
    # inside the corrupted square: the mean of the two good bands, not pulled by band 1
    # (bar a few pixels where noise puts a good band beyond 3σ and it is dropped too)
    same = np.isclose(out, good.mean(0), atol=1e-5)[:, 8:24, 8:24]
    assert same.mean() > 0.98
    assert np.abs(out - truth).max() < 0.2
    assert sigma[:, 8:24, 8:24].max() < 0.1


def test_agreeing_bands_lower_sigma():
    f, s = _bands([0.50, 0.51, 0.49], [0.2, 0.2, 0.2])
    out, sigma = combine_bands(f, s)
    np.testing.assert_allclose(out, 0.5, atol=1e-6)
    np.testing.assert_allclose(sigma, 0.2 / np.sqrt(3), rtol=1e-5)


def test_disagreeing_bands_raise_sigma():
    f, s = _bands([0.0, 0.5, 1.0], [0.2, 0.2, 0.2])  # within 3σ of the median: all kept
    out, sigma = combine_bands(f, s)
    np.testing.assert_allclose(out, 0.5, atol=1e-6)
    assert (sigma > 0.2).all()  # above every band's own σ
    # Birge ratio: σ_iv · sqrt(χ²/(n−1)) = weighted standard error of the spread
    np.testing.assert_allclose(sigma, np.sqrt((0.25 + 0.25) / 3 / 2), rtol=1e-5)


def test_inverse_variance_weighting_favours_the_confident_band():
    f, s = _bands([0.0, 0.3], [0.1, 0.3])
    out, _ = combine_bands(f, s)
    np.testing.assert_allclose(out, 0.3 * (1 / 0.09) / (1 / 0.01 + 1 / 0.09), atol=1e-6)


def test_nan_bands_are_skipped_per_pixel():
    f, s = _bands([0.2, 0.4, 0.6], [0.1, 0.1, 0.1])
    f[0, 0, 0, 0] = np.nan
    s[2, 0, 0, 0] = np.nan
    f[:, 1, 2, 3] = np.nan
    out, sigma = combine_bands(f, s)
    assert out[0, 0, 0] == pytest.approx(0.4)  # only band 1 left there
    assert sigma[0, 0, 0] == pytest.approx(0.1)
    assert np.isnan(out[1, 2, 3]) and np.isnan(sigma[1, 2, 3])
    assert np.isfinite(out).sum() == out.size - 1


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match="shape"):
        combine_bands(np.zeros((3, 2, 4, 4)), np.zeros((3, 2, 4, 5)))
    with pytest.raises(ValueError, match="shape"):
        combine_bands(np.zeros((2, 4, 4)), np.zeros((2, 4, 4)))
