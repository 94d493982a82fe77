import itertools

import numpy as np
import pytest
import torch

from model.denoise import LogTVConfig, logtv_denoise, logtv_energy


def _step_field(angle_deg=0.0, size=256, seed=0):
    rng = np.random.default_rng(seed)
    r, c = np.mgrid[0:size, 0:size].astype(float)
    a = np.deg2rad(angle_deg)
    # signed distance to a line through the centre
    dist = (c - size / 2) * np.cos(a) + (r - size / 2) * np.sin(a)
    clean = 0.5 * np.exp(-((r - 100) ** 2 + (c - 150) ** 2) / (2 * 60**2)) + 0.002 * r
    clean = clean + 2.0 * (dist >= 0)
    noisy = clean + rng.normal(0, 0.1, clean.shape)
    return clean, noisy.astype(np.float32), dist


@pytest.mark.parametrize("angle", [0.0, 30.0])
def test_noise_drops_threefold_away_from_step_and_step_is_kept(angle):
    clean, noisy, dist = _step_field(angle)
    u = logtv_denoise(noisy)
    far = np.abs(dist) > 8
    inner = np.zeros_like(far)
    inner[8:-8, 8:-8] = True
    assert 0.1 / (u - clean)[far & inner].std() >= 3.0
    left = (dist > -6) & (dist < -2) & inner
    right = (dist > 2) & (dist < 6) & inner
    height = np.median(u[right]) - np.median(u[left])
    true = np.median(clean[right]) - np.median(clean[left])
    assert abs(height - true) / true < 0.10


def test_energy_never_increases_over_reweighting_steps():
    _, noisy, _ = _step_field(seed=1)
    noisy = noisy[:96, :96]
    energies = [logtv_energy(logtv_denoise(noisy, LogTVConfig(outer_iters=k, inner_iters=80)),
                             noisy, 0.03, 0.1) for k in (1, 2, 4, 8)]
    assert energies[0] < logtv_energy(noisy, noisy, 0.03, 0.1)
    for a, b in itertools.pairwise(energies):
        assert b <= a + 1e-3 * abs(a)


@pytest.mark.parametrize("shape", [(64, 80), (2, 64, 80), (3, 2, 48, 64)])
def test_shapes_and_types_round_trip(shape):
    x = np.random.default_rng(0).normal(size=shape).astype(np.float64)
    out = logtv_denoise(x, LogTVConfig(outer_iters=2, inner_iters=10))
    assert isinstance(out, np.ndarray) and out.shape == shape and out.dtype == np.float32
    t = torch.from_numpy(x.astype(np.float32))
    out_t = logtv_denoise(t, LogTVConfig(outer_iters=2, inner_iters=10))
    assert torch.is_tensor(out_t) and out_t.shape == t.shape
    np.testing.assert_allclose(out_t.numpy(), out, atol=1e-5)


def test_nan_pixels_stay_nan_and_barely_disturb_their_neighbours():
    _clean, noisy, _ = _step_field()
    ref = logtv_denoise(noisy)
    holed = noisy.copy()
    holed[100:110, 50:60] = np.nan
    out = logtv_denoise(holed)
    assert np.isnan(out[100:110, 50:60]).all()
    assert np.isfinite(out[:90]).all()
    assert np.abs(out[:90] - ref[:90]).max() < 0.02


def test_bad_input_is_rejected():
    with pytest.raises(ValueError):
        logtv_denoise(np.zeros(10))
    with pytest.raises(ValueError):
        LogTVConfig(lam=-1.0)
    with pytest.raises(ValueError):
        LogTVConfig(eps=0.0)
    with pytest.raises(TypeError):
        logtv_denoise([[1.0, 2.0]])
