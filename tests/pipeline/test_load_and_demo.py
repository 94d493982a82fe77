"""Loading through a real local STAC API, the demo end to end, and bad input."""

from datetime import UTC, datetime

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from pipeline.load import load_pair
from pipeline.plan import SearchParams
from pipeline.search import search_pairs
from pipeline.stac_items import make_collection, make_item
from pipeline.stac_server import LocalStacServer

EVENT = datetime(2024, 3, 10, tzinfo=UTC)
T = from_origin(600000.0, 4200000.0, 10.0, 10.0)


def _cog(path, array, transform=T, epsg=32611):
    with rasterio.open(path, "w", driver="GTiff", width=array.shape[1], height=array.shape[0],
                       count=1, dtype=array.dtype, crs=f"EPSG:{epsg}", transform=transform,
                       nodata=0, tiled=True, blockxsize=128, blockysize=128) as dst:
        dst.write(array, 1)
    return str(path)


def _bbox_of(transform, shape, epsg=32611, frac=0.8):
    from pyproj import Transformer

    h, w = shape
    to_ll = Transformer.from_crs(epsg, 4326, always_xy=True)
    m = (1 - frac) / 2
    xs = [transform.c + transform.a * w * m, transform.c + transform.a * w * (1 - m)]
    ys = [transform.f + transform.e * h * (1 - m), transform.f + transform.e * h * m]
    lon, lat = to_ll.transform([xs[0], xs[1], xs[0], xs[1]], [ys[0], ys[0], ys[1], ys[1]])
    return (min(lon), min(lat), max(lon), max(lat))


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    d = tmp_path_factory.mktemp("cogs")
    rng = np.random.default_rng(0)
    shape = (256, 256)
    pre = rng.integers(500, 3000, shape).astype(np.uint16)
    post = rng.integers(500, 3000, shape).astype(np.uint16)
    scl_post = np.full(shape, 4, np.uint8)
    scl_post[:40, :40] = 9  # cloud
    corrupt = d / "corrupt.tif"
    corrupt.write_bytes(b"II*\x00" + b"\x00" * 64)
    common = dict(epsg=32611, transform=tuple(T)[:6], shape=shape, mgrs=("11", "S", "KU"))
    items = [
        make_item("PRE", datetime(2024, 3, 1, tzinfo=UTC),
                  {"red": _cog(d / "pre.tif", pre),
                   "scl": _cog(d / "pre_scl.tif", np.full(shape, 4, np.uint8))},
                  cloud_cover=1.0, **common),
        make_item("POST", datetime(2024, 3, 12, tzinfo=UTC),
                  {"red": _cog(d / "post.tif", post), "scl": _cog(d / "post_scl.tif", scl_post)},
                  cloud_cover=2.0, **common),
        make_item("BROKEN_POST", datetime(2024, 6, 20, tzinfo=UTC), {"red": str(corrupt)},
                  cloud_cover=0.0, **common),
    ]
    with LocalStacServer(items, [make_collection("sentinel-2-l2a", items)]) as server:
        yield {"url": server.url, "pre": pre, "post": post, "bbox": _bbox_of(T, shape)}


def _params(scenes, **kw):
    base = dict(stac_url=scenes["url"], collection="sentinel-2-l2a", asset="red",
                bbox=scenes["bbox"], event_time=EVENT, days_before=30, days_after=30,
                max_cloud=20)
    base.update(kw)
    return SearchParams(**base)


def test_loaded_pixels_sit_on_the_native_grid_unshifted(scenes):
    (plan,) = search_pairs(_params(scenes))
    ds = load_pair(plan, chunk=64)
    assert ds.pre.chunks is not None and ds.rio.crs.to_epsg() == 32611
    x0, y0 = float(ds.x[0]), float(ds.y[0])
    col = round((x0 - T.c) / T.a - 0.5)
    row = round((y0 - T.f) / T.e - 0.5)
    assert abs((x0 - T.c) / T.a - 0.5 - col) < 1e-6  # pixel centres, not shifted
    h, w = ds.sizes["y"], ds.sizes["x"]
    np.testing.assert_array_equal(ds.pre.isel(band=0).values,
                                  scenes["pre"][row:row + h, col:col + w])


def test_clouds_from_scl_are_masked(scenes):
    (plan,) = search_pairs(_params(scenes, bbox=_bbox_of(T, (256, 256), frac=1.0)))
    ds = load_pair(plan, chunk=64)
    post = ds.post.isel(band=0).values
    assert np.isnan(post[:30, :30]).all() and np.isfinite(post[60:, 60:]).all()
    cloud = ds.cloud.values
    assert cloud[:30, :30].all() and not cloud[60:, 60:].any()  # flagged cloud, not no data
    assert ds.attrs["clouds_masked"] == 1


def test_a_corrupt_cog_raises_instead_of_turning_into_nan(scenes):
    (plan,) = search_pairs(_params(scenes, event_time=datetime(2024, 6, 1, tzinfo=UTC),
                                   days_before=100, days_after=30))
    assert plan.post.id == "BROKEN_POST"
    ds = load_pair(plan, chunk=64)
    with pytest.raises(Exception, match=r"(?i)corrupt|not recognized|TIFF|read"):
        ds.post.values  # noqa: B018
