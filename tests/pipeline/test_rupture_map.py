"""The rupture map through ``microflow pair`` on small generated scenes: the GeoJSON's
schema (RFC 7946 lon/lat, trace LineStrings, offset Points), the trace within 2 px of the
planted rupture, the slip within 20 % + 0.3 m, the file in the provenance; an empty map
for a uniform shift; ``--no-rupture-map``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from pyproj import Transformer
from rasterio.transform import from_origin

from model.okada import Fault, fault_trace
from model.synthetic import fault_field, resample_post
from pipeline import cube
from pipeline.demo import TEXTURE

H = W = 256
RES = 10.0
X0, Y0 = 600000.0, 4200000.0
T = from_origin(X0, Y0, RES, RES)
CRS = "EPSG:32611"
MICROFLOW = str(Path(sys.executable).with_name("microflow"))
FAST = ["--tile", "128", "--halo", "32", "--workers", "1", "--no-quicklooks", "-q"]
# right-lateral, vertical, through the scene (pixel units: east = col, north = -row)
FAULT = Fault(east=W / 2 + 0.3, north=-(H / 2 + 0.4), top_depth=0.0, strike_deg=25.0,
              dip_deg=90.0, length=4 * H, width=3 * H, rake_deg=180.0, slip=1.2)


def _write(path: Path, array: np.ndarray) -> Path:
    with rasterio.open(path, "w", driver="GTiff", width=W, height=H, count=1, dtype="uint16",
                       crs=CRS, transform=T, nodata=0) as dst:
        dst.write(np.clip(np.rint(array), 1, 65535).astype(np.uint16), 1)
    return path


def _scene(d: Path, fn) -> tuple[Path, Path]:
    with rasterio.open(TEXTURE) as src:
        tex = src.read(1).astype(np.float64)
    pre = tex[16:16 + H, 16:16 + W]
    post, _ = resample_post(tex, fn, (H, W), origin=(16, 16))
    return _write(d / "pre.tif", pre), _write(d / "post.tif", post)


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([MICROFLOW, *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=600)


@pytest.fixture(scope="module")
def rupture_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("rupture")
    pre, post = _scene(d, fault_field(FAULT))
    res = _run("pair", str(pre), str(post), "--out", str(d / "r.zarr"), *FAST, cwd=d)
    assert res.returncode == 0, res.stderr[-3000:]
    return d, res


def _to_px(lonlat: list) -> np.ndarray:
    to_xy = Transformer.from_crs("EPSG:4326", CRS, always_xy=True)
    ll = np.atleast_2d(np.asarray(lonlat, dtype=np.float64))
    x, y = to_xy.transform(ll[:, 0], ll[:, 1])
    return np.stack([(x - X0) / RES - 0.5, (Y0 - y) / RES - 0.5], axis=1)  # (col, row)


def _dist_to_trace(px: np.ndarray) -> np.ndarray:
    (e0, n0), (e1, n1) = fault_trace(FAULT)
    a, b = np.array([e0, -n0]), np.array([e1, -n1])
    t = np.clip(((px - a) @ (b - a)) / ((b - a) @ (b - a)), 0, 1)
    return np.hypot(*(px - (a + t[:, None] * (b - a))).T)


def test_pair_writes_the_rupture_geojson_with_the_trace_and_the_slip(rupture_run):
    d, res = rupture_run
    path = d / "r_pair0_rupture.geojson"
    assert f"quick-look: {path}" in res.stdout  # listed with the products
    g = json.loads(path.read_text())
    assert g["type"] == "FeatureCollection" and g["properties"]["rupture_found"] is True
    assert "crs" not in g  # RFC 7946: WGS 84 lon/lat only
    traces = [f for f in g["features"] if f["properties"]["kind"] == "trace"]
    offsets = [f for f in g["features"] if f["properties"]["kind"] == "offset"]
    assert traces and all(f["geometry"]["type"] == "LineString" for f in traces)
    assert len(offsets) >= 10 and all(f["geometry"]["type"] == "Point" for f in offsets)
    lon, lat = traces[0]["geometry"]["coordinates"][0]
    assert -116.2 < lon < -115.6 and 37.7 < lat < 38.1  # UTM 11N, 600 km E, 4200 km N
    verts = np.concatenate([_to_px(f["geometry"]["coordinates"]) for f in traces])
    assert _dist_to_trace(verts).max() <= 2.0
    true = FAULT.slip * RES  # m, right-lateral: all fault-parallel
    ok = []
    for f in offsets:
        p = f["properties"]
        for k in ("distance_along_m", "slip_parallel_m", "slip_perpendicular_m",
                  "sigma_parallel_m", "sigma_perpendicular_m"):
            assert np.isfinite(p[k])
        assert _dist_to_trace(_to_px(f["geometry"]["coordinates"]))[0] <= 2.0
        ok.append(abs(p["slip_parallel_m"] - true) <= 0.2 * true + 0.3
                  and abs(p["slip_perpendicular_m"]) <= 0.2 * true + 0.3)
    assert np.mean(ok) >= 0.8
    prov = cube.pair_provenance(cube.open_cube(d / "r.zarr"), 0)["rupture_map"]
    assert prov["geojson"] == str(path) and prov["rupture_found"] is True
    assert Path(prov["figure"]).is_file()


@pytest.mark.slow  # two runs of the command; model-level: tests/model/test_rupture.py
def test_uniform_shift_gives_an_empty_map_and_the_option_turns_it_off(tmp_path):
    pre, post = _scene(tmp_path, lambda c, r: (np.full_like(c, 1.3), np.full_like(r, -0.8)))
    res = _run("pair", str(pre), str(post), "--out", str(tmp_path / "u.zarr"), *FAST,
               cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    g = json.loads((tmp_path / "u_pair0_rupture.geojson").read_text())
    assert g["features"] == [] and g["properties"]["rupture_found"] is False
    assert g["properties"]["reason"]
    assert not (tmp_path / "u_pair0_rupture.png").exists()
    res = _run("pair", str(pre), str(post), "--out", str(tmp_path / "v.zarr"), *FAST,
               "--no-rupture-map", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert not (tmp_path / "v_pair0_rupture.geojson").exists()


@pytest.mark.slow  # the whole real pair through the command (minutes on 2 cores)
def test_no_trace_on_the_committed_real_pair(tmp_path):
    from bench.real import REAL_DIR

    pre = next(Path(REAL_DIR).glob("pre_*.tif"))
    post = next(Path(REAL_DIR).glob("post_*.tif"))
    res = _run("pair", str(pre), str(post), "--out", str(tmp_path / "real.zarr"), "-q",
               "--no-quicklooks", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    g = json.loads((tmp_path / "real_pair0_rupture.geojson").read_text())
    assert g["properties"]["rupture_found"] is False and g["features"] == []


def test_a_source_model_trace_in_the_cube_crs_becomes_a_corridor_on_the_grid():
    from pipeline.rupture_map import SEED_CORRIDOR_PX, _seed_mask

    x = X0 + RES * (np.arange(40) + 0.5)
    y = Y0 - RES * (np.arange(30) + 0.5)  # north-up: y decreases with the row
    line = [[x[5], y[10]], [x[35], y[10]]]  # along row 10, columns 5 to 35
    mask = _seed_mask({"detected": True, "trace": line}, x, y)
    rows, cols = np.nonzero(mask)
    assert set(rows) == set(range(10 - int(SEED_CORRIDOR_PX), 10 + int(SEED_CORRIDOR_PX) + 1))
    assert cols.min() >= 5 - SEED_CORRIDOR_PX and cols.max() <= 35 + SEED_CORRIDOR_PX
    assert _seed_mask({"detected": False, "trace": line}, x, y) is None
    assert _seed_mask(None, x, y) is None
