"""Pairing as an expert picks pairs: within one relative orbit, N best pairs, and why.

A real STAC API (``rustac serve``) on loopback serves items with ``sat:relative_orbit``
and view/sun angles, as Earth Search gives them; the event is 2024-03-10 12:00 UTC.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest
from pyproj import Transformer

from pipeline.plan import SearchParams
from pipeline.search import NoSameOrbitPairError, NoScenesError, search_pairs
from pipeline.stac_items import make_item

EVENT = datetime(2024, 3, 10, 12, 0, tzinfo=UTC)
LON, LAT = -114.0, 37.0
AOI = (LON - 0.02, LAT - 0.02, LON + 0.02, LAT + 0.02)


def _grid(epsg: int = 32611) -> dict:
    x, y = Transformer.from_crs(4326, epsg, always_xy=True).transform(LON, LAT)
    x0, y0 = round((x - 10_000) / 60) * 60.0, round((y + 10_000) / 60) * 60.0
    return {"epsg": epsg, "transform": (10.0, 0.0, x0, 0.0, -10.0, y0), "shape": (2000, 2000)}


def scene(item_id: str, days: float, cloud: float | None, orbit: int | None,
          **properties) -> dict:
    hrefs = {a: f"/data/{item_id}_{a}.tif" for a in ("red", "scl")}  # never read
    return make_item(item_id, EVENT + timedelta(days=days), hrefs, cloud_cover=cloud,
                     mgrs=("11", "S", "QA"), relative_orbit=orbit,
                     properties=properties, **_grid())


def params(url: str, **changes) -> SearchParams:
    base = dict(stac_url=url, collection="sentinel-2-l2a", asset="red", bbox=AOI,
                event_time=EVENT, days_before=30, days_after=30, max_cloud=20.0)
    return SearchParams(**{**base, **changes})


# the case: a pre and a post on orbit 71; another post, 8 days closer to the event
# and clearer, from orbit 114
SUN_71 = {"view:sun_elevation": 41.0, "view:sun_azimuth": 150.0,
          "view:incidence_angle": 3.0, "view:azimuth": 105.0}
TWO_ORBITS = [
    scene("PRE_R071", -4, 5.0, 71, **SUN_71),
    scene("POST_R071_LATER", 10, 5.0, 71, **{**SUN_71, "view:sun_elevation": 44.5,
                                              "view:sun_azimuth": 148.0}),
    scene("POST_R114_CLOSER", 2, 1.0, 114, **{"view:sun_elevation": 42.0,
                                              "view:sun_azimuth": 155.0,
                                              "view:incidence_angle": 9.0,
                                              "view:azimuth": 285.0}),
]


@pytest.fixture(scope="module")
def two_orbits():
    from pipeline.stac_items import make_collection
    from pipeline.stac_server import LocalStacServer

    with LocalStacServer(TWO_ORBITS, [make_collection("sentinel-2-l2a", TWO_ORBITS)]) as s:
        yield s.url


def test_by_default_the_pair_stays_on_one_orbit_though_another_post_is_closer(two_orbits):
    (plan,) = search_pairs(params(two_orbits))
    assert (plan.pre.id, plan.post.id) == ("PRE_R071", "POST_R071_LATER")
    assert plan.pre.orbit == plan.post.orbit == 71
    rec = plan.pairing
    assert rec["pre_relative_orbit"] == rec["post_relative_orbit"] == 71
    assert rec["same_orbit"] is True and rec["same_orbit_rule"] == "prefer"
    assert "within one relative orbit" in rec["pairing_reason"]
    assert rec["sun_elevation_difference_deg"] == pytest.approx(3.5)
    assert rec["sun_azimuth_difference_deg"] == pytest.approx(-2.0)
    assert rec["incidence_difference_deg"] == pytest.approx(0.0)


def test_any_takes_the_best_score_across_orbits_and_records_the_view_change(two_orbits):
    (plan,) = search_pairs(params(two_orbits, same_orbit="any"))
    assert (plan.pre.id, plan.post.id) == ("PRE_R071", "POST_R114_CLOSER")
    rec = plan.pairing
    assert (rec["pre_relative_orbit"], rec["post_relative_orbit"]) == (71, 114)
    assert rec["same_orbit"] is False
    assert rec["incidence_difference_deg"] == pytest.approx(6.0)
    assert rec["view_azimuth_difference_deg"] == pytest.approx(180.0)  # wrapped


def test_require_refuses_cleanly_when_no_pair_shares_an_orbit(serve_stac):
    items = [TWO_ORBITS[0], TWO_ORBITS[2]]  # orbit 71 before, 114 after only
    url = serve_stac(items).url
    with pytest.raises(NoSameOrbitPairError, match=r"require.*71.*114") as info:
        search_pairs(params(url, same_orbit="require"))
    assert isinstance(info.value, NoScenesError) and url in str(info.value)
    (plan,) = search_pairs(params(url))  # prefer: the cross-orbit pair, said in the log
    assert plan.pairing["same_orbit"] is False


def test_prefer_crosses_orbits_only_when_no_same_orbit_pair_passes_the_cloud_limit(
        serve_stac, caplog):
    cloudy = scene("POST_R071_CLOUDY", 10, 35.0, 71)
    url = serve_stac([TWO_ORBITS[0], cloudy, TWO_ORBITS[2]]).url
    caplog.set_level(logging.INFO, logger="pipeline.search")
    (plan,) = search_pairs(params(url))
    assert plan.post.id == "POST_R114_CLOSER"
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("no pair within one relative orbit passes the cloud limit" in r.getMessage()
               for r in warned)
    assert "across orbits" in plan.pairing["pairing_reason"]
    # with the limit above its cloud cover, the same-orbit post wins again, with no warning
    caplog.clear()
    (plan,) = search_pairs(params(url, max_cloud=40.0))
    assert plan.post.id == "POST_R071_CLOUDY"
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


def test_n_pairs_are_the_best_combinations_on_one_orbit_in_score_order(serve_stac):
    items = [scene("PRE_A", -3, 0.0, 71), scene("PRE_B", -9, 0.0, 71),
             scene("PRE_C", -13, 0.0, 71), scene("POST_A", 2, 0.0, 71),
             scene("POST_B", 7, 0.0, 71), scene("PRE_X", -1, 0.0, 114),
             scene("POST_X", 1, 0.0, 114), scene("POST_Y", 0.5, 0.0, 8)]
    url = serve_stac(items).url
    plans = search_pairs(params(url, pairs=3, same_orbit="require"))
    # scores (days, no cloud): (X, X) 2 on orbit 114, (A, A) 5, (A, B) 10, (B, A) 11 on
    # orbit 71; (X, Y) 1.5 and (A, Y) 3.5 cross orbits
    ids = [(p.pre.id, p.post.id) for p in plans]
    assert ids == [("PRE_X", "POST_X"), ("PRE_A", "POST_A"), ("PRE_A", "POST_B")]
    assert [p.pairing["pairing_rank"] for p in plans] == [1, 2, 3]
    assert all(p.pairing["same_orbit"] for p in plans)
    assert len({p.pre.grid_key for p in plans}) == 1
    many = search_pairs(params(url, pairs=50))
    assert len(many) == 3 * 2 + 1  # every same-orbit combination, none across orbits


def test_items_without_an_orbit_pair_as_before_and_require_refuses_them(serve_stac,
                                                                         caplog):
    items = [scene("PRE_NO_ORBIT", -2, 0.0, None), scene("POST_NO_ORBIT", 3, 0.0, None)]
    url = serve_stac(items).url
    caplog.set_level(logging.INFO, logger="pipeline.search")
    (plan,) = search_pairs(params(url))
    assert plan.pairing["same_orbit"] is None and plan.pairing["pre_relative_orbit"] is None
    assert plan.pairing["sun_elevation_difference_deg"] is None  # the items state none
    assert "state no relative orbit" in caplog.text
    with pytest.raises(NoSameOrbitPairError, match="unknown"):
        search_pairs(params(url, same_orbit="require"))


def test_bad_pairing_settings_are_refused_in_one_line():
    from pipeline.config import ConfigError, RunConfig

    with pytest.raises(ConfigError, match="same_orbit must be one of prefer, require, any"):
        RunConfig.from_flat(out="x.zarr", event_time="2024-03-10", bbox=list(AOI),
                            same_orbit="maybe")
    with pytest.raises(ConfigError, match="pairs"):
        RunConfig.from_flat(out="x.zarr", event_time="2024-03-10", bbox=list(AOI), pairs=0)
    cfg = RunConfig.from_flat(out="x.zarr", event_time="2024-03-10", bbox=list(AOI))
    assert (cfg.search.same_orbit, cfg.search.pairs) == ("prefer", 1)
    attrs = cfg.as_attrs()
    assert attrs["search_same_orbit"] == "prefer" and attrs["search_pairs"] == 1


# ---------------------------------------------------------------------- Collection-1
@pytest.mark.parametrize("properties, raster, expected", [
    ({"s2:processing_baseline": "05.10"}, None, 1000.0),  # Collection-1
    ({"s2:processing_baseline": "03.01"}, None, 0.0),
    ({"s2:processing_baseline": "04.00", "earthsearch:boa_offset_applied": True},
     {"offset": -0.1, "scale": 0.0001}, 0.0),  # Earth Search removed it already
    ({"s2:processing_baseline": "04.00", "earthsearch:boa_offset_applied": False}, None,
     1000.0),
    ({}, {"offset": -0.1, "scale": 0.0001}, 1000.0),
    ({}, None, 0.0),
])
def test_the_baseline_offset_is_read_from_the_items_metadata(properties, raster, expected):
    from pipeline.items import boa_offset_dn

    item = scene("X", 1, 0.0, 71, **properties)
    if raster is not None:
        item["assets"]["red"]["raster:bands"] = [{"nodata": 0, **raster}]
    assert boa_offset_dn(item, "red") == expected


def test_a_collection_1_pair_loads_on_one_scale_with_nodata_and_saturation_tested_first(
        tmp_path):
    import numpy as np
    import rasterio

    from pipeline.load import load_pair
    from pipeline.stac_items import make_collection
    from pipeline.stac_server import LocalStacServer

    shape = (128, 128)
    transform = (10.0, 0.0, 600000.0, 0.0, -10.0, 4200000.0)
    rng = np.random.default_rng(0)
    ground = rng.integers(200, 3000, shape).astype(np.uint16)
    old = ground.copy()  # baseline 03.00: reflectance x 10 000
    new = ground + 1000  # baseline 05.10: + 1000 DN
    new[10, 10], new[10, 11], new[10, 12] = 1000, 65535, 0  # reflectance 0, saturated,
    old[10, 10] = 1  # no data

    def cog(name, array):
        path = tmp_path / f"{name}.tif"
        with rasterio.open(path, "w", driver="GTiff", width=shape[1], height=shape[0],
                           count=1, dtype=array.dtype, crs="EPSG:32611",
                           transform=rasterio.Affine(*transform), nodata=0) as dst:
            dst.write(array, 1)
        return str(path)

    scl = cog("scl", np.full(shape, 4, np.uint8))
    common = dict(epsg=32611, transform=transform, shape=shape, cloud_cover=0.0,
                  mgrs=("11", "S", "KU"), collection="sentinel-2-c1-l2a", relative_orbit=71)
    items = [make_item("C1_PRE", EVENT - timedelta(days=5), {"red": cog("pre", old),
                                                             "scl": scl},
                       properties={"s2:processing_baseline": "03.00"}, **common),
             make_item("C1_POST", EVENT + timedelta(days=5), {"red": cog("post", new),
                                                              "scl": scl},
                       properties={"s2:processing_baseline": "05.10"}, **common)]
    to_ll = Transformer.from_crs(32611, 4326, always_xy=True)
    lon, lat = to_ll.transform([600000.0, 601280.0], [4198720.0, 4200000.0])
    bbox = (min(lon) + 1e-4, min(lat) + 1e-4, max(lon) - 1e-4, max(lat) - 1e-4)
    with LocalStacServer(items, [make_collection("sentinel-2-c1-l2a", items)]) as s:
        (plan,) = search_pairs(params(s.url, collection="sentinel-2-c1-l2a", bbox=bbox))
    ds = load_pair(plan, chunk=64)
    assert ds.attrs["pre_boa_offset_dn"] == [0.0] and ds.attrs["post_boa_offset_dn"] == [1000.0]
    row0 = round((4200000.0 - float(ds.y[0]) - 5.0) / 10.0)
    col0 = round((float(ds.x[0]) - 600000.0 - 5.0) / 10.0)
    pre = ds.pre.values[0]
    post = ds.post.values[0]
    expect = ground[row0:row0 + pre.shape[0], col0:col0 + pre.shape[1]].astype(np.float32)
    r, c = 10 - row0, 10 - col0
    inner = (slice(r + 1, None), slice(None))
    np.testing.assert_array_equal(post[inner], expect[inner])  # one scale for both dates
    np.testing.assert_array_equal(pre[inner], expect[inner])
    assert post[r, c] == 0.0  # stored 1000: reflectance 0, data, not "no data"
    assert np.isnan(post[r, c + 1]) and np.isnan(post[r, c + 2])  # saturated, no data


# ---------------------------------------------------------------------------- the CLI
def test_the_event_command_refuses_require_in_one_line_before_any_work(serve_stac,
                                                                        tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    url = serve_stac([TWO_ORBITS[0], TWO_ORBITS[2]]).url
    exe = str(Path(sys.executable).with_name("microflow"))
    res = subprocess.run([exe, "event", "--stac-url", url, "--bbox", *map(str, AOI),
                          "--event-time", EVENT.isoformat(), "--out", str(tmp_path / "x.zarr"),
                          "--same-orbit", "require"], capture_output=True, text=True,
                         timeout=120)
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.returncode == 1 and len(lines) == 1, res.stderr
    assert "within one relative orbit" in lines[0] and "71" in lines[0] and "114" in lines[0]
    assert "Traceback" not in res.stderr and not (tmp_path / "x.zarr").exists()


def test_the_pairing_options_say_their_defaults_as_values():
    from flows.cli import build_parser

    text = " ".join(build_parser()._subparsers._group_actions[0].choices["event"]
                    .format_help().split())
    assert "--same-orbit {prefer,require,any}" in text and "(default prefer)" in text
    assert "--pairs N" in text and "(default 1)" in text
