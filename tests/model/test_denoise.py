import functools
import itertools

import numpy as np
import pytest
import torch

from model.denoise import (
    WEIGHT_MAX,
    LogTVConfig,
    logtv_denoise,
    logtv_energy,
    normalise_weights,
    weights_from_sigma,
)

NOISE = 0.1  # px
STEP = 2.0  # px


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These fields are small: one intra-op thread avoids OpenMP barrier stalls, which
    make each elementwise op wait on a busy machine (seconds instead of milliseconds)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _step_field(angle_deg: float, size: int = 256, seed: int = 0):
    """Smooth ramp + Gaussian bump + a 2 px step across a line at ``angle_deg`` from
    vertical, plus N(0, 0.1 px) noise. Returns (clean, noisy float32, signed distance)."""
    rng = np.random.default_rng(seed)
    r, c = np.mgrid[0:size, 0:size].astype(float)
    a = np.deg2rad(angle_deg)
    dist = (c - size / 2 - 0.3) * np.cos(a) + (r - size / 2) * np.sin(a)
    clean = 0.002 * r + 0.5 * np.exp(-((r - 90) ** 2 + (c - 70) ** 2) / (2 * 40.0**2))
    clean = clean + STEP * (dist >= 0)
    noisy = clean + rng.normal(0.0, NOISE, clean.shape)
    return clean, noisy.astype(np.float32), dist


@functools.cache
def _denoised(angle_deg: float):
    clean, noisy, dist = _step_field(angle_deg)
    return clean, logtv_denoise(noisy), dist


@pytest.mark.parametrize("angle", [0.0, 30.0])
def test_noise_drops_threefold_away_from_step(angle):
    clean, u, dist = _denoised(angle)
    far = np.abs(dist) > 8
    assert NOISE / (u - clean)[far].std() >= 3.0


@pytest.mark.parametrize("angle", [0.0, 30.0])
def test_step_height_is_kept_within_ten_percent(angle):
    clean, u, dist = _denoised(angle)
    left = (dist > -6) & (dist < -2)
    right = (dist > 2) & (dist < 6)
    height = np.median(u[right]) - np.median(u[left])
    true = np.median(clean[right]) - np.median(clean[left])
    assert abs(true - STEP) < 0.05  # the strips measure the step, not the smooth part
    assert abs(height - true) < 0.10 * true


def test_energy_never_increases_over_outer_iterations():
    _, noisy, _ = _step_field(30.0, size=96, seed=1)
    cfg = LogTVConfig()
    energies = [logtv_energy(noisy, noisy, cfg.lam, cfg.eps)]
    for k in range(1, 7):  # the first k outer steps of a run are the whole of a k-step run
        u = logtv_denoise(noisy, LogTVConfig(outer_iters=k))
        energies.append(logtv_energy(u, noisy, cfg.lam, cfg.eps))
    drop = energies[0] - energies[-1]
    assert drop > 0
    assert all(b <= a + 1e-4 * drop for a, b in itertools.pairwise(energies))


def test_energy_is_lower_than_for_other_candidates():
    _, noisy, _ = _step_field(0.0, size=64, seed=2)
    cfg = LogTVConfig()
    u = logtv_denoise(noisy)
    e = logtv_energy(u, noisy, cfg.lam, cfg.eps)
    rng = np.random.default_rng(0)
    for other in (noisy, u + rng.normal(0, 0.01, u.shape), np.full_like(u, noisy.mean())):
        assert e < logtv_energy(other, noisy, cfg.lam, cfg.eps)


@pytest.mark.parametrize("shape", [(40, 56), (2, 40, 56), (3, 2, 24, 40), (2, 1, 56, 24)])
def test_shapes_types_and_dtype_round_trip(shape):
    x = np.random.default_rng(0).normal(0.0, 0.1, shape)  # float64 in
    cfg = LogTVConfig(outer_iters=2, inner_iters=10)
    out = logtv_denoise(x, cfg)
    assert isinstance(out, np.ndarray) and out.shape == shape and out.dtype == np.float32
    out_t = logtv_denoise(torch.from_numpy(x), cfg)
    assert torch.is_tensor(out_t) and out_t.shape == shape and out_t.dtype == torch.float32
    np.testing.assert_allclose(out_t.numpy(), out, atol=1e-6)


def test_planes_are_denoised_independently():
    x = np.random.default_rng(1).normal(0.0, 0.1, (2, 2, 32, 48)).astype(np.float32)
    x[1, 0] += 5.0
    cfg = LogTVConfig(outer_iters=3, inner_iters=10)
    whole = logtv_denoise(x, cfg)
    for b in range(2):
        for c in range(2):
            np.testing.assert_allclose(whole[b, c], logtv_denoise(x[b, c], cfg), atol=1e-5)


def test_input_is_not_modified():
    _, noisy, _ = _step_field(0.0, size=48)
    noisy[5, 5] = np.nan
    x, t = noisy.copy(), torch.from_numpy(noisy.copy())
    logtv_denoise(x)
    logtv_denoise(t)
    np.testing.assert_array_equal(x, noisy)
    np.testing.assert_array_equal(t.numpy(), noisy)


def test_nan_pixels_stay_nan_and_barely_disturb_their_neighbours():
    clean, noisy, _ = _step_field(0.0)
    _, ref, _ = _denoised(0.0)
    holed = noisy.copy()
    holed[100:124, 40:64] = np.nan  # away from the step, on the bump
    hole = np.isnan(holed)
    out = logtv_denoise(holed)
    assert np.isnan(out[hole]).all()
    assert np.isfinite(out[~hole]).all()
    ring = np.zeros_like(hole)
    ring[97:127, 37:67] = True  # up to 3 px around the hole
    ring &= ~hole
    far = np.ones_like(hole)
    far[92:132, 32:72] = False  # more than 8 px from the hole
    assert np.abs(out - ref)[ring].max() < 0.1
    assert np.abs(out - clean)[ring].max() < 0.1  # noise was 0.1 px std
    # A plane with a hole is solved without the γ = 2 acceleration (its data term is not
    # strongly convex there), so single pixels far off may land on another plateau of the
    # non-convex energy; the far field as a whole is as close to the truth as without hole.
    assert np.percentile(np.abs(out - ref)[far], 99.9) < 0.03
    assert np.abs(out - clean)[far].mean() < np.abs(ref - clean)[far].mean() + 0.005


def test_an_all_nan_plane_stays_nan_and_leaves_the_other_plane_alone():
    _, noisy, _ = _step_field(0.0, size=64)
    field = np.stack([np.full_like(noisy, np.nan), noisy])
    out = logtv_denoise(field)
    assert np.isnan(out[0]).all()
    np.testing.assert_allclose(out[1], logtv_denoise(noisy), atol=1e-5)


def test_for_noise_makes_denoising_scale_equivariant():
    _, noisy, _ = _step_field(30.0, size=64)
    small = logtv_denoise(noisy * 0.2, LogTVConfig.for_noise(0.2 * NOISE))
    ref = logtv_denoise(noisy, LogTVConfig.for_noise(NOISE))
    np.testing.assert_allclose(small, 0.2 * ref, atol=1e-4)
    cfg = LogTVConfig.for_noise(NOISE)
    assert cfg.lam == pytest.approx(LogTVConfig().lam)
    assert cfg.eps == pytest.approx(LogTVConfig().eps)


def test_zero_lambda_returns_the_input():
    x = np.random.default_rng(0).normal(size=(2, 16, 16)).astype(np.float32)
    np.testing.assert_array_equal(logtv_denoise(x, LogTVConfig(lam=0.0)), x)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_matches_cpu():
    _, noisy, _ = _step_field(30.0, size=128)
    t = torch.from_numpy(noisy)
    on_gpu = logtv_denoise(t.cuda())
    assert on_gpu.is_cuda
    np.testing.assert_allclose(on_gpu.cpu().numpy(), logtv_denoise(t).numpy(), atol=1e-3)
    from_numpy = logtv_denoise(noisy, device="cuda")
    assert isinstance(from_numpy, np.ndarray)


def test_bad_input_is_rejected_with_a_clear_error():
    with pytest.raises(ValueError, match="shape"):
        logtv_denoise(np.zeros(10, np.float32))
    with pytest.raises(ValueError, match="shape"):
        logtv_denoise(torch.zeros(1, 1, 1, 4, 4))
    with pytest.raises(TypeError):
        logtv_denoise([[1.0, 2.0], [3.0, 4.0]])
    with pytest.raises(TypeError):
        logtv_denoise(np.zeros((4, 4), np.complex64))
    with pytest.raises(ValueError, match="lam"):
        LogTVConfig(lam=-1.0)
    with pytest.raises(ValueError, match="eps"):
        LogTVConfig(eps=0.0)
    with pytest.raises(ValueError, match="eps"):
        LogTVConfig(eps=-0.1)
    with pytest.raises(ValueError, match="iters"):
        LogTVConfig(outer_iters=0)


# --- confidence-weighted log-TV -------------------------------------------------------

PATCH_ERROR = 1.5  # px, how wrong the field is inside a "changed" patch


def _fault_with_changed_patches(size: int = 160, seed: int = 3):
    """A (2, H, W) fault field with changed patches, and its σ.

    dx steps by 1.5 px and dy by −1.0 px across a line 20° from vertical, on top of a
    smooth ramp + bump; 0.1 px noise, σ = 0.1 px, 0.2 px within 2 px of the fault. Five
    round patches are off by ±1.5 px (+ 0.3 px noise) with σ = 1 px there, as a model's
    field over land-cover change. Returns (clean, f, sigma, patches (H, W) bool, dist).
    """
    rng = np.random.default_rng(seed)
    r, c = np.mgrid[0:size, 0:size].astype(float)
    a = np.deg2rad(20.0)
    dist = (c - size / 2 - 0.3) * np.cos(a) + (r - size / 2) * np.sin(a)
    smooth = 0.003 * r - 0.002 * c + 0.4 * np.exp(-((r - 60) ** 2 + (c - 50) ** 2)
                                                    / (2 * 30.0**2))
    clean = np.stack([smooth + 1.5 * (dist >= 0), 0.5 * smooth - 1.0 * (dist >= 0)])
    f = clean + rng.normal(0.0, NOISE, clean.shape)
    sigma = np.where(np.abs(dist) < 2, 0.2, NOISE) * np.ones_like(clean)
    patches = np.zeros((size, size), bool)
    for pr, pc, rad in [(30, 30, 10), (120, 40, 13), (40, 125, 11), (125, 125, 9),
                        (80, 100, 8)]:
        inside = (r - pr) ** 2 + (c - pc) ** 2 <= rad**2
        patches |= inside
        f[:, inside] += rng.choice([-PATCH_ERROR, PATCH_ERROR], size=(2, 1))
        f[:, inside] += rng.normal(0.0, 0.3, (2, int(inside.sum())))
        sigma[:, inside] = 1.0
    return clean, f.astype(np.float32), sigma.astype(np.float32), patches, dist


@functools.cache
def _weighted_and_plain():
    clean, f, sigma, patches, dist = _fault_with_changed_patches()
    return (clean, f, sigma, patches, dist,
            logtv_denoise(f, weights=weights_from_sigma(sigma), weights_reference=1.0),
            logtv_denoise(f))


def _epe(u, clean, mask):
    return float(np.hypot(*(u - clean))[mask].mean())


def test_weighted_logtv_fills_changed_patches_from_confident_neighbours():
    clean, _, _, patches, dist, weighted, plain = _weighted_and_plain()
    inside = _epe(weighted, clean, patches)
    assert _epe(plain, clean, patches) > 1.5  # unweighted log-TV keeps the wrong patches
    assert inside < 0.15
    away = ~patches & (np.abs(dist) > 3)
    assert _epe(weighted, clean, away) < _epe(plain, clean, away) + 0.01


def test_weighted_logtv_keeps_the_fault_step_height_within_five_percent():
    clean, _, _, patches, dist, weighted, _ = _weighted_and_plain()
    left = (dist > -6) & (dist < -2) & ~patches
    right = (dist > 2) & (dist < 6) & ~patches
    for k, true_step in ((0, 1.5), (1, -1.0)):
        height = np.median(weighted[k][right]) - np.median(weighted[k][left])
        true = np.median(clean[k][right]) - np.median(clean[k][left])
        assert abs(true - true_step) < 0.1  # the strips measure the step
        assert abs(height - true) < 0.05 * abs(true)  # measured: 4.3 % (dx), 0.0 % (dy)


def test_equal_weights_give_the_unweighted_result():
    _, f, _, _, _ = _fault_with_changed_patches(size=64)
    plain = logtv_denoise(f)
    np.testing.assert_allclose(logtv_denoise(f, weights=np.full(f.shape, 7.0)), plain,
                               atol=1e-5)
    # (H, W) weights broadcast over both components
    np.testing.assert_allclose(logtv_denoise(f, weights=np.full(f.shape[1:], 0.2)), plain,
                               atol=1e-5)


def test_hw_weights_equal_the_same_weights_per_component():
    _, f, sigma, _, _ = _fault_with_changed_patches(size=64)
    w = weights_from_sigma(sigma[0])
    np.testing.assert_allclose(logtv_denoise(f, weights=w),
                               logtv_denoise(f, weights=np.stack([w, w])), atol=1e-6)


def test_weighted_solve_converges_and_never_raises_the_energy():
    _, f, sigma, _, _ = _fault_with_changed_patches(size=96, seed=5)
    w = weights_from_sigma(sigma)
    cfg = LogTVConfig()
    start = logtv_energy(f, f, cfg.lam, cfg.eps, weights=w)
    energies = [start]
    for k in range(1, 7):
        u = logtv_denoise(f, LogTVConfig(outer_iters=k), weights=w)
        energies.append(logtv_energy(u, f, cfg.lam, cfg.eps, weights=w))
    drop = start - energies[-1]
    assert drop > 0
    assert all(b <= a + 1e-3 * drop for a, b in itertools.pairwise(energies))
    # the default 20 inner iterations get within 1 % of the drop a 10x longer solve gets
    long = logtv_denoise(f, LogTVConfig(inner_iters=200), weights=w)
    e_long = logtv_energy(long, f, cfg.lam, cfg.eps, weights=w)
    assert energies[-1] - e_long < 0.01 * (start - e_long)


def test_weights_are_normalised_to_a_unit_median_and_clipped():
    f = np.zeros((2, 8, 8), np.float32)
    f[0, 0, 0] = np.nan
    w = np.ones((2, 8, 8)) * 4.0
    w[:, :, :2] = 1000.0  # far above the median
    w[1, 7, 7] = 0.0
    n = normalise_weights(w, f).numpy()
    assert n[0, 0, 0] == 0.0  # NaN field pixel
    assert n[1, 7, 7] == 0.0
    np.testing.assert_allclose(n[:, 1:, 3], 1.0)
    assert n.max() == pytest.approx(WEIGHT_MAX)


def test_weights_from_sigma_floors_sigma_and_zeroes_nan():
    sigma = np.full((2, 4, 4), 0.2, np.float32)
    sigma[0, 0, 0] = 0.001  # below the floor: counts as 0.1 px
    sigma[0, 0, 1] = 0.4
    sigma[1, 1, 1] = np.nan
    w = weights_from_sigma(sigma, floor_px=0.1)
    assert w[0, 0, 0] == pytest.approx(1.0)  # floored at 0.1 px = SIGMA_REFERENCE_PX
    assert w[0, 0, 1] == pytest.approx((0.1 / 0.4) ** 2)
    assert w[1, 1, 1] == 0.0
    assert w[0, 2, 2] == pytest.approx((0.1 / 0.2) ** 2)


def test_sigma_weights_of_a_pixel_do_not_depend_on_the_rest_of_the_chunk():
    rng = np.random.default_rng(3)
    sigma = rng.uniform(0.05, 2.0, (2, 32, 32)).astype(np.float32)
    whole = weights_from_sigma(sigma)
    np.testing.assert_array_equal(weights_from_sigma(sigma[:, 8:20, 4:30]), whole[:, 8:20, 4:30])


def test_bad_weights_are_rejected():
    f = np.zeros((2, 8, 8), np.float32)
    with pytest.raises(ValueError, match="non-negative"):
        logtv_denoise(f, weights=-np.ones((8, 8)))
    with pytest.raises(ValueError, match="broadcast"):
        logtv_denoise(f, weights=np.ones((3, 8, 8)))
    with pytest.raises(ValueError, match="floor"):
        weights_from_sigma(np.ones((8, 8)), floor_px=0.0)
