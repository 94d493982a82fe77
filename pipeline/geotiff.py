"""Lazy loading of a pre/post pair of GeoTIFFs (the ``microflow pair`` input)."""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import rioxarray
import xarray as xr
from rasterio.enums import Resampling
from rasterio.errors import RasterioIOError

log = logging.getLogger(__name__)
RESAMPLING = Resampling.bilinear
"""How a post on another grid than pre is resampled onto pre's grid."""


def _acquired(path: Path) -> datetime | None:
    """Acquisition time from the TIFF ``DATETIME`` tag (``YYYY:MM:DD HH:MM:SS``), else the
    date in the file name (``..._20160529_...``, ``S2A_MSIL1C_20160529T102032_...``, as
    Sentinel-2 and Landsat products are named), else None."""
    import rasterio

    with rasterio.open(path) as ds:
        tag = ds.tags().get("TIFFTAG_DATETIME") or ds.tags().get("DATETIME")
    for fmt in ("%Y:%m:%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"):
        try:
            return datetime.strptime(tag or "", fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    return date_in_name(path.name)


def date_in_name(name: str) -> datetime | None:
    """The one date ``YYYYMMDD`` (1972 or later, optionally followed by ``THHMMSS``) that a
    file name holds between non-digits, or None if it holds none or several different
    ones (a guess is worse than no time)."""
    found = set()
    for m in re.finditer(r"(?<!\d)((?:19[7-9]|20\d)\d{5})(?:T(\d{6}))?(?!\d)", name):
        try:
            found.add(datetime.strptime(m.group(1) + (m.group(2) or "000000"),
                                        "%Y%m%d%H%M%S").replace(tzinfo=UTC))
        except ValueError:
            continue
    if len({d.date() for d in found}) != 1:
        return None
    return min(found)


def _zero_is_nodata(path: Path, da: xr.DataArray, zero_is_nodata: bool | None) -> bool:
    """Whether 0 marks missing pixels in ``path`` (see ``InputConfig.zero_is_nodata``)."""
    if zero_is_nodata is not None:
        return zero_is_nodata
    if np.dtype(da.encoding.get("rasterio_dtype", da.dtype)) == np.uint16:
        return True  # Sentinel-2 DN: 0 is "no data"
    return False


def _open_bands(path: Path, bands: tuple[int, ...], chunk: int, nodata: float | None,
                zero_is_nodata: bool | None) -> xr.DataArray:
    """``(band, y, x)`` float32 of ``path``'s ``bands`` (1-based), NaN where missing."""
    if not path.is_file():
        raise FileNotFoundError(f"no such GeoTIFF: {path}")
    try:
        da = rioxarray.open_rasterio(path, chunks={"band": 1, "y": chunk, "x": chunk},
                                     masked=True)
    except RasterioIOError as e:
        raise ValueError(f"cannot read {path} as a raster: {e}") from e
    for band in bands:
        if not 1 <= band <= da.sizes["band"]:
            raise ValueError(f"{path} has {da.sizes['band']} band(s); --band {band} is out of "
                             "range")
    if da.rio.crs is None:
        raise ValueError(f"{path} has no CRS; a georeferenced GeoTIFF is needed")
    if da.rio.crs.is_geographic:
        raise ValueError(f"{path} is in geographic coordinates ({da.rio.crs}); reproject it "
                         "to a projected CRS in metres (e.g. UTM) first")
    tagged = da.rio.encoded_nodata is not None
    out = da.sel(band=list(bands)).astype(np.float32)
    if nodata is not None:
        out = out.where(out != nodata)
    if _zero_is_nodata(path, da, zero_is_nodata):
        out = out.where(out != 0)
    elif not tagged and nodata is None:
        sample = out.data[:, ::16, ::16]
        zeros = float((sample == 0).mean().compute())
        if zeros > 0:
            log.warning("%s has no nodata tag and %.1f%% zeros (sampled); they are processed "
                        "as data: pass --zero-is-nodata (or --nodata 0) if they mark missing "
                        "pixels", path.name, 100 * zeros)
    return out


def load_geotiff_pair(pre: str | Path, post: str | Path, bands: tuple[int, ...] = (1,),
                      chunk: int = 512, nodata: float | None = None,
                      zero_is_nodata: bool | None = None) -> tuple[xr.Dataset, dict]:
    """``pre``/``post`` ``(band, y, x)`` float32 (NaN = nodata) on ``pre``'s grid, and
    pair metadata (ids, times).

    Missing pixels: the file's nodata tag, ``nodata`` if given, and 0 where
    ``zero_is_nodata`` (None: yes for uint16 data, as Sentinel-2 DN; otherwise a warning
    when zeros are found in a file without a nodata tag). If ``post`` is on another grid
    (CRS, resolution or extent) it is reprojected onto ``pre``'s grid (``RESAMPLING``) —
    which loads it — and a log line says so (:func:`reprojection` records it).
    """
    pre, post = Path(pre), Path(post)
    bands = tuple(int(b) for b in bands)
    a = _open_bands(pre, bands, chunk, nodata, zero_is_nodata)
    b = _open_bands(post, bands, chunk, nodata, zero_is_nodata)
    same = (a.rio.crs == b.rio.crs and a.rio.transform() == b.rio.transform()
            and a.shape == b.shape)
    if not same:
        log.warning("post %s is on another grid (%s, %s px) than pre %s (%s, %s px): "
                    "reprojecting post onto pre's grid (%s)", post.name, b.rio.crs,
                    b.shape[1:], pre.name, a.rio.crs, a.shape[1:], RESAMPLING.name)
        b = b.rio.reproject_match(a, resampling=RESAMPLING).chunk(
            {"y": chunk, "x": chunk})
        b = b.where(np.isfinite(b))
    keep = ("x", "y", "band")
    crs = a.rio.crs
    a = a.drop_vars([c for c in a.coords if c not in keep])
    b = b.drop_vars([c for c in b.coords if c not in keep]).assign_coords(x=a.x, y=a.y)
    ds = xr.Dataset({"pre": a, "post": b})
    ds = ds.rio.write_crs(crs)
    return ds, pair_meta(pre, post)


def _grid(path: Path) -> dict:
    import rasterio

    with rasterio.open(path) as ds:
        return {"crs": ds.crs.to_string() if ds.crs else None,
                "transform": list(ds.transform)[:6], "shape": [ds.height, ds.width]}


def reprojection(pre: str | Path, post: str | Path) -> dict:
    """What :func:`load_geotiff_pair` does to ``post``'s grid, for the provenance (headers
    only): ``{"post_reprojected": {from_crs, from_transform, from_shape, to_crs,
    to_transform, to_shape, resampling}}`` when post is on another grid than pre, else
    ``{"post_reprojected": False}``. Transforms are GDAL's six affine numbers (m)."""
    a, b = _grid(Path(pre)), _grid(Path(post))
    if a == b:
        return {"post_reprojected": False}
    return {"post_reprojected": {
        **{f"from_{k}": v for k, v in b.items()}, **{f"to_{k}": v for k, v in a.items()},
        "resampling": RESAMPLING.name}}


def pair_meta(pre: str | Path, post: str | Path) -> dict:
    """Ids (file stems) and acquisition times (TIFF tags, else dates in the file names) of
    a pair of GeoTIFFs."""
    pre, post = Path(pre), Path(post)
    for path in (pre, post):
        if not path.is_file():
            raise FileNotFoundError(f"no such GeoTIFF: {path}")
    return {"pre_id": pre.stem, "post_id": post.stem, "pre_time": _acquired(pre),
            "post_time": _acquired(post)}
