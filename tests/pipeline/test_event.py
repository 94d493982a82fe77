"""The demo end to end on a small size (search → process_pair), and bad searches refused
cleanly before any cube is written."""

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from pipeline.demo import EVENT_TIME, build_demo_event, run_demo
from pipeline.plan import SearchParams
from pipeline.search import NoScenesError, StacUnavailableError, search_pairs
from pipeline.stac_items import make_collection, make_item
from pipeline.stac_server import LocalStacServer


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as c:
        yield c


def run_event(params, out):
    """What the event flow does before processing: plan the pairs (raises if none)."""
    return search_pairs(params)


def test_demo_runs_end_to_end_and_measures_the_rupture(tmp_path, client, capsys,
                                                       monkeypatch):
    monkeypatch.chdir(tmp_path)  # a relative --out, as `make demo` gives
    scores = run_demo(Path("demo-output"), size=(256, 384), client=client)
    out = capsys.readouterr().out
    assert "cube:" in out and "EPE against the demo's known truth" in out
    tmp_path = tmp_path / "demo-output"
    ds = xr.open_zarr(tmp_path / "demo.zarr", decode_coords="all")
    assert ds.rio.crs.to_epsg() == 32621
    assert ds.sizes["pair"] == 1 and set(ds.data_vars) >= {
        "east", "north", "east_raw", "north_raw", "east_sigma", "north_sigma", "valid"}
    assert int(ds.complete.values[0]) == 1
    valid = ds.valid.values[0]
    assert (valid == 2).any()  # the demo's cloud is flagged cloud
    for name in ("east", "north", "east_raw", "north_raw"):
        assert np.isnan(ds[name].values[0][valid != 1]).all(), name
    assert ds.east.attrs["units"] == "m"
    assert str(ds.pre_id.values[0]) == "DEMO_PRE_20200518"
    assert 0.5 < scores["valid_fraction"] < 1.0  # the cloud is masked out
    assert np.isfinite(scores["epe_denoised_m"])
    rupture = json.loads((tmp_path / "demo_pair0_rupture.geojson").read_text())
    assert rupture["properties"]["rupture_found"]  # the demo's fault breaks the surface
    # the rupture map's slip along strike replaces the single profile
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["demo_pair0_maps.png",
                                                            "demo_pair0_rupture.png"]


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory):
    event = build_demo_event(tmp_path_factory.mktemp("demo"), size=(128, 128))
    with LocalStacServer(event.items, [make_collection("sentinel-2-l2a", event.items)]) as s:
        yield s.url, event


def _params(url, bbox, **kw):
    base = dict(stac_url=url, collection="sentinel-2-l2a", asset="red", bbox=bbox,
                event_time=EVENT_TIME, days_before=30, days_after=30, max_cloud=20)
    base.update(kw)
    return SearchParams(**base)


@pytest.mark.parametrize("change, match", [
    (dict(event_time=datetime(2019, 1, 1, tzinfo=UTC)), "(?i)no scene"),
    (dict(max_cloud=0.1), "(?i)cloud"),
    (dict(bbox=(10.0, 45.0, 10.1, 45.1)), "(?i)no scene|outside"),
])
def test_bad_searches_fail_clearly_and_write_no_cube(demo_server, tmp_path, change, match):
    url, event = demo_server
    out = tmp_path / "cube.zarr"
    with pytest.raises(NoScenesError, match=match):
        run_event(_params(url, **{"bbox": event.bbox, **change}), out)
    assert not out.exists()


def test_unreachable_stac_url_fails_fast(tmp_path):
    from pipeline.stac_server import free_port

    port = free_port()
    out = tmp_path / "cube.zarr"
    t0 = time.monotonic()
    with pytest.raises(StacUnavailableError, match=str(port)):
        run_event(_params(f"http://127.0.0.1:{port}", (0, 0, 1, 1)), out)
    assert time.monotonic() - t0 < 10
    assert not out.exists()


def test_pre_and_post_on_different_grids_are_refused(tmp_path, demo_server):
    _url, event = demo_server
    pre, post = event.items
    moved = make_item("POST_OTHER_GRID", datetime(2020, 6, 3, tzinfo=UTC),
                      {"red": post["assets"]["red"]["href"]}, epsg=32621,
                      transform=(30.0, 0.0, 700000.0, 0.0, -30.0, -2766000.0), shape=(128, 128),
                      cloud_cover=0.0, mgrs=("21", "J", "YM"))
    items = [pre, moved]
    with LocalStacServer(items, [make_collection("sentinel-2-l2a", items)]) as s:
        with pytest.raises(NoScenesError, match=r"(?i)pre and post|both"):
            run_event(_params(s.url, event.bbox), tmp_path / "c.zarr")
    assert not (tmp_path / "c.zarr").exists()
