"""The joint Okada + co-registration fit: the offset is recovered inside deforming scenes,
sources are found where they are and not where they are not."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from model.okada import Fault, fault_displacement
from model.source_fit import NUMBERS, fit_source

RES = 10.0  # m per px
SIZE = 512  # px
NOISE_PX = 0.03
SIGMA_PX = 0.05


def _grid(step: int = 8):
    rows, cols = np.mgrid[0:SIZE:step, 0:SIZE:step].astype(float)
    return cols * RES, -rows * RES  # x east, y north (m); row 0 at the top


def _field(fault: Fault | None, offset_px, seed: int = 0, step: int = 8):
    """Observed east/north (m) = fault + planted offset + noise, and the truth."""
    x, y = _grid(step)
    rng = np.random.default_rng(seed)
    if fault is None:
        ue = un = np.zeros_like(x)
    else:
        ue, un, _ = fault_displacement(fault, x, y)
    e = ue + offset_px[0] * RES + rng.normal(0, NOISE_PX * RES, x.shape)
    n = un - offset_px[1] * RES + rng.normal(0, NOISE_PX * RES, x.shape)  # north = −dy
    return x, y, e, n, ue, un


def _fit(x, y, e, n):
    return fit_source(e, n, x, y, np.full(x.shape, 1.0 / (SIGMA_PX * RES) ** 2))


def _strike_err(a: float, b: float, vertical: bool = False) -> float:
    """Strike difference (deg); modulo 180° for a (near-)vertical fault, whose mirror
    (strike + 180°, dipping the other way) is the same plane."""
    e = abs((a - b + 180.0) % 360.0 - 180.0)
    return min(e, 180.0 - e) if vertical else e


C = SIZE * RES / 2  # scene centre, m
CASES = {  # name: fault in metres (top-edge centre, top depth, strike, dip, L, W, rake, slip)
    "strike-slip surface, longer than the scene": Fault(C, -C, 0.0, 35, 85, 20000, 8000, 180, 8),
    "thrust surface, hanging wall fills half": Fault(C + 400, -C, 0.0, 160, 30, 15000, 6000,
                                                     95, 12),
    "normal surface": Fault(C - 300, -C + 200, 0.0, 250, 55, 12000, 5000, -85, 6),
    "thrust blind": Fault(C, -C - 300, 800.0, 300, 35, 14000, 6000, 90, 10),
    "strike-slip blind": Fault(C + 200, -C, 500.0, 100, 80, 18000, 7000, 0, 9),
    "normal, scene sees one end": Fault(C + 0.5 * 4000 * math.sin(math.radians(20)),
                                        -C + 0.5 * 4000 * math.cos(math.radians(20)), 0.0,
                                        20, 60, 4000, 3000, -90, 12),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_offset_and_deformation_are_recovered_inside_a_deforming_scene(name):
    fault = CASES[name]
    offset = (0.83, -0.97)  # px (dx, dy): near the 1 px the issue plants
    x, y, e, n, ue, un = _field(fault, offset, seed=len(name))
    fit = _fit(x, y, e, n)
    dx, dy = fit.offset[0] / RES, -fit.offset[1] / RES
    print(name, fit.params["strike_deg"], fit.scale_ratio, fit.snr, dx, dy)
    assert fit.detected
    assert abs(dx - offset[0]) <= 0.05 and abs(dy - offset[1]) <= 0.05, (dx, dy)
    # the field with only the fitted offset removed is the deformation
    err_e = np.median(np.abs(e - fit.offset[0] - ue)) / RES
    err_n = np.median(np.abs(n - fit.offset[1] - un)) / RES
    assert err_e <= 0.05 and err_n <= 0.05, (err_e, err_n)
    vertical = fault.dip_deg >= 80 and fit.params["dip_deg"] >= 80
    assert _strike_err(fit.params["strike_deg"], fault.strike_deg, vertical) <= 10.0
    if fault.top_depth == 0:
        assert fit.trace is not None
    # the fitted source's own field is the deformation, not the offset
    me, mn = fit.source_field(x, y)
    assert np.median(np.abs(me - ue)) / RES <= 0.05 and np.median(np.abs(mn - un)) / RES <= 0.05


def test_the_old_median_offset_would_have_taken_the_thrust_with_it():
    # the reason for the joint fit: on a thrust the robust median is the hanging wall's
    fault = CASES["thrust surface, hanging wall fills half"]
    x, y, e, n, _, _ = _field(fault, (0.0, 0.0))
    median = np.hypot(np.median(e), np.median(n)) / RES
    fit = _fit(x, y, e, n)
    assert median > 0.2, median  # what offset removal took as misregistration, px
    assert np.hypot(*fit.offset) / RES < 0.05


@pytest.mark.parametrize("offset", [(0.0, 0.0), (0.9, -0.4), (-1.0, 1.0)])
def test_a_pure_shift_is_no_source_and_its_offset_is_exact(offset):
    x, y, e, n, _, _ = _field(None, offset, seed=3)
    fit = _fit(x, y, e, n)
    assert not fit.detected, (fit.scale_ratio, fit.snr)
    assert abs(fit.offset[0] / RES - offset[0]) < 0.01
    assert abs(-fit.offset[1] / RES - offset[1]) < 0.01


def test_a_patch_of_wrong_pixels_is_not_a_fault():
    # a cloud edge or a changed parcel: a coherent blob of wrong displacement on a shift
    x, y, e, n, _, _ = _field(None, (0.4, 0.2), seed=5)
    blob = np.hypot(x - 1200, y + 3800) < 600
    e = np.where(blob, e + 4.0 * RES, e)
    n = np.where(blob, n - 3.0 * RES, n)
    fit = _fit(x, y, e, n)
    assert not fit.detected, (fit.scale_ratio, fit.snr, fit.params["Mw"])
    assert abs(fit.offset[0] / RES - 0.4) < 0.02


def test_the_record_has_every_number_with_a_finite_sigma():
    fault = CASES["strike-slip surface, longer than the scene"]
    x, y, e, n, _, _ = _field(fault, (0.2, 0.1))
    fit = _fit(x, y, e, n)
    for k in NUMBERS:
        assert math.isfinite(fit.params[k]), k
        assert math.isfinite(fit.params[f"{k}_sigma"]) and fit.params[f"{k}_sigma"] >= 0, k
    json.dumps(fit.params)
    assert abs(fit.params["slip_m"] - fault.slip) / fault.slip < 0.2
    # rake 180 = right-lateral: the fitted sense of slip is the same (or the mirror fault)
    assert math.cos(math.radians(fit.params["rake_deg"] - 180.0)) > 0.9 or (
        _strike_err(fit.params["strike_deg"], fault.strike_deg + 180) < 10)
    # Mw from μ = 30 GPa and the fitted rectangle
    m0 = 30e9 * fit.params["length_m"] * fit.params["width_m"] * fit.params["slip_m"]
    assert fit.params["Mw"] == pytest.approx((2 / 3) * (math.log10(m0) - 9.1))


def test_nan_samples_are_ignored_and_too_few_samples_raise():
    fault = CASES["normal surface"]
    x, y, e, n, _, _ = _field(fault, (0.5, 0.5))
    e = e.copy()
    e[:, :20] = np.nan  # a third of the scene unmeasured
    fit = _fit(x, y, e, n)
    assert fit.detected and abs(fit.offset[0] / RES - 0.5) < 0.05
    with pytest.raises(ValueError, match="usable samples"):
        _fit(x[:2, :2], y[:2, :2], e[:2, :2], n[:2, :2])



def test_the_committed_real_pair_shows_no_source_only_misregistration():
    # the raw field of `microflow pair` on data/real-s2-t33uuu-north (two dates, no
    # earthquake), decimated as the pipeline's fit reads it (every 12th px), with its σ
    from pathlib import Path

    f = np.load(Path(__file__).with_name("real_pair_raw_field.npz"))
    x, y = np.meshgrid(f["x"], f["y"])
    res = float(f["x"][1] - f["x"][0]) / 12
    w = np.stack([1 / (np.maximum(f[s], 0.05) * res) ** 2 for s in ("sx", "sy")])
    fit = fit_source(f["dx"] * res, -f["dy"] * res, x, y, np.where(np.isfinite(w), w, 0.0))
    assert not fit.detected, (fit.scale_ratio, fit.plane_ratio, fit.snr)
    # the best rectangle is a deep, distant one that mimics the co-registration ramp:
    # it explains hardly more than a plane does
    from model.source_fit import MAX_PLANE_RATIO

    assert fit.plane_ratio > MAX_PLANE_RATIO
