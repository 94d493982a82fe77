"""The co-registration ramp: recovers a planted plane, keeps a fault, reports px and m."""

import numpy as np
import pytest

from model.okada import Fault
from model.ramp import Ramp, fit_ramp
from model.synthetic import fault_field

PLANE = ((0.3, 0.002, -0.001), (-1.2, -0.0015, 0.0025))  # (a, b·col, c·row) per component


def _plane(rows, cols):
    return np.stack([a + b * cols + c * rows for a, b, c in PLANE])


def _noisy_plane(seed=0, shape=(300, 400), outliers=0.2):
    rng = np.random.default_rng(seed)
    r, c = np.mgrid[0:shape[0], 0:shape[1]].astype(float)
    f = _plane(r, c) + rng.normal(0.0, 0.1, (2, *shape))
    bad = rng.random(shape) < outliers
    f[:, bad] += rng.uniform(-3.0, 3.0, (2, int(bad.sum())))
    return f, r, c


def test_recovers_a_planted_plane_within_0_02_px_under_noise_and_outliers():
    f, r, c = _noisy_plane()
    ramp = fit_ramp(f, None, "plane")
    assert np.abs(ramp.evaluate(r, c) - _plane(r, c)).max() < 0.02


def test_decimated_fit_gives_coefficients_for_scene_pixels():
    f, r, c = _noisy_plane(seed=1)
    stride = 4
    ramp = fit_ramp(f[:, ::stride, ::stride], None, "plane", stride=stride)
    assert np.abs(ramp.evaluate(r, c) - _plane(r, c)).max() < 0.02
    # a block-averaged read: sample (i, j) sits at scene pixel 1.5 + 4 i
    avg = f.reshape(2, 75, 4, 100, 4).mean(axis=(2, 4))
    ramp = fit_ramp(avg, None, "plane", stride=stride, offset=1.5)
    assert np.abs(ramp.evaluate(r, c) - _plane(r, c)).max() < 0.02


def test_offset_mode_fits_a_constant_and_keep_is_the_zero_ramp():
    f, r, c = _noisy_plane(seed=2)
    f = f - _plane(r, c) + np.array([0.7, -1.9])[:, None, None]
    off = fit_ramp(f, None, "offset")
    assert off.coef[0][1:] == (0.0, 0.0) and off.coef[1][1:] == (0.0, 0.0)
    assert off.coef[0][0] == pytest.approx(0.7, abs=0.01)
    assert off.coef[1][0] == pytest.approx(-1.9, abs=0.01)
    keep = fit_ramp(f, None, "keep")
    assert keep == Ramp()
    assert not keep.evaluate(r, c).any()


def test_a_changed_area_off_by_0_3_px_does_not_tilt_the_plane():
    f, r, c = _noisy_plane(seed=3, outliers=0.0)
    blob = (r - 150) ** 2 + (c - 120) ** 2 < 90**2  # 21 % of the scene
    f[:, blob] += 0.3
    ramp = fit_ramp(f, None, "plane")
    assert np.abs(ramp.evaluate(r, c) - _plane(r, c)).max() < 0.02


def test_zero_confidence_pixels_are_left_out_of_the_fit():
    f, r, c = _noisy_plane(seed=4, outliers=0.0)
    w = np.ones(f.shape)
    w[0, :100] = 0.0  # dx: the top third is not trusted
    f[0, :100] += 5.0 * np.sin(c[:100] / 7.0)  # and is wild there
    ramp = fit_ramp(f, w, "plane")
    assert ramp.n_used[0] <= 200 * 400 < ramp.n_used[1]
    assert np.abs(ramp.evaluate(r, c) - _plane(r, c)).max() < 0.02


@pytest.mark.parametrize("rake,dip", [(180.0, 89.0), (0.0, 80.0), (90.0, 35.0), (-90.0, 55.0)])
def test_removing_the_fitted_ramp_does_not_eat_the_rupture(rake, dip):
    """A 100 x 40 px surface-breaking fault (peak ~2 px) in a 512² scene, measured with
    0.1 px noise, plus a planted ramp: after the fitted ramp is removed (fitted on a 2x
    decimated read), the EPE stays within 5 % of the EPE of the field with no ramp."""
    size = 512
    rng = np.random.default_rng(int(rake) % 7)
    r, c = np.mgrid[0:size, 0:size].astype(float)
    fault = Fault(east=size / 2 + 20, north=-size / 2 + 10, top_depth=0.0, strike_deg=30.0,
                  dip_deg=dip, length=100.0, width=40.0, rake_deg=rake, slip=4.0)
    truth = np.stack(fault_field(fault)(c, r))
    assert np.hypot(*truth).max() > 1.5
    measured = truth + rng.normal(0.0, 0.1, truth.shape)
    planted = measured + _plane(r, c)
    ramp = fit_ramp(planted[:, ::2, ::2], None, "plane", stride=2)
    before = np.hypot(*(measured - truth)).mean()
    after = np.hypot(*(planted - ramp.evaluate(r, c) - truth)).mean()
    assert after <= 1.05 * before


def test_as_dict_converts_to_east_north_metres():
    ramp = Ramp("plane", ((0.5, 0.01, 0.02), (-1.0, 0.03, 0.04)), (10, 10))
    d = ramp.as_dict(xres=10.0, yres=-10.0)
    assert d["dx_px"] == {"offset": 0.5, "per_col": 0.01, "per_row": 0.02}
    assert d["east_m"]["offset"] == pytest.approx(5.0)  # east = dx·xres
    assert d["north_m"]["offset"] == pytest.approx(10.0)  # north = −dy·|yres|
    assert d["east_m"]["per_easting"] == pytest.approx(0.01)
    assert d["east_m"]["per_northing"] == pytest.approx(-0.02)  # rows run south
    assert d["north_m"]["per_easting"] == pytest.approx(-0.03)
    assert d["north_m"]["per_northing"] == pytest.approx(0.04)


def test_bad_input_is_rejected():
    f = np.zeros((2, 16, 16))
    with pytest.raises(ValueError, match="mode"):
        fit_ramp(f, None, "tilt")
    with pytest.raises(ValueError, match="shape"):
        fit_ramp(np.zeros((16, 16)), None, "plane")
    with pytest.raises(ValueError, match="non-negative"):
        fit_ramp(f, -np.ones((16, 16)), "plane")
    with pytest.raises(ValueError, match="usable"):
        fit_ramp(np.full((2, 16, 16), np.nan), None, "offset")
