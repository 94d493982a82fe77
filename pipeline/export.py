"""``microflow export``: one pair of a cube as Cloud-Optimized GeoTIFFs (or a CF NetCDF) for
GIS users.

COGs: ``east.tif``, ``north.tif``, ``east_sigma.tif``, ``north_sigma.tif`` (float32, m,
the band's unit type ``m``, nodata NaN where not measured) and ``valid.tif`` (uint8, no
nodata: 0 is the flag ``no_data``; the flag values and meanings as band metadata and as
category names in the band description, with a colour table). Each has the cube's CRS and
geotransform, DEFLATE-compressed 256 px tiles and overviews (average of the measured
pixels for the displacements and σ, the most frequent flag for ``valid``). Files are
written under a temporary name and renamed, so a folder never holds half a file.

NetCDF (``fmt="netcdf"``): ``pair<N>.nc``, the same five variables with ``x``/``y``, the
CF ``grid_mapping``, the pair's times and ids (the netCDF library available decides the
flavour: netCDF-4 with netCDF4/h5netcdf installed, otherwise netCDF-3 64-bit offset).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
import xarray as xr
from rasterio.enums import Resampling
from rasterio.io import MemoryFile

from . import cube
from . import store as stores

EXPORT_VARS = ("east", "north", "east_sigma", "north_sigma", "valid")
"""What is exported, one COG each (``<name>.tif``)."""
FORMATS = ("cog", "netcdf")
BLOCK = 256  # COG tile edge (px)
FLAG_COLOURS = {0: (0, 0, 0, 0), 1: (46, 160, 67, 255), 2: (200, 200, 200, 255),
                3: (255, 165, 0, 255), 4: (220, 50, 47, 255)}
"""valid's colour table (RGBA): no_data transparent, measured green, cloud grey, edge
orange, low confidence red; codes not listed are drawn magenta."""


def _overview_count(h: int, w: int) -> int:
    """Overview levels: halvings until the image fits one tile, at least one."""
    return max(1, math.ceil(math.log2(max(h, w) / BLOCK))) if max(h, w) > 1 else 0


def _flags(attrs: dict) -> dict[int, str]:
    """``{code: meaning}`` from a ``valid`` variable's CF flag attributes."""
    values = [int(v) for v in np.atleast_1d(attrs["flag_values"])]
    return dict(zip(values, str(attrs["flag_meanings"]).split(), strict=True))


def _pair_tags(ds: xr.Dataset, path: str | Path, pair: int) -> dict[str, str]:
    tags = {"source_cube": str(stores.normalize(path)), "pair": str(pair)}
    for name in ("pre_id", "post_id", "pair_key"):
        tags[name] = str(ds[name].values)
    for name in ("pre_time", "post_time"):
        value = ds[name].values
        tags[name] = "" if np.isnat(value) else np.datetime_as_string(value, "s") + "Z"
    prov = json.loads(str(ds["provenance"].values) or "{}")
    for name in ("software_version", "model_name", "model_weights_sha256"):
        if name in prov:
            tags[name] = str(prov[name])
    tags["displacement_convention"] = str(prov.get("displacement_convention", ""))
    return tags


def _masked(ds: xr.Dataset, name: str, valid: np.ndarray) -> np.ndarray:
    """The variable's values, NaN where not measured (``valid != 1``) for displacements
    and where nothing was written (``valid == 0``) for σ: a block left half-written by a
    crash never shows a number."""
    values = np.asarray(ds[name].values, dtype=np.float32)
    keep = valid == cube.MEASURED if name in ("east", "north") else valid != cube.NO_DATA
    return np.where(keep, values, np.float32(np.nan))


def _write_cog(target: Path, data: np.ndarray, *, crs, transform, nodata, unit: str,
               description: str, tags: dict, band_tags: dict, resampling: Resampling,
               colormap: dict | None = None) -> None:
    """One band as a COG at ``target`` (written as ``<target>.partial``, then renamed)."""
    h, w = data.shape
    profile = {"driver": "GTiff", "height": h, "width": w, "count": 1, "dtype": data.dtype,
               "crs": crs, "transform": transform, "nodata": nodata}
    partial = target.with_name(target.name + ".partial")
    with MemoryFile() as mem:
        with mem.open(**profile) as tmp:
            if colormap:  # before the pixels: it sets the TIFF's photometric tag
                tmp.write_colormap(1, colormap)
            tmp.units = (unit,)
            tmp.set_band_description(1, description)
            tmp.update_tags(**tags)
            tmp.update_tags(1, **band_tags)
            tmp.write(data, 1)
        with mem.open() as src:
            rasterio.shutil.copy(
                src, partial, driver="COG", COMPRESS="DEFLATE",
                PREDICTOR="FLOATING_POINT" if data.dtype.kind == "f" else "YES",
                BLOCKSIZE=BLOCK, OVERVIEWS="AUTO",
                OVERVIEW_COUNT=_overview_count(h, w), RESAMPLING=resampling.name.upper())
    os.replace(partial, target)


def export_pair(path: str | Path, pair: int, out_dir: str | Path, *, fmt: str = "cog",
                allow_incomplete: bool = False) -> list[Path]:
    """Write pair ``pair`` of the cube at ``path`` (folder or ``s3://`` URL) into the local
    folder ``out_dir`` (created); returns the files written.

    Raises ValueError (one line) for a pair not in the cube, a pair not complete (a run is
    writing it, or stopped: rerun it to finish; ``allow_incomplete`` exports what is
    there), a remote ``out_dir`` or an unknown ``fmt``.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if stores.is_remote(out_dir):
        raise ValueError(f"the export folder must be local, got {out_dir}")
    if not cube.cube_exists(path):
        raise ValueError(f"{path} is not a displacement cube")
    entries = cube.pairs(path)
    if not 0 <= pair < len(entries):
        raise ValueError(f"{path} has {len(entries)} pair(s) (0 to {len(entries) - 1}); "
                         f"there is no pair {pair}")
    if not entries[pair].complete and not allow_incomplete:
        raise ValueError(f"pair {pair} of {path} is not complete (a run is writing it, or "
                         "stopped before the end): rerun that run to finish it")
    ds = cube.open_cube(path).isel(pair=pair)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if fmt == "netcdf":
        return [_write_netcdf(ds, path, pair, out_dir)]
    valid = np.asarray(ds["valid"].values)
    crs, transform = ds.rio.crs, ds.rio.transform()
    tags = _pair_tags(ds, path, pair)
    written = []
    for name in EXPORT_VARS:
        attrs = dict(ds[name].attrs)
        target = out_dir / f"{name}.tif"
        if name == "valid":
            flags = _flags(attrs)
            described = ", ".join(f"{k} {v}" for k, v in flags.items())
            band_tags = {"long_name": attrs.get("long_name", ""),
                         "flag_values": " ".join(map(str, flags)),
                         "flag_meanings": " ".join(flags.values()),
                         **{f"flag_{k}": v for k, v in flags.items()},
                         "comment": attrs.get("comment", "")}
            colours = {k: FLAG_COLOURS.get(k, (255, 0, 255, 255)) for k in range(256)
                       if k in flags}
            _write_cog(target, valid.astype(np.uint8), crs=crs, transform=transform,
                       nodata=None, unit="1", description=f"measurement flag: {described}",
                       tags=tags, band_tags=band_tags, resampling=Resampling.mode,
                       colormap=colours)
        else:
            band_tags = {k: str(attrs[k]) for k in ("long_name", "units", "comment")
                         if k in attrs}
            _write_cog(target, _masked(ds, name, valid), crs=crs, transform=transform,
                       nodata=float("nan"), unit="m", description=attrs.get("long_name", name),
                       tags=tags, band_tags=band_tags, resampling=Resampling.average)
        written.append(target)
    return written


def _write_netcdf(ds: xr.Dataset, path: str | Path, pair: int, out_dir: Path) -> Path:
    """The pair as a CF-1.8 NetCDF ``pair<N>.nc`` (displacements NaN where not measured)."""
    valid = np.asarray(ds["valid"].values)
    fmt = _netcdf_format()
    flag_type = np.uint8 if fmt == "NETCDF4" else np.int8  # netCDF-3 has no unsigned byte
    out = xr.Dataset(coords={n: (n, ds[n].values, dict(ds[n].attrs)) for n in ("x", "y")})
    out.coords[cube.GRID_MAPPING] = ((), np.int32(0), dict(ds[cube.GRID_MAPPING].attrs))
    for name in EXPORT_VARS:
        values = valid.astype(flag_type) if name == "valid" else _masked(ds, name, valid)
        attrs = {k: v for k, v in ds[name].attrs.items() if k != "coordinates"}
        if name == "valid":
            attrs["flag_values"] = np.asarray(attrs["flag_values"], flag_type)
        out[name] = (("y", "x"), values, {**attrs, "grid_mapping": cube.GRID_MAPPING})
    for name in ("pre_time", "post_time"):
        out[name] = ((), ds[name].values, dict(ds[name].attrs))
    for name in ("pre_id", "post_id", "pair_key", "provenance"):
        out.attrs[name] = str(ds[name].values)
    out.attrs.update({k: v for k, v in ds.attrs.items() if isinstance(v, str | int | float)})
    out.attrs.update({"Conventions": "CF-1.8", "source_cube": str(stores.normalize(path)),
                      "pair": pair})
    for name in EXPORT_VARS:
        out[name].encoding = {"_FillValue": None} if name == "valid" else {
            "_FillValue": np.float32(np.nan)}
    for name in ("x", "y"):
        out[name].encoding = {"_FillValue": None}
    target = out_dir / f"pair{pair}.nc"
    partial = target.with_name(target.name + ".partial")
    out.to_netcdf(partial, format=fmt)
    os.replace(partial, target)
    return target


def _netcdf_format() -> str:
    import importlib.util

    if importlib.util.find_spec("netCDF4") or importlib.util.find_spec("h5netcdf"):
        return "NETCDF4"
    return "NETCDF3_64BIT"
