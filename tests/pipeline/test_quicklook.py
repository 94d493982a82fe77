"""Quick-looks: map and profile PNGs, fault-line estimate, fault-perpendicular profile."""

from __future__ import annotations

import math

import matplotlib.image as mpimg
import numpy as np
import pytest

from pipeline import cube, quicklook

H, W, C, RES = 160, 200, 64, 10.0
X = 400_000 + RES * (np.arange(W) + 0.5)
Y = 3_900_000 - RES * (np.arange(H) + 0.5)
CENTRE = np.array([X.mean() + 120.0, Y.mean() - 80.0])  # a point of the fault (m)
SLIP = 1.2  # fault-parallel offset across the fault (m)


def _frame(azimuth_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """Unit strike direction and right-hand normal, ``(east, north)``."""
    a = math.radians(azimuth_deg)
    d = np.array([math.sin(a), math.cos(a)])
    return d, np.array([d[1], -d[0]])


def _line(azimuth_deg: float, half_m: float = 500.0) -> quicklook.Line:
    d, _ = _frame(azimuth_deg)
    p0, p1 = CENTRE - half_m * d, CENTRE + half_m * d
    return (tuple(p0), tuple(p1))


def _step_fields(azimuth_deg: float, seed: int = 0) -> dict[str, np.ndarray]:
    """A right-lateral step of SLIP m across an oblique line, decaying away from it
    (e-folding 1 km), with noise (raw 0.2 m, denoised 0.02 m), a cloud and a no-data edge.
    Garbage (1e3 m) where valid is 0: it must never show."""
    rng = np.random.default_rng(seed)
    d, nrm = _frame(azimuth_deg)
    gx, gy = np.meshgrid(X - CENTRE[0], Y - CENTRE[1])
    dist = gx * nrm[0] + gy * nrm[1]
    parallel = -SLIP / 2 * np.sign(dist) * np.exp(-np.abs(dist) / 1000.0)
    east, north = parallel * d[0], parallel * d[1]
    valid = np.ones((H, W), np.uint8)
    valid[20:50, 30:70] = 0  # cloud
    valid[:, :4] = 0  # swath edge
    out = {"east": east + 0.02 * rng.standard_normal((H, W)),
           "north": north + 0.02 * rng.standard_normal((H, W)),
           "east_raw": east + 0.2 * rng.standard_normal((H, W)),
           "north_raw": north + 0.2 * rng.standard_normal((H, W)),
           "east_sigma": np.full((H, W), 0.2), "north_sigma": np.full((H, W), 0.2)}
    out = {k: np.where(valid == 1, v, 1e3).astype(np.float32) for k, v in out.items()}
    out["valid"] = valid
    return out


@pytest.fixture(scope="module")
def cube_path(tmp_path_factory):
    return tmp_path_factory.mktemp("ql") / "cube.zarr"


@pytest.fixture(scope="module")
def ds(cube_path):
    """A cube with pair 0: step at N35°E, pair 1: step at N120°E."""
    path = cube_path
    cube.create_cube(path, x=X, y=Y, crs="EPSG:32611", chunk=C, attrs={})
    for k, azimuth in enumerate((35.0, 120.0)):
        index = cube.add_pair(path, pre_time=f"2019-07-0{1 + k}T18:40:00Z",
                              post_time=f"2019-07-1{1 + k}T18:40:00Z",
                              pre_id=f"S2A_pre_{k}", post_id=f"S2B_post_{k}")
        fields = _step_fields(azimuth, seed=k)
        for r in range(0, H, C):
            for c in range(0, W, C):
                cube.write_block(path, index, r, c,
                                 {n: a[r:r + C, c:c + C] for n, a in fields.items()})
    return cube.open_cube(path)


def _assert_png(path, min_kb: float = 30) -> None:
    assert path.exists() and path.stat().st_size > min_kb * 1024
    img = mpimg.imread(path)
    h, w = img.shape[:2]
    assert img.ndim == 3 and 300 <= h <= 1200 and 1200 <= w <= 2400 and w > h
    assert img[..., :3].std() > 0.05  # not a blank canvas


def test_plot_maps_writes_a_non_trivial_png(ds, tmp_path):
    out = quicklook.plot_maps(ds, 0, tmp_path / "maps.png")
    assert out == tmp_path / "maps.png"
    _assert_png(out)


def _detected(azimuth_deg: float) -> dict:
    """A ``source_model`` record of a detected right-lateral fault along the step."""
    (x0, y0), (x1, y1) = _line(azimuth_deg, half_m=10_000.0)
    nums = {"Mw": 6.0, "strike_deg": azimuth_deg, "dip_deg": 89.0, "rake_deg": 180.0,
            "slip_m": SLIP, "length_m": 20_000.0, "width_m": 1_000.0, "top_depth_m": 0.0,
            "centroid_x": float(CENTRE[0]), "centroid_y": float(CENTRE[1])}
    rec = {"detected": True, **nums, **{f"{k}_sigma": 0.1 for k in nums},
           "trace": [[x0, y0], [x1, y1]], "top_edge": [[x0, y0], [x1, y1]],
           "residual_rms_m": 0.02, "coregistration": {}}
    return rec


@pytest.fixture(scope="module")
def ds_source(ds, cube_path):
    """The same cube, pair 1 with a detected source and an offset removed in provenance."""
    path = cube_path
    cube.update_provenance(path, 1, {
        "source_model": _detected(120.0), "ramp_removed": True,
        "ramp_fit": {"mode": "offset", "dx_px": {"offset": 0.25}, "dy_px": {"offset": -0.5},
                     "east_m": {"offset": 2.5}, "north_m": {"offset": 5.0}}})
    return cube.open_cube(path)


def test_plot_profile_draws_across_the_detected_trace(ds_source, tmp_path):
    out = quicklook.plot_profile(ds_source, 1, tmp_path / "profile.png")
    _assert_png(out)
    line = quicklook.clip_line(tuple(map(tuple, _detected(120.0)["trace"])), X, Y)
    (x0, y0), (x1, y1) = line  # clipped to the grid
    assert X.min() <= min(x0, x1) and max(x0, x1) <= X.max()
    assert Y.min() <= min(y0, y1) and max(y0, y1) <= Y.max()


def test_without_a_detected_source_no_fault_line_is_drawn(ds_source, tmp_path):
    with pytest.raises(ValueError, match="no fault detected"):
        quicklook.plot_profile(ds_source, 0, tmp_path / "p.png")
    out = quicklook.plot_no_fault(ds_source, 0, tmp_path / "none.png")
    assert out.exists() and out.stat().st_size > 10 * 1024
    assert quicklook.detected_source(ds_source, 0) is None


def test_titles_state_the_removed_offset_and_the_cubes_measured_share(ds_source, tmp_path):
    note = quicklook.offset_note(ds_source, 1)
    assert "+0.250 px" in note and "-0.500 px" in note and "+5.00 m" in note
    assert quicklook.offset_note(ds_source, 0) == "no co-registration offset removed"
    valid = ds_source.valid.isel(pair=1).values
    assert quicklook.measured_percent(ds_source, 1) == pytest.approx((valid == 1).mean() * 100)


def test_maps_show_the_model_and_residual_beside_a_detected_source(ds_source, tmp_path):
    one = mpimg.imread(quicklook.plot_maps(ds_source, 0, tmp_path / "a.png"))
    two = mpimg.imread(quicklook.plot_maps(ds_source, 1, tmp_path / "b.png"))
    assert two.shape[0] > 1.6 * one.shape[0]  # a second row: model and residual
    x, y, f = quicklook._masked_fields(ds_source, 1, ("east", "north"), max_px=1200)
    me, _ = quicklook.source_field(_detected(120.0), x, y)
    ok = np.isfinite(f["east"])
    # the modelled field has the measured step's sense and size
    assert np.corrcoef(me[ok], f["east"][ok])[0, 1] > 0.8


def test_blocks_mostly_unmeasured_are_not_plotted(ds):
    *_, f = quicklook._masked_fields(ds, 0, ("east",), max_px=40)  # 5 px blocks
    step = 5
    valid = ds.valid.isel(pair=0).values[: (H // step) * step, : (W // step) * step]
    share = valid.reshape(H // step, step, W // step, step).mean(axis=(1, 3))
    assert np.isnan(f["east"][share < 0.5]).all()
    assert np.isfinite(f["east"][share == 1]).all()


def test_title_names_both_scenes_and_dates(ds):
    title = quicklook.pair_title(ds, 1)
    assert "S2A_pre_1 (2019-07-02)" in title and "S2B_post_1 (2019-07-12)" in title
    assert quicklook.crs_label(ds).startswith("EPSG:32611")


@pytest.mark.parametrize(("pair", "azimuth"), [(0, 35.0), (1, 120.0)])
def test_estimate_fault_line_recovers_an_oblique_step(ds, pair, azimuth):
    (x0, y0), (x1, y1) = quicklook.estimate_fault_line(ds, pair)
    found = math.degrees(math.atan2(x1 - x0, y1 - y0))
    assert 0 <= found < 180  # canonical direction
    assert abs(found - azimuth) < 1.0
    _, nrm = _frame(azimuth)
    for px, py in ((x0, y0), (x1, y1)):  # both ends on the true line, within 2 px
        assert abs((px - CENTRE[0]) * nrm[0] + (py - CENTRE[1]) * nrm[1]) < 2 * RES
    assert math.hypot(x1 - x0, y1 - y0) > 0.5 * H * RES


def test_profile_shows_the_step_in_raw_and_denoised_values(ds):
    prof = quicklook.sample_profile(ds, 0, _line(35.0), width_m=400.0)
    dist = prof.distance.values
    assert prof.attrs["azimuth_deg"] == pytest.approx(35.0)
    assert dist.min() < -800 and dist.max() > 800
    near_left = (dist < 0) & (dist >= -5 * RES)
    near_right = (dist > 0) & (dist <= 5 * RES)
    for suffix, tol in (("", 0.05), ("_raw", 0.15)):
        parallel = prof[f"parallel{suffix}"].values
        # right-lateral: the left side moves along strike, the right side against it
        assert np.nanmean(parallel[near_left]) == pytest.approx(SLIP / 2, abs=tol)
        assert np.nanmean(parallel[near_right]) == pytest.approx(-SLIP / 2, abs=tol)
        perpendicular = prof[f"perpendicular{suffix}"].values[prof["count"].values >= 10]
        assert np.nanmax(np.abs(perpendicular)) < 4 * tol  # no fault-normal motion
    far = np.abs(dist) > 900
    assert np.nanmax(np.abs(prof.parallel.values[far])) < SLIP / 2 * math.exp(-0.8)
    # east/north are the parallel component projected on the strike direction
    d, _ = _frame(35.0)
    full = prof["count"].values >= 10
    np.testing.assert_allclose(prof.east.values[full], prof.parallel.values[full] * d[0],
                               atol=0.01)


def test_profile_never_averages_unmeasured_pixels(ds):
    prof = quicklook.sample_profile(ds, 0, _line(35.0), width_m=2000.0)
    for name in ("east", "north", "east_raw", "north_raw", "parallel"):
        assert np.nanmax(np.abs(prof[name].values)) < 2.0  # the 1e3 m garbage is masked
    assert (prof["count"].values >= 0).all() and prof["count"].values.sum() > 0


def test_profile_with_a_user_line_uses_that_line(ds, tmp_path):
    line = _line(35.0, half_m=300.0)
    out = quicklook.plot_profile(ds, 0, tmp_path / "p.png", line=line, width_m=300.0)
    assert out.exists()
    prof = quicklook.sample_profile(ds, 0, line, 300.0)
    assert prof.attrs["width_m"] == 300.0
    assert prof.attrs["line"] == [list(line[0]), list(line[1])]
