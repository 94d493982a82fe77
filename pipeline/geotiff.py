"""Lazy loading of a pre/post pair of GeoTIFFs (the ``microflow pair`` input)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import rioxarray
import xarray as xr
from rasterio.errors import RasterioIOError

log = logging.getLogger(__name__)


def _acquired(path: Path) -> datetime | None:
    """Acquisition time from the TIFF ``DATETIME`` tag (``YYYY:MM:DD HH:MM:SS``), if any."""
    import rasterio

    with rasterio.open(path) as ds:
        tag = ds.tags().get("TIFFTAG_DATETIME") or ds.tags().get("DATETIME")
    if not tag:
        return None
    for fmt in ("%Y:%m:%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"):
        try:
            return datetime.strptime(tag, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    return None


def _open_band(path: Path, band: int, chunk: int) -> xr.DataArray:
    if not path.is_file():
        raise FileNotFoundError(f"no such GeoTIFF: {path}")
    try:
        da = rioxarray.open_rasterio(path, chunks={"band": 1, "y": chunk, "x": chunk},
                                     masked=True)
    except RasterioIOError as e:
        raise ValueError(f"cannot read {path} as a raster: {e}") from e
    if not 1 <= band <= da.sizes["band"]:
        raise ValueError(f"{path} has {da.sizes['band']} band(s); --band {band} is out of range")
    if da.rio.crs is None:
        raise ValueError(f"{path} has no CRS; a georeferenced GeoTIFF is needed")
    if da.rio.crs.is_geographic:
        raise ValueError(f"{path} is in geographic coordinates ({da.rio.crs}); reproject it "
                         "to a projected CRS in metres (e.g. UTM) first")
    return da.isel(band=band - 1, drop=True).astype(np.float32)


def load_geotiff_pair(pre: str | Path, post: str | Path, band: int = 1, chunk: int = 512
                      ) -> tuple[xr.Dataset, dict]:
    """``pre``/``post`` ``(y, x)`` float32 (NaN = nodata) on ``pre``'s grid, and pair metadata.

    If ``post`` is on another grid (CRS, resolution or extent) it is reprojected onto
    ``pre``'s grid (bilinear) — which loads it — and a log line says so.
    """
    pre, post = Path(pre), Path(post)
    a = _open_band(pre, band, chunk)
    b = _open_band(post, band, chunk)
    same = (a.rio.crs == b.rio.crs and a.rio.transform() == b.rio.transform()
            and a.shape == b.shape)
    if not same:
        from rasterio.enums import Resampling

        log.warning("post %s is on another grid (%s, %s px) than pre %s (%s, %s px): "
                    "reprojecting post onto pre's grid", post.name, b.rio.crs, b.shape,
                    pre.name, a.rio.crs, a.shape)
        b = b.rio.reproject_match(a, resampling=Resampling.bilinear).chunk(
            {"y": chunk, "x": chunk})
        b = b.where(np.isfinite(b))
    ds = xr.Dataset({"pre": a.drop_vars("spatial_ref", errors="ignore"),
                     "post": b.drop_vars("spatial_ref", errors="ignore").assign_coords(
                         x=a.x, y=a.y)})
    ds = ds.rio.write_crs(a.rio.crs)
    meta = {"pre_id": pre.stem, "post_id": post.stem, "pre_time": _acquired(pre),
            "post_time": _acquired(post)}
    return ds, meta
