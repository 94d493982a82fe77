"""GIS access: the cube through the GDAL that rasterio bundles (``ZARR:"cube.zarr":/east``),
``microflow export`` to Cloud-Optimized GeoTIFFs (and NetCDF), and older Zarr v3 cubes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import xarray as xr
from affine import Affine

from pipeline import cube
from pipeline.export import EXPORT_VARS, export_pair

H, W, C, RES = 70, 90, 32, 10.0  # 3x3 blocks, the last row/column partial
X0, Y0 = 500_000.0, 4_000_000.0
X = X0 + RES * (np.arange(W) + 0.5)
Y = Y0 - RES * (np.arange(H) + 0.5)
MICROFLOW = str(Path(sys.executable).with_name("microflow"))


def _fields(seed: int) -> dict[str, np.ndarray]:
    """Whole-grid fields with every flag, NaN displacements wherever valid != 1."""
    rng = np.random.default_rng(seed)
    valid = rng.choice(list(cube.FLAGS), size=(H, W), p=[0.05, 0.8, 0.05, 0.05, 0.05])
    out = {n: rng.normal(0, 1, (H, W)).astype(np.float32) for n in cube.DATA_VARS}
    for n in ("east", "north", "east_raw", "north_raw"):
        out[n][valid != cube.MEASURED] = np.nan
    for n in ("east_sigma", "north_sigma"):
        out[n] = np.abs(out[n])
        out[n][valid == cube.NO_DATA] = np.nan
    out["valid"] = valid.astype(np.uint8)
    return out


def _write_pair(path, k: int, fields: dict[str, np.ndarray], complete: bool = True) -> int:
    i = cube.add_pair(path, pre_time="2019-07-01T18:40", post_time=f"2019-07-{11 + k}T18:40",
                      pre_id="S2A_pre", post_id=f"S2B_post_{k}", attrs={"k": k})
    for r0 in range(0, H, C):
        for c0 in range(0, W, C):
            block = {n: a[r0:r0 + C, c0:c0 + C] for n, a in fields.items()}
            cube.write_block(path, i, r0, c0, block)
    if complete:
        cube.set_complete(path, i)
    return i


@pytest.fixture(scope="module")
def two_pairs(tmp_path_factory) -> tuple[Path, list[dict]]:
    path = tmp_path_factory.mktemp("gis") / "cube.zarr"
    cube.create_cube(path, x=X, y=Y, crs="EPSG:32611", chunk=C, attrs={"k": "v"})
    fields = [_fields(1), _fields(2)]
    for k, f in enumerate(fields):
        _write_pair(path, k, f)
    return path, fields


@pytest.mark.parametrize("name", EXPORT_VARS)
def test_gdal_opens_each_variable_of_the_cube_with_its_crs_grid_and_values(two_pairs, name):
    path, fields = two_pairs
    with rasterio.open(f'ZARR:"{path}":/{name}') as ds:  # one band per pair
        assert ds.crs.to_epsg() == 32611
        assert ds.res == (RES, RES)
        assert ds.transform == Affine(RES, 0, X0, 0, -RES, Y0)
        assert (ds.height, ds.width, ds.count) == (H, W, 2)
        for pair in range(2):
            np.testing.assert_array_equal(ds.read(pair + 1), fields[pair][name])
        assert ds.units == ("1" if name == "valid" else "m",) * 2
    with rasterio.open(f'ZARR:"{path}":/{name}:1') as ds:  # pair 1 alone (older GDAL too)
        assert ds.count == 1 and ds.crs.to_epsg() == 32611
        np.testing.assert_array_equal(ds.read(1), fields[1][name])


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")  # the root
def test_gdal_lists_the_variables_and_reads_valid_flags_and_nan_nodata(two_pairs):
    path, _ = two_pairs
    with rasterio.open(str(path)) as ds:
        names = {s.rsplit(":", 1)[-1].lstrip("/") for s in ds.subdatasets}
    assert set(EXPORT_VARS) <= names
    with rasterio.open(f'ZARR:"{path}":/valid') as ds:
        assert ds.tags()["flag_meanings"] == "no_data measured cloud edge low_confidence"
        assert ds.nodata is None  # 0 is a flag (no_data), not a missing value
    with rasterio.open(f'ZARR:"{path}":/east') as ds:
        assert np.isnan(ds.nodata)


def test_the_cube_still_opens_with_open_zarr_and_its_crs(two_pairs):
    path, fields = two_pairs
    ds = xr.open_zarr(path, decode_coords="all")
    assert ds.rio.crs.to_epsg() == 32611
    assert ds.rio.transform() == Affine(RES, 0, X0, 0, -RES, Y0)
    np.testing.assert_array_equal(ds.east.values[1], fields[1]["east"])
    assert [str(v) for v in ds.post_id.values] == ["S2B_post_0", "S2B_post_1"]


def test_export_writes_cogs_with_overviews_crs_units_and_nan_where_not_measured(
        two_pairs, tmp_path):
    path, fields = two_pairs
    files = export_pair(path, 1, tmp_path / "out")
    assert [f.name for f in files] == [f"{n}.tif" for n in EXPORT_VARS]
    for f, name in zip(files, EXPORT_VARS, strict=True):
        with rasterio.open(f) as ds:
            assert ds.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
            assert ds.overviews(1), f"{name} has no overviews"
            assert ds.crs.to_epsg() == 32611
            assert ds.transform == Affine(RES, 0, X0, 0, -RES, Y0)
            values = ds.read(1)
            assert ds.tags()["post_id"] == "S2B_post_1" and ds.tags()["pair"] == "1"
            if name == "valid":
                assert ds.nodata is None and values.dtype == np.uint8
                tags = ds.tags(1)
                assert tags["flag_values"] == "0 1 2 3 4"
                assert tags["flag_meanings"] == "no_data measured cloud edge low_confidence"
                assert "2 cloud" in ds.descriptions[0]
                assert ds.colormap(1)[1][:3] == (46, 160, 67)
            else:
                assert ds.units == ("m",) and np.isnan(ds.nodata)
                assert values.dtype == np.float32
            np.testing.assert_array_equal(values, fields[1][name])
    with rasterio.open(files[0]) as ds:  # east: NaN exactly where not measured
        assert np.array_equal(np.isnan(ds.read(1)), fields[1]["valid"] != cube.MEASURED)


def test_export_of_an_unfinished_pair_is_refused_or_shows_no_number_from_a_half_block(
        tmp_path, monkeypatch):
    path = tmp_path / "c.zarr"
    cube.create_cube(path, x=X, y=Y, crs="EPSG:32611", chunk=C, attrs={})
    fields = _fields(3)
    i = _write_pair(path, 0, fields, complete=False)
    cube.reset_pair(path, i, pre_time=None, post_time=None, key="k2")
    block = {n: a[:C, :C] for n, a in fields.items()}
    monkeypatch.setattr(cube, "_write_valid", lambda *a: (_ for _ in ()).throw(OSError("x")))
    with pytest.raises(OSError):  # a crash: the data lands, the valid marker does not
        cube.write_block(path, i, 0, 0, block)
    monkeypatch.undo()
    assert np.isfinite(cube.open_cube(path).east.values[i, :C, :C]).any()
    with pytest.raises(ValueError, match="not complete") as err:
        export_pair(path, i, tmp_path / "out")
    assert "\n" not in str(err.value)
    files = export_pair(path, i, tmp_path / "out", allow_incomplete=True)
    for f in files[:4]:
        with rasterio.open(f) as ds:
            assert np.isnan(ds.read(1)).all()


def test_export_refuses_a_pair_that_is_not_in_the_cube(two_pairs, tmp_path):
    path, _ = two_pairs
    with pytest.raises(ValueError, match="there is no pair 2"):
        export_pair(path, 2, tmp_path)
    assert not any(tmp_path.iterdir())


def test_netcdf_export_opens_with_xarray_and_gdal_with_crs_and_flags(two_pairs, tmp_path):
    path, fields = two_pairs
    (nc,) = export_pair(path, 0, tmp_path, fmt="netcdf")
    ds = xr.open_dataset(nc, decode_coords="all")
    assert ds.attrs["Conventions"] == "CF-1.8" and ds.rio.crs.to_epsg() == 32611
    assert ds.east.attrs["units"] == "m" and ds.east.dims == ("y", "x")
    np.testing.assert_array_equal(ds.east.values, fields[0]["east"])
    np.testing.assert_array_equal(ds.valid.values, fields[0]["valid"])
    assert ds.valid.attrs["flag_meanings"] == "no_data measured cloud edge low_confidence"
    assert ds.pre_time.values == np.datetime64("2019-07-01T18:40", "ns")
    ds.close()
    with rasterio.open(f"netcdf:{nc}:north") as r:
        assert r.crs.to_epsg() == 32611 and r.res == (RES, RES)


def test_export_command_writes_the_five_cogs_and_says_where(two_pairs, tmp_path):
    path, _ = two_pairs
    res = subprocess.run([MICROFLOW, "export", str(path), "--pair", "0", "--out",
                          str(tmp_path / "pair0")], capture_output=True, text=True,
                         env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "pair0").iterdir()) == sorted(
        f"{n}.tif" for n in EXPORT_VARS)
    assert f"exported: {tmp_path / 'pair0' / 'east.tif'}" in res.stdout
    bad = subprocess.run([MICROFLOW, "export", str(path), "--pair", "7", "--out",
                          str(tmp_path / "x")], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines()[-1].startswith("microflow export: error: ")


def test_export_help_says_units_and_defaults_as_values():
    res = subprocess.run([MICROFLOW, "export", "--help"], capture_output=True, text=True,
                         timeout=120)
    text = " ".join(res.stdout.split())
    assert "(default 0)" in text and "(default cog)" in text and "in m" in text
    assert "microflow export out/ridgecrest.zarr --pair 0 --out out/pair0" in res.stdout


def test_a_zarr_v3_cube_of_earlier_versions_is_still_read_appended_and_exported(tmp_path):
    path = tmp_path / "old.zarr"
    cube.create_cube(path, x=X, y=Y, crs="EPSG:32611", chunk=C, attrs={}, zarr_format=3)
    assert cube.zarr_format(path) == 3 and (path / "zarr.json").is_file()
    fields = _fields(4)
    assert _write_pair(path, 0, fields) == 0
    assert _write_pair(path, 1, _fields(5)) == 1
    assert cube.done_blocks(path, 1) == {(a, b) for a in range(3) for b in range(3)}
    ds = cube.open_cube(path)
    assert ds.rio.crs.to_epsg() == 32611 and ds.complete.values.tolist() == [1, 1]
    np.testing.assert_array_equal(ds.east.values[0], fields["east"])
    files = export_pair(path, 0, tmp_path / "out")
    with rasterio.open(files[0]) as r:
        np.testing.assert_array_equal(r.read(1), fields["east"])


def test_a_v3_cube_copied_to_the_current_format_opens_in_gdal_and_resumes(tmp_path):
    old, new = tmp_path / "old.zarr", tmp_path / "new.zarr"
    cube.create_cube(old, x=X, y=Y, crs="EPSG:32611", chunk=C, attrs={"k": "v"},
                     zarr_format=3)
    fields = _fields(6)
    _write_pair(old, 0, fields)
    i = cube.add_pair(old, pre_time=None, post_time=None, pre_id="a", post_id="b", key="kb")
    cube.write_block(old, i, 0, 0, {n: a[:C, :C] for n, a in fields.items()})  # unfinished
    cube.copy_cube(old, new)
    assert cube.zarr_format(new) == 2
    with rasterio.open(f'ZARR:"{new}":/east:0') as r:
        assert r.crs.to_epsg() == 32611
        np.testing.assert_array_equal(r.read(1), fields["east"])
    assert [(e.key, e.complete) for e in cube.pairs(new)] == [("", True), ("kb", False)]
    assert cube.done_blocks(new, 1) == {(0, 0)}  # what a rerun would skip
    ds = cube.open_cube(new)
    assert cube.pair_provenance(ds, 0) == {"k": 0} and ds.attrs["k"] == "v"
    assert ds.post_time.values[0] == np.datetime64("2019-07-11T18:40", "ns")

