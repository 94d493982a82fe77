"""The displacement cube (Zarr v2, CF-1.8): schema, creation, pair appends, block writes, reading.

Format
------
New cubes are Zarr format 2 with zlib-compressed chunks: the format and the one codec that
every GDAL Zarr driver (3.4 and later) reads, so ``gdalinfo 'ZARR:"cube.zarr":/east'``
and QGIS open ``east``... with their CRS (from the CF ``grid_mapping``) and geotransform
(from ``x``/``y``). Cubes written as Zarr v3 by earlier versions stay readable and
writable (every function detects the format); GDAL 3.10 cannot read those (see
``docs/cube-format.md`` for converting one).

Schema (DESIGN.md, "Output cube")
---------------------------------
- Dims ``(pair, y, x)``. ``x``/``y``: projected pixel-centre coordinates (m, float64).
  ``pair``: int64 index ``0..n-1`` with, along it, ``pre_time``/``post_time``
  (datetime64[ns], UTC), ``pre_id``/``post_id`` (STAC item ids, strings) and
  ``provenance`` (per-pair provenance as a JSON string, ``"{}"`` when none).
- ``east``, ``north`` (float32, m, log-TV denoised, co-registration ramp removed),
  ``east_raw``, ``north_raw`` (float32, m, as measured), ``east_sigma``, ``north_sigma``
  (float32, m, one standard deviation); ``valid`` (uint8 CF flags: 0 no_data, 1 measured,
  2 cloud, 3 edge, 4 low_confidence). Displacements are NaN wherever ``valid != 1``. Every
  one carries ``grid_mapping = "spatial_ref"``, ``long_name`` and ``units``; the scalar
  ``spatial_ref`` holds the CRS as rioxarray writes it.
- Along ``pair`` also ``pair_key`` (the pair's identity: a fingerprint of its inputs and of
  the settings that change the numbers) and ``complete`` (1 once every block is written).
- Chunks ``(1, C, C)`` with C the tile core, so concurrent block writes never share a chunk.
- Global attributes: ``Conventions = "CF-1.8"`` plus the caller's provenance (JSON-able).

Growable ``pair`` dim, one writer of metadata at a time
--------------------------------------------------------
:func:`create_cube` builds every array with zero pairs (shape ``(0, H, W)``) in memory and
copies it to the store with the root group's metadata last, so a reader sees no group or
a whole cube. Every change of metadata (creating, adding or resetting a pair, marking it
complete, its provenance) holds the cube's lock (``pipeline.cube_lock``), so two
processes never take the same pair index or lose each other's update of a shared
chunk of the ``pair`` arrays. :func:`add_pair`
resizes the ``pair`` arrays by one (a metadata-only change: data chunks are
never written, so the new pair reads as NaN and ``valid`` 0), fills in the coordinates, and
writes ``post_id`` last: a pair counts only once its ``post_id`` is set, so an
``add_pair`` interrupted half-way is simply redone. Then the consolidated metadata is
rewritten, so readers using it (``xr.open_zarr``'s default) see the new pair. Writers never
trust the consolidated metadata; they read each array's own metadata.

Completion and resumption
-------------------------
A block is written in two stages (``pipeline.writer``): ``measure`` writes the raw field
and σ (``north_sigma`` last, always stored), ``finish`` writes ``east``, ``north`` and then
``valid`` last, always as a stored chunk even when all zeros (``write_empty_chunks``). A
``valid`` chunk that is absent reads as 0, so a crash never leaves a block that reads as
data, and :func:`done_blocks` (the blocks whose stage marker chunk is stored) is what a
rerun skips. ``complete`` stays 0 until :func:`set_complete` after the last block.

Where it lives
--------------
``path`` is a local folder or an ``s3://bucket/prefix/cube.zarr`` URL; ``pipeline.store``
turns it into a zarr store (``FsspecStore`` over s3fs, credentials and endpoint from the
``AWS_*`` environment). The same rules hold on S3: a chunk is one PUT, so it is stored
whole or not at all, and S3 lists and reads what was written (strong consistency), so a
block's marker object is the last of its PUTs and :func:`done_blocks` lists them.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
import pandas as pd
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr
import zarr
from rasterio.crs import CRS
from zarr.core.sync import sync
from zarr.storage import LocalStore, MemoryStore

from . import store as stores
from .cube_lock import LOCK_NAME, cube_lock

log = logging.getLogger(__name__)

MEASURE_VARS = ("east_raw", "north_raw", "east_sigma", "north_sigma")
"""Stage ``measure``: the raw field and its σ (m); ``north_sigma`` last marks it done."""
FINISH_VARS = ("east", "north", "valid")
"""Stage ``finish``: denoised, ramp-removed field (m) and flags; ``valid`` last marks it done."""
STAGES = {"measure": MEASURE_VARS, "finish": FINISH_VARS}
DATA_VARS = ("east", "north", "east_raw", "north_raw", "east_sigma", "north_sigma")
"""The float32 variables (m), written before ``valid``."""
BLOCK_VARS = (*DATA_VARS, "valid")
FLAGS = {0: "no_data", 1: "measured", 2: "cloud", 3: "edge", 4: "low_confidence"}
NO_DATA, MEASURED, CLOUD, EDGE, LOW_CONFIDENCE = range(5)
PAIR_COORDS = ("pair", "pre_time", "post_time", "pre_id", "pair_key", "complete",
               "provenance", "post_id")
"""1-D arrays along ``pair``; ``post_id`` is written last and marks a pair as added."""
GRID_MAPPING = "spatial_ref"
TIME_UNITS = "microseconds since 1970-01-01T00:00:00"
"""On-disk encoding of ``pre_time``/``post_time`` (int64, exact for Python datetimes)."""
NAT = np.iinfo(np.int64).min  # how xarray stores NaT in an int64 time variable
PAIR_CHUNK = 256  # chunk length of the small arrays along ``pair``
CUBE_ARRAYS = ("x", "y", GRID_MAPPING, *BLOCK_VARS, *PAIR_COORDS)
"""Every array a cube holds; a group missing any of them is no (finished) cube."""

VAR_ATTRS = {
    "east": {"long_name": "eastward ground displacement, log-TV denoised", "units": "m"},
    "north": {"long_name": "northward ground displacement, log-TV denoised", "units": "m"},
    "east_raw": {"long_name": "eastward ground displacement before denoising", "units": "m"},
    "north_raw": {"long_name": "northward ground displacement before denoising", "units": "m"},
    "east_sigma": {"long_name": "one-standard-deviation uncertainty of eastward displacement",
                   "units": "m", "comment": "does not cover the co-registration offset"},
    "north_sigma": {"long_name": "one-standard-deviation uncertainty of northward "
                    "displacement", "units": "m",
                    "comment": "does not cover the co-registration offset"},
    "valid": {"long_name": "measurement flag", "units": "1",
              "flag_values": list(FLAGS), "flag_meanings": " ".join(FLAGS.values()),
              "comment": "1 measured; 0 no data in pre or post; 2 cloud (scene "
                         "classification); 3 edge: within edge_margin_px of missing data or "
                         "its match in post outside the processed area; 4 low confidence: "
                         "sigma above max_sigma_px (see the pair's provenance). east/north "
                         "and their raw versions are NaN wherever valid != 1. A block's "
                         "valid chunk is written last, so 0 also marks blocks not yet "
                         "(fully) written"},
}
COORD_ATTRS = {
    "x": {"standard_name": "projection_x_coordinate", "long_name": "easting (pixel centre)",
          "units": "m", "axis": "X"},
    "y": {"standard_name": "projection_y_coordinate", "long_name": "northing (pixel centre)",
          "units": "m", "axis": "Y"},
    "pair": {"long_name": "pair index", "units": "1"},
    "pre_time": {"standard_name": "time", "long_name": "acquisition time of the pre-event "
                 "scene (UTC)"},
    "post_time": {"standard_name": "time", "long_name": "acquisition time of the post-event "
                  "scene (UTC)"},
    "pre_id": {"long_name": "STAC item id of the pre-event scene"},
    "post_id": {"long_name": "STAC item id of the post-event scene"},
    "pair_key": {"long_name": "identity of the pair: sha256 of its inputs' fingerprints and "
                 "the settings that change the numbers"},
    "complete": {"long_name": "1 once every block of the pair is written", "units": "1"},
    "provenance": {"long_name": "per-pair provenance (JSON object)"},
}


# ---------------------------------------------------------------------------------------
# store access


def _store(path: str | Path, mode: str = "r") -> Any:
    """The zarr store of the cube at ``path``: a local folder or an ``s3://`` URL
    (``pipeline.store``)."""
    return stores.zarr_store(path, read_only=mode == "r")


def zarr_format(path: str | Path) -> int:
    """The Zarr format of the cube at ``path``: 2 (what :func:`create_cube` writes) when its
    root holds ``.zgroup``, else 3 (cubes of earlier versions)."""
    return 2 if stores.exists(stores.join(path, ".zgroup")) else 3


def _open_group(path: str | Path, mode: str = "r", fmt: int | None = None) -> zarr.Group:
    """The cube's root group, read from the arrays' own metadata (never the consolidated)."""
    return zarr.open_group(_store(path, mode), mode=mode, use_consolidated=False,
                           zarr_format=fmt or zarr_format(path))


def _open_array(path: str | Path, name: str, mode: str = "r", fmt: int | None = None
                ) -> zarr.Array:
    # an explicit format: no probing for the other one (requests saved on S3)
    return zarr.open_array(_store(path, mode), path=name, mode=mode,
                           zarr_format=fmt or zarr_format(path))


def _consolidate(path: str | Path) -> None:
    """Rewrite the consolidated metadata (of a v3 cube, zarr warns that it is not in the v3
    spec yet; of any, that it does not know the lock file)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata")
        warnings.filterwarnings("ignore", message=".*not recognized as a component")
        zarr.consolidate_metadata(_store(path, "r+"), zarr_format=zarr_format(path))


def cube_exists(path: str | Path) -> bool:
    """Whether ``path`` holds a whole cube: a Zarr group with every array of the schema.

    A cube still being created (``create_cube`` writes one array after another) is not one
    yet, so a reader polling a run's output never sees a cube without its pair arrays.
    """
    try:
        g = _open_group(path)
        with warnings.catch_warnings():  # zarr says it does not know the lock file
            warnings.filterwarnings("ignore", message=".*not recognized as a component")
            members = set(g.array_keys())
    except (OSError, ValueError, zarr.errors.BaseZarrError):
        return False
    return set(CUBE_ARRAYS) <= members


def _strings(values: Any) -> list[str]:
    """A zarr string array's values as Python strings (numpy StringDType/object/bytes)."""
    return [v.decode() if isinstance(v, bytes) else str(v) for v in np.asarray(values).ravel()]


def _n_pairs(g: zarr.Group) -> int:
    """Number of added pairs: the leading entries of ``post_id`` that are set."""
    ids = _strings(g["post_id"][...])
    n = len(ids)
    while n and ids[n - 1] == "":
        n -= 1
    return n


# ---------------------------------------------------------------------------------------
# attributes


def _jsonable(value: Any) -> Any:
    """``value`` as a flat, JSON- and netCDF-friendly attribute value.

    str/int/float/bool pass; numpy scalars and arrays become Python values and lists;
    dates become ISO strings; lists of str or of numbers stay lists; anything else
    (dicts, mixed lists, objects) becomes a JSON string; None becomes ``""``.
    """
    if isinstance(value, np.generic):
        value = value.item()
    elif isinstance(value, np.ndarray):
        value = value.tolist()
    if value is None:
        return ""
    if isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, datetime | date | pd.Timestamp):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, list | tuple):
        items = [_jsonable(v) for v in value]
        if all(isinstance(v, str) for v in items) or all(
                isinstance(v, int | float) and not isinstance(v, bool) for v in items):
            return items
    return json.dumps(value, default=str, sort_keys=True)


def _jsonable_attrs(attrs: Mapping[str, Any] | None) -> dict[str, Any]:
    return {str(k): _jsonable(v) for k, v in (attrs or {}).items()}


def _json_tree(value: Any) -> Any:
    """``value`` as plain JSON data, nested dicts and lists kept as objects and arrays
    (numpy values become Python ones, dates ISO strings, non-finite floats strings, None
    stays null)."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        return {str(k): _json_tree(v) for k, v in value.items()}
    if isinstance(value, list | tuple) or (isinstance(value, np.ndarray) and value.ndim):
        return [_json_tree(v) for v in value]
    return _jsonable(value)


def _provenance_text(attrs: Mapping[str, Any] | None) -> str:
    """A pair's provenance as one JSON object (nested values are objects, not strings)."""
    return json.dumps(_json_tree(dict(attrs or {})), sort_keys=True)


# ---------------------------------------------------------------------------------------
# creation


def _check_axis(name: str, values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or values.size < 2:
        raise ValueError(f"{name} must be 1-D with at least 2 pixel centres, got shape "
                         f"{values.shape}")
    step = np.diff(values)
    if not np.all(np.isfinite(values)) or step[0] == 0 or not np.allclose(
            step, step[0], rtol=1e-6, atol=1e-6):
        raise ValueError(f"{name} must be regularly spaced pixel centres (m)")
    return values


def _same_grid(g: zarr.Group, x: np.ndarray, y: np.ndarray, crs: CRS, chunk: int
               ) -> str | None:
    """Why the cube in ``g`` is not on this grid, or None when it is."""
    ox, oy = g["x"][...], g["y"][...]
    ocrs = CRS.from_wkt(g[GRID_MAPPING].attrs["crs_wkt"])
    ochunk = g["valid"].chunks[1]
    tol = 1e-6 * max(abs(float(x[1] - x[0])), abs(float(y[1] - y[0])))
    if ox.shape != x.shape or oy.shape != y.shape:
        return f"it is {len(ox)}x{len(oy)} px (x by y), not {len(x)}x{len(y)}"
    if not (np.allclose(ox, x, rtol=0, atol=tol) and np.allclose(oy, y, rtol=0, atol=tol)):
        return (f"its x/y start at ({ox[0]}, {oy[0]}) m with steps ({ox[1] - ox[0]}, "
                f"{oy[1] - oy[0]}) m, not ({x[0]}, {y[0]}) / ({x[1] - x[0]}, {y[1] - y[0]})")
    if ocrs != crs:
        return f"its CRS is {ocrs.to_string()}, not {crs.to_string()}"
    if ochunk != chunk:
        return f"its chunks are {ochunk} px, not {chunk}"
    return None


STRING_COORDS = ("pre_id", "post_id", "pair_key", "provenance")
"""Variable-length UTF-8 string arrays along ``pair``."""
ROOT_KEYS = (".zattrs", ".zgroup", ".zmetadata", "zarr.json")
"""The root group's metadata objects (v2: attributes, group, consolidated; v3)."""
COMPRESSOR = {"id": "zlib", "level": 4}
"""The chunks' codec: zlib is in every GDAL Zarr driver (blosc and zstd are optional)."""


def _empty_cube(x: np.ndarray, y: np.ndarray, crs: CRS, attrs: dict) -> xr.Dataset:
    """The cube schema with zero pairs, with the CRS written by rioxarray (the string
    arrays along ``pair`` are added by :func:`_write_new`)."""
    ny, nx = len(y), len(x)
    data = {name: (("pair", "y", "x"),
                   np.empty((0, ny, nx), np.uint8 if name == "valid" else np.float32),
                   dict(VAR_ATTRS[name]))
            for name in BLOCK_VARS}
    coords = {
        "x": ("x", x, dict(COORD_ATTRS["x"])),
        "y": ("y", y, dict(COORD_ATTRS["y"])),
        "pair": ("pair", np.empty(0, np.int64), dict(COORD_ATTRS["pair"])),
        "pre_time": ("pair", np.empty(0, "datetime64[ns]"), dict(COORD_ATTRS["pre_time"])),
        "post_time": ("pair", np.empty(0, "datetime64[ns]"), dict(COORD_ATTRS["post_time"])),
    }
    coords["complete"] = ("pair", np.empty(0, np.uint8), dict(COORD_ATTRS["complete"]))
    ds = xr.Dataset(data, coords=coords)
    ds = ds.rio.write_crs(crs, grid_mapping_name=GRID_MAPPING)
    ds = ds.rio.write_transform(grid_mapping_name=GRID_MAPPING)
    ds = ds.rio.write_grid_mapping(GRID_MAPPING)
    for name in BLOCK_VARS:  # explicit attrs: to_zarr(encoding=...) replaces var.encoding
        ds[name].encoding.pop("grid_mapping", None)
        ds[name].attrs["grid_mapping"] = GRID_MAPPING
    ds.attrs = {**_jsonable_attrs(attrs), "Conventions": "CF-1.8"}
    return ds


def _names(path: str | Path) -> list[str]:
    """The top-level names (files, folders, object prefixes) under ``path``; [] if none."""
    if stores.is_remote(path):
        fs, root = stores.filesystem(path)
        try:
            return [str(p).rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(root, detail=False)]
        except FileNotFoundError:
            return []
    local = Path(stores.normalize(path))
    if not local.is_dir():
        return [local.name] if local.exists() else []
    return [p.name for p in local.iterdir()]


def _foreign(names: list[str]) -> list[str]:
    """Of a cube folder's top-level ``names``, those that no cube (nor its lock, nor a
    file zarr is writing) has."""
    ours = {*CUBE_ARRAYS, *ROOT_KEYS, LOCK_NAME}
    return sorted(n for n in names if n not in ours and not n.endswith(".partial"))


def check_target(path: str | Path, *, x: np.ndarray, y: np.ndarray, crs: Any, chunk: int
                 ) -> bool:
    """Whether ``path`` already holds a cube on this grid (True), or is free (False).

    Free: nothing there, an empty folder, or a cube being created by another run (or left
    half-made by one that died: the next :func:`create_cube` redoes it). Raises ValueError
    for a cube on another grid (x, y, CRS or chunk), a file, a folder or URL prefix that
    holds anything else, or a bucket that cannot be listed. Reads metadata only: callers
    check before any work.
    """
    stores.check_location(path)
    stores.check_bucket(path)
    x, y = _check_axis("x", x), _check_axis("y", y)
    crs = CRS.from_user_input(crs)
    chunk = int(chunk)
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1 px, got {chunk}")
    if cube_exists(path):
        why = _same_grid(_open_group(path), x, y, crs, chunk)
        if why is not None:
            raise ValueError(f"{path} already holds a cube on another grid: {why}; "
                             "write to another path or remove it")
        return True
    names = _names(path)
    local = None if stores.is_remote(path) else Path(stores.normalize(path))
    if local is not None and local.exists() and not local.is_dir():
        raise ValueError(f"{path} exists and is not a displacement cube; not overwriting it")
    if names and (LOCK_NAME not in names or _foreign(names)):
        what = "holds objects" if local is None else "exists"
        raise ValueError(f"{path} {what} and is not a displacement cube; not overwriting it")
    return False


def create_cube(path: str | Path, *, x: np.ndarray, y: np.ndarray, crs: Any, chunk: int,
                attrs: dict, zarr_format: int = 2) -> None:
    """Create an empty cube (zero pairs) on a projected grid, atomically.

    Args:
        path: where the Zarr store goes: a local folder (``.zarr`` by habit) or an
            ``s3://bucket/prefix/cube.zarr`` URL (``pipeline.store``).
        x: ``(W,)`` pixel-centre eastings (m), regularly spaced.
        y: ``(H,)`` pixel-centre northings (m), regularly spaced (usually decreasing).
        crs: anything ``rasterio.crs.CRS.from_user_input`` accepts (``"EPSG:32611"``,
            an EPSG int, WKT, a ``CRS``).
        chunk: C, the chunk edge (px) = the tile core; blocks are ``(C, C)``.
        attrs: global provenance attributes (software version, model, weights sha256,
            iterations, tile/halo, log-TV λ/ε, band, search parameters, created time...).
            Values are stored JSON-able: see ``_jsonable``.
        zarr_format: 2 (GDAL reads it); 3 only to make cubes as earlier versions did.

    An existing cube on the same grid (x, y, CRS and chunk) is left untouched, attributes
    included, so that reruns and appends reuse it; of several processes creating the
    same cube at once, one creates it and the others reuse it. An existing cube on another
    grid, or a non-empty folder that is no cube, raises ValueError. The cube is written
    under its lock, root metadata last: other processes see no cube or a whole one.
    """
    if check_target(path, x=x, y=y, crs=crs, chunk=chunk):
        return
    x, y = _check_axis("x", x), _check_axis("y", y)
    crs = CRS.from_user_input(crs)
    chunk = int(chunk)
    with cube_lock(path):
        if cube_exists(path):  # another process created it while this one waited
            why = _same_grid(_open_group(path), x, y, crs, chunk)
            if why is not None:
                raise ValueError(f"{path} already holds a cube on another grid: {why}; "
                                 "write to another path or remove it")
            return
        _remove_leftovers(path)
        _write_new(path, _empty_cube(x, y, crs, attrs), chunk, zarr_format)


def _remove_leftovers(path: str | Path) -> None:
    """Remove what a creation that died half-way left (called under the lock, so no
    creation is under way); anything that is not part of a cube stops it."""
    names = [n for n in _names(path) if n != LOCK_NAME]
    if not names:
        return
    if _foreign(names):
        raise ValueError(f"{path} holds {', '.join(_foreign(names))} and is not a "
                         "displacement cube; not overwriting it")
    log.warning("%s: removing %s, left by a cube creation that did not finish", path,
                ", ".join(sorted(names)))
    if stores.is_remote(path):
        fs, root = stores.filesystem(path)
        for n in names:
            fs.rm(f"{root}/{n}", recursive=True)
        return
    local = Path(stores.normalize(path))
    for n in names:
        target = local / n
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)


def _encoding(chunk: int, zarr_format: int) -> dict[str, dict]:
    encoding: dict[str, dict] = {name: {"chunks": (1, chunk, chunk)} for name in BLOCK_VARS}
    encoding["valid"]["_FillValue"] = None  # a plain 0 fill, no masking to float
    encoding["complete"] = {"_FillValue": None}
    encoding["x"] = {"_FillValue": None}
    encoding["y"] = {"_FillValue": None}
    for name in PAIR_COORDS:
        if name not in STRING_COORDS:
            encoding.setdefault(name, {})["chunks"] = (PAIR_CHUNK,)
    for name in ("pre_time", "post_time"):
        encoding[name].update(units=TIME_UNITS, calendar="proleptic_gregorian",
                              dtype="int64")
    if zarr_format == 2:
        for name in (*BLOCK_VARS, "x", "y", "pair", "pre_time", "post_time", "complete"):
            encoding.setdefault(name, {})["compressors"] = [numcodecs.get_codec(COMPRESSOR)]
    return encoding


def _write_new(path: str | Path, ds: xr.Dataset, chunk: int, fmt: int) -> None:
    """Write the empty cube ``ds`` to ``path``: built in memory, then copied object by
    object, the root group's metadata last (one atomic write or PUT each)."""
    mem: dict[str, Any] = {}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata")
        ds.to_zarr(MemoryStore(mem), mode="w-", zarr_format=fmt, consolidated=False,
                   encoding=_encoding(chunk, fmt))
        group = zarr.open_group(MemoryStore(mem), mode="r+", zarr_format=fmt)
        for name in STRING_COORDS:  # variable-length strings, as xarray reads them
            dims = {"dimension_names": ["pair"]} if fmt == 3 else {}
            extra = {"compressors": [numcodecs.get_codec(COMPRESSOR)]} if fmt == 2 else {}
            arr = group.create_array(name, shape=(0,), chunks=(PAIR_CHUNK,), dtype=str,
                                     fill_value="" if fmt == 3 else None, **dims, **extra)
            arr.attrs.update({**COORD_ATTRS[name],
                              **({"_ARRAY_DIMENSIONS": ["pair"]} if fmt == 2 else {})})
        for name in BLOCK_VARS:
            listed = set(group[name].attrs.get("coordinates", "").split())
            group[name].attrs["coordinates"] = " ".join(sorted(listed | set(STRING_COORDS)))
        zarr.consolidate_metadata(MemoryStore(mem))
    target = _store(path, "r+")
    if isinstance(target, str):
        target = LocalStore(target)
    last = [k for k in ROOT_KEYS if k in mem]
    for key in [*sorted(k for k in mem if k not in last), *last]:
        sync(target.set(key, mem[key]))


# ---------------------------------------------------------------------------------------
# pairs


def _time_value(t: Any) -> int:
    """A time as int64 microseconds since 1970-01-01 UTC (tz-aware times converted to UTC,
    naive ones taken as UTC); None/NaT -> xarray's NaT marker."""
    if t is None:
        return NAT
    ts = pd.Timestamp(t)
    if ts is pd.NaT:
        return NAT
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return int((ts - pd.Timestamp("1970-01-01")) // pd.Timedelta(microseconds=1))


def add_pair(path: str | Path, *, pre_time: Any, post_time: Any, pre_id: str, post_id: str,
             attrs: dict | None = None, key: str = "") -> int:
    """Append a pair to the cube and return its index along ``pair``.

    Args:
        pre_time, post_time: acquisition times (datetime, ISO string, np.datetime64 or
            None). Tz-aware times are converted to UTC; naive ones are taken as UTC.
        pre_id, post_id: STAC item ids (or file names) of the two scenes.
        attrs: per-pair provenance, stored as a JSON string in the ``provenance``
            coordinate at the pair's index (read it back with :func:`pair_provenance`).
        key: the pair's identity (``pipeline.fingerprint``), stored in ``pair_key``.

    The new pair's ``east``... read NaN and ``valid`` 0 until blocks are written, and its
    ``complete`` is 0. If a pair with the same ``(pre_id, post_id, key)`` is already in the
    cube, nothing is written and its index is returned, so a rerun resumes instead of
    duplicating. (Deciding what to do with a pair of the same ids and another key is the
    writer's job: see :func:`pairs` and :func:`reset_pair`.)
    """
    pre_id, post_id = str(pre_id), str(post_id)
    if not pre_id or not post_id:
        raise ValueError("pre_id and post_id must be non-empty strings")
    if not cube_exists(path):
        raise FileNotFoundError(f"no cube at {path}; call create_cube first")
    with cube_lock(path):
        return _add_pair(path, pre_time=pre_time, post_time=post_time, pre_id=pre_id,
                         post_id=post_id, attrs=attrs, key=key)


def _add_pair(path: str | Path, *, pre_time: Any, post_time: Any, pre_id: str, post_id: str,
              attrs: dict | None, key: str) -> int:
    g = _open_group(path, mode="r+")
    n = _n_pairs(g)
    known = [(p.pre_id, p.post_id, p.key) for p in _pairs(g, n)]
    if (pre_id, post_id, key) in known:
        _consolidate(path)  # in case the run that added it died before doing so
        return known.index((pre_id, post_id, key))
    provenance = _provenance_text(attrs)
    values = {"pair": n, "pre_time": _time_value(pre_time), "post_time": _time_value(post_time),
              "pre_id": pre_id, "pair_key": key, "complete": 0, "provenance": provenance}
    for name in (*BLOCK_VARS, *values):
        arr = g[name]
        if arr.shape[0] != n + 1:  # a metadata-only change; no chunk is written
            arr.resize((n + 1, *arr.shape[1:]))
        if name in values:
            arr[n] = values[name]
    ids = g["post_id"]  # last: this makes the pair count
    ids.resize((n + 1,))
    ids[n] = post_id
    _consolidate(path)
    return n


@dataclass(frozen=True)
class PairEntry:
    """One pair as the cube lists it."""

    index: int
    pre_id: str
    post_id: str
    key: str
    complete: bool


def _pairs(g: zarr.Group, n: int) -> list[PairEntry]:
    pre, post = _strings(g["pre_id"][:n]), _strings(g["post_id"][:n])
    keys = _strings(g["pair_key"][:n]) if n else []
    done = np.asarray(g["complete"][:n]) if n else []
    return [PairEntry(i, pre[i], post[i], keys[i], bool(done[i])) for i in range(n)]


def pairs(path: str | Path) -> list[PairEntry]:
    """The pairs in the cube, in index order."""
    g = _open_group(path)
    return _pairs(g, _n_pairs(g))


def set_complete(path: str | Path, pair: int, complete: bool = True) -> None:
    """Mark ``pair`` complete (every block written) or not, and refresh the metadata."""
    with cube_lock(path):  # the chunk of ``complete`` is shared by 256 pairs
        g = _open_group(path, mode="r+")
        g["complete"][pair] = int(complete)
        _consolidate(path)


def _delete_chunks(path: str | Path, name: str, pair: int, fmt: int) -> None:
    arr = _open_array(path, name, mode="r+", fmt=fmt)
    nbi, nbj = arr.cdata_shape[1:]
    root = arr.store_path.path
    for i in range(nbi):
        for j in range(nbj):
            sync(arr.store.delete(f"{root}/{arr.metadata.encode_chunk_key((pair, i, j))}"))


def reset_pair(path: str | Path, pair: int, *, pre_time: Any, post_time: Any, key: str,
               attrs: dict | None = None) -> None:
    """Empty ``pair`` so that it is computed again under a new identity (``--overwrite``).

    Crash-safe order: the stage markers (``valid``, ``north_sigma``) go first, so no block
    of the old result can count as done; then ``complete``, the key, times and provenance;
    then the other chunks.
    """
    with cube_lock(path):
        fmt = zarr_format(path)
        g = _open_group(path, mode="r+", fmt=fmt)
        if not 0 <= pair < _n_pairs(g):
            raise ValueError(f"pair {pair} is not in the cube")
        for name in ("valid", "north_sigma"):
            _delete_chunks(path, name, pair, fmt)
        g["complete"][pair] = 0
        g["pair_key"][pair] = key
        g["pre_time"][pair] = _time_value(pre_time)
        g["post_time"][pair] = _time_value(post_time)
        g["provenance"][pair] = _provenance_text(attrs)
        for name in BLOCK_VARS:
            if name not in ("valid", "north_sigma"):
                _delete_chunks(path, name, pair, fmt)
        _consolidate(path)


def update_provenance(path: str | Path, pair: int, extra: dict) -> None:
    """Merge ``extra`` into the pair's provenance (e.g. the fitted ramp)."""
    with cube_lock(path):  # read-modify-write of a chunk shared by 256 pairs
        g = _open_group(path, mode="r+")
        old = json.loads(str(np.asarray(g["provenance"][pair:pair + 1])[0]) or "{}")
        old.update(extra)
        g["provenance"][pair] = _provenance_text(old)
        _consolidate(path)


def list_in_attrs(path: str | Path, name: str, value: str) -> None:
    """Add ``value`` to the list in the cube's global attribute ``name`` (created if
    missing; a value already listed is not listed twice), e.g. the pairs' STAC Items."""
    with cube_lock(path):
        g = _open_group(path, mode="r+")
        listed = list(g.attrs.get(name, []))
        if value not in listed:
            g.attrs[name] = [*listed, value]
            _consolidate(path)


def pair_provenance(ds: xr.Dataset, pair: int) -> dict:
    """The per-pair provenance given to :func:`add_pair`, as a dict."""
    return json.loads(str(ds["provenance"].values[pair]) or "{}")


# ---------------------------------------------------------------------------------------
# blocks


def _stage_of(data: Mapping[str, Any]) -> tuple[str, ...]:
    """The variables to write, in write order (a stage, or every variable)."""
    names = set(data)
    for order in (MEASURE_VARS, FINISH_VARS, (*MEASURE_VARS, *FINISH_VARS)):
        if names == set(order):
            return order
    unknown = sorted(names - set(BLOCK_VARS))
    missing = sorted(set(BLOCK_VARS) - names)
    raise ValueError(f"a block needs the variables of one stage ({list(MEASURE_VARS)} or "
                     f"{list(FINISH_VARS)}) or all of {list(BLOCK_VARS)}; missing {missing}, "
                     f"unknown {unknown}")


def _block_shape(data: Mapping[str, Any]) -> tuple[int, int]:
    shapes = {k: np.shape(v) for k, v in data.items()}
    first = next(iter(shapes.values()))
    if len(set(shapes.values())) != 1 or len(first) != 2:
        raise ValueError(f"block arrays must share one (h, w) shape, got {shapes}")
    return first


def _check_block(arr: zarr.Array, pair: int, row0: int, col0: int, h: int, w: int) -> None:
    npair, ny, nx = arr.shape
    c = arr.chunks[1]
    if not 0 <= pair < npair:
        raise ValueError(f"pair {pair} is not in the cube ({npair} pairs); add_pair first")
    if row0 % c or col0 % c or row0 < 0 or col0 < 0:
        raise ValueError(f"block origin (row0={row0}, col0={col0}) is not a multiple of the "
                         f"chunk size {c}")
    full_h, full_w = min(c, ny - row0), min(c, nx - col0)
    if (h, w) != (full_h, full_w):
        raise ValueError(f"block at (row0={row0}, col0={col0}) must be {full_h}x{full_w} px "
                         f"(one whole chunk of {c} on a {ny}x{nx} grid), got {h}x{w}")


def _write_data_vars(path: str | Path, index: tuple, data: Mapping[str, Any],
                     names: tuple[str, ...], fmt: int | None = None) -> None:
    for name in names:
        arr = _open_array(path, name, mode="r+", fmt=fmt)
        if name in MARKERS.values():  # the marker is stored even when all NaN
            arr = arr.with_config({"write_empty_chunks": True})
        arr[index] = np.asarray(data[name], dtype=np.float32)


def _write_valid(valid: zarr.Array, index: tuple, mask: np.ndarray) -> None:
    # write_empty_chunks: store the chunk even when all 0 (= the fill value), since its
    # presence is what marks the block as complete.
    valid.with_config({"write_empty_chunks": True})[index] = mask


MARKERS = {"measure": "north_sigma", "finish": "valid"}
"""The chunk whose presence marks a block's stage as done (written last in the stage)."""


def write_block(path: str | Path, pair: int, row0: int, col0: int,
                data: Mapping[str, np.ndarray]) -> None:
    """Write one chunk-aligned block of one pair: one stage's variables, or all of them.

    Args:
        pair: the pair index (from :func:`add_pair`).
        row0, col0: block origin (px) on the cube grid, multiples of C.
        data: ``east_raw``, ``north_raw``, ``east_sigma``, ``north_sigma`` (stage
            ``measure``) and/or ``east``, ``north`` (``(h, w)`` float32, m) and ``valid``
            (``(h, w)`` flag codes, see ``FLAGS``) (stage ``finish``). ``(h, w) = (C, C)``,
            smaller only where the block reaches the bottom/right edge of the grid.

    Each stage's marker (``north_sigma``, ``valid``) is written last and always stored,
    so an interrupted call leaves the block out of :func:`done_blocks`. Blocks never share
    a chunk, so calls for different blocks may run concurrently (threads or processes)
    without locks. Misaligned blocks raise ValueError.
    """
    order = _stage_of(data)
    fmt = zarr_format(path)
    valid = _open_array(path, "valid", mode="r+", fmt=fmt)
    h, w = _block_shape(data)
    _check_block(valid, pair, row0, col0, h, w)
    index = (int(pair), slice(row0, row0 + h), slice(col0, col0 + w))
    floats = tuple(n for n in order if n != "valid")
    _write_data_vars(path, index, data, floats, fmt)
    if "valid" in data:
        mask = np.asarray(data["valid"])
        if np.any(~np.isin(mask, list(FLAGS))):
            raise ValueError(f"valid must hold only the flag values {list(FLAGS)}")
        _write_valid(valid, index, mask.astype(np.uint8))


async def _list_keys(store: Any, prefix: str) -> set[str]:
    return {key async for key in store.list_prefix(prefix)}


def done_blocks(path: str | Path, pair: int, stage: str = "finish") -> set[tuple[int, int]]:
    """Blocks ``(bi, bj)`` of ``pair`` (origin ``(bi * C, bj * C)``) whose ``stage`` is
    written: those whose marker chunk (``MARKERS``) is stored. Empty for a pair not in
    the cube. ``finish`` (the default) means the block is complete."""
    marker = _open_array(path, MARKERS[stage])
    if not 0 <= pair < marker.shape[0]:
        return set()
    nbi, nbj = marker.cdata_shape[1:]
    root = marker.store_path.path
    keys = {f"{root}/{marker.metadata.encode_chunk_key((pair, i, j))}": (i, j)
            for i in range(nbi) for j in range(nbj)}
    stored = sync(_list_keys(marker.store, f"{root}/"))
    return {ij for key, ij in keys.items() if key in stored}


# ---------------------------------------------------------------------------------------
# reading


def open_cube(path: str | Path) -> xr.Dataset:
    """Open a cube lazily (Dask, chunks ``(1, C, C)``) with its CRS and decoded times.

    This is ``xr.open_zarr(path, decode_coords="all")`` (for an ``s3://`` URL, with
    ``storage_options`` from the environment: ``pipeline.store``): ``spatial_ref`` becomes a
    coordinate (``ds.rio.crs``, ``ds.rio.transform()`` work) and ``grid_mapping`` moves to
    each variable's ``encoding``. ``pre_time``/``post_time`` decode to datetime64[ns].
    """
    if stores.is_remote(path):
        return xr.open_zarr(str(stores.normalize(path)), decode_coords="all",
                            storage_options=stores.storage_options(path))
    return xr.open_zarr(str(path), decode_coords="all")


def copy_cube(src: str | Path, dst: str | Path) -> None:
    """Copy the cube at ``src`` (e.g. a Zarr v3 cube of an earlier version) into a new cube
    at ``dst`` in the current format (Zarr v2, which GDAL reads).

    Every pair is copied with its times, ids, key, provenance and completion, and only the
    blocks whose stage is written, so an unfinished pair stays resumable in the copy.
    """
    ds = open_cube(src)
    g = _open_group(src)
    attrs = {k: v for k, v in g.attrs.items() if k != "Conventions"}
    create_cube(dst, x=ds.x.values, y=ds.y.values, crs=ds.rio.crs,
                chunk=int(g["valid"].chunks[1]), attrs=attrs)
    c = int(g["valid"].chunks[1])
    for e in pairs(src):
        i = add_pair(dst, pre_time=ds.pre_time.values[e.index],
                     post_time=ds.post_time.values[e.index], pre_id=e.pre_id,
                     post_id=e.post_id, attrs=pair_provenance(ds, e.index), key=e.key)
        for stage, names in STAGES.items():
            for bi, bj in sorted(done_blocks(src, e.index, stage)):
                rows, cols = slice(bi * c, (bi + 1) * c), slice(bj * c, (bj + 1) * c)
                write_block(dst, i, bi * c, bj * c,
                            {n: np.asarray(ds[n][e.index, rows, cols].values)
                             for n in names})
        if e.complete:
            set_complete(dst, i)

