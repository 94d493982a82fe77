"""The Zarr v3 displacement cube (CF-1.8): schema, creation, pair appends, block writes, reading.

Schema (DESIGN.md, "Output cube")
---------------------------------
- Dims ``(pair, y, x)``. ``x``/``y``: projected pixel-centre coordinates (m, float64).
  ``pair``: int64 index ``0..n-1`` with, along it, ``pre_time``/``post_time``
  (datetime64[ns], UTC), ``pre_id``/``post_id`` (STAC item ids, strings) and
  ``provenance`` (per-pair provenance as a JSON string, ``"{}"`` when none).
- ``east``, ``north`` (float32, m, log-TV denoised), ``east_raw``, ``north_raw`` (float32, m,
  before denoising); ``valid`` (uint8, 1 measured, 0 no data / cloud / edge, CF
  ``flag_values``/``flag_meanings``). Every one carries ``grid_mapping = "spatial_ref"``,
  ``long_name`` and ``units``; the scalar ``spatial_ref`` holds the CRS as rioxarray writes it.
- Chunks ``(1, C, C)`` with C the tile core, so concurrent block writes never share a chunk.
- Global attributes: ``Conventions = "CF-1.8"`` plus the caller's provenance (JSON-able).

Growable ``pair`` dim
---------------------
:func:`create_cube` writes every array with zero pairs (shape ``(0, H, W)``).
:func:`add_pair` resizes the ``pair`` arrays by one (a metadata-only change: data chunks are
never written, so the new pair reads as NaN and ``valid`` 0), fills in the coordinates, and
writes ``post_id`` last: a pair counts only once its ``post_id`` is set, so an
``add_pair`` interrupted half-way is simply redone. Then the consolidated metadata is
rewritten, so readers using it (``xr.open_zarr``'s default) see the new pair. Writers never
trust the consolidated metadata; they read each array's own ``zarr.json``.

Completion and resumption
-------------------------
:func:`write_block` writes the four data variables of a block first and its ``valid`` chunk
last, always as a stored chunk even when all zeros (``write_empty_chunks``). A chunk
that is absent reads as ``valid`` 0, so a crash never leaves a block that reads as data, and
:func:`done_blocks` (the blocks whose ``valid`` chunk is stored) is what a rerun skips.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr
import zarr
from rasterio.crs import CRS
from zarr.core.sync import sync

DATA_VARS = ("east", "north", "east_raw", "north_raw")
"""The float32 displacement variables (m), written before ``valid``."""
BLOCK_VARS = (*DATA_VARS, "valid")
PAIR_COORDS = ("pair", "pre_time", "post_time", "pre_id", "post_id", "provenance")
"""1-D arrays along ``pair``; ``post_id`` is written last and marks a pair as added."""
GRID_MAPPING = "spatial_ref"
TIME_UNITS = "microseconds since 1970-01-01T00:00:00"
"""On-disk encoding of ``pre_time``/``post_time`` (int64, exact for Python datetimes)."""
NAT = np.iinfo(np.int64).min  # how xarray stores NaT in an int64 time variable
PAIR_CHUNK = 256  # chunk length of the small arrays along ``pair``

VAR_ATTRS = {
    "east": {"long_name": "eastward ground displacement, log-TV denoised", "units": "m"},
    "north": {"long_name": "northward ground displacement, log-TV denoised", "units": "m"},
    "east_raw": {"long_name": "eastward ground displacement before denoising", "units": "m"},
    "north_raw": {"long_name": "northward ground displacement before denoising", "units": "m"},
    "valid": {"long_name": "measurement mask", "units": "1", "flag_values": [0, 1],
              "flag_meanings": "no_data measured",
              "comment": "0 where there is no measurement (no data, cloud, or an edge pixel "
                         "whose match in post lies outside the processed area); a "
                         "block's valid chunk is written last, so 0 also marks blocks "
                         "not yet (fully) written"},
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
    "provenance": {"long_name": "per-pair provenance (JSON object)"},
}


# ---------------------------------------------------------------------------------------
# store access


def _open_group(path: str | Path, mode: str = "r") -> zarr.Group:
    """The cube's root group, read from the arrays' own metadata (never the consolidated)."""
    return zarr.open_group(str(path), mode=mode, use_consolidated=False)


def _open_array(path: str | Path, name: str, mode: str = "r") -> zarr.Array:
    return zarr.open_array(str(path), path=name, mode=mode)


def _consolidate(path: str | Path) -> None:
    """Rewrite the consolidated metadata (zarr warns that it is not in the v3 spec yet)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata")
        zarr.consolidate_metadata(str(path))


def cube_exists(path: str | Path) -> bool:
    """Whether ``path`` holds a cube: a Zarr group with ``x``, ``y`` and ``valid`` arrays."""
    try:
        g = _open_group(path)
    except (OSError, ValueError, zarr.errors.BaseZarrError):
        return False
    members = set(g.array_keys())
    return {"x", "y", "valid"} <= members


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


def _empty_cube(x: np.ndarray, y: np.ndarray, crs: CRS, attrs: dict) -> xr.Dataset:
    """The cube schema with zero pairs, with the CRS written by rioxarray."""
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
    for name in ("pre_id", "post_id", "provenance"):
        # numpy's variable-length string dtype -> a zarr v3 "string" array (no fixed width)
        coords[name] = ("pair", np.empty(0, np.dtypes.StringDType()), dict(COORD_ATTRS[name]))
    ds = xr.Dataset(data, coords=coords)
    ds = ds.rio.write_crs(crs, grid_mapping_name=GRID_MAPPING)
    ds = ds.rio.write_transform(grid_mapping_name=GRID_MAPPING)
    ds = ds.rio.write_grid_mapping(GRID_MAPPING)
    for name in BLOCK_VARS:  # explicit attrs: to_zarr(encoding=...) replaces var.encoding
        ds[name].encoding.pop("grid_mapping", None)
        ds[name].attrs["grid_mapping"] = GRID_MAPPING
    ds.attrs = {**_jsonable_attrs(attrs), "Conventions": "CF-1.8"}
    return ds


def create_cube(path: str | Path, *, x: np.ndarray, y: np.ndarray, crs: Any, chunk: int,
                attrs: dict) -> None:
    """Create an empty cube (zero pairs) on a projected grid.

    Args:
        path: where the Zarr v3 store goes (a local folder, ``.zarr`` by habit).
        x: ``(W,)`` pixel-centre eastings (m), regularly spaced.
        y: ``(H,)`` pixel-centre northings (m), regularly spaced (usually decreasing).
        crs: anything ``rasterio.crs.CRS.from_user_input`` accepts (``"EPSG:32611"``,
            an EPSG int, WKT, a ``CRS``).
        chunk: C, the chunk edge (px) = the tile core; blocks are ``(C, C)``.
        attrs: global provenance attributes (software version, model, weights sha256,
            iterations, tile/halo, log-TV λ/ε, band, search parameters, created time...).
            Values are stored JSON-able: see ``_jsonable``.

    An existing cube on the same grid (x, y, CRS and chunk) is left untouched, attributes
    included, so that reruns and appends reuse it. An existing cube on another grid, or
    a non-empty folder that is no cube, raises ValueError.
    """
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
        return
    local = Path(path)
    if local.exists() and (not local.is_dir() or any(local.iterdir())):
        raise ValueError(f"{path} exists and is not a displacement cube; not overwriting it")
    ds = _empty_cube(x, y, crs, attrs)
    encoding: dict[str, dict] = {name: {"chunks": (1, chunk, chunk)} for name in BLOCK_VARS}
    encoding["valid"]["_FillValue"] = None  # a plain 0 fill, no masking to float
    encoding["x"] = {"_FillValue": None}
    encoding["y"] = {"_FillValue": None}
    for name in PAIR_COORDS:
        encoding[name] = {"chunks": (PAIR_CHUNK,)}
    for name in ("pre_time", "post_time"):
        encoding[name].update(units=TIME_UNITS, calendar="proleptic_gregorian",
                              dtype="int64")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata")
        ds.to_zarr(str(path), mode="w-", zarr_format=3, consolidated=True, encoding=encoding)


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
             attrs: dict | None = None) -> int:
    """Append a pair to the cube and return its index along ``pair``.

    Args:
        pre_time, post_time: acquisition times (datetime, ISO string, np.datetime64 or
            None). Tz-aware times are converted to UTC; naive ones are taken as UTC.
        pre_id, post_id: STAC item ids (or file names) of the two scenes.
        attrs: per-pair provenance, stored as a JSON string in the ``provenance``
            coordinate at the pair's index (read it back with :func:`pair_provenance`).

    The new pair's ``east``... read NaN and ``valid`` 0 until blocks are written. If a pair
    with the same ``(pre_id, post_id)`` is already in the cube, nothing is written and
    its index is returned, so a rerun resumes instead of duplicating.
    """
    pre_id, post_id = str(pre_id), str(post_id)
    if not pre_id or not post_id:
        raise ValueError("pre_id and post_id must be non-empty strings")
    if not cube_exists(path):
        raise FileNotFoundError(f"no cube at {path}; call create_cube first")
    g = _open_group(path, mode="r+")
    n = _n_pairs(g)
    pairs = list(zip(_strings(g["pre_id"][:n]), _strings(g["post_id"][:n]), strict=True))
    if (pre_id, post_id) in pairs:
        _consolidate(path)  # in case the run that added it died before doing so
        return pairs.index((pre_id, post_id))
    provenance = json.dumps(_jsonable_attrs(attrs), sort_keys=True)
    values = {"pair": n, "pre_time": _time_value(pre_time), "post_time": _time_value(post_time),
              "pre_id": pre_id, "provenance": provenance}
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


def pair_provenance(ds: xr.Dataset, pair: int) -> dict:
    """The per-pair provenance given to :func:`add_pair`, as a dict."""
    return json.loads(str(ds["provenance"].values[pair]) or "{}")


# ---------------------------------------------------------------------------------------
# blocks


def _block_shape(data: Mapping[str, Any]) -> tuple[int, int]:
    missing = [k for k in BLOCK_VARS if k not in data]
    unknown = [k for k in data if k not in BLOCK_VARS]
    if missing or unknown:
        raise ValueError(f"a block needs exactly {list(BLOCK_VARS)}; missing {missing}, "
                         f"unknown {unknown}")
    shapes = {k: np.shape(v) for k, v in data.items()}
    if len(set(shapes.values())) != 1 or len(shapes["valid"]) != 2:
        raise ValueError(f"block arrays must share one (h, w) shape, got {shapes}")
    return shapes["valid"]


def _check_block(valid: zarr.Array, pair: int, row0: int, col0: int, h: int, w: int) -> None:
    npair, ny, nx = valid.shape
    c = valid.chunks[1]
    if not 0 <= pair < npair:
        raise ValueError(f"pair {pair} is not in the cube ({npair} pairs); add_pair first")
    if row0 % c or col0 % c or row0 < 0 or col0 < 0:
        raise ValueError(f"block origin (row0={row0}, col0={col0}) is not a multiple of the "
                         f"chunk size {c}")
    full_h, full_w = min(c, ny - row0), min(c, nx - col0)
    if (h, w) != (full_h, full_w):
        raise ValueError(f"block at (row0={row0}, col0={col0}) must be {full_h}x{full_w} px "
                         f"(one whole chunk of {c} on a {ny}x{nx} grid), got {h}x{w}")


def _write_data_vars(path: str | Path, index: tuple, data: Mapping[str, Any]) -> None:
    for name in DATA_VARS:
        _open_array(path, name, mode="r+")[index] = np.asarray(data[name], dtype=np.float32)


def _write_valid(valid: zarr.Array, index: tuple, mask: np.ndarray) -> None:
    # write_empty_chunks: store the chunk even when all 0 (= the fill value), since its
    # presence is what marks the block as complete.
    valid.with_config({"write_empty_chunks": True})[index] = mask


def write_block(path: str | Path, pair: int, row0: int, col0: int,
                data: Mapping[str, np.ndarray]) -> None:
    """Write one chunk-aligned block of one pair.

    Args:
        pair: the pair index (from :func:`add_pair`).
        row0, col0: block origin (px) on the cube grid, multiples of C.
        data: ``east``, ``north``, ``east_raw``, ``north_raw`` (``(h, w)`` float32, m) and
            ``valid`` (``(h, w)``, 0/1 or bool). ``(h, w) = (C, C)``, smaller only where the
            block reaches the bottom/right edge of the grid.

    The data variables are written first and ``valid`` last (always stored, even all
    zeros), so an interrupted call leaves ``valid`` 0 and the block out of
    :func:`done_blocks`. Blocks never share a chunk, so calls for different blocks may run
    concurrently (threads or processes) without locks. Misaligned blocks raise ValueError.
    """
    valid = _open_array(path, "valid", mode="r+")
    h, w = _block_shape(data)
    _check_block(valid, pair, row0, col0, h, w)
    mask = np.asarray(data["valid"])
    if mask.dtype != np.bool_ and np.any((mask != 0) & (mask != 1)):
        raise ValueError("valid must hold only 0 and 1")
    index = (int(pair), slice(row0, row0 + h), slice(col0, col0 + w))
    _write_data_vars(path, index, data)
    _write_valid(valid, index, mask.astype(np.uint8))


async def _list_keys(store: Any, prefix: str) -> set[str]:
    return {key async for key in store.list_prefix(prefix)}


def done_blocks(path: str | Path, pair: int) -> set[tuple[int, int]]:
    """Completed blocks ``(bi, bj)`` of ``pair`` (block origin = ``(bi * C, bj * C)``):
    those whose ``valid`` chunk is stored. Empty for a pair not in the cube."""
    valid = _open_array(path, "valid")
    if not 0 <= pair < valid.shape[0]:
        return set()
    nbi, nbj = valid.cdata_shape[1:]
    root = valid.store_path.path
    keys = {f"{root}/{valid.metadata.encode_chunk_key((pair, i, j))}": (i, j)
            for i in range(nbi) for j in range(nbj)}
    stored = sync(_list_keys(valid.store, f"{root}/"))
    return {ij for key, ij in keys.items() if key in stored}


# ---------------------------------------------------------------------------------------
# reading


def open_cube(path: str | Path) -> xr.Dataset:
    """Open a cube lazily (Dask, chunks ``(1, C, C)``) with its CRS and decoded times.

    This is ``xr.open_zarr(path, decode_coords="all")``: ``spatial_ref`` becomes a
    coordinate (``ds.rio.crs``, ``ds.rio.transform()`` work) and ``grid_mapping`` moves to
    each variable's ``encoding``. ``pre_time``/``post_time`` decode to datetime64[ns].
    """
    return xr.open_zarr(str(path), decode_coords="all")
