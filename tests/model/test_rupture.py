"""model.rupture on generated Okada ruptures (bench.rupture_eval's cases): the trace within
2 px of the true discontinuity, the slip within 20 % + 0.3 m of the true step, σ that
covers the errors, the sign conventions, and no trace where there is no surface step."""

from __future__ import annotations

import numpy as np
import pytest

from bench.rupture_eval import RES, cases, make_field, score, true_step, true_trace
from model.rupture import find_rupture, slip_along_strike

CASES = {c.name: c for c in cases()}
RUPTURES = [n for n, c in CASES.items() if c.ruptured]
QUIET = [n for n, c in CASES.items() if not c.ruptured]


def _measure(name: str, seed: int = 0, noise_m: float = 0.1):
    case = make_field(CASES[name], np.random.default_rng(seed), noise_m)
    return case, find_rupture(case.east, case.north, case.sigma, case.sigma,
                              pixel_size=(RES, RES))


@pytest.mark.parametrize("name", RUPTURES)
def test_trace_within_2_px_and_slip_within_20_percent_plus_0_3_m(name):
    case, rup = _measure(name)
    s = score(case, rup)
    assert rup.segments, rup.reason
    assert s["trace_max_px"] <= 2.0  # every vertex
    assert s["missed"] <= 0.15  # of the true trace (inside the detector's border)
    assert s["offsets"] >= 10
    assert s["slip_ok"] >= 0.9  # both components, each offset


@pytest.mark.parametrize("name", QUIET)
def test_no_trace_on_blind_faults_and_uniform_shifts(name):
    for seed in (0, 1):
        _, rup = _measure(name, seed, noise_m=0.25)
        assert rup.segments == [], name


def test_sigma_covers_the_errors_at_a_stated_rate():
    errs, sig = [], []
    for name in ("strike-slip", "thrust", "normal", "bent trace"):
        case, rup = _measure(name, seed=3, noise_m=0.25)
        for seg in rup.segments:
            for o in seg.offsets:
                tp, tn = true_step(case, o.col, o.row, o.strike_deg)
                errs += [abs(o.slip_parallel - tp), abs(o.slip_perpendicular - tn)]
                sig += [o.sigma_parallel, o.sigma_perpendicular]
    errs, sig = np.array(errs), np.array(sig)
    assert len(errs) > 60
    assert 0.6 <= np.mean(errs <= sig) <= 0.92  # about 68 % within 1σ
    assert np.mean(errs <= 2 * sig) >= 0.9


def test_signs_right_lateral_and_extension_positive_whichever_way_the_trace_runs():
    signs = {"strike-slip": (1, 0), "left-lateral": (-1, 0), "thrust": (0, -1),
             "normal": (0, 1)}
    for name, (sp, sn) in signs.items():
        case, rup = _measure(name)
        par = np.median([o.slip_parallel for s in rup.segments for o in s.offsets])
        perp = np.median([o.slip_perpendicular for s in rup.segments for o in s.offsets])
        if sp:
            assert np.sign(par) == sp and abs(par) > 1.5, name
        if sn:
            assert np.sign(perp) == sn and abs(perp) > 1.0, name
        fwd = slip_along_strike([rup.segments[0].vertices], case.east, case.north,
                                case.sigma, case.sigma, (RES, RES))[0]
        back = slip_along_strike([rup.segments[0].vertices[::-1]], case.east, case.north,
                                 case.sigma, case.sigma, (RES, RES))[0]
        assert np.median([o.slip_parallel for o in fwd.offsets]) == pytest.approx(
            np.median([o.slip_parallel for o in back.offsets]), abs=0.2)
        assert np.median([o.slip_perpendicular for o in fwd.offsets]) == pytest.approx(
            np.median([o.slip_perpendicular for o in back.offsets]), abs=0.2)


def test_a_planted_offset_changes_neither_trace_nor_slip():
    _, a = _measure("strike-slip")
    _, b = _measure("planted offset")
    assert len(a.segments) == len(b.segments)
    for sa, sb in zip(a.segments, b.segments, strict=True):
        np.testing.assert_allclose(sa.vertices, sb.vertices, atol=0.01)  # px (float32)
        np.testing.assert_allclose([o.slip_parallel for o in sa.offsets],
                                   [o.slip_parallel for o in sb.offsets], atol=0.01)


def test_the_step_over_gives_two_segments_and_unmeasured_pixels_stay_out():
    case, rup = _measure("step-over")
    assert len(rup.segments) == 2
    # a cloud over part of the trace: no offset uses it, the rest is still found
    east = case.east.copy()
    east[80:110, :] = np.nan
    north = case.north.copy()
    north[80:110, :] = np.nan
    cut = find_rupture(east, north, case.sigma, case.sigma, pixel_size=(RES, RES))
    assert cut.segments
    for seg in cut.segments:
        for o in seg.offsets:
            assert not 80 - 3 <= o.row <= 110 + 3


def test_a_seed_corridor_starts_a_trace_that_the_field_alone_would_not():
    from model.rupture import RuptureConfig

    case = make_field(CASES["strike-slip"], np.random.default_rng(0), 0.1)
    strict = RuptureConfig(z_high=1e6)  # nothing seeds by itself
    rows, cols = np.mgrid[0:case.east.shape[0], 0:case.east.shape[1]]
    far = np.zeros(case.east.shape, bool)
    far[:, :20] = True  # a corridor away from the rupture seeds nothing
    args = (case.east, case.north, case.sigma, case.sigma)
    assert find_rupture(*args, pixel_size=(RES, RES), cfg=strict).segments == []
    assert find_rupture(*args, pixel_size=(RES, RES), cfg=strict, seed_mask=far).segments == []
    ((a, b),) = true_trace(case)
    d = b - a
    t = np.clip(((cols - a[0]) * d[0] + (rows - a[1]) * d[1]) / (d @ d), 0, 1)
    corridor = np.hypot(cols - (a[0] + t * d[0]), rows - (a[1] + t * d[1])) <= 6
    rup = find_rupture(*args, pixel_size=(RES, RES), cfg=strict, seed_mask=corridor)
    assert rup.segments and score(case, rup)["trace_max_px"] <= 2.0
