"""The source model in the pipeline: fitted on the stored raw field, recorded as an object in
the provenance, and only its co-registration part removed from ``east``/``north``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import rasterio
import xarray as xr
from rasterio.transform import from_origin

from model.okada import Fault, fault_displacement
from model.source_fit import NUMBERS
from pipeline import cube
from pipeline.source_model import coregistration_ramp, fit_source_model, source_provenance

RES = 10.0
MICROFLOW = str(Path(sys.executable).with_name("microflow"))
KEYS = {"detected", *NUMBERS, *(f"{k}_sigma" for k in NUMBERS), "trace", "residual_rms_m",
        "coregistration"}


def _stored(fault: Fault | None, offset_px, size: int = 256, seed: int = 0):
    """A pair as the measure stage stores it: east_raw/north_raw/σ (m), chunked."""
    rng = np.random.default_rng(seed)
    x = 600000.0 + RES * (np.arange(size) + 0.5)
    y = 4200000.0 - RES * (np.arange(size) + 0.5)
    xx, yy = np.meshgrid(x, y)
    if fault is None:
        ue = un = np.zeros(xx.shape)
    else:
        ue, un, _ = fault_displacement(fault, xx, yy)
    e = ue + offset_px[0] * RES + rng.normal(0, 0.3, xx.shape)
    n = un - offset_px[1] * RES + rng.normal(0, 0.3, xx.shape)
    e[:40, :60] = np.nan  # a cloud: not measured
    n[:40, :60] = np.nan
    sig = np.full(xx.shape, 0.5)

    def arr(a):
        return (("y", "x"), da.from_array(a.astype(np.float32), chunks=128))

    return xr.Dataset({"east_raw": arr(e), "north_raw": arr(n), "east_sigma": arr(sig),
                       "north_sigma": arr(sig)}, coords={"x": x, "y": y}), (ue, un)


THRUST = Fault(601280.0, 4198720.0, 0.0, 20.0, 30.0, 12000.0, 4000.0, 90.0, 10.0)


def test_the_provenance_record_has_the_issue_keys_as_a_json_object():
    stored, _ = _stored(THRUST, (0.7, -0.5))
    fit = fit_source_model(stored, RES, -RES)
    ramp = coregistration_ramp(fit, RES, -RES)
    rec = json.loads(json.dumps(source_provenance(fit, RES, -RES, removed=ramp)))
    assert KEYS <= set(rec), KEYS - set(rec)
    assert rec["detected"] is True
    assert abs((rec["strike_deg"] - 20.0 + 180) % 360 - 180) <= 10
    # the trace is in the cube's CRS (m), near the planted one
    (x0, y0), (x1, y1) = rec["trace"]
    mid = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
    d = np.array([x1 - x0, y1 - y0]) / np.hypot(x1 - x0, y1 - y0)
    off = mid - np.array([THRUST.east, THRUST.north])
    assert abs(off[0] * d[1] - off[1] * d[0]) < 100.0  # perpendicular distance, m
    co = rec["coregistration"]
    # px on the processing grid (dx east, dy south) and m (east, north)
    assert co["offset_px"]["dx"] == pytest.approx(0.7, abs=0.05)
    assert co["offset_px"]["dy"] == pytest.approx(-0.5, abs=0.05)
    assert co["offset_m"]["north"] == pytest.approx(5.0, abs=0.5)
    assert ramp.coef[0][0] == pytest.approx(co["offset_px"]["dx"])
    assert co["removed"] is True
    for k in NUMBERS:
        assert rec[f"{k}_sigma"] is not None and rec[f"{k}_sigma"] >= 0


def test_a_pure_shift_records_no_source_and_a_missing_fit_says_why():
    stored, _ = _stored(None, (1.0, 0.3), seed=2)
    fit = fit_source_model(stored, RES, -RES)
    rec = source_provenance(fit, RES, -RES)
    assert rec["detected"] is False and rec["trace"] is None and rec["strike_deg"] is None
    assert rec["coregistration"]["offset_px"]["dx"] == pytest.approx(1.0, abs=0.01)
    empty = source_provenance(None, RES, -RES, why="only 3 usable samples")
    assert KEYS <= set(empty) and empty["detected"] is False and "3" in empty["why"]


# ---------------------------------------------------------------------------------------
# end to end through `microflow pair` with default settings


def _texture() -> np.ndarray:
    from pipeline.demo import TEXTURE

    with rasterio.open(TEXTURE) as src:
        return src.read(1).astype(np.float64)


def _write(path: Path, array: np.ndarray, transform) -> Path:
    h, w = array.shape
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=1, dtype="uint16",
                       crs="EPSG:32611", transform=transform, nodata=0) as dst:
        dst.write(np.clip(np.rint(array), 1, 65535).astype(np.uint16), 1)
    return path


def _scene(tmp: Path, fault: Fault | None, offset_px, size: int = 256):
    """pre/post GeoTIFFs of the demo texture warped by ``fault`` (m, local frame with the
    scene's top-left corner at (0, 0)) plus a planted offset; and the true field (px)."""
    from model.synthetic import resample_post

    def truth(cols, rows):
        if fault is None:
            return np.zeros_like(cols), np.zeros_like(rows)
        ue, un, _ = fault_displacement(fault, (cols + 0.5) * RES, -(rows + 0.5) * RES)
        return ue / RES, -un / RES

    def fn(cols, rows):
        dx, dy = truth(cols, rows)
        return dx + offset_px[0], dy + offset_px[1]

    tex = _texture()
    post, _ = resample_post(tex, fn, (size, size), (16, 16))
    pre = tex[16:16 + size, 16:16 + size]
    t = from_origin(0.0, 0.0, RES, RES)
    rows, cols = np.mgrid[0:size, 0:size].astype(float)
    return (_write(tmp / "pre.tif", pre, t), _write(tmp / "post.tif", post, t),
            np.stack(truth(cols, rows)))


def _pair(tmp: Path, pre: Path, post: Path) -> xr.Dataset:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run([MICROFLOW, "pair", str(pre), str(post), "--out", str(tmp / "c.zarr"),
                          "--workers", "1", "--no-quicklooks", "-q"], capture_output=True,
                         text=True, cwd=tmp, env=env, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    return cube.open_cube(tmp / "c.zarr")


def test_pair_on_a_thrust_with_a_planted_offset_keeps_the_ground_motion(tmp_path):
    # a thrust crossing the scene, longer than it: its hanging wall moves, its footwall
    # does not, so the robust median is not the co-registration offset. Its width (2 km)
    # is below the scene's (2.56 km), as a 5 km fault width is below a 512 px scene at
    # 10 m; a fault much wider than the scene trades its dip against the offset (the
    # same scene with a 4 km width gave a 0.047 px offset error: see the doc page)
    fault = Fault(1400.0, -1300.0, 0.0, 200.0, 30.0, 10000.0, 2000.0, 95.0, 9.0)
    offset = (0.6, -0.8)
    pre, post, truth = _scene(tmp_path, fault, offset)
    ds = _pair(tmp_path, pre, post)
    prov = cube.pair_provenance(ds, 0)
    src, ramp = prov["source_model"], prov["ramp_fit"]
    p = ds.isel(pair=0)
    valid = p.valid.values == 1
    assert valid.mean() > 0.9
    east, north = p.east.values / RES, -p.north.values / RES
    err = (np.median(np.abs(east - truth[0])[valid]), np.median(np.abs(north - truth[1])[valid]))
    raw = np.stack([p.east_raw.values / RES, -p.north_raw.values / RES])
    raw_err = [np.median(np.abs(raw[k] - offset[k] - truth[k])[valid]) for k in (0, 1)]
    print("source", src["detected"], src["strike_deg"], "removed", ramp["dx_px"], ramp["dy_px"],
          "errors px", err, "raw minus planted offset", raw_err)
    assert src["detected"] is True
    assert abs((src["strike_deg"] - 200.0 + 180) % 360 - 180) <= 10
    assert abs(ramp["dx_px"]["offset"] - offset[0]) <= 0.05
    assert abs(ramp["dy_px"]["offset"] - offset[1]) <= 0.05
    assert err[0] <= 0.05 and err[1] <= 0.05, err
    # *_raw keep the offset; NaN wherever not measured
    assert abs(np.median((raw[0] - truth[0])[valid]) - offset[0]) <= 0.05
    assert np.isnan(p.east.values[~valid]).all()


def test_pair_on_a_pure_shift_detects_no_source_and_is_flat(tmp_path):
    pre, post, _ = _scene(tmp_path, None, (0.9, 0.4))
    ds = _pair(tmp_path, pre, post)
    src = cube.pair_provenance(ds, 0)["source_model"]
    p = ds.isel(pair=0)
    valid = p.valid.values == 1
    assert src["detected"] is False and src["trace"] is None
    assert abs(float(np.median(p.east.values[valid]))) / RES < 0.02
    assert abs(float(np.median(p.north.values[valid]))) / RES < 0.02
