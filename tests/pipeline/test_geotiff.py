import logging

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from pipeline.geotiff import load_geotiff_pair


def _write(path, array, crs="EPSG:32611", transform=None, tags=None):
    transform = transform or from_origin(500000, 4000000, 10, 10)
    with rasterio.open(path, "w", driver="GTiff", width=array.shape[1], height=array.shape[0],
                       count=1, dtype=array.dtype, crs=crs, transform=transform,
                       nodata=0) as dst:
        dst.write(array, 1)
        if tags:
            dst.update_tags(**tags)
    return path


@pytest.fixture
def images(rng):
    return [rng.integers(100, 4000, (128, 160)).astype(np.uint16) for _ in range(2)]


def test_same_grid_pair_loads_lazily_with_crs_and_dates(tmp_path, images):
    a = _write(tmp_path / "a.tif", images[0], tags={"TIFFTAG_DATETIME": "2023:02:01 08:00:00"})
    b = _write(tmp_path / "b.tif", images[1])
    ds, meta = load_geotiff_pair(a, b, chunk=64)
    assert ds.pre.chunks is not None and ds.pre.dtype == np.float32
    assert ds.rio.crs.to_epsg() == 32611
    assert float(ds.x[0]) == 500005.0 and float(ds.y[0]) == 3999995.0  # pixel centres
    np.testing.assert_array_equal(ds.post.values, images[1].astype(np.float32))
    assert meta["pre_id"] == "a" and meta["pre_time"].year == 2023 and meta["post_time"] is None


def test_post_on_another_grid_is_reprojected_and_logged(tmp_path, images, caplog):
    a = _write(tmp_path / "a.tif", images[0])
    b = _write(tmp_path / "b.tif", images[1], transform=from_origin(500005, 4000000, 10, 10))
    with caplog.at_level(logging.WARNING):
        ds, _ = load_geotiff_pair(a, b, chunk=64)
    assert "reprojecting post" in caplog.text
    assert ds.post.shape == ds.pre.shape
    np.testing.assert_array_equal(ds.x.values, ds.pre.x.values)


def test_unreadable_or_unsuitable_files_raise_clear_errors(tmp_path, images):
    a = _write(tmp_path / "a.tif", images[0])
    corrupt = tmp_path / "corrupt.tif"
    corrupt.write_bytes(b"II*\x00garbage" * 10)
    with pytest.raises(ValueError, match="cannot read"):
        load_geotiff_pair(a, corrupt)
    with pytest.raises(FileNotFoundError):
        load_geotiff_pair(a, tmp_path / "missing.tif")
    with pytest.raises(ValueError, match="out of range"):
        load_geotiff_pair(a, a, band=2)
    geo = _write(tmp_path / "geo.tif", images[1], crs="EPSG:4326",
                 transform=from_origin(10, 45, 0.001, 0.001))
    with pytest.raises(ValueError, match="geographic"):
        load_geotiff_pair(geo, geo)
