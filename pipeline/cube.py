"""The Zarr v3 displacement cube (CF-1.8): schema, creation, pair appends, block writes.

Layout (DESIGN.md): dims ``(pair, y, x)``; ``x``/``y`` projected pixel centres in metres;
``pair`` with ``pre_time``, ``post_time``, ``pre_id``, ``post_id``; variables ``east``,
``north`` (denoised), ``east_raw``, ``north_raw`` (float32, m) and ``valid`` (uint8
flags); ``spatial_ref`` as rioxarray writes it; chunks ``(1, C, C)``.

Completion: a block's four data variables are written first and its ``valid`` chunk
last, always as a chunk file (even all zeros). Missing chunks read as NaN / valid 0,
so a crash never leaves a block that reads as data, and ``done_blocks`` lists the blocks
whose ``valid`` chunk exists, which is what a rerun skips.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import dask.array as da
import numpy as np
import xarray as xr
import zarr

DATA_VARS = ("east", "north", "east_raw", "north_raw")
VAR_ATTRS = {
    "east": ("eastward ground displacement, log-TV denoised", "m"),
    "north": ("northward ground displacement, log-TV denoised", "m"),
    "east_raw": ("eastward ground displacement before denoising", "m"),
    "north_raw": ("northward ground displacement before denoising", "m"),
}
TIME_ENCODING = {"units": "seconds since 1970-01-01T00:00:00", "calendar": "proleptic_gregorian",
                 "dtype": "int64"}


def cube_exists(path: str | Path) -> bool:
    """Whether ``path`` holds a cube (a Zarr group with an ``x`` array)."""
    p = Path(path)
    return (p / "zarr.json").is_file() and (p / "x").is_dir()


def _grid(path: str | Path) -> tuple[np.ndarray, np.ndarray, str]:
    ds = xr.open_zarr(path, decode_coords="all")
    return ds.x.values, ds.y.values, ds.rio.crs.to_wkt() if ds.rio.crs else ""


def create_cube(path: str | Path, *, x: np.ndarray, y: np.ndarray, crs, chunk: int,
                attrs: dict) -> None:
    """Create an empty cube on the grid ``x`` ``(W,)``, ``y`` ``(H,)`` (pixel centres, m).

    ``crs`` is anything rioxarray accepts (EPSG code, WKT, ``CRS``). An existing cube on
    the same grid is left as it is; one on another grid raises ValueError.
    """
    import rioxarray  # noqa: F401  (registers .rio)
    from rasterio.crs import CRS

    crs = CRS.from_user_input(crs)
    if cube_exists(path):
        ox, oy, owkt = _grid(path)
        if not (np.array_equal(ox, x) and np.array_equal(oy, y)
                and CRS.from_wkt(owkt) == crs):
            raise ValueError(f"{path} already holds a cube on another grid "
                             f"({len(ox)}x{len(oy)} px, {CRS.from_wkt(owkt).to_string()}); "
                             "choose another output path")
        return
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    ds = xr.Dataset(coords={
        "x": ("x", np.asarray(x, dtype=np.float64),
              {"standard_name": "projection_x_coordinate", "long_name": "easting (pixel "
               "centre)", "units": "m"}),
        "y": ("y", np.asarray(y, dtype=np.float64),
              {"standard_name": "projection_y_coordinate", "long_name": "northing (pixel "
               "centre)", "units": "m"}),
    })
    ds = ds.rio.write_crs(crs).rio.write_transform()
    ds.attrs = {"Conventions": "CF-1.8", "chunk_px": chunk, **_jsonable(attrs)}
    ds.to_zarr(path, mode="w", zarr_format=3, consolidated=True)


def _jsonable(attrs: dict) -> dict:
    out = {}
    for k, v in attrs.items():
        if isinstance(v, str | int | float | bool) or v is None:
            out[k] = v
        elif isinstance(v, list | tuple) and all(isinstance(i, str | int | float) for i in v):
            out[k] = list(v)
        else:
            out[k] = json.dumps(v, default=str)
    return out


def _pair_template(path: str | Path, pre_time, post_time, pre_id: str, post_id: str
                   ) -> xr.Dataset:
    g = zarr.open_group(str(path), mode="r")
    ny, nx = g["y"].shape[0], g["x"].shape[0]
    chunk = int(g.attrs["chunk_px"])

    def t(v):
        if v is None:
            return np.datetime64("NaT", "ns")
        if isinstance(v, datetime) and v.tzinfo is not None:  # store UTC, naive
            v = v.astimezone(UTC).replace(tzinfo=None)
        return np.datetime64(v, "ns")

    data = {}
    for name in DATA_VARS:
        long_name, units = VAR_ATTRS[name]
        data[name] = (("pair", "y", "x"),
                      da.full((1, ny, nx), np.nan, dtype=np.float32, chunks=(1, chunk, chunk)),
                      {"long_name": long_name, "units": units, "grid_mapping": "spatial_ref"})
    data["valid"] = (("pair", "y", "x"),
                     da.zeros((1, ny, nx), dtype=np.uint8, chunks=(1, chunk, chunk)),
                     {"long_name": "measurement mask", "flag_values": [0, 1],
                      "flag_meanings": "no_data measured", "units": "1",
                      "grid_mapping": "spatial_ref"})
    return xr.Dataset(data, coords={
        "pair": ("pair", np.array([0], dtype=np.int64)),
        "pre_time": ("pair", np.array([t(pre_time)])),
        "post_time": ("pair", np.array([t(post_time)])),
        "pre_id": ("pair", np.array([str(pre_id)], dtype=object)),
        "post_id": ("pair", np.array([str(post_id)], dtype=object)),
    })


def add_pair(path: str | Path, *, pre_time: datetime | None, post_time: datetime | None,
             pre_id: str, post_id: str, attrs: dict | None = None) -> int:
    """Append a pair (data NaN, ``valid`` 0 until written) and return its index.

    A pair with the same ``(pre_id, post_id)`` already in the cube is not added again:
    its index is returned, so that reruns resume. ``attrs`` (per-pair provenance) go
    into the cube attribute ``pair_attrs`` as JSON keyed by the index.
    """
    if not cube_exists(path):
        raise FileNotFoundError(f"no cube at {path}; create_cube first")
    g = zarr.open_group(str(path), mode="r")
    template = _pair_template(path, pre_time, post_time, pre_id, post_id)
    template.attrs = dict(g.attrs)  # xarray's mode="a" rewrites the group attributes
    template.attrs.pop("coordinates", None)
    chunk = int(g.attrs["chunk_px"])
    if "pair" not in g:
        index = 0
        encoding = {name: {"chunks": (1, chunk, chunk)} for name in (*DATA_VARS, "valid")}
        encoding["valid"]["_FillValue"] = None
        encoding["pre_time"] = dict(TIME_ENCODING)
        encoding["post_time"] = dict(TIME_ENCODING)
        template.to_zarr(path, mode="a", compute=False, encoding=encoding, consolidated=True)
    else:
        ds = xr.open_zarr(path)
        ids = list(zip([str(v) for v in ds.pre_id.values],
                       [str(v) for v in ds.post_id.values], strict=True))
        same = [k for k, pair_ids in enumerate(ids) if pair_ids == (str(pre_id), str(post_id))]
        if same:
            return same[0]
        index = ds.sizes["pair"]
        template = template.assign_coords(pair=[index])
        template.to_zarr(path, append_dim="pair", compute=False, consolidated=True)
    if attrs:
        g = zarr.open_group(str(path), mode="r+")
        per_pair = json.loads(g.attrs.get("pair_attrs", "{}"))
        per_pair[str(index)] = attrs
        g.attrs["pair_attrs"] = json.dumps(per_pair, default=str)
        zarr.consolidate_metadata(str(path))
    return index


def write_block(path: str | Path, pair: int, row0: int, col0: int,
                data: dict[str, np.ndarray]) -> None:
    """Write one chunk-aligned block: ``east``, ``north``, ``east_raw``, ``north_raw``
    (``(h, w)`` float32, m) first, then ``valid`` (uint8) last.

    ``row0``/``col0`` must be multiples of the chunk size C and the block at most
    ``(C, C)`` (smaller only at the bottom/right edge).
    """
    g = zarr.open_group(str(path), mode="r+")
    chunk = int(g.attrs["chunk_px"])
    ny, nx = g["y"].shape[0], g["x"].shape[0]
    h, w = np.shape(data["valid"])
    if row0 % chunk or col0 % chunk:
        raise ValueError(f"block origin ({row0}, {col0}) is not aligned to chunks of {chunk}")
    if h > chunk or w > chunk or (h < chunk and row0 + h != ny) or (w < chunk and col0 + w
                                                                     != nx):
        raise ValueError(f"block {h}x{w} at ({row0}, {col0}) does not fill one chunk of "
                         f"{chunk} (grid {ny}x{nx})")
    if not 0 <= pair < g["valid"].shape[0]:
        raise ValueError(f"pair {pair} is not in the cube (add_pair first)")
    rows, cols = slice(row0, row0 + h), slice(col0, col0 + w)
    for name in DATA_VARS:
        g[name][pair, rows, cols] = np.asarray(data[name], dtype=np.float32)
    with zarr.config.set({"array.write_empty_chunks": True}):
        valid = zarr.open_array(str(path), path="valid", mode="r+")
        valid[pair, rows, cols] = np.asarray(data["valid"], dtype=np.uint8)


def done_blocks(path: str | Path, pair: int) -> set[tuple[int, int]]:
    """Blocks ``(bi, bj)`` of ``pair`` whose ``valid`` chunk exists (completed blocks)."""
    folder = Path(path) / "valid" / "c" / str(pair)
    if not folder.is_dir():
        return set()
    return {(int(f.parent.name), int(f.name)) for f in folder.glob("*/*")}


def open_cube(path: str | Path) -> xr.Dataset:
    """Open a cube lazily, with its CRS: ``xr.open_zarr(path, decode_coords="all")``."""
    return xr.open_zarr(path, decode_coords="all")
