"""The displacement cube (Zarr v2): schema, CRS, pair appends, block writes, resumption."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pytest
import xarray as xr
import zarr
from affine import Affine
from rasterio.crs import CRS

from pipeline import cube

H, W, C, RES = 70, 90, 32, 10.0  # 3x3 blocks, the last row/column partial (6 and 26 px)
X0, Y0 = 500_000.0, 4_000_000.0  # upper-left corner (m), EPSG:32611
X = X0 + RES * (np.arange(W) + 0.5)
Y = Y0 - RES * (np.arange(H) + 0.5)
ATTRS = {"software_version": "0.1.0", "model_name": "microflow-small",
         "model_weights_sha256": "ab" * 32, "model_iterations": 3, "tile_core_px": C,
         "halo_px": 16, "logtv_lambda": 0.05, "logtv_epsilon": 1e-3, "band": "red",
         "search_bbox": [-117.8, 35.5, -117.3, 35.9], "created": "2024-01-01T00:00:00+00:00",
         "search": {"collection": "sentinel-2-l2a", "max_cloud": 20}}
BLOCKS = [(bi, bj) for bi in range(3) for bj in range(3)]


def _create(path, **kw) -> None:
    args = {"x": X, "y": Y, "crs": "EPSG:32611", "chunk": C, "attrs": ATTRS} | kw
    cube.create_cube(path, **args)


def _add(path, k: int = 0) -> int:
    return cube.add_pair(path, pre_time=datetime(2019, 7, 1 + k, 18, 40),
                         post_time=datetime(2019, 7, 11 + k, 18, 40),
                         pre_id=f"S2A_pre_{k}", post_id=f"S2B_post_{k}", attrs={"k": k})


def _fields(seed: int) -> dict[str, np.ndarray]:
    """Whole-grid fields: float32 displacements (m) and a valid mask with a hole."""
    rng = np.random.default_rng(seed)
    out = {n: rng.normal(0, 1, (H, W)).astype(np.float32) for n in cube.DATA_VARS}
    valid = (rng.random((H, W)) > 0.1).astype(np.uint8)
    for n in cube.DATA_VARS:
        out[n][valid == 0] = np.nan
    out["valid"] = valid
    return out


def _block(fields: dict[str, np.ndarray], bi: int, bj: int) -> tuple[int, int, dict]:
    rows, cols = slice(bi * C, (bi + 1) * C), slice(bj * C, (bj + 1) * C)
    return bi * C, bj * C, {n: a[rows, cols] for n, a in fields.items()}


def _write_all(path, pair: int, fields: dict[str, np.ndarray]) -> None:
    for bi, bj in BLOCKS:
        cube.write_block(path, pair, *_block(fields, bi, bj))


def _store_contents(path) -> dict[str, np.ndarray]:
    """Every array of the store, read back with zarr."""
    g = zarr.open_group(str(path), mode="r")
    return {name: np.asarray(arr[...]) for name, arr in g.arrays()}


@pytest.fixture
def path(tmp_path):
    p = tmp_path / "cube.zarr"
    _create(p)
    return p


def test_new_cube_has_the_design_schema_with_zero_pairs(path):
    ds = cube.open_cube(path)
    assert ds.sizes == {"pair": 0, "y": H, "x": W}
    for name in cube.DATA_VARS:
        assert ds[name].dims == ("pair", "y", "x")
        assert ds[name].dtype == np.float32
        assert ds[name].attrs["units"] == "m"
        assert ds[name].attrs["long_name"]
    assert ds.valid.dtype == np.uint8
    assert list(ds.valid.attrs["flag_values"]) == [0, 1, 2, 3, 4]
    assert ds.valid.attrs["flag_meanings"] == "no_data measured cloud edge low_confidence"
    for name in ("east_sigma", "north_sigma"):
        assert ds[name].encoding["grid_mapping"] == "spatial_ref"
    assert ds.pre_time.dtype == ds.post_time.dtype == np.dtype("datetime64[ns]")
    np.testing.assert_array_equal(ds.x, X)
    np.testing.assert_array_equal(ds.y, Y)
    assert ds.x.attrs["standard_name"] == "projection_x_coordinate"
    assert ds.y.attrs["standard_name"] == "projection_y_coordinate"
    assert ds.x.attrs["units"] == ds.y.attrs["units"] == "m"


def test_every_variable_has_grid_mapping_long_name_units_and_chunks_1_c_c(path):
    g = zarr.open_group(str(path), mode="r")
    for name in cube.BLOCK_VARS:
        attrs = dict(g[name].attrs)
        assert attrs["grid_mapping"] == "spatial_ref"
        assert attrs["long_name"] and attrs["units"]
        assert g[name].chunks == (1, C, C)
        assert g[name].metadata.zarr_format == 2
    ds = cube.open_cube(path)  # decode_coords="all": grid_mapping moves to encoding
    assert "spatial_ref" in ds.coords
    for name in cube.BLOCK_VARS:
        assert ds[name].encoding["grid_mapping"] == "spatial_ref"
        assert ds[name].encoding["chunks"] == (1, C, C)


def test_global_attributes_hold_conventions_and_json_able_provenance(path):
    attrs = cube.open_cube(path).attrs
    assert attrs["Conventions"] == "CF-1.8"
    for key in ("software_version", "model_name", "model_weights_sha256", "model_iterations",
                "tile_core_px", "halo_px", "logtv_lambda", "logtv_epsilon", "band", "created"):
        assert attrs[key] == ATTRS[key]
    assert list(attrs["search_bbox"]) == ATTRS["search_bbox"]
    assert json.loads(attrs["search"]) == ATTRS["search"]  # nested: stored as JSON text


def test_crs_and_transform_round_trip_through_open_zarr(path):
    ds = xr.open_zarr(path, decode_coords="all")
    assert ds.rio.crs == CRS.from_epsg(32611)
    assert ds.rio.transform() == Affine(RES, 0, X0, 0, -RES, Y0)
    assert ds.east.rio.crs == CRS.from_epsg(32611)
    assert ds.spatial_ref.attrs["crs_wkt"].startswith("PROJCS")


def test_add_pair_grows_pair_and_same_ids_return_the_same_index(path):
    assert _add(path, 0) == 0
    assert _add(path, 1) == 1
    assert _add(path, 0) == 0  # rerun: no duplicate
    ds = cube.open_cube(path)
    assert ds.sizes["pair"] == 2
    np.testing.assert_array_equal(ds.pair, [0, 1])
    assert [str(v) for v in ds.pre_id.values] == ["S2A_pre_0", "S2A_pre_1"]
    assert [str(v) for v in ds.post_id.values] == ["S2B_post_0", "S2B_post_1"]
    assert ds.pre_time.values[1] == np.datetime64("2019-07-02T18:40", "ns")
    assert ds.post_time.values[0] == np.datetime64("2019-07-11T18:40", "ns")
    assert cube.pair_provenance(ds, 1) == {"k": 1}


def test_pair_times_are_stored_in_utc_to_the_microsecond_and_none_as_nat(path):
    pre = datetime(2023, 2, 6, 10, 17, 34, 123456, tzinfo=timezone(timedelta(hours=3)))
    cube.add_pair(path, pre_time=pre, post_time=None, pre_id="a", post_id="b")
    cube.add_pair(path, pre_time="2023-02-01T08:13:21.024Z", post_time=np.datetime64("NaT"),
                  pre_id="a", post_id="c")
    ds = cube.open_cube(path)
    assert ds.pre_time.values[0] == np.datetime64("2023-02-06T07:17:34.123456", "ns")
    assert ds.pre_time.values[1] == np.datetime64("2023-02-01T08:13:21.024", "ns")
    assert np.isnat(ds.post_time.values).all()
    assert pre.astimezone(UTC).hour == 7


def test_new_pair_reads_nan_and_valid_0_until_written(path):
    index = _add(path)
    ds = cube.open_cube(path).isel(pair=index)
    assert np.isnan(ds.east.values).all() and np.isnan(ds.north_raw.values).all()
    assert (ds.valid.values == 0).all()
    assert cube.done_blocks(path, index) == set()


def test_written_blocks_read_back_exactly_including_edge_blocks(path):
    index = _add(path)
    fields = _fields(1)
    _write_all(path, index, fields)
    ds = cube.open_cube(path).isel(pair=index)
    for name, expected in fields.items():
        np.testing.assert_array_equal(ds[name].values, expected)
    assert cube.done_blocks(path, index) == set(BLOCKS)


def test_appending_a_pair_keeps_the_first_pairs_data(path):
    first = _fields(1)
    _write_all(path, _add(path, 0), first)
    second = _add(path, 1)
    _write_all(path, second, _fields(2))
    ds = cube.open_cube(path)
    for name, expected in first.items():
        np.testing.assert_array_equal(ds[name].isel(pair=0).values, expected)
    assert cube.done_blocks(path, 0) == cube.done_blocks(path, 1) == set(BLOCKS)


def test_consolidated_metadata_is_current_after_add_pair(path):
    _add(path, 0)
    _add(path, 1)
    ds = xr.open_zarr(path, consolidated=True, decode_coords="all")
    assert ds.sizes["pair"] == 2
    assert [str(v) for v in ds.post_id.values] == ["S2B_post_0", "S2B_post_1"]


@pytest.mark.parametrize(("row0", "col0", "shape", "why"), [
    (16, 0, (C, C), "not a multiple"),
    (0, 33, (C, C), "not a multiple"),
    (0, 0, (C, C - 1), "must be"),  # short block away from the edge
    (64, 0, (C, C), "must be"),  # the bottom edge block is 6 rows
    (0, 64, (C, C), "must be"),  # the right edge block is 26 columns
])
def test_misaligned_blocks_are_rejected(path, row0, col0, shape, why):
    index = _add(path)
    data = {n: np.zeros(shape, np.float32) for n in cube.DATA_VARS}
    data["valid"] = np.ones(shape, np.uint8)
    with pytest.raises(ValueError, match=why):
        cube.write_block(path, index, row0, col0, data)
    assert cube.done_blocks(path, index) == set()


def test_blocks_with_missing_variables_or_unknown_pair_are_rejected(path):
    index = _add(path)
    _, _, data = _block(_fields(1), 0, 0)
    with pytest.raises(ValueError, match="missing"):
        cube.write_block(path, index, 0, 0, {k: v for k, v in data.items() if k != "north"})
    with pytest.raises(ValueError, match="add_pair"):
        cube.write_block(path, index + 1, 0, 0, data)


def test_interrupted_block_reads_invalid_and_is_not_done(path, monkeypatch):
    index = _add(path)
    fields = _fields(1)
    cube.write_block(path, index, *_block(fields, 0, 0))

    def crash(*args, **kwargs):
        raise RuntimeError("worker killed")

    monkeypatch.setattr(cube, "_write_valid", crash)  # data variables written, valid not
    with pytest.raises(RuntimeError):
        cube.write_block(path, index, *_block(fields, 0, 1))
    monkeypatch.undo()

    ds = cube.open_cube(path).isel(pair=index)
    assert np.isfinite(ds.east.values[:C, C:2 * C]).any()  # the data did land...
    assert (ds.valid.values[:C, C:2 * C] == 0).all()  # ...but does not read as measured
    np.testing.assert_array_equal(ds.valid.values[:C, :C], fields["valid"][:C, :C])
    assert cube.done_blocks(path, index) == {(0, 0)}

    cube.write_block(path, index, *_block(fields, 0, 1))  # the rerun completes it
    assert cube.done_blocks(path, index) == {(0, 0), (0, 1)}


def test_block_with_no_measurement_is_stored_and_counts_as_done(path):
    index = _add(path)
    empty = {n: np.full((C, C), np.nan, np.float32) for n in cube.DATA_VARS}
    empty["valid"] = np.zeros((C, C), np.uint8)
    cube.write_block(path, index, C, C, empty)
    assert cube.done_blocks(path, index) == {(1, 1)}


def test_interrupted_add_pair_is_redone_not_duplicated(path):
    _add(path, 0)
    g = zarr.open_group(str(path), mode="r+", use_consolidated=False)
    for name in (*cube.BLOCK_VARS, "pair", "pre_time", "pre_id"):  # crash before post_id
        g[name].resize((2, *g[name].shape[1:]))
    assert _add(path, 1) == 1
    assert _add(path, 1) == 1
    ds = cube.open_cube(path)
    assert ds.sizes["pair"] == 2
    assert [str(v) for v in ds.post_id.values] == ["S2B_post_0", "S2B_post_1"]


def test_create_cube_on_the_same_grid_keeps_the_existing_cube(path):
    _write_all(path, _add(path), _fields(1))
    _create(path, attrs={"model_name": "other"})
    ds = cube.open_cube(path)
    assert ds.sizes["pair"] == 1 and ds.attrs["model_name"] == ATTRS["model_name"]
    assert cube.done_blocks(path, 0) == set(BLOCKS)


@pytest.mark.parametrize(("change", "why"), [
    ({"x": X + RES}, "x/y"),
    ({"y": Y[:-1]}, "px"),
    ({"crs": "EPSG:32612"}, "CRS"),
    ({"chunk": 64}, "chunks"),
])
def test_create_cube_refuses_an_existing_cube_on_another_grid(path, change, why):
    with pytest.raises(ValueError, match=why):
        _create(path, **change)


def test_create_cube_refuses_a_folder_that_is_not_a_cube(tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not a displacement cube"):
        _create(folder)
    assert (folder / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize("missing", ["pre_id", "post_id", "spatial_ref", "north_sigma"])
def test_a_cube_still_being_created_is_not_yet_a_cube(path, missing):
    # create_cube writes one array after another: a reader polling the output (CI caught
    # one) must not take a group without its pair arrays for a cube and then fail on them
    import shutil

    assert cube.cube_exists(path)
    shutil.rmtree(path / missing)
    assert not cube.cube_exists(path)


def test_concurrent_block_writes_from_processes_equal_sequential_writes(tmp_path):
    from distributed import Client, LocalCluster

    fields = _fields(3)
    sequential, concurrent = tmp_path / "sequential.zarr", tmp_path / "concurrent.zarr"
    for p in (sequential, concurrent):
        _create(p)
        _add(p)
    _write_all(sequential, 0, fields)
    with LocalCluster(processes=True, n_workers=2, threads_per_worker=1,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        futures = [client.submit(cube.write_block, str(concurrent), 0, *_block(fields, bi, bj),
                                 pure=False) for bi, bj in BLOCKS]
        client.gather(futures)
    a, b = _store_contents(sequential), _store_contents(concurrent)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert cube.done_blocks(concurrent, 0) == cube.done_blocks(sequential, 0) == set(BLOCKS)


def test_rerunning_add_pair_refreshes_consolidated_metadata_left_stale_by_a_crash(
        path, monkeypatch):
    monkeypatch.setattr(cube, "_consolidate", lambda path: None)  # died before consolidating
    _add(path)
    monkeypatch.undo()
    assert xr.open_zarr(path, consolidated=True).sizes["pair"] == 0  # readers: old state
    assert _add(path) == 0
    assert xr.open_zarr(path, consolidated=True).sizes["pair"] == 1


def test_pairs_list_identity_and_completion_and_reset_empties_a_pair(path):
    fields = _fields(1)
    i = cube.add_pair(path, pre_time=None, post_time=None, pre_id="a", post_id="b", key="k1")
    assert cube.add_pair(path, pre_time=None, post_time=None, pre_id="a", post_id="b",
                         key="k1") == i  # same identity: same pair
    j = cube.add_pair(path, pre_time=None, post_time=None, pre_id="a", post_id="b", key="k2")
    assert (i, j) == (0, 1)
    _write_all(path, i, fields)
    cube.set_complete(path, i)
    entries = cube.pairs(path)
    assert [(e.index, e.key, e.complete) for e in entries] == [(0, "k1", True),
                                                                (1, "k2", False)]
    assert cube.open_cube(path).complete.values.tolist() == [1, 0]
    cube.reset_pair(path, i, pre_time=None, post_time=None, key="k3", attrs={"new": 1})
    assert cube.done_blocks(path, i) == set() == cube.done_blocks(path, i, "measure")
    ds = cube.open_cube(path)
    assert np.isnan(ds.east.values[i]).all() and (ds.valid.values[i] == 0).all()
    assert cube.pairs(path)[i].key == "k3" and not cube.pairs(path)[i].complete
    assert cube.pair_provenance(ds, i) == {"new": 1}


def test_a_stage_marker_is_written_last(path, monkeypatch):
    index = _add(path)
    _, _, data = _block(_fields(1), 0, 0)
    measure = {n: data[n] for n in cube.MEASURE_VARS}
    real = cube._write_data_vars

    def crash_before_marker(p, idx, d, names, *rest):
        real(p, idx, d, tuple(n for n in names if n != "north_sigma"), *rest)
        raise RuntimeError("worker killed")

    monkeypatch.setattr(cube, "_write_data_vars", crash_before_marker)
    with pytest.raises(RuntimeError):
        cube.write_block(path, index, 0, 0, measure)
    monkeypatch.undo()
    assert cube.done_blocks(path, index, "measure") == set()
    cube.write_block(path, index, 0, 0, measure)
    assert cube.done_blocks(path, index, "measure") == {(0, 0)}
    assert cube.done_blocks(path, index) == set()  # finished only with east, north, valid


def test_nested_provenance_values_read_back_as_objects_not_json_strings(path):
    cube.add_pair(path, pre_time="2019-07-02T18:40", post_time="2019-07-11T18:40",
                  pre_id="a", post_id="b", attrs={"fit": {"dx_px": {"offset": 0.25}}})
    cube.update_provenance(path, 0, {"source_model": {"detected": False, "trace": [[1, 2]]},
                                     "value": np.float32(1.5)})
    prov = cube.pair_provenance(cube.open_cube(path), 0)
    assert prov["fit"]["dx_px"]["offset"] == 0.25
    assert prov["source_model"] == {"detected": False, "trace": [[1, 2]]}
    assert prov["value"] == 1.5
