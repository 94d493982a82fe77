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


def test_copies_of_one_band_do_not_shrink_sigma():
    """Issue 20: ``--band 1 2 3`` on a file whose bands are copies gave σ / √3. Copies are
    one band's evidence: their texture correlation is 1, so σ stays the band's own."""
    from model.bands import band_rho

    rng = np.random.default_rng(1)
    image = rng.standard_normal((32, 32)).astype(np.float32)
    f = np.stack([np.full((2, 32, 32), 0.4, np.float32)] * 3)
    s = np.stack([np.full((2, 32, 32), 0.2, np.float32)] * 3)
    rho = band_rho(np.stack([image, 2.0 * image + 5.0, image]))  # gain and offset: copies
    np.testing.assert_allclose(rho, 1.0, atol=1e-5)
    out, sigma = combine_bands(f, s, rho=rho)
    np.testing.assert_allclose(out, 0.4, atol=1e-6)
    np.testing.assert_allclose(sigma, 0.2, rtol=1e-4)


def test_correlated_bands_shrink_sigma_by_the_effective_number_of_bands():
    from model.bands import RHO_LANDSAT_RGB, effective_bands

    f, s = _bands([0.5, 0.5, 0.5], [0.2, 0.2, 0.2])
    _, sigma = combine_bands(f, s, rho=RHO_LANDSAT_RGB)
    n_eff = effective_bands(3, RHO_LANDSAT_RGB)
    assert 1.0 < n_eff < 3.0
    np.testing.assert_allclose(sigma, 0.2 / np.sqrt(n_eff), rtol=1e-5)
    assert effective_bands(3, 0.0) == 3 and effective_bands(3, 1.0) == 1


def test_correlated_evidence_with_unequal_sigma_matches_the_variance_of_the_mean():
    """Monte Carlo: errors with correlation ρ and σ 0.1, 0.3; the combined σ is the std of
    the inverse-variance mean."""
    rng = np.random.default_rng(2)
    rho, sig = 0.6, np.array([0.1, 0.3])
    cov = rho * np.outer(sig, sig) + np.diag((1 - rho) * sig**2)
    e = rng.multivariate_normal([0, 0], cov, 200000)
    w = 1 / sig**2
    empirical = (e @ w / w.sum()).std()
    f = np.zeros((2, 2, 1, 1))
    s = np.broadcast_to(sig[:, None, None, None], f.shape)
    _, sigma = combine_bands(f, s, rho=rho)
    np.testing.assert_allclose(sigma, empirical, rtol=0.01)


def test_texture_correlation_of_independent_bands_is_low():
    from model.bands import texture_correlation

    rng = np.random.default_rng(3)
    r = texture_correlation(rng.standard_normal((3, 64, 64)))
    assert r.shape == (64, 64) and np.median(r) < 0.15
