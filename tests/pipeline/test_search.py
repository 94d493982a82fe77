"""Search and pairing against a real local STAC API (rustac) with several items."""

from datetime import UTC, datetime

import pytest

from pipeline.plan import SearchParams
from pipeline.search import (
    CloudLimitError,
    NoPairError,
    NoScenesError,
    StacUnavailableError,
    bbox_from_point,
    search_pairs,
)
from pipeline.stac_items import make_collection, make_item
from pipeline.stac_server import LocalStacServer

EVENT = datetime(2024, 3, 10, 12, tzinfo=UTC)
# two MGRS tiles in different UTM zones that overlap around lon -120.0, lat 36.1
GRID_A = dict(epsg=32610, transform=(10.0, 0.0, 770000.0, 0.0, -10.0, 4010000.0),
              shape=(2000, 2000), mgrs=("10", "S", "GF"))
GRID_B = dict(epsg=32611, transform=(10.0, 0.0, 220000.0, 0.0, -10.0, 4010000.0),
              shape=(2000, 2000), mgrs=("11", "S", "KU"))


def _item(i, day, cloud, grid, assets=("red", "scl")):
    return make_item(i, datetime(2024, 3, day, 10, tzinfo=UTC),
                     {a: f"/nowhere/{i}_{a}.tif" for a in assets}, cloud_cover=cloud, **grid)


ITEMS = [
    _item("A_0301", 1, 5.0, GRID_A),
    _item("A_0308", 8, 60.0, GRID_A),  # closest before the event, but too cloudy
    _item("A_0306", 6, 10.0, GRID_A),  # chosen pre: score 4.1 + 5 < 9.1 + 2.5? see test
    _item("A_0312", 12, 3.0, GRID_A),
    _item("A_0320", 20, 0.0, GRID_A),
    _item("B_0305", 5, 1.0, GRID_B),
    _item("B_0315", 15, 2.0, GRID_B),
    _item("B_0311", 11, 19.0, GRID_B),
    _item("NO_RED", 11, 0.0, GRID_B, assets=("nir",)),
]
AOI = (-120.05, 36.05, -119.95, 36.15)


@pytest.fixture(scope="module")
def url():
    with LocalStacServer(ITEMS, [make_collection("sentinel-2-l2a", ITEMS)]) as server:
        yield server.url


def _params(url, **kw):
    base = dict(stac_url=url, collection="sentinel-2-l2a", asset="red", bbox=AOI,
                event_time=EVENT, days_before=30, days_after=30, max_cloud=20)
    base.update(kw)
    return SearchParams(**base)


def test_each_tile_covering_the_aoi_gives_a_pair_on_its_native_grid(url):
    plans = {p.pre.grid_key: p for p in search_pairs(_params(url))}
    assert set(plans) == {"10SGF", "11SKU"}
    assert plans["10SGF"].epsg == 32610 and plans["11SKU"].epsg == 32611
    assert plans["10SGF"].resolution == 10.0


def test_pairing_prefers_close_in_time_and_low_cloud(url):
    plans = {p.pre.grid_key: p for p in search_pairs(_params(url))}
    a, b = plans["10SGF"], plans["11SKU"]
    # A: 0308 is over the cloud limit; 0306 (4.1 d + 5) beats 0301 (9.1 d + 2.5)
    assert (a.pre.id, a.post.id) == ("A_0306", "A_0312")
    # B: 0311 (0.9 d + 9.5 = 10.4) loses to 0315 (4.9 d + 1 = 5.9)
    assert (b.pre.id, b.post.id) == ("B_0305", "B_0315")


def test_bounds_are_snapped_to_pixels_and_inside_both_footprints(url):
    for plan in search_pairs(_params(url)):
        (a, _, c, _, e, f), (h, w) = plan.pre.item["assets"]["red"]["proj:transform"][:6], (
            2000, 2000)
        xmin, ymin, xmax, ymax = plan.bounds
        for v in (xmin, xmax):
            assert abs(((v - c) / a) - round((v - c) / a)) < 1e-9
        for v in (ymin, ymax):
            assert abs(((v - f) / e) - round((v - f) / e)) < 1e-9
        assert c <= xmin < xmax <= c + a * w and f + e * h <= ymin < ymax <= f
        assert (xmax - xmin) > 1000 and (ymax - ymin) > 1000


def test_point_and_radius_make_an_aoi():
    w, s, e, n = bbox_from_point(-120.0, 36.1, 5.0)
    assert w < -120.0 < e and s < 36.1 < n
    assert abs((n - s) * 111.32 - 10.0) < 0.01
    with pytest.raises(ValueError):
        bbox_from_point(-120.0, 36.1, 0)


def test_no_scene_in_the_window_is_a_clear_error(url):
    with pytest.raises(NoScenesError, match=r"no scene found.*sentinel-2-l2a"):
        search_pairs(_params(url, event_time=datetime(2020, 1, 1, tzinfo=UTC)))


def test_all_scenes_over_the_cloud_limit_names_the_lowest_cover(url):
    with pytest.raises(CloudLimitError, match=r"lowest cloud cover: 0\.0%"):
        search_pairs(_params(url, max_cloud=-1))


def test_no_grid_with_both_a_pre_and_a_post(url):
    with pytest.raises(NoPairError, match="10SGF: 0 before"):
        search_pairs(_params(url, event_time=datetime(2024, 3, 1, tzinfo=UTC), days_before=5))


def test_aoi_outside_every_scene(url):
    with pytest.raises(NoScenesError, match="no scene found"):
        search_pairs(_params(url, bbox=(10.0, 45.0, 10.1, 45.1)))


def test_missing_asset_lists_what_is_there(url):
    with pytest.raises(NoScenesError, match=r"has asset .swir16..*red"):
        search_pairs(_params(url, asset="swir16"))


def test_unreachable_stac_url_raises_quickly():
    import socket
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()
    with pytest.raises(StacUnavailableError, match=f"127.0.0.1:{port}"):
        search_pairs(_params(f"http://127.0.0.1:{port}"))
    assert time.monotonic() - t0 < 15
