"""Cubes on an object store: ``--out s3://bucket/prefix/cube.zarr`` against a real S3 API
server on loopback (moto's server mode, started and stopped here), with credentials and
endpoint from the standard ``AWS_*`` environment only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
import xarray as xr
from rasterio.transform import from_origin
from scipy import ndimage

from pipeline import cube, store
from pipeline.config import ConfigError, RunConfig
from pipeline.demo import TEXTURE
from pipeline.process import cube_path_for, geotiff_source, process_pair
from pipeline.product_item import read_item
from pipeline.quicklook import quicklook_stem
from pipeline.writer import BlockFailedError

H = W = 256
RES = 10.0
DX, DY = 2.0, -1.6  # px
MICROFLOW = str(Path(sys.executable).with_name("microflow"))


def _write(path: Path, array: np.ndarray) -> Path:
    with rasterio.open(path, "w", driver="GTiff", width=W, height=H, count=1, dtype="uint16",
                       crs="EPSG:32611", transform=from_origin(600000.0, 4200000.0, RES, RES),
                       nodata=0) as dst:
        dst.write(np.clip(np.rint(array), 0, 65535).astype(np.uint16), 1)
    return path


@pytest.fixture(scope="module")
def shifted_pair(tmp_path_factory) -> tuple[Path, Path]:
    with rasterio.open(TEXTURE) as src:
        tex = src.read(1).astype(np.float64)
    rows, cols = np.mgrid[0:H, 0:W].astype(np.float64)
    post = ndimage.map_coordinates(tex, [rows + 16 - DY, cols + 16 - DX], order=3,
                                   mode="reflect")
    d = tmp_path_factory.mktemp("s3pair")
    return _write(d / "pre.tif", tex[16:16 + H, 16:16 + W]), _write(d / "post.tif", post)


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster, Client(cluster) as c:
        yield c


def _cfg(out: str | Path, **kw) -> RunConfig:
    settings = dict(out=str(out), tile=128, halo=32, quicklooks=False, rupture_map=False,
                    ramp="keep")
    return RunConfig.from_flat(**{**settings, **kw})


def _run(shifted_pair, out: str | Path, client, **kw):
    cfg = _cfg(out, **kw)
    return process_pair(geotiff_source(*shifted_pair, cfg), cfg, client=client, progress=False)


def _data(ds: xr.Dataset) -> xr.Dataset:
    """Variables, coordinates and attributes, less what records the run's time."""
    ds = ds[[*cube.DATA_VARS, "valid"]].load()
    ds.attrs = {}
    return ds.drop_vars("provenance")


@pytest.fixture(scope="module")
def local_cube(shifted_pair, client, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("local") / "x.zarr"
    _run(shifted_pair, out, client)
    return out


@pytest.fixture(scope="module")
def s3_cube(s3, shifted_pair, client) -> str:
    url = f"s3://{s3.bucket()}/events/x.zarr"
    res = _run(shifted_pair, url, client)
    assert res.cube == url and res.blocks_computed == 8
    return url


def test_an_s3_cube_reads_with_open_zarr_with_crs_and_the_values_of_the_local_run(
        s3, s3_cube, local_cube):
    ds = xr.open_zarr(s3_cube, storage_options=s3.options(), decode_coords="all")
    assert ds.rio.crs.to_epsg() == 32611
    assert ds.complete.values.tolist() == [1]
    assert ds.east.attrs["units"] == "m" and ds.attrs["Conventions"] == "CF-1.8"
    xr.testing.assert_identical(_data(ds), _data(cube.open_cube(local_cube)))
    assert not Path("s3:").exists()  # the old bug: a local folder named "s3:"


def test_a_rerun_into_the_s3_cube_resumes_and_computes_no_block(s3_cube, shifted_pair,
                                                                   client):
    again = _run(shifted_pair, s3_cube, client)
    assert (again.index, again.blocks_computed) == (0, 0)
    assert cube.done_blocks(s3_cube, 0) == {(0, 0), (0, 1), (1, 0), (1, 1)}


def test_append_adds_a_pair_to_an_s3_cube_and_keeps_the_first(s3, s3_cube, shifted_pair,
                                                                  client):
    fs, root = store.filesystem(s3_cube)
    copy = f"s3://{s3.bucket()}/x.zarr"
    fs.copy(root, store.filesystem(copy)[1], recursive=True)  # server-side, not recomputed
    res = _run(shifted_pair, copy, client, if_exists="append", lam=0.1)
    assert (res.index, res.blocks_computed) == (1, 8)
    ds = cube.open_cube(copy)
    assert ds.sizes["pair"] == 2 and ds.complete.values.tolist() == [1, 1]
    assert cube.pair_provenance(ds, 1)["logtv_lambda"] == 0.1
    xr.testing.assert_identical(_data(ds.isel(pair=[0])), _data(cube.open_cube(s3_cube)))


def test_an_s3_outage_mid_run_fails_in_one_line_and_a_rerun_completes_the_same_cube(
        s3, shifted_pair, client, local_cube, monkeypatch):
    url = f"s3://{s3.bucket()}/x.zarr"
    real = cube.write_block
    calls = {"n": 0}

    def write_while_the_server_goes_down(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # the third block's writes meet a stopped server
            s3.stop()
        return real(*args, **kwargs)

    monkeypatch.setattr(cube, "write_block", write_while_the_server_goes_down)
    try:
        with pytest.raises(BlockFailedError) as err:
            _run(shifted_pair, url, client)
    finally:
        if calls["n"] >= 3:
            s3.start()
    message = str(err.value)
    assert "\n" not in message and "failed in measure" in message, message
    monkeypatch.setattr(cube, "write_block", real)
    done = cube.done_blocks(url, 0, "measure")
    assert len(done) == 2 and cube.done_blocks(url, 0) == set()
    assert not cube.pairs(url)[0].complete
    res = _run(shifted_pair, url, client)
    assert res.blocks_computed == 2 + 4  # the rest of measure, all of finish
    xr.testing.assert_identical(_data(cube.open_cube(url)), _data(cube.open_cube(local_cube)))


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([MICROFLOW, *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=300)


def test_pair_command_writes_to_s3_and_puts_the_quicklooks_in_the_current_directory(
        s3, shifted_pair, local_cube, tmp_path):
    url = f"s3://{s3.bucket()}/events/x.zarr"
    res = _cli("pair", *map(str, shifted_pair), "--out", url, "--tile", "128", "--halo", "32",
               "--ramp", "keep", "--workers", "1", "-q", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"cube: {url} (pair 0)" in res.stdout
    pngs = sorted(p.name for p in tmp_path.iterdir())
    assert pngs == ["x_pair0_maps.png", "x_pair0_profile.png",  # and no folder "s3:"
                    "x_pair0_rupture.geojson"]  # a uniform shift: an empty rupture map
    assert f"quick-looks of {url} pair 0: {tmp_path / 'x_pair0_maps.png'}" in res.stderr
    xr.testing.assert_identical(_data(cube.open_cube(url)), _data(cube.open_cube(local_cube)))


def test_a_missing_bucket_fails_before_any_work_in_one_line(s3, shifted_pair, tmp_path):
    res = _cli("pair", *map(str, shifted_pair), "--out", "s3://no-such-bucket/x.zarr",
               "--tile", "128", "-q", cwd=tmp_path)
    assert res.returncode == 1
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("microflow pair: error: bucket 'no-such-bucket'"), lines
    assert s3.endpoint in lines[-1] and "Traceback" not in res.stderr


@pytest.mark.parametrize("out", ["s3:/bucket/x.zarr", "s3:bucket/x.zarr", "s3://bucket",
                                 "s3:///x.zarr", "gopher://bucket/x.zarr"])
def test_output_urls_that_would_write_elsewhere_are_refused(out):
    with pytest.raises(ConfigError, match="out: "):
        _cfg(out)


def test_quicklooks_go_beside_a_local_cube_or_to_the_chosen_or_current_directory(tmp_path):
    assert quicklook_stem(tmp_path / "c.zarr") == tmp_path / "c"
    assert quicklook_stem("s3://b/p/c.zarr") == Path.cwd() / "c"
    assert quicklook_stem("s3://b/p/c.zarr", tmp_path / "q") == tmp_path / "q" / "c"
    assert quicklook_stem(tmp_path / "c.zarr", "q") == Path("q") / "c"
    with pytest.raises(ConfigError, match="quicklook_dir"):
        _cfg(tmp_path / "c.zarr", quicklook_dir="s3://b/q")


def test_several_grids_give_sibling_cubes_under_the_same_s3_prefix():
    class Plan:
        class pre:  # a stand-in for a PairPlan's pre scene
            grid_key = "MGRS-11SKA"

    assert cube_path_for("s3://b/ev/x.zarr", Plan, 1) == "s3://b/ev/x.zarr"
    assert cube_path_for("s3://b/ev/x.zarr", Plan, 2) == "s3://b/ev/x_MGRS-11SKA.zarr"
    assert cube_path_for(Path("/d/x.zarr"), Plan, 2) == Path("/d/x_MGRS-11SKA.zarr")


def test_region_flow_writes_cubes_and_markers_to_s3_and_skips_them_on_rerun(
        s3, tmp_path, prefect_api, tmp_path_factory):
    from flows.region import region
    from pipeline.demo import EVENT_TIME, build_demo_event
    from pipeline.stac_items import make_collection
    from pipeline.stac_server import LocalStacServer

    event = build_demo_event(tmp_path_factory.mktemp("demo"), size=(256, 256))
    prefix = f"s3://{s3.bucket()}/region"
    with LocalStacServer(event.items, [make_collection("sentinel-2-l2a", event.items)]) as s:
        common = dict(events=[{"name": "a", "event_time": EVENT_TIME.isoformat(),
                               "bbox": list(event.bbox)}],
                      out_dir=prefix, stac_url=s.url, days_before=30, days_after=30, tile=128,
                      halo=32, workers=1, quicklook_dir=str(tmp_path))
        first = region(**common)
        again = region(**common)
    assert first["done"] == ["a"] and again["skipped"] == ["a"]
    assert cube.pairs(f"{prefix}/a.zarr")[0].complete
    assert store.exists(f"{prefix}/a.done.json")
    catalog = json.loads(store.read_text(f"{prefix}/catalog.json"))  # the static catalog
    assert [link["href"] for link in catalog["links"] if link["rel"] == "item"] == [
        "./a_pair0.json"]
    item = read_item(f"{prefix}/a_pair0.json")  # pystac reads it (without its S3 links)
    derived = [link["href"] for link in item.to_dict(transform_hrefs=False)["links"]
               if link["rel"] == "derived_from"]
    assert len(derived) == 2 and all(h.startswith(s.url) for h in derived), derived
    assert {a.media_type for a in item.assets.values()} == {
        pystac.MediaType.VND_ZARR, pystac.MediaType.PNG, pystac.MediaType.GEOJSON}
    names = sorted(p.name for p in tmp_path.iterdir())
    # the demo's rupture is found: its slip-along-strike figure replaces the single profile
    assert names == ["a_pair0_maps.png", "a_pair0_rupture.geojson", "a_pair0_rupture.png"]
