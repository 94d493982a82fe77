"""COGs read over HTTP range requests from a real server on loopback, as from a cloud
bucket: the server itself, stackstac/GDAL reading through it with the project's GDAL
options, a cube identical to the one from local paths, retried 500s and clear 404s."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from pipeline import gdal_env
from pipeline.config import RunConfig
from pipeline.demo import EVENT_TIME, build_demo_event
from pipeline.errors import is_transient
from pipeline.http_server import RangeFileServer, parse_ranges
from pipeline.load import load_pair
from pipeline.plan import PairPlan, SearchParams
from pipeline.process import plan_source, process_pair
from pipeline.search import search_pairs
from pipeline.stac_server import LocalStacServer

CUBE_VARS = ("east", "north", "east_raw", "north_raw", "east_sigma", "north_sigma", "valid")


@pytest.fixture(scope="module")
def event(tmp_path_factory):
    return build_demo_event(tmp_path_factory.mktemp("scenes"), size=(256, 256))


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=":0") as cluster, Client(cluster) as c:
        yield c


def over_http(items: list[dict], server: RangeFileServer) -> list[dict]:
    """``items`` with every asset href (a local path) replaced by ``server``'s URL."""
    return server.items(items)


def plan_for(items: list[dict], bbox) -> PairPlan:
    """The pair planned by a real STAC API that serves ``items``."""
    with LocalStacServer(items) as stac:
        (plan,) = search_pairs(SearchParams(
            stac_url=stac.url, collection="sentinel-2-l2a", asset="red", bbox=tuple(bbox),
            event_time=EVENT_TIME, days_before=30, days_after=30, max_cloud=20))
    return plan


def run_cube(plan: PairPlan, out: Path, client) -> xr.Dataset:
    cfg = RunConfig.from_flat(out=str(out), tile=128, halo=32, bands=["red"], workers=1,
                              quicklooks=False, outer_iters=2, inner_iters=20)
    process_pair(plan_source(plan, cfg), cfg, client=client, progress=False)
    return xr.open_zarr(out, decode_coords="all")


def assert_same_cube(a: xr.Dataset, b: xr.Dataset) -> None:
    for name in CUBE_VARS:
        np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)
    np.testing.assert_array_equal(a.x.values, b.x.values)
    np.testing.assert_array_equal(a.y.values, b.y.values)
    assert a.rio.crs == b.rio.crs


@pytest.fixture(scope="module")
def local_cube(event, tmp_path_factory, client):
    plan = plan_for(event.items, event.bbox)
    return run_cube(plan, tmp_path_factory.mktemp("local") / "cube.zarr", client)


def _get(url: str, headers: dict | None = None, method: str = "GET"):
    request = urllib.request.Request(url, headers=headers or {}, method=method)
    return urllib.request.urlopen(request, timeout=10)


# -- the server --------------------------------------------------------------------------
def test_byte_ranges_are_parsed_and_clipped_to_the_file():
    assert parse_ranges("bytes=0-9", 100) == [(0, 9)]
    assert parse_ranges("bytes=90-", 100) == [(90, 99)]
    assert parse_ranges("bytes=-5", 100) == [(95, 99)]
    assert parse_ranges("bytes=95-200, 0-0", 100) == [(95, 99), (0, 0)]
    assert parse_ranges("items=0-9", 100) is None
    with pytest.raises(ValueError):
        parse_ranges("bytes=100-200", 100)


def test_server_answers_ranges_heads_and_missing_files_and_logs_each(tmp_path):
    data = bytes(range(256)) * 40
    (tmp_path / "a.tif").write_bytes(data)
    with RangeFileServer(tmp_path) as server:
        url = server.href(tmp_path / "a.tif")
        with _get(url, {"Range": "bytes=10-19"}) as r:
            assert r.status == 206 and r.read() == data[10:20]
            assert r.headers["Content-Range"] == f"bytes 10-19/{len(data)}"
        with _get(url, {"Range": "bytes=0-1,100-103"}) as r:
            body = r.read()
            assert r.status == 206 and r.headers.get_content_type() == "multipart/byteranges"
            assert data[100:104] in body and f"bytes 100-103/{len(data)}".encode() in body
        with _get(url, method="HEAD") as r:
            assert r.status == 200 and int(r.headers["Content-Length"]) == len(data)
            assert r.headers["Accept-Ranges"] == "bytes" and r.read() == b""
        with _get(url) as r:
            assert r.status == 200 and r.read() == data
        with pytest.raises(urllib.error.HTTPError) as missing:
            _get(f"{server.url}/nope.tif")
        assert missing.value.code == 404
        with pytest.raises(urllib.error.HTTPError) as outside:
            _get(f"{server.url}/%2E%2E/%2E%2E/etc/passwd")
        assert outside.value.code == 403
        with pytest.raises(urllib.error.HTTPError) as beyond:
            _get(url, {"Range": f"bytes={len(data)}-"})
        assert beyond.value.code == 416
        assert [(r.method, r.status, r.nbytes) for r in server.log] == [
            ("GET", 206, 10), ("GET", 206, server.log[1].nbytes), ("HEAD", 200, 0),
            ("GET", 200, len(data)), ("GET", 404, server.log[4].nbytes),
            ("GET", 403, server.log[5].nbytes), ("GET", 416, 0)]
        server.reset_log()
        assert server.log == []


def test_an_injected_fault_answers_only_the_nth_range_request(tmp_path):
    (tmp_path / "a.tif").write_bytes(b"x" * 100)
    with RangeFileServer(tmp_path) as server:
        url = server.href("a.tif")
        server.fail_range_request(2, status=503)
        with _get(url, {"Range": "bytes=0-9"}) as r:
            assert r.status == 206
        with _get(url) as r:  # not a range request: not counted
            assert r.status == 200
        with pytest.raises(urllib.error.HTTPError) as second:
            _get(url, {"Range": "bytes=0-9"})
        assert second.value.code == 503
        with _get(url, {"Range": "bytes=0-9"}) as r:
            assert r.status == 206  # once only
        server.fail_range_request(1, status=500, times=2)
        for _ in range(2):
            with pytest.raises(urllib.error.HTTPError):
                _get(url, {"Range": "bytes=5-9"})
        with _get(url, {"Range": "bytes=5-9"}) as r:
            assert r.status == 206 and r.read() == b"x" * 5
        assert [r.status for r in server.range_requests()] == [206, 503, 206, 500, 500, 206]


# -- stackstac/GDAL through it ------------------------------------------------------------
def test_stackstac_reads_http_cogs_with_range_requests_and_no_sidecar_probes(event):
    local = load_pair(plan_for(event.items, event.bbox), chunk=128)
    with RangeFileServer(event.folder) as server:
        remote = load_pair(plan_for(over_http(event.items, server), event.bbox), chunk=128)
        for name in ("pre", "post", "cloud"):
            np.testing.assert_array_equal(remote[name].values, local[name].values, name)
        log = server.log
    assert {r.path for r in log} <= {f"/{n}_{b}.tif" for n in ("pre", "post")
                                     for b in ("red", "scl")}  # no .aux.xml, .msk, listing
    assert all(r.status in (200, 206) for r in log), log
    assert sum(r.range is not None for r in log) >= 4  # pixels came by ranges, per file
    assert not any(r.method == "GET" and r.range is None for r in log)  # no whole file


def test_cloud_read_options_retry_quickly_and_yield_to_the_environment(monkeypatch):
    monkeypatch.setenv("GDAL_HTTP_MAX_RETRY", "9")
    options = gdal_env.gdal_options()
    assert options["GDAL_DISABLE_READDIR_ON_OPEN"] == "EMPTY_DIR"
    assert options["GDAL_HTTP_MAX_RETRY"] == "9"
    assert 0 < float(options["GDAL_HTTP_RETRY_DELAY"]) <= 1
    assert ".tif" in options["CPL_VSIL_CURL_ALLOWED_EXTENSIONS"].split(",")
    assert gdal_env.stackstac_env().read is not None  # a valid stackstac.LayeredEnv


# -- whole runs ----------------------------------------------------------------------------
def test_a_run_over_http_gives_the_same_cube_as_over_local_paths(event, local_cube,
                                                                 tmp_path, client):
    with RangeFileServer(event.folder) as server:
        plan = plan_for(over_http(event.items, server), event.bbox)
        assert plan.pre.item["assets"]["red"]["href"].startswith("http://127.0.0.1:")
        cube = run_cube(plan, tmp_path / "cube.zarr", client)
        assert server.range_requests() and all(r.status == 206 for r in server.range_requests())
    assert_same_cube(cube, local_cube)


def test_an_http_500_on_one_range_request_is_retried_and_the_cube_is_unchanged(
        event, local_cube, tmp_path, client):
    # The first range request (a COG header) answers 500 twice: GDAL re-reads a failed
    # header once on its own, so only a configured retry gets past the second 500.
    with RangeFileServer(event.folder) as server:  # a new port: GDAL's HTTP cache is cold
        plan = plan_for(over_http(event.items, server), event.bbox)
        server.fail_range_request(1, status=500, times=2)
        cube = run_cube(plan, tmp_path / "cube.zarr", client)
        ranges = server.range_requests()
    failed = [r for r in ranges if r.status == 500]
    assert len(failed) == 2 and len({(r.path, r.range) for r in failed}) == 1
    assert any((r.path, r.range, r.status) == (failed[0].path, failed[0].range, 206)
               for r in ranges), "the failed range was never answered"
    assert_same_cube(cube, local_cube)


def test_a_missing_cog_fails_at_the_first_read_in_one_line_naming_url_and_status(
        event, tmp_path, client):
    with RangeFileServer(event.folder) as server:
        items = over_http(event.items, server)
        post = items[1]
        missing = f"{server.url}/gone/post_red.tif"
        items[1] = {**post, "assets": {**post["assets"],
                                       "red": {**post["assets"]["red"], "href": missing}}}
        plan = plan_for(items, event.bbox)
        out = tmp_path / "cube.zarr"
        cfg = RunConfig.from_flat(out=str(out), tile=128, halo=32, bands=["red"],
                                  quicklooks=False)
        with pytest.raises(Exception) as failure:
            process_pair(plan_source(plan, cfg), cfg, client=client, progress=False)
        log = server.log
    message = str(failure.value)
    assert missing in message and "404" in message
    assert "\n" not in message.strip()
    assert not is_transient(failure.value)  # a Prefect retry would not help
    assert not out.exists()  # it failed at the first read, before any cube was written
    assert [r.status for r in log if r.path == "/gone/post_red.tif"] == [404]
