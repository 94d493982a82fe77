"""The Zarr cube: schema, CRS round trip, append, region writes, crash safety."""

from datetime import UTC, datetime

import numpy as np
import pytest
import xarray as xr

from pipeline import cube

C = 64
X = 500005.0 + 10.0 * np.arange(150)
Y = 3999995.0 - 10.0 * np.arange(100)


def _block(value, h=C, w=C, valid=1):
    data = {k: np.full((h, w), value, np.float32) for k in cube.DATA_VARS}
    data["valid"] = np.full((h, w), valid, np.uint8)
    return data


@pytest.fixture
def path(tmp_path):
    p = tmp_path / "c.zarr"
    cube.create_cube(p, x=X, y=Y, crs=32611, chunk=C,
                     attrs={"model_name": "m", "tile_core_px": C, "search_bbox": [1, 2, 3, 4]})
    return p


def test_schema_follows_design(path):
    cube.add_pair(path, pre_time=datetime(2023, 1, 1, tzinfo=UTC),
                  post_time=datetime(2023, 3, 1, tzinfo=UTC), pre_id="A", post_id="B")
    ds = xr.open_zarr(path, decode_coords="all")
    assert dict(ds.sizes) == {"pair": 1, "y": 100, "x": 150}
    for name in cube.DATA_VARS:
        assert ds[name].dtype == np.float32 and ds[name].attrs["units"] == "m"
        assert ds[name].encoding["grid_mapping"] == "spatial_ref"
        assert ds[name].encoding["chunks"] == (1, C, C)
    assert ds.valid.dtype == np.uint8
    assert list(ds.valid.attrs["flag_values"]) == [0, 1]
    assert ds.valid.attrs["flag_meanings"] == "no_data measured"
    assert ds.pre_time.dtype.kind == "M" and str(ds.pre_time.values[0])[:10] == "2023-01-01"
    assert str(ds.post_id.values[0]) == "B"
    assert ds.attrs["Conventions"] == "CF-1.8" and ds.attrs["model_name"] == "m"
    assert ds.x.attrs["units"] == "m" and ds.y.attrs["standard_name"] == "projection_y_coordinate"


def test_crs_and_transform_round_trip(path):
    cube.add_pair(path, pre_time=None, post_time=None, pre_id="A", post_id="B")
    ds = cube.open_cube(path)
    assert ds.rio.crs.to_epsg() == 32611
    t = ds.rio.transform()
    assert (t.a, t.e, t.c, t.f) == (10.0, -10.0, 500000.0, 4000000.0)


def test_unwritten_blocks_read_as_no_data_and_written_ones_as_data(path):
    i = cube.add_pair(path, pre_time=None, post_time=None, pre_id="A", post_id="B")
    cube.write_block(path, i, C, 0, _block(1.5))
    cube.write_block(path, i, 0, 2 * C, _block(2.0, h=C, w=150 - 2 * C))  # right edge block
    ds = cube.open_cube(path)
    assert float(ds.east[0, C, 0]) == 1.5 and int(ds.valid[0, C, 0]) == 1
    assert float(ds.north[0, 0, 149]) == 2.0
    assert np.isnan(float(ds.east[0, 0, 0])) and int(ds.valid[0, 0, 0]) == 0
    assert cube.done_blocks(path, i) == {(1, 0), (0, 2)}


def test_a_crash_between_data_and_valid_never_reads_as_data(path):
    import zarr

    i = cube.add_pair(path, pre_time=None, post_time=None, pre_id="A", post_id="B")
    g = zarr.open_group(str(path), mode="r+")
    for name in cube.DATA_VARS:  # what a crash right before `valid` leaves behind
        g[name][i, 0:C, 0:C] = 9.0
    ds = cube.open_cube(path)
    assert int(ds.valid[0, :C, :C].max()) == 0
    assert (0, 0) not in cube.done_blocks(path, i)


def test_an_all_invalid_block_still_counts_as_done(path):
    i = cube.add_pair(path, pre_time=None, post_time=None, pre_id="A", post_id="B")
    cube.write_block(path, i, 0, 0, _block(np.nan, valid=0))
    assert cube.done_blocks(path, i) == {(0, 0)}


def test_appending_a_pair_keeps_the_first_and_same_ids_resume(path):
    a = cube.add_pair(path, pre_time=None, post_time=None, pre_id="A", post_id="B")
    cube.write_block(path, a, 0, 0, _block(3.0))
    assert cube.add_pair(path, pre_time=None, post_time=None, pre_id="A", post_id="B") == a
    b = cube.add_pair(path, pre_time=datetime(2024, 1, 1), post_time=None, pre_id="C",
                      post_id="D", attrs={"grid": "11SKU"})
    assert b == 1
    ds = cube.open_cube(path)
    assert ds.sizes["pair"] == 2 and float(ds.east[0, 0, 0]) == 3.0
    assert np.isnan(float(ds.east[1, 0, 0]))
    assert '"11SKU"' in ds.attrs["pair_attrs"]


def test_misaligned_blocks_and_other_grids_are_refused(path):
    i = cube.add_pair(path, pre_time=None, post_time=None, pre_id="A", post_id="B")
    with pytest.raises(ValueError, match="aligned"):
        cube.write_block(path, i, 10, 0, _block(1.0))
    with pytest.raises(ValueError, match="fill one chunk"):
        cube.write_block(path, i, 0, 0, _block(1.0, h=C - 1))
    with pytest.raises(ValueError, match="another grid"):
        cube.create_cube(path, x=X + 5, y=Y, crs=32611, chunk=C, attrs={})
    cube.create_cube(path, x=X, y=Y, crs=32611, chunk=C, attrs={})  # same grid: no-op


def test_concurrent_block_writes_from_worker_processes_match_sequential(tmp_path):
    from distributed import Client, LocalCluster

    paths = []
    for name in ("seq.zarr", "par.zarr"):
        p = tmp_path / name
        cube.create_cube(p, x=X, y=Y, crs=32611, chunk=C, attrs={})
        cube.add_pair(p, pre_time=None, post_time=None, pre_id="A", post_id="B")
        paths.append(p)
    blocks = [(r, c) for r in (0, C) for c in (0, C, 2 * C)]

    def data(r, c):
        h, w = min(C, 100 - r), min(C, 150 - c)
        return _block(r + c / 1000, h, w)

    for r, c in blocks:
        cube.write_block(paths[0], 0, r, c, data(r, c))
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        client.gather([client.submit(cube.write_block, str(paths[1]), 0, r, c, data(r, c))
                       for r, c in blocks])
    a, b = cube.open_cube(paths[0]), cube.open_cube(paths[1])
    xr.testing.assert_identical(a[[*cube.DATA_VARS, "valid"]],
                                b[[*cube.DATA_VARS, "valid"]])
