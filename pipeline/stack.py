"""The stack of a cube's pairs: ``stack_*`` variables beside the pairs, one grid only.

:func:`stack_cube` reads the co-registered fields of some of a cube's complete pairs
(``east``/``north``, co-registration already removed, and ``east_sigma``/``north_sigma``,
metres) and writes their σ-weighted robust combination (``model.stack``) as a set of
``(y, x)`` variables in the same cube:

- ``stack_east``, ``stack_north`` (float32, m) and ``stack_east_sigma``,
  ``stack_north_sigma`` (float32, m, one standard deviation, from the pairs' σ with their
  shared dates and from the spread between them);
- ``stack_count`` (uint8): pairs that agreed and were combined at the pixel;
- ``stack_valid`` (uint8 CF flags: 0 too_few_pairs, 1 measured, 2 pairs_disagree); the
  stacked values are NaN wherever it is not 1.

Why a variable set and not an entry along ``pair``: a stack has no single pre and post
scene, so an entry would give readers (and anything that lists ``pre_id``/``post_id``)
a pair that is none; on its own ``(y, x)`` variables, GIS readers open it as one more
layer, and the pairs it combines are named in its attributes (``stack_pairs``,
``stack_pre_ids``, ``stack_post_ids``). A cube holds one grid (its ``x``, ``y``, CRS and
chunks are fixed when it is created), and the pairs stacked must all say that grid in
their provenance (``grid``, ``epsg``), so a stack never mixes grids. Running it again
replaces the stack.

The work goes block by block (the cube's chunks), each read with ``StackConfig
.context_px`` px of its neighbours so that blocks equal the whole-scene result.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import dask.array as da
import numpy as np
import xarray as xr
import zarr

from model.stack import STACK_FLAGS, StackConfig, stack_field

from . import cube
from . import store as stores

log = logging.getLogger(__name__)

STACK_VARS = ("stack_east", "stack_north", "stack_east_sigma", "stack_north_sigma",
              "stack_count", "stack_valid")
"""Written in this order per block; ``stack_valid`` last marks a block as done."""
_FROM = {"stack_east": "east", "stack_north": "north", "stack_east_sigma": "east_sigma",
         "stack_north_sigma": "north_sigma", "stack_count": "count", "stack_valid": "flag"}
STACK_ATTRS = {
    "stack_east": {"long_name": "eastward ground displacement, stack of pairs", "units": "m"},
    "stack_north": {"long_name": "northward ground displacement, stack of pairs",
                    "units": "m"},
    "stack_east_sigma": {"long_name": "one-standard-deviation uncertainty of stack_east",
                         "units": "m", "comment": "from the pairs' sigma with their shared "
                         "dates and from the spread between pairs; does not cover a "
                         "co-registration offset common to the pairs"},
    "stack_north_sigma": {"long_name": "one-standard-deviation uncertainty of stack_north",
                          "units": "m", "comment": "as stack_east_sigma"},
    "stack_count": {"long_name": "pairs combined at the pixel", "units": "1"},
    "stack_valid": {"long_name": "stack flag", "units": "1",
                    "flag_values": list(STACK_FLAGS),
                    "flag_meanings": " ".join(STACK_FLAGS.values()),
                    "comment": "1 measured: at least min_pairs pairs agree, and they are "
                               "more than half of the pairs that measured the pixel; 2 "
                               "pairs_disagree; 0 too_few_pairs measured it. stack_* "
                               "values are NaN wherever stack_valid != 1"},
}


class StackError(ValueError):
    """The pairs asked for cannot be stacked (too few, incomplete, other grids)."""


def _check_pairs(ds: xr.Dataset, indices: Sequence[int]) -> None:
    if len(indices) < 2:
        raise StackError(f"a stack needs at least 2 pairs, got {len(indices)}")
    if len(set(indices)) != len(indices):
        raise StackError(f"pairs repeat: {list(indices)}")
    n = ds.sizes["pair"]
    for i in indices:
        if not 0 <= i < n:
            raise StackError(f"pair {i} is not in the cube ({n} pairs)")
        if int(ds.complete.values[i]) != 1:
            raise StackError(f"pair {i} is not complete; finish it before stacking")
    grids = {(p.get("grid"), p.get("epsg"))
             for p in (cube.pair_provenance(ds, i) for i in indices)}
    if len(grids) > 1:
        raise StackError(f"the pairs are on different grids {sorted(map(str, grids))}; a "
                         "stack never mixes grids")


def _template(ds: xr.Dataset, chunk: int, attrs: dict) -> xr.Dataset:
    """The stack variables, unwritten (Dask), to create them in the store."""
    shape = (ds.sizes["y"], ds.sizes["x"])
    data = {}
    for name in STACK_VARS:
        integer = name in ("stack_count", "stack_valid")
        arr = da.zeros(shape, chunks=(chunk, chunk),
                       dtype=np.uint8 if integer else np.float32)
        data[name] = (("y", "x"), arr, {**STACK_ATTRS[name], **attrs,
                                         "grid_mapping": cube.GRID_MAPPING})
    return xr.Dataset(data)


def _create(path: str | Path, ds: xr.Dataset, chunk: int, attrs: dict) -> None:
    """(Re)create the ``stack_*`` arrays, metadata only (no chunk is written)."""
    store = stores.zarr_store(path)
    fmt = cube.zarr_format(path)  # the cube's own format (2 for new cubes, 3 for old ones)
    group = zarr.open_group(store, mode="r+", use_consolidated=False, zarr_format=fmt)
    for name in STACK_VARS:
        if name in group:
            del group[name]
    template = _template(ds, chunk, attrs)
    encoding = {name: {"chunks": (chunk, chunk)} for name in STACK_VARS}
    for name in ("stack_count", "stack_valid"):
        encoding[name]["_FillValue"] = None  # plain 0 fill
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata")
        template.to_zarr(stores.zarr_store(path), mode="a", compute=False,
                         consolidated=True, zarr_format=fmt, encoding=encoding)


def _windows(size: int, chunk: int, context: int):
    """``(core_start, core_stop, read_start, read_stop)`` of each block along one axis."""
    for start in range(0, size, chunk):
        stop = min(start + chunk, size)
        yield start, stop, max(0, start - context), min(size, stop + context)


def stack_cube(path: str | Path, pairs: Sequence[int] | None = None,
               cfg: StackConfig | None = None) -> dict:
    """Stack ``pairs`` of the cube at ``path`` into its ``stack_*`` variables.

    Args:
        path: the cube (a local folder or an ``s3://`` URL).
        pairs: pair indices (default: every complete pair).
        cfg: the combination's settings (default ``model.stack.StackConfig()``).

    Returns a summary: the pairs, their scene ids, the share of pixels measured by the
    stack, its median σ (m) and seconds.

    Raises:
        StackError: fewer than 2 pairs, a pair not complete, or pairs of other grids.
    """
    import time

    t0 = time.monotonic()
    cfg = cfg or StackConfig()
    ds = cube.open_cube(path)
    indices = ([e.index for e in cube.pairs(path) if e.complete] if pairs is None
               else [int(i) for i in pairs])
    _check_pairs(ds, indices)
    pre = [str(v) for v in ds.pre_id.values[indices]]
    post = [str(v) for v in ds.post_id.values[indices]]
    chunk = int(ds["valid"].encoding.get("chunks", ds["valid"].data.chunksize)[1])
    attrs = {"stack_pairs": indices, "stack_pre_ids": pre, "stack_post_ids": post,
             "stack_min_pairs": cfg.min_pairs, "stack_cutoff_sigma": cfg.cutoff,
             "stack_shared_date_correlation": cfg.rho, "stack_pool_px": cfg.pool_px,
             "stack_created": datetime.now(UTC).isoformat(timespec="seconds")}
    _create(path, ds, chunk, attrs)
    store = stores.zarr_store(path)
    arrays = {n: zarr.open_array(store, path=n, mode="r+", zarr_format=cube.zarr_format(path))
              for n in STACK_VARS}
    sel = ds[["east", "north", "east_sigma", "north_sigma", "valid"]].isel(pair=indices)
    h, w = ds.sizes["y"], ds.sizes["x"]
    measured = 0
    sigmas: list[np.ndarray] = []
    ctx = cfg.context_px
    for r0, r1, rr0, rr1 in _windows(h, chunk, ctx):
        for c0, c1, rc0, rc1 in _windows(w, chunk, ctx):
            block = sel.isel(y=slice(rr0, rr1), x=slice(rc0, rc1)).load()
            ok = block["valid"].values == cube.MEASURED

            def field(name, block=block, ok=ok):
                return np.where(ok, block[name].values, np.nan)

            out = stack_field(field("east"), field("north"), field("east_sigma"),
                              field("north_sigma"), pre, post, cfg)
            core = (slice(r0 - rr0, r1 - rr0), slice(c0 - rc0, c1 - rc0))
            for name in STACK_VARS:
                arr = arrays[name]
                if name == "stack_valid":  # stored even when all 0: marks the block done
                    arr = arr.with_config({"write_empty_chunks": True})
                arr[r0:r1, c0:c1] = out[_FROM[name]][core]
            flag = out["flag"][core]
            measured += int((flag == 1).sum())
            sigmas.append(np.hypot(out["east_sigma"][core], out["north_sigma"][core])
                          [flag == 1])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata")
        zarr.consolidate_metadata(stores.zarr_store(path))
    every = np.concatenate(sigmas) if sigmas else np.empty(0)
    summary = {"pairs": indices, "pre_ids": pre, "post_ids": post,
               "measured_fraction": measured / float(h * w),
               "median_sigma_m": float(np.median(every)) if every.size else float("nan"),
               "seconds": round(time.monotonic() - t0, 2)}
    log.info("stack of pairs %s in %s: %.1f%% of pixels measured, median σ %.3f m, %.1f s",
             indices, path, 100 * summary["measured_fraction"], summary["median_sigma_m"],
             summary["seconds"])
    return summary


def has_stack(ds: xr.Dataset) -> bool:
    """Whether the cube holds a stack."""
    return all(name in ds for name in STACK_VARS)


def stack_as_pair(ds: xr.Dataset) -> xr.Dataset:
    """The stack shaped as a one-pair cube (``east``, ``north``, ``valid``; the earliest
    pre and latest post time along ``pair``) so that the quick-looks of a pair draw it."""
    idx = [int(i) for i in ds["stack_valid"].attrs["stack_pairs"]]
    pairs = ",".join(str(i) for i in idx)
    # the stack has no raw field: the profile's raw curves show the stack itself
    one = xr.Dataset(
        {"east": ds["stack_east"], "north": ds["stack_north"],
         "east_raw": ds["stack_east"], "north_raw": ds["stack_north"],
         "valid": ds["stack_valid"]}).expand_dims(pair=[0])
    return one.assign_coords(
        pre_id=("pair", [f"(stack of pairs {pairs}) earliest"]),
        post_id=("pair", ["latest"]),
        pre_time=("pair", [ds.pre_time.values[idx].min()]),
        post_time=("pair", [ds.post_time.values[idx].max()]))


def draw_stack_quicklooks(path: str | Path, out_dir: str | Path | None = None
                          ) -> list[Path]:
    """Map and profile PNGs of the stack, ``<stem>_stack_{maps,profile}.png`` (the stem as
    for the pairs' quick-looks)."""
    from .quicklook import plot_maps, plot_profile, quicklook_stem

    ds = cube.open_cube(path)
    one = stack_as_pair(ds)
    stem = quicklook_stem(path, out_dir)
    stem.parent.mkdir(parents=True, exist_ok=True)
    maps = plot_maps(one, 0, Path(f"{stem}_stack_maps.png"))
    pngs = [maps]
    try:
        pngs.append(plot_profile(one, 0, Path(f"{stem}_stack_profile.png")))
    except ValueError as e:  # no fault line found in the stack: the map still says it
        log.info("no profile of the stack of %s: %s", path, e)
    return pngs
