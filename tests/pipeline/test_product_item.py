"""A STAC Item per processed pair, beside the cube and listed in its attributes; a static
Catalog of them; and the pair's provenance as data (absolute inputs, reprojection)."""

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
from rasterio.transform import from_origin
from rasterio.warp import transform
from scipy import ndimage

from pipeline import cube
from pipeline.config import RunConfig
from pipeline.demo import TEXTURE
from pipeline.process import geotiff_source, process_pair
from pipeline.product_item import (
    add_to_catalog,
    build_item,
    input_item_href,
    item_path,
    write_item,
)

PX, RES = 128, 10.0
DX, DY = 1.5, -1.0  # px
MICROFLOW = str(Path(sys.executable).with_name("microflow"))


def _tif(path: Path, array: np.ndarray, x0: float = 600000.0) -> Path:
    with rasterio.open(path, "w", driver="GTiff", width=PX, height=PX, count=1,
                       dtype="uint16", crs="EPSG:32611", nodata=0,
                       transform=from_origin(x0, 4200000.0, RES, RES)) as dst:
        dst.write(np.clip(np.rint(array), 1, 65535).astype(np.uint16), 1)
    return path


@pytest.fixture(scope="module")
def processed(tmp_path_factory):
    """One pair run by ``process_pair`` from relative paths, post on a grid shifted by
    half a pixel (so it is reprojected), with the quick-looks."""
    with rasterio.open(TEXTURE) as src:
        tex = src.read(1).astype(np.float64)
    rows, cols = np.mgrid[0:PX, 0:PX].astype(np.float64)
    post = ndimage.map_coordinates(tex, [rows + 16 - DY, cols + 16 - DX], order=3,
                                   mode="reflect")
    root = tmp_path_factory.mktemp("item")
    (root / "in").mkdir()
    _tif(root / "in" / "pre_20200101.tif", tex[16:16 + PX, 16:16 + PX])
    _tif(root / "in" / "post_20200111.tif", post, x0=600000.0 + RES / 2)
    (root / "work").mkdir()
    cwd = Path.cwd()
    os.chdir(root / "work")
    try:
        cfg = RunConfig.from_flat(out="../out/x.zarr", tile=64, halo=16, ramp="keep",
                                  workers=1)
        from distributed import Client, LocalCluster

        with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                          dashboard_address=None) as cluster, Client(cluster) as client:
            res = process_pair(geotiff_source("../in/pre_20200101.tif",
                                              "../in/post_20200111.tif", cfg), cfg,
                               client=client, progress=False)
    finally:
        os.chdir(cwd)
    return root, res


def test_a_stac_item_is_written_beside_the_cube_and_reads_back_with_pystac(processed):
    root, res = processed
    path = root / "out" / "x_pair0.json"
    assert item_path(res.cube, 0) == path and path.is_file()
    item = pystac.Item.from_file(str(path))
    assert item.id == "x_pair0"
    assert item.properties["start_datetime"].startswith("2020-01-01")
    assert item.properties["end_datetime"].startswith("2020-01-11")
    assert item.datetime is None
    assert item.properties["proj:code"] == "EPSG:32611"
    assert item.properties["proj:shape"] == [PX, PX]
    assert item.properties["microflow:complete"] is True
    lon, lat = np.asarray(item.geometry["coordinates"][0]).T
    x1, y0 = 600000.0 + PX * RES, 4200000.0 - PX * RES
    cx, cy = transform("EPSG:32611", "EPSG:4326", [600000.0, x1, x1, 600000.0],
                       [y0, y0, 4200000.0, 4200000.0])  # the grid's four corners
    np.testing.assert_allclose([lon.min(), lat.min(), lon.max(), lat.max()],
                               [min(cx), min(cy), max(cx), max(cy)], atol=1e-6)
    assert item.bbox == pytest.approx([lon.min(), lat.min(), lon.max(), lat.max()])
    assets = item.assets
    assert Path(assets["cube"].get_absolute_href()) == root / "out" / "x.zarr"
    assert assets["cube"].media_type == pystac.MediaType.VND_ZARR
    pngs = sorted(k for k, a in assets.items() if a.media_type == pystac.MediaType.PNG)
    assert pngs == ["x_pair0_maps", "x_pair0_profile"]
    assert all(Path(a.get_absolute_href()).exists() for a in assets.values())
    assert cube.open_cube(res.cube).attrs["stac_items"] == ["x_pair0.json"]


def test_provenance_has_absolute_inputs_and_records_the_reprojection(processed):
    root, res = processed
    prov = cube.pair_provenance(cube.open_cube(res.cube), 0)
    assert prov["pre_file"] == str(root / "in" / "pre_20200101.tif")
    assert prov["post_file"] == str(root / "in" / "post_20200111.tif")
    record = prov["post_reprojected"]
    assert isinstance(record, dict)  # an object, not JSON text
    assert record["resampling"] == "bilinear"
    assert record["from_crs"] == record["to_crs"] == "EPSG:32611"
    assert record["from_transform"][2] == 600000.0 + RES / 2
    assert record["to_transform"][2] == 600000.0
    assert isinstance(prov["ramp_fit"], dict)


def test_export_adds_its_files_to_the_item_and_a_rewrite_keeps_them(processed, tmp_path):
    root, res = processed
    out = tmp_path / "cogs"
    r = subprocess.run([MICROFLOW, "export", str(res.cube), "--pair", "0", "--out", str(out)],
                       capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert r.returncode == 0, r.stderr[-3000:]
    item = pystac.Item.from_file(str(item_path(res.cube, 0)))
    cogs = {k: a for k, a in item.assets.items() if a.media_type == pystac.MediaType.COG}
    assert sorted(cogs) == ["east", "east_sigma", "north", "north_sigma", "valid"]
    assert Path(cogs["east"].get_absolute_href()) == out / "east.tif"
    rupture = root / "out" / "x_pair0_rupture.geojson"
    rupture.write_text(json.dumps({"type": "FeatureCollection", "features": []}))
    write_item(res.cube, 0, quicklooks=res.quicklooks, extra=[rupture, root / "missing.json"])
    item = pystac.Item.from_file(str(item_path(res.cube, 0)))
    assert "east" in item.assets  # the exports are kept
    assert item.assets["x_pair0_rupture"].media_type == pystac.MediaType.GEOJSON
    assert not any("missing" in k for k in item.assets)
    assert cube.open_cube(res.cube).attrs["stac_items"] == ["x_pair0.json"]  # once


def test_items_from_stac_inputs_link_to_them_as_derived_from(tmp_path):
    path = tmp_path / "c.zarr"
    x = 500000.0 + 10 * (np.arange(80) + 0.5)
    y = 4000000.0 - 10 * (np.arange(70) + 0.5)
    cube.create_cube(path, x=x, y=y, crs="EPSG:32611", chunk=32, attrs={})
    pre = {"id": "S2A_1", "collection": "sentinel-2-l2a", "links": []}
    post = {"id": "S2B_2", "collection": "sentinel-2-l2a",
            "links": [{"rel": "self", "href": "https://stac.example/items/S2B_2"}]}
    api = "http://127.0.0.1:8080/"
    cube.add_pair(path, pre_time=None, post_time=None, pre_id="S2A_1", post_id="S2B_2",
                  attrs={"pre_item": input_item_href(pre, api),
                         "post_item": input_item_href(post, api)})
    item = build_item(path, 0)
    links = [link.href for link in item.links if link.rel == "derived_from"]
    assert links == ["http://127.0.0.1:8080/collections/sentinel-2-l2a/items/S2A_1",
                     "https://stac.example/items/S2B_2"]
    assert item.datetime is not None  # no acquisition times: when processed, said so
    assert "unknown" in item.properties["microflow:time_note"]
    assert input_item_href({"id": "a"}) is None


def test_a_static_catalog_lists_each_item_once_and_reads_back(tmp_path):
    x = 500000.0 + 10 * (np.arange(80) + 0.5)
    y = 4000000.0 - 10 * (np.arange(70) + 0.5)
    items = []
    for name in ("a", "b"):
        path = tmp_path / f"{name}.zarr"
        cube.create_cube(path, x=x, y=y, crs="EPSG:32611", chunk=32, attrs={})
        cube.add_pair(path, pre_time="2020-01-01", post_time="2020-01-05", pre_id="p",
                      post_id="q")
        items.append(write_item(path, 0))
    add_to_catalog(tmp_path, items[:1])
    cat_path = add_to_catalog(tmp_path, items)  # a rerun lists "a" once
    cat = pystac.Catalog.from_file(str(cat_path))
    assert sorted(i.id for i in cat.get_items()) == ["a_pair0", "b_pair0"]
    for item in cat.get_items():
        assert Path(item.get_root().self_href) == cat_path
        assert Path(item.assets["cube"].get_absolute_href()).is_dir()
