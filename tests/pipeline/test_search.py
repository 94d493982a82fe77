"""STAC search and pairing against a real STAC API (``rustac serve``) on loopback.

The catalogue: four MGRS tiles around (-114°, 37°), an event on 2024-03-10 12:00 UTC.

- 11SQA (EPSG:32611) and 12STA (EPSG:32612) both cover the AOI, across the UTM zone
  boundary at -114°: each must give its own pair on its own grid.
- 11SPA has a clear pre scene and only a cloudy post scene: no pair.
- 11SQV has only scenes over the default cloud limit.
"""

from __future__ import annotations

import http.server
import logging
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from pyproj import Geod, Transformer

from pipeline.plan import PairPlan, SearchParams
from pipeline.search import (
    AoiOutsideError,
    CloudLimitError,
    EmptySearchError,
    MissingAssetError,
    NoPairError,
    NoScenesError,
    StacUnavailableError,
    asset_grid,
    bbox_from_point,
    cloud_search_kwargs,
    scene_score,
    search_pairs,
)
from pipeline.stac_items import footprint_ring, make_collection, make_item
from pipeline.stac_server import LocalStacServer

EVENT = datetime(2024, 3, 10, 12, 0, tzinfo=UTC)
RES = 10.0
HALF_M = 10_000.0  # tiles are 20 km x 20 km, 2000 x 2000 pixels at 10 m
COLLECTION = "sentinel-2-l2a"


def tile(epsg: int, lon: float, lat: float) -> dict:
    """Grid arguments of ``make_item`` for a tile centred near ``(lon, lat)``."""
    x, y = Transformer.from_crs(4326, epsg, always_xy=True).transform(lon, lat)
    x0 = round((x - HALF_M) / 60.0) * 60.0  # Sentinel-2 tile origins are on 60 m
    y0 = round((y + HALF_M) / 60.0) * 60.0
    n = int(2 * HALF_M / RES)
    return {"epsg": epsg, "transform": (RES, 0.0, x0, 0.0, -RES, y0), "shape": (n, n)}


TILES = {
    "11SQA": (tile(32611, -114.0, 37.0), ("11", "S", "QA")),
    "12STA": (tile(32612, -114.0, 37.0), ("12", "S", "TA")),
    "11SPA": (tile(32611, -115.2, 37.0), ("11", "S", "PA")),
    "11SQV": (tile(32611, -114.5, 36.2), ("11", "S", "QV")),
}
ASSETS = ("red", "nir", "scl")


def scene(item_id: str, tile_name: str, days: float, cloud: float | None,
          assets: tuple[str, ...] = ASSETS) -> dict:
    grid, mgrs = TILES[tile_name]
    hrefs = {a: f"/data/{tile_name}/{item_id}_{a}.tif" for a in assets}  # never read
    return make_item(item_id, EVENT + timedelta(days=days), hrefs, cloud_cover=cloud,
                     mgrs=mgrs, **grid)


ITEMS = [
    # 11SQA: scores (days + 0.5 x cloud %) in the comments; limit 20 % unless told
    scene("A_PRE_BEST", "11SQA", -5, 8.0),  # 9: further than HAZY, but clearer
    scene("A_PRE_HAZY", "11SQA", -3, 14.0),  # 10
    scene("A_PRE_NO_RED", "11SQA", -2, 0.0, assets=("nir", "scl")),  # 2, lacks 'red'
    scene("A_PRE_CLOUDY", "11SQA", -1, 60.0),  # over the limit
    scene("A_POST_NEXT_DAY", "11SQA", 1, 15.0),  # 8.5
    scene("A_POST_CLEAR", "11SQA", 4, 10.0),  # 9
    # 12STA: the closest post has no eo:cloud_cover: scored as if at the limit, 6 + 10
    scene("B_PRE", "12STA", -7, 5.0),
    scene("B_POST_UNKNOWN_CLOUD", "12STA", 6, None),
    scene("B_POST_LATE", "12STA", 30, 0.0),
    # 11SPA: no clear post
    scene("C_PRE", "11SPA", -2, 3.0),
    scene("C_POST_CLOUDY", "11SPA", 2, 80.0),
    # 11SQV: nothing under 20 %
    scene("D_PRE_CLOUDY", "11SQV", -4, 70.0),
    scene("D_POST_CLOUDY", "11SQV", 3, 55.0),
]


def aoi_around(lon: float, lat: float, half_deg: float = 0.02) -> tuple[float, ...]:
    return (lon - half_deg, lat - half_deg, lon + half_deg, lat + half_deg)


AOI_AB = aoi_around(-114.0, 37.0)
AOI_C = aoi_around(-115.2, 37.0)
AOI_D = aoi_around(-114.5, 36.2)


@pytest.fixture(scope="module")
def stac_url():
    with LocalStacServer(ITEMS, [make_collection(COLLECTION, ITEMS)]) as server:
        yield server.url


def params(url: str, bbox=AOI_AB, **changes) -> SearchParams:
    base = dict(stac_url=url, collection=COLLECTION, asset="red", bbox=tuple(bbox),
                event_time=EVENT, days_before=30, days_after=40, max_cloud=20.0)
    return SearchParams(**{**base, **changes})


def by_grid(plans: list[PairPlan]) -> dict[str, PairPlan]:
    return {p.pre.grid_key: p for p in plans}


def grid_extent(item: dict) -> tuple[float, float, float, float]:
    return asset_grid(item, "red").extent


# ---------------------------------------------------------------------------- pairing
def test_each_grid_gets_the_pre_and_post_with_the_lowest_days_plus_half_cloud_score(stac_url):
    plans = by_grid(search_pairs(params(stac_url)))
    a = plans["MGRS-11SQA"]
    assert (a.pre.id, a.post.id) == ("A_PRE_BEST", "A_POST_NEXT_DAY")
    assert a.pre.datetime < EVENT <= a.post.datetime
    # the rule, in its own words: every other candidate scores higher
    assert scene_score(a.pre, EVENT, 20.0) == pytest.approx(5 + 0.5 * 8)
    assert scene_score(a.post, EVENT, 20.0) == pytest.approx(1 + 0.5 * 15)


def test_a_clearer_scene_one_day_further_wins_over_two_percent_more_cloud(stac_url):
    # A_PRE_BEST: 5 days, 8 % (score 9) beats A_PRE_HAZY: 3 days, 14 % (score 10)
    (a,) = [p for p in search_pairs(params(stac_url)) if p.pre.grid_key == "MGRS-11SQA"]
    assert a.pre.id == "A_PRE_BEST"
    # ... and without it the closer, hazier scene is next in line
    (a,) = [p for p in search_pairs(params(stac_url, days_before=4))
            if p.pre.grid_key == "MGRS-11SQA"]
    assert a.pre.id == "A_PRE_HAZY"


def test_the_closest_scene_over_the_cloud_limit_is_skipped(stac_url):
    # A_POST_NEXT_DAY (15 %) is the best post under 20 %; under 12 % it is skipped
    plans = by_grid(search_pairs(params(stac_url, max_cloud=12.0)))
    assert plans["MGRS-11SQA"].post.id == "A_POST_CLEAR"
    # A_PRE_CLOUDY, one day before the event at 60 %, is never chosen under 20 %
    assert plans["MGRS-11SQA"].pre.id == "A_PRE_BEST"


def test_scenes_without_the_asset_are_ignored(stac_url, caplog):
    caplog.set_level(logging.INFO, logger="pipeline.search")
    plans = by_grid(search_pairs(params(stac_url)))
    assert "A_PRE_NO_RED" not in {plans["MGRS-11SQA"].pre.id, plans["MGRS-11SQA"].post.id}
    assert "A_PRE_NO_RED ignored: no asset 'red'" in caplog.text
    # with the asset it has, it is the best pre (2 days, 0 %)
    nir = by_grid(search_pairs(params(stac_url, asset="nir")))
    assert nir["MGRS-11SQA"].pre.id == "A_PRE_NO_RED" and nir["MGRS-11SQA"].asset == "nir"


def test_scenes_without_cloud_cover_are_kept_and_scored_as_if_at_the_limit(stac_url):
    b = by_grid(search_pairs(params(stac_url)))["MGRS-12STA"]
    assert b.post.id == "B_POST_UNKNOWN_CLOUD" and b.post.cloud is None
    assert scene_score(b.post, EVENT, 20.0) == pytest.approx(6 + 0.5 * 20)
    # a known-clear scene at the same distance would beat it
    assert scene_score(b.post, EVENT, 20.0) > scene_score(b.pre, EVENT, 20.0)


def test_the_cloud_limit_is_inclusive(stac_url):
    (d,) = search_pairs(params(stac_url, bbox=AOI_D, max_cloud=70.0))
    assert (d.pre.id, d.post.id) == ("D_PRE_CLOUDY", "D_POST_CLOUDY")


def test_two_tiles_over_the_aoi_give_two_pairs_each_on_its_native_grid(stac_url, caplog):
    caplog.set_level(logging.INFO, logger="pipeline.search")
    plans = search_pairs(params(stac_url))
    assert [p.pre.grid_key for p in plans] == ["MGRS-11SQA", "MGRS-12STA"]
    assert [p.epsg for p in plans] == [32611, 32612]
    for plan in plans:
        assert plan.pre.epsg == plan.post.epsg == plan.epsg
        assert plan.pre.grid_key == plan.post.grid_key
        assert plan.resolution == RES and plan.asset == "red"
        assert f"pre {plan.pre.id}" in caplog.text and f"post {plan.post.id}" in caplog.text


def test_bounds_are_snapped_to_the_pixel_grid_inside_both_scenes_and_hold_the_aoi(stac_url):
    for plan in search_pairs(params(stac_url)):
        xmin, ymin, xmax, ymax = plan.bounds
        a, _, c, _, e, f = asset_grid(plan.pre.item, "red").transform
        for x in (xmin, xmax):
            assert (x - c) / a == pytest.approx(round((x - c) / a), abs=1e-9)
        for y in (ymin, ymax):
            assert (y - f) / e == pytest.approx(round((y - f) / e), abs=1e-9)
        for item in (plan.pre.item, plan.post.item):
            gx0, gy0, gx1, gy1 = grid_extent(item)
            assert gx0 <= xmin < xmax <= gx1 and gy0 <= ymin < ymax <= gy1
        to_grid = Transformer.from_crs(4326, plan.epsg, always_xy=True)
        ax0, ay0, ax1, ay1 = to_grid.transform_bounds(*AOI_AB, densify_pts=21)
        assert xmin <= ax0 and ymin <= ay0 and xmax >= ax1 and ymax >= ay1
        assert xmax - ax1 < RES and ax0 - xmin < RES  # snapped, not padded


def test_point_and_radius_give_a_geodesic_bbox_and_a_matching_area(stac_url):
    lon, lat, radius_km = -114.0, 37.0, 2.0
    west, south, east, north = bbox_from_point(lon, lat, radius_km)
    geod = Geod(ellps="WGS84")
    for lon2, lat2 in ((lon, north), (lon, south), (east, lat), (west, lat)):
        distance_m = geod.inv(lon, lat, lon2, lat2)[2]
        assert distance_m == pytest.approx(radius_km * 1000.0, rel=0.005)
    plans = by_grid(search_pairs(params(stac_url, bbox=(west, south, east, north))))
    xmin, ymin, xmax, ymax = plans["MGRS-11SQA"].bounds
    # a 4 km square, seen turned by the grid convergence near the zone edge
    assert 4000.0 <= xmax - xmin <= 4400.0 and 4000.0 <= ymax - ymin <= 4400.0
    with pytest.raises(ValueError, match="radius"):
        bbox_from_point(lon, lat, 0.0)


@pytest.mark.parametrize("lon, lat, radius_km, why", [
    (179.99, 10.0, 5.0, "antimeridian"),
    (0.0, 89.99, 5.0, "pole"),
])
def test_a_circle_that_a_bbox_cannot_hold_is_refused(lon, lat, radius_km, why):
    with pytest.raises(ValueError, match=why):
        bbox_from_point(lon, lat, radius_km)


def test_pairs_whose_footprints_do_not_overlap_in_the_aoi_are_passed_over(serve_stac):
    # a tile at a swath edge has data on part of its grid: the pre scene on the west
    # half, the best post on the east half; the AOI straddles the middle
    items = [half_footprint(scene("E_PRE_WEST", "11SQA", -3, 0.0), "west"),
             half_footprint(scene("E_POST_EAST", "11SQA", 1, 0.0), "east"),
             scene("E_POST_FULL", "11SQA", 11, 0.0)]
    url = serve_stac(items).url
    (plan,) = search_pairs(params(url))
    assert (plan.pre.id, plan.post.id) == ("E_PRE_WEST", "E_POST_FULL")
    pre_extent = asset_grid(plan.pre.item, "red").extent
    middle = (pre_extent[0] + pre_extent[2]) / 2
    assert plan.bounds[2] == pytest.approx(middle)  # cut to where the pre has data
    with pytest.raises(AoiOutsideError, match=r"(?i)outside.*MGRS-11SQA.*overlap") as info:
        search_pairs(params(url, days_after=5))  # without E_POST_FULL
    assert url in str(info.value)


def half_footprint(item: dict, side: str) -> dict:
    """``item`` with data (its geometry) on one half of its grid only."""
    grid = asset_grid(item, "red")
    a, b, c, d, e, f = grid.transform
    h, w = grid.shape
    x0 = c if side == "west" else c + a * (w // 2)
    ring = footprint_ring(grid.epsg, (a, b, x0, d, e, f), (h, w // 2))
    lons, lats = [p[0] for p in ring], [p[1] for p in ring]
    return {**item, "geometry": {"type": "Polygon", "coordinates": [ring]},
            "bbox": [min(lons), min(lats), max(lons), max(lats)]}


def test_older_items_with_proj_epsg_and_s2_mgrs_tile_are_understood(serve_stac):
    items = [scene("OLD_PRE", "11SQA", -2, 1.0), scene("OLD_POST", "11SQA", 2, 1.0)]
    for item in items:
        props = item["properties"]
        props["proj:epsg"] = int(props.pop("proj:code").split(":")[1])
        for key in ("mgrs:utm_zone", "mgrs:latitude_band", "mgrs:grid_square"):
            props.pop(key)
        props["s2:mgrs_tile"] = "11SQA"
    (plan,) = search_pairs(params(serve_stac(items).url))
    assert plan.epsg == 32611 and plan.pre.grid_key == "MGRS-11SQA"


# ---------------------------------------------------------------------------- failures
def test_an_empty_time_window_says_no_scene_and_what_was_searched(stac_url):
    p = params(stac_url, event_time=datetime(2023, 1, 1, tzinfo=UTC), days_before=5,
               days_after=5)
    with pytest.raises(EmptySearchError, match=r"(?i)no scene") as info:
        search_pairs(p)
    message = str(info.value)
    for part in (stac_url, COLLECTION, "-114.0200", "2022-12-27", "2023-01-06", "20%", "red"):
        assert part in message


def test_all_scenes_over_the_cloud_limit_report_the_lowest_cloud_cover(stac_url):
    with pytest.raises(CloudLimitError, match=r"2 scene\(s\).*lowest cloud cover: 55%"):
        search_pairs(params(stac_url, bbox=AOI_D))


def test_a_grid_without_a_clear_post_scene_says_which_dates_were_found(stac_url):
    with pytest.raises(NoPairError, match="both") as info:
        search_pairs(params(stac_url, bbox=AOI_C))
    message = str(info.value)
    assert "MGRS-11SPA" in message and "2024-03-08 (3% cloud)" in message
    assert "over the cloud limit: 2024-03-12 (80% cloud)" in message


def test_a_missing_asset_lists_the_assets_there_are(stac_url):
    with pytest.raises(MissingAssetError, match=r"'swir22'.*nir, red, scl"):
        search_pairs(params(stac_url, asset="swir22"))


def test_every_failure_is_a_no_scenes_error_and_a_value_error():
    for error in (EmptySearchError, CloudLimitError, NoPairError, MissingAssetError,
                  AoiOutsideError):
        assert issubclass(error, NoScenesError) and issubclass(error, ValueError)


def test_an_unreachable_stac_url_fails_within_seconds(closed_port_url):
    start = time.monotonic()
    with pytest.raises(StacUnavailableError, match=closed_port_url):
        search_pairs(params(closed_port_url))
    assert time.monotonic() - start < 3.0


def test_a_url_that_is_not_a_stac_api_fails_clearly(tmp_path):
    (tmp_path / "index.html").write_text("<html><body>not STAC</body></html>")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(tmp_path), **kwargs)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}"
    try:
        with pytest.raises(StacUnavailableError, match=url):
            search_pairs(params(url))
    finally:
        server.shutdown()
        server.server_close()


def test_bad_search_parameters_are_refused_before_any_request(closed_port_url):
    with pytest.raises(ValueError, match="bbox"):
        search_pairs(params(closed_port_url, bbox=(10.0, 45.0, 9.0, 46.0)))
    with pytest.raises(ValueError, match="max_cloud"):
        search_pairs(params(closed_port_url, max_cloud=120.0))


# ---------------------------------------------------------------------------- the server
def test_rustac_serves_item_search_but_neither_query_nor_filter(stac_url):
    from pystac_client import Client, ConformanceClasses

    client = Client.open(stac_url)
    assert client.conforms_to(ConformanceClasses.ITEM_SEARCH)
    assert not client.conforms_to(ConformanceClasses.QUERY)
    assert not client.conforms_to(ConformanceClasses.FILTER)
    assert cloud_search_kwargs(client.conforms_to, 20.0) == {}
    found = client.search(collections=[COLLECTION], bbox=list(AOI_D),
                          datetime=(EVENT - timedelta(days=5), EVENT + timedelta(days=5)))
    assert sorted(i["id"] for i in found.items_as_dicts()) == ["D_POST_CLOUDY", "D_PRE_CLOUDY"]


def test_the_cloud_limit_goes_to_servers_that_support_query_or_filter():
    from pystac_client import ConformanceClasses as CC

    query = cloud_search_kwargs(lambda c: c in (CC.QUERY, CC.FILTER), 20.0)
    assert query == {"query": {"eo:cloud_cover": {"lte": 20.0}}}
    cql2 = cloud_search_kwargs(lambda c: c == CC.FILTER, 20.0)
    assert cql2["filter_lang"] == "cql2-json"
    assert cql2["filter"] == {"op": "<=", "args": [{"property": "eo:cloud_cover"}, 20.0]}


def test_the_server_process_ends_when_the_with_block_raises():
    with pytest.raises(RuntimeError, match="boom"):
        with LocalStacServer(ITEMS[:2]) as server:
            process = server._proc
            assert server.running
            raise RuntimeError("boom")
    assert process.poll() is not None and not server.running


def test_a_server_on_a_busy_port_refuses_to_start(stac_url):
    busy = int(stac_url.rsplit(":", 1)[1])
    with pytest.raises(RuntimeError, match=r"(?i)already in use"):
        LocalStacServer(ITEMS[:1], port=busy, timeout=10).start()


def test_a_server_that_exits_at_start_shows_rustac_output():
    not_a_collection = {"type": "Catalog", "id": "catalog", "description": "", "links": []}
    with pytest.raises(RuntimeError, match=r"(?s)exited with code 1.*know how to load"):
        LocalStacServer([], [not_a_collection], timeout=10).start()


def test_items_without_a_collection_are_refused_before_serving():
    orphan = {k: v for k, v in ITEMS[0].items() if k != "collection"}
    with pytest.raises(ValueError, match="collection"):
        LocalStacServer([orphan])


@pytest.mark.parametrize("fields, where, epsg", [
    ({"proj:epsg": 32611}, "asset", 32611),
    ({"proj:epsg": 32611}, "item", 32611),
    ({"proj:code": "EPSG:32612"}, "asset", 32612),
    ({"proj:wkt2": "wkt2:32613"}, "item", 32613),
])
def test_asset_grid_reads_every_projection_form_on_asset_or_item(fields, where, epsg):
    from pyproj import CRS

    if "proj:wkt2" in fields:
        fields = {"proj:wkt2": CRS.from_epsg(32613).to_wkt()}
    item = {"type": "Feature", "stac_version": "1.0.0", "id": "x", "geometry": None,
            "properties": {"datetime": "2020-01-01T00:00:00Z"}, "links": [],
            "assets": {"red": {"href": "a.tif", "proj:transform": [10, 0, 0, 0, -10, 0],
                               "proj:shape": [5, 6]}}}
    (item["assets"]["red"] if where == "asset" else item["properties"]).update(fields)
    grid = asset_grid(item, "red")
    assert grid is not None and grid.epsg == epsg and grid.shape == (5, 6)
    assert grid.transform == (10.0, 0.0, 0.0, 0.0, -10.0, 0.0)


# ---------------------------------------------------------------------------- pairs N
def test_n_pairs_per_grid_are_the_next_best_combinations_and_one_pair_is_unchanged(
        stac_url):
    one = by_grid(search_pairs(params(stac_url)))
    two = search_pairs(params(stac_url, pairs=2))
    a = [(p.pre.id, p.post.id) for p in two if p.pre.grid_key == "MGRS-11SQA"]
    # scores: (BEST, NEXT_DAY) 9 + 8.5, then (BEST, CLEAR) 9 + 9
    assert a == [("A_PRE_BEST", "A_POST_NEXT_DAY"), ("A_PRE_BEST", "A_POST_CLEAR")]
    first = next(p for p in two if p.pre.grid_key == "MGRS-11SQA")
    assert (first.pre.id, first.post.id) == (one["MGRS-11SQA"].pre.id,
                                             one["MGRS-11SQA"].post.id)
    assert [p.pairing["pairing_rank"] for p in two if p.pre.grid_key == "MGRS-11SQA"] == [1, 2]
    # these items state no relative orbit: the provenance says so rather than guess
    assert first.pairing["same_orbit"] is None
    assert "state no relative orbit" in first.pairing["pairing_reason"]
