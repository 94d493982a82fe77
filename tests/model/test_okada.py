import dataclasses
import time
import warnings

import numpy as np
import pytest

from model.okada import Fault, fault_displacement, fault_trace, okada85_surface

# Okada (1985) Table 2, Case 2: x=2, y=3, d=4, δ=70°, L=3, W=2, unit slip, μ = λ (ν = 0.25).
CASE2 = {"x": 2.0, "y": 3.0, "depth": 4.0, "dip_deg": 70.0, "length": 3.0, "width": 2.0}
TABLE2_CASE2 = {
    "strike_slip": ((1, 0, 0), (-8.689e-3, -4.298e-3, -2.747e-3)),
    "dip_slip": ((0, 1, 0), (-4.682e-3, -3.527e-2, -3.564e-2)),
    "tensile": ((0, 0, 1), (-2.660e-4, 1.056e-2, 3.214e-3)),
}


def _fault(**kw) -> Fault:
    base = {"east": 0.0, "north": 0.0, "top_depth": 0.0, "strike_deg": 0.0, "dip_deg": 90.0,
            "length": 200e3, "width": 20e3, "rake_deg": 0.0, "slip": 1.0}
    return Fault(**{**base, **kw})


@pytest.mark.parametrize("kind", list(TABLE2_CASE2))
def test_matches_okada_1985_table2_case2(kind):
    slips, expected = TABLE2_CASE2[kind]
    got = okada85_surface(**CASE2, u1=slips[0], u2=slips[1], u3=slips[2], poisson=0.25)
    np.testing.assert_allclose(np.array(got, dtype=float), expected, rtol=1e-3)


@pytest.mark.parametrize("h", [1e-3, 1e-4])
@pytest.mark.parametrize("slips", [(1, 0, 0), (0, 1, 0), (0, 0, 1)])
def test_vertical_dip_branch_is_the_limit_of_the_general_branch(slips, h):
    # δ = 90 uses Okada's cos δ = 0 forms of I1..I5; δ < 90 the general ones. Linear
    # extrapolation of the general branch to δ = 90 (error O(h²)) must land on the vertical one.
    # h = 1e-4° (cos δ ≈ 2e-6) also checks that the general branch stays precise near 90°.
    x, y = np.meshgrid([-2.0, 0.0, 1.5, 3.0, 5.0], [-3.0, -0.5, 0.0, 0.7, 4.0])
    vertical = np.array(okada85_surface(x, y, 4.0, 90.0, 3.0, 2.0, *slips))
    near = np.array(okada85_surface(x, y, 4.0, 90.0 - h, 3.0, 2.0, *slips))
    nearer = np.array(okada85_surface(x, y, 4.0, 90.0 - 2 * h, 3.0, 2.0, *slips))
    np.testing.assert_allclose(2 * near - nearer, vertical, atol=1e-7 * np.abs(vertical).max())


def test_long_vertical_strike_slip_matches_2d_screw_dislocation():
    # Surface-breaking, locked below depth D: u = -sign(y) (U/π) arctan(D/|y|) (left-lateral).
    length, depth, slip = 4000.0, 10.0, 1.0
    y = np.array([-50.0, -5.0, -1.0, -0.1, 0.1, 1.0, 5.0, 50.0])
    ux, uy, uz = okada85_surface(length / 2, y, depth, 90.0, length, depth, slip, 0.0, 0.0)
    expected = -np.sign(y) * slip / np.pi * np.arctan(depth / np.abs(y))
    np.testing.assert_allclose(ux, expected, atol=1e-4)
    np.testing.assert_allclose(uy, 0.0, atol=1e-6)
    np.testing.assert_allclose(uz, 0.0, atol=1e-6)


@pytest.mark.parametrize("dip", [30.0, 70.0, 90.0])
def test_blind_fault_field_is_continuous_across_okada_singular_lines(dip):
    # ξ = 0 (x = 0, L), q = 0 (y = d cot δ) and the top edge's projection are not physical.
    depth, length, width = 4.0, 3.0, 2.0
    cd, sd = np.cos(np.radians(dip)), np.sin(np.radians(dip))
    x0 = np.array([0.0, length, 1.0, 0.0, length])
    y0 = np.array([1.0, -2.0, depth * cd / sd, width * cd, depth * cd / sd])
    eps = 1e-9
    for slips in [(1, 0, 0), (0, 1, 0), (0, 0, 1)]:
        def u(x, y, slips=slips):
            return np.array(okada85_surface(x, y, depth, dip, length, width, *slips))

        jumps = np.abs(u(x0 - eps, y0 - eps) - u(x0 + eps, y0 + eps))
        assert jumps.max() < 1e-6 * np.abs(u(x0, y0)).max()


def test_vertical_surface_fault_trace_gets_average_of_both_sides():
    ux, _, _ = okada85_surface(np.array([-1e-3, 0.0, 1e-3]) + 50.0, np.array([-1e-6, 0.0, 1e-6]),
                               20.0, 90.0, 100.0, 20.0, 1.0, 0.0, 0.0)
    assert ux[0] == pytest.approx(0.5, abs=1e-3)
    assert ux[1] == 0.0
    assert ux[2] == pytest.approx(-0.5, abs=1e-3)


@pytest.mark.parametrize(("rake", "sense"), [(180.0, -1.0), (0.0, 1.0)])
def test_vertical_strike_slip_jump_across_trace_equals_slip_with_aki_richards_sense(rake, sense):
    # North-striking: right-lateral (180) moves the east side south relative to the west side.
    fault = _fault(rake_deg=rake, slip=2.0)
    ue, un, _ = fault_displacement(fault, np.array([-100.0, 100.0]), np.zeros(2))
    jump = un[1] - un[0]
    assert jump == pytest.approx(sense * 2.0, rel=0.03)
    np.testing.assert_allclose(ue, 0.0, atol=1e-6)


@pytest.mark.parametrize("strike", [0.0, 37.0, 200.0])
@pytest.mark.parametrize(("rake", "up"), [(90.0, True), (-90.0, False)])
def test_thrust_lifts_and_normal_drops_the_hanging_wall(strike, rake, up):
    fault = _fault(strike_deg=strike, dip_deg=30.0, length=40e3, width=15e3, rake_deg=rake)
    s = np.radians(strike)
    right = np.array([np.cos(s), -np.sin(s)])  # unit vector to the right of strike (east, north)
    dist = np.array([2e3, -2e3])  # hanging wall (right of strike), then footwall
    _, _, uz = fault_displacement(fault, dist * right[0], dist * right[1])
    if up:
        assert uz[0] > 0.1 and uz[0] > uz[1]
    else:
        assert uz[0] < -0.1 and uz[0] < uz[1]


def test_wrapper_maps_to_okada_frame_for_east_striking_fault():
    # Strike 90°: Okada x = east, y = north; the top edge's centre sits at (L/2, W cos δ).
    fault = _fault(east=0.0, north=0.0, top_depth=1e3, strike_deg=90.0, dip_deg=50.0,
                   length=30e3, width=12e3, rake_deg=30.0, slip=1.5, opening=0.2)
    east, north = np.meshgrid(np.linspace(-40e3, 40e3, 9), np.linspace(-40e3, 40e3, 7))
    cd, sd = np.cos(np.radians(50.0)), np.sin(np.radians(50.0))
    want = okada85_surface(east + 15e3, north + 12e3 * cd, 1e3 + 12e3 * sd, 50.0, 30e3, 12e3,
                           1.5 * np.cos(np.radians(30.0)), 1.5 * np.sin(np.radians(30.0)), 0.2)
    np.testing.assert_allclose(fault_displacement(fault, east, north), want, atol=1e-12)


def test_rotating_strike_by_90_degrees_rotates_the_field():
    rng = np.random.default_rng(0)
    a = _fault(east=1e3, north=-2e3, top_depth=500.0, strike_deg=20.0, dip_deg=55.0,
               length=25e3, width=10e3, rake_deg=120.0, slip=1.0, opening=0.1)
    b = dataclasses.replace(a, strike_deg=110.0)
    de, dn = rng.uniform(-30e3, 30e3, (2, 200))
    ue, un, uz = fault_displacement(a, a.east + de, a.north + dn)
    # Clockwise by 90° seen from above: (e, n) -> (n, -e).
    ue_b, un_b, uz_b = fault_displacement(b, b.east + dn, b.north - de)
    np.testing.assert_allclose(ue_b, un, atol=1e-10)
    np.testing.assert_allclose(un_b, -ue, atol=1e-10)
    np.testing.assert_allclose(uz_b, uz, atol=1e-10)


def test_displacement_decays_like_inverse_square_far_from_fault():
    fault = _fault(top_depth=2e3, strike_deg=30.0, dip_deg=40.0, length=20e3, width=10e3,
                   rake_deg=60.0, opening=0.3)
    theta = np.linspace(0, 2 * np.pi, 73)

    def peak(r: float) -> float:
        return float(np.abs(fault_displacement(fault, r * np.cos(theta), r * np.sin(theta))).max())

    near, far, farther = peak(5e3), peak(50 * 20e3), peak(100 * 20e3)
    assert far < 1e-3 * near
    assert 3.0 < far / farther < 5.0


def test_fault_trace_is_top_edge_from_start_to_end_of_strike():
    (e0, n0), (e1, n1) = fault_trace(_fault(east=10.0, north=20.0, length=8.0))
    assert (e0, n0, e1, n1) == pytest.approx((10.0, 16.0, 10.0, 24.0))
    (e0, n0), (e1, n1) = fault_trace(_fault(east=10.0, north=20.0, strike_deg=90.0, length=8.0))
    assert (e0, n0, e1, n1) == pytest.approx((6.0, 20.0, 14.0, 20.0))
    assert _fault(top_depth=3.0, dip_deg=30.0, width=10.0).bottom_depth == pytest.approx(8.0)


@pytest.mark.parametrize("dip", [90.0, 45.0])
def test_256_grid_is_fast_finite_and_warning_free_even_on_trace_and_corners(dip):
    # Integer grid through the trace, its ends and beyond: every singular point is hit.
    fault = Fault(east=0.0, north=0.0, top_depth=0.0, strike_deg=0.0, dip_deg=dip,
                  length=100.0, width=40.0, rake_deg=45.0, slip=1.0, opening=0.5)
    east, north = np.meshgrid(np.arange(-128.0, 128.0), np.arange(-128.0, 128.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        start = time.perf_counter()
        out = fault_displacement(fault, east, north)
        elapsed = time.perf_counter() - start
    assert elapsed < 1.0
    for u in out:
        assert u.shape == (256, 256) and u.dtype == np.float64
        assert np.isfinite(u).all()
        assert np.abs(u).max() < 2.0


def test_inputs_broadcast_and_scalars_give_zero_d_arrays():
    ux, uy, uz = okada85_surface(np.arange(3.0)[:, None], np.arange(4.0)[None, :],
                                 4.0, 70.0, 3.0, 2.0, 1.0, 0.0, 0.0)
    assert ux.shape == uy.shape == uz.shape == (3, 4)
    assert okada85_surface(2.0, 3.0, 4.0, 70.0, 3.0, 2.0, 1.0, 0.0, 0.0)[0].shape == ()


@pytest.mark.parametrize(("override", "message"), [
    ({"dip_deg": 95.0}, "dip_deg must be in"),
    ({"dip_deg": -1.0}, "dip_deg must be in"),
    ({"width": -1.0}, "width must be > 0"),
    ({"length": 0.0}, "length must be > 0"),
    ({"top_depth": -5.0}, "top_depth must be >= 0"),
    ({"slip": -1.0}, "slip must be >= 0"),
    ({"dip_deg": 0.0}, "horizontal fault"),
    ({"strike_deg": float("nan")}, "strike_deg must be finite"),
])
def test_bad_fault_parameters_raise_value_error(override, message):
    with pytest.raises(ValueError, match=message):
        _fault(**override)


@pytest.mark.parametrize(("override", "message"), [
    ({"depth": 1.0}, "rises above the surface"),
    ({"depth": 0.0, "dip_deg": 0.0}, "depth .* must be > 0"),
    ({"dip_deg": 91.0}, "dip_deg must be in"),
    ({"width": 0.0}, "must be > 0"),
    ({"poisson": 0.6}, "poisson must be in"),
    ({"u1": float("inf")}, "u1 must be finite"),
])
def test_bad_okada_parameters_raise_value_error(override, message):
    args = {**CASE2, "u1": 1.0, "u2": 0.0, "u3": 0.0, **override}
    with pytest.raises(ValueError, match=message):
        okada85_surface(**args)
