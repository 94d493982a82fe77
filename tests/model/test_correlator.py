"""Frequency correlator baseline (COSI-Corr style): convention, accuracy, weaknesses, API."""

import numpy as np
import pytest
from scipy import ndimage

from model.correlator import CorrelationResult, CorrelatorConfig, frequency_correlate

CROP = 16  # px dropped on each side after a Fourier shift (wrap-around of a non-periodic image)


def _texture(seed: int, shape=(256, 256), sigma: float = 1.2) -> np.ndarray:
    """Gaussian-filtered white noise, unit variance (not periodic)."""
    img = ndimage.gaussian_filter(np.random.default_rng(seed).standard_normal(shape), sigma)
    return (img - img.mean()) / img.std()


def _fourier_shift(img: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """Exact band-limited translation: ``out(r + dy, c + dx) = img(r, c)`` (circular)."""
    return np.fft.ifft2(ndimage.fourier_shift(np.fft.fft2(img), (dy, dx))).real


def _shifted_pair(dx: float, dy: float, seed: int = 0, sigma: float = 1.2):
    pre = _texture(seed, sigma=sigma)
    post = _fourier_shift(pre, dx, dy)
    inner = (slice(CROP, -CROP), slice(CROP, -CROP))
    return pre[inner], post[inner]


def test_integer_shift_is_recovered_exactly_with_the_design_sign_convention():
    pre = _texture(1)
    dx, dy = 3, -2
    post = np.roll(pre, (dy, dx), axis=(0, 1))  # post(r + dy, c + dx) = pre(r, c)
    assert post[10 + dy, 20 + dx] == pre[10, 20]
    res = frequency_correlate(pre, post)
    ok = np.isfinite(res.dx)
    assert ok.mean() > 0.95
    np.testing.assert_allclose(res.dx[ok], dx, atol=0.01)
    np.testing.assert_allclose(res.dy[ok], dy, atol=0.01)


@pytest.mark.parametrize("seed", [11, 12, 13, 14])
def test_random_subpixel_translation_has_median_error_below_two_hundredths_px(seed):
    dx, dy = np.random.default_rng(seed).uniform(-3, 3, size=2)
    pre, post = _shifted_pair(dx, dy, seed=seed)
    res = frequency_correlate(pre, post)
    assert np.isfinite(res.dx).mean() > 0.95
    assert np.nanmedian(np.abs(res.dx - dx)) <= 0.02
    assert np.nanmedian(np.abs(res.dy - dy)) <= 0.02


def test_shift_of_several_pixels_is_found_by_the_coarse_stage():
    dx, dy = 7.3, -5.6
    pre, post = _shifted_pair(dx, dy, seed=3)
    res = frequency_correlate(pre, post, CorrelatorConfig(max_shift=10))
    assert np.nanmedian(np.abs(res.dx - dx)) <= 0.02
    assert np.nanmedian(np.abs(res.dy - dy)) <= 0.02


def test_moving_the_post_window_removes_the_bias_toward_integer_shifts():
    pre, post = _shifted_pair(0.5, -0.5, seed=4, sigma=1.5)
    fixed = frequency_correlate(pre, post, CorrelatorConfig(refine_iters=0))
    moved = frequency_correlate(pre, post)
    bias_fixed = np.nanmedian(fixed.dx) - 0.5
    bias_moved = np.nanmedian(moved.dx) - 0.5
    assert bias_fixed < -0.01  # a fixed window pulls the estimate toward 0
    assert abs(bias_moved) < 0.005


def test_fault_step_is_blurred_over_one_window_width():
    cfg = CorrelatorConfig(window=32, step=8)
    pre = _texture(5)
    line = pre.shape[1] // 2  # vertical fault between columns line − 1 and line
    left = np.broadcast_to(np.arange(pre.shape[1]) < line, pre.shape)
    # dy = +1 px left of the line, −1 px right of it; each side shifted, then spliced
    post = np.where(left, _fourier_shift(pre, 0, 1.0), _fourier_shift(pre, 0, -1.0))
    inner = (slice(CROP, -CROP), slice(CROP, -CROP))
    pre, post, truth_dy = pre[inner], post[inner], np.where(left, 1.0, -1.0)[inner]
    dense = frequency_correlate(pre, post, cfg).to_dense(pre.shape)
    err = np.abs(dense[1] - truth_dy)
    dist = np.abs(np.arange(pre.shape[1]) + CROP + 0.5 - line)  # px from the fault line
    near = err[:, dist < cfg.window / 2].mean()
    far = err[:, dist > cfg.window].mean()
    assert near > 0.2  # the ±1 px step is smeared
    assert near > 10 * far
    assert far < 0.02
    # windows straddling the fault also leak into dx; away from it dx stays 0
    assert np.abs(dense[0][:, dist > cfg.window]).max() < 0.02


def test_snr_is_high_on_a_clean_pair_and_low_on_unrelated_images():
    pre, post = _shifted_pair(0.37, -1.21, seed=6)
    clean = frequency_correlate(pre, post)
    assert np.nanmin(clean.snr) > 0.9
    noise = frequency_correlate(_texture(7), _texture(8))
    assert np.median(noise.snr) < 0.5
    assert np.quantile(noise.snr, 0.95) < 0.5
    assert ((noise.snr >= 0) & (noise.snr <= 1)).all()


@pytest.mark.parametrize(("shape", "window", "step"), [((200, 150), 32, 8), ((256, 256), 64, 16)])
def test_output_grid_matches_the_config(shape, window, step):
    pre = _texture(9, shape=shape)
    res = frequency_correlate(pre, pre, CorrelatorConfig(window=window, step=step))
    ny, nx = (shape[0] - window) // step + 1, (shape[1] - window) // step + 1
    assert isinstance(res, CorrelationResult)
    for grid in (res.dx, res.dy, res.snr):
        assert grid.shape == (ny, nx) and grid.dtype == np.float32
    np.testing.assert_array_equal(res.rows, window // 2 + step * np.arange(ny))
    np.testing.assert_array_equal(res.cols, window // 2 + step * np.arange(nx))
    assert res.rows[-1] <= shape[0] - window // 2 and res.cols[-1] <= shape[1] - window // 2
    np.testing.assert_allclose(res.dx, 0, atol=1e-4)  # identical images: zero shift


def test_to_dense_interpolates_bilinearly_and_extends_edges():
    rows, cols = np.array([10, 20]), np.array([5, 15, 25])
    dx = np.array([[0, 1, 2], [10, 11, 12]], dtype=np.float32)
    res = CorrelationResult(dx=dx, dy=-dx, snr=np.ones_like(dx), rows=rows, cols=cols)
    dense = res.to_dense((30, 32))
    assert dense.shape == (2, 30, 32) and dense.dtype == np.float32
    assert dense[0, 10, 5] == 0 and dense[0, 20, 25] == 12  # nodes
    assert dense[0, 15, 10] == pytest.approx(5.5)  # centre of a cell
    assert dense[0, 0, 0] == 0 and dense[0, 29, 31] == 12  # edge-extended
    np.testing.assert_array_equal(dense[1], -dense[0])


def test_windows_mostly_nodata_give_nan_and_zero_snr_others_are_unaffected():
    pre, post = _shifted_pair(0.6, 0.25, seed=10)
    pre = pre.copy()
    pre[80:160, 80:160] = np.nan  # a cloud
    res = frequency_correlate(pre, post.astype(np.float32))
    r, c = np.meshgrid(res.rows, res.cols, indexing="ij")
    inside = (r >= 96) & (r <= 144) & (c >= 96) & (c <= 144)  # windows at least half cloud
    assert np.isnan(res.dx[inside]).all() and np.isnan(res.dy[inside]).all()
    assert (res.snr[inside] == 0).all()
    clear = (np.maximum(np.abs(r - 120), np.abs(c - 120)) > 40 + 16)  # windows off the cloud
    assert np.isfinite(res.dx[clear]).all()
    assert np.median(np.abs(res.dx[clear] - 0.6)) <= 0.02


def test_textureless_windows_give_nan():
    pre = np.full((128, 128), 7.0)
    res = frequency_correlate(pre, pre.copy())
    assert np.isnan(res.dx).all() and (res.snr == 0).all()


def test_uint16_images_are_accepted():
    pre = (_texture(2) * 1000 + 20000).astype(np.uint16)
    post = np.roll(pre, (1, -2), axis=(0, 1))
    res = frequency_correlate(pre, post)
    assert np.nanmedian(res.dx) == pytest.approx(-2, abs=0.01)
    assert np.nanmedian(res.dy) == pytest.approx(1, abs=0.01)


@pytest.mark.parametrize(
    ("pre_shape", "post_shape", "config"),
    [
        ((64, 64, 3), (64, 64, 3), CorrelatorConfig()),  # not 2-D
        ((64,), (64,), CorrelatorConfig()),
        ((64, 64), (64, 72), CorrelatorConfig()),  # mismatch
        ((20, 64), (20, 64), CorrelatorConfig(window=32)),  # smaller than a window
        ((64, 64), (64, 64), CorrelatorConfig(window=31)),  # odd window
        ((64, 64), (64, 64), CorrelatorConfig(step=0)),
        ((64, 64), (64, 64), CorrelatorConfig(max_nodata=1.5)),
    ],
)
def test_bad_inputs_raise_value_error(pre_shape, post_shape, config):
    with pytest.raises(ValueError):
        frequency_correlate(np.zeros(pre_shape), np.zeros(post_shape), config)
