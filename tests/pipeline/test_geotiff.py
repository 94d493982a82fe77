import logging

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from pipeline.geotiff import load_geotiff_pair


def _write(path, array, crs="EPSG:32611", transform=None, tags=None, nodata=0):
    transform = transform or from_origin(500000, 4000000, 10, 10)
    with rasterio.open(path, "w", driver="GTiff", width=array.shape[1], height=array.shape[0],
                       count=1, dtype=array.dtype, crs=crs, transform=transform,
                       nodata=nodata) as dst:
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
    np.testing.assert_array_equal(ds.post.isel(band=0).values, images[1].astype(np.float32))
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
        load_geotiff_pair(a, a, bands=(1, 2))
    geo = _write(tmp_path / "geo.tif", images[1], crs="EPSG:4326",
                 transform=from_origin(10, 45, 0.001, 0.001))
    with pytest.raises(ValueError, match="geographic"):
        load_geotiff_pair(geo, geo)


def test_uint16_zeros_are_nodata_by_default_even_without_a_tag(tmp_path, images):
    img = images[0].copy()
    img[:10] = 0
    a = _write(tmp_path / "a.tif", img, nodata=None)
    ds, _ = load_geotiff_pair(a, a, chunk=64)
    pre = ds.pre.isel(band=0).values
    assert np.isnan(pre[:10]).all() and np.isfinite(pre[10:]).all()
    ds, _ = load_geotiff_pair(a, a, chunk=64, zero_is_nodata=False)
    assert np.isfinite(ds.pre.values).all()


def test_zeros_in_a_float_file_without_a_tag_warn_and_can_be_masked(tmp_path, images, caplog):
    img = images[0].astype(np.float32)
    img[:32] = 0.0
    a = _write(tmp_path / "a.tif", img, nodata=None)
    with caplog.at_level(logging.WARNING):
        ds, _ = load_geotiff_pair(a, a, chunk=64)
    assert "no nodata tag" in caplog.text and "--zero-is-nodata" in caplog.text
    assert np.isfinite(ds.pre.values).all()  # processed as data, as the warning says
    ds, _ = load_geotiff_pair(a, a, chunk=64, zero_is_nodata=True)
    assert np.isnan(ds.pre.isel(band=0).values[:32]).all()
    ds, _ = load_geotiff_pair(a, a, chunk=64, nodata=float(img[40, 40]))
    assert np.isnan(ds.pre.isel(band=0).values[40, 40])


@pytest.mark.parametrize("name, expected", [
    ("pre_S2A_20160529_T33UUU_north.tif", "2016-05-29T00:00:00"),
    ("S2A_MSIL1C_20160529T102032_N0202_R065_T33UUU_20160529T102030.tif",
     "2016-05-29T10:20:30"),
    ("LC08_L1TP_224077_20200518_20200527_01_T1.tif", None),  # two dates: no guess
    ("tile_12345678.tif", None), ("scene.tif", None), ("a_20231301.tif", None)])
def test_a_date_in_the_file_name_is_read_only_when_unambiguous(name, expected):
    from pipeline.geotiff import date_in_name

    got = date_in_name(name)
    assert (got.isoformat()[:19] if got else None) == expected


def test_files_without_a_date_tag_take_the_date_in_their_names(tmp_path, images):
    from pipeline.geotiff import pair_meta

    a = _write(tmp_path / "pre_S2A_20160529_T33UUU.tif", images[0])
    b = _write(tmp_path / "post_S2A_20160608_T33UUU.tif", images[1],
               tags={"TIFFTAG_DATETIME": "2016:06:08 10:20:00"})
    meta = pair_meta(a, b)
    assert meta["pre_time"].isoformat() == "2016-05-29T00:00:00+00:00"
    assert meta["post_time"].isoformat() == "2016-06-08T10:20:00+00:00"  # the tag wins
