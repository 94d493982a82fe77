"""Process one loaded pair into the cube: infer, denoise, write blocks, with progress.

Stage functions are plain Python over xarray/Dask so that the CLI, the Prefect flows and
the tests share them. Tile work runs as Dask tasks on whatever ``distributed.Client`` is
current; finished blocks already in the cube are skipped, so a rerun resumes.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr

from model.denoise import LogTVConfig

from . import cube
from .denoise import denoise_chunked
from .infer import InferenceConfig, displacement_raw, scene_stats_lazy, workers_have_gpus

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PairMeta:
    """Identity of a pair in the cube (ids are STAC item ids or file names)."""

    pre_id: str
    post_id: str
    pre_time: datetime | None = None
    post_time: datetime | None = None
    attrs: dict = field(default_factory=dict)


def software_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("microflow")
    except PackageNotFoundError:
        return "unknown"


def provenance(cfg: InferenceConfig, logtv: LogTVConfig, denoise_halo: int, band: str,
               extra: dict | None = None) -> dict:
    """Cube attributes: software, model and weights hash, tiling, log-TV, band, time."""
    import json

    from model.config import get_config
    from model.registry import default_model_name, read_metadata, resolve_weights, sha256

    name = cfg.weights or default_model_name(cfg.device) or "untrained:small"
    if name.startswith("untrained:"):  # config from its name, no weights to hash
        digest, mcfg = "untrained", get_config(name.split(":", 1)[1]).to_dict()
    else:  # config from the file's metadata: no need to load the weights here
        path = resolve_weights(name)
        digest = sha256(path)
        mcfg = json.loads(read_metadata(path)["config"])
    attrs = {
        "title": "MicroFlow ground displacement",
        "software": "microflow",
        "software_version": software_version(),
        "model_name": name,
        "model_weights_sha256": digest,
        "model_iterations": mcfg["iterations"],
        "model_pyramid_levels": mcfg.get("pyramid_levels", 0),
        "tile_core_px": cfg.tile,
        "chunk_px": cfg.chunk,
        "halo_px": cfg.halo,
        "logtv_lambda": logtv.lam,
        "logtv_epsilon": logtv.eps,
        "logtv_halo_px": denoise_halo,
        "band": band,
        "displacement_convention": "post(row + dy, col + dx) = pre(row, col); "
                                   "east = dx * xres, north = -dy * |yres|",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    attrs.update(extra or {})
    return attrs


def _pixel_size(pair: xr.Dataset) -> tuple[float, float]:
    xres = float(pair.x[1] - pair.x[0])
    yres = float(pair.y[1] - pair.y[0])
    return xres, yres


def lands_inside(raw: xr.DataArray) -> xr.DataArray:
    """Where ``(row + dy, col + dx)`` falls inside the image (bool ``(y, x)``).

    ``raw`` is the ``(component, y, x)`` field in pixels. Elsewhere the ``post`` pixel
    that matches is outside the processed area, so the model had nothing to measure.
    """
    ny, nx = raw.sizes["y"], raw.sizes["x"]
    col = xr.DataArray(np.arange(nx, dtype=np.float32), dims="x") + raw.sel(component="dx")
    row = xr.DataArray(np.arange(ny, dtype=np.float32), dims="y") + raw.sel(component="dy")
    inside = (col >= 0) & (col <= nx - 1) & (row >= 0) & (row <= ny - 1)
    return inside.drop_vars("component", errors="ignore").transpose("y", "x")


def process_pair(pair: xr.Dataset, out: str | Path, meta: PairMeta, *,
                 cfg: InferenceConfig = InferenceConfig(), logtv: LogTVConfig = LogTVConfig(),
                 denoise_halo: int = 32, client=None, attrs: dict | None = None) -> int:
    """Compute the displacement of a lazily loaded pair and write it as one cube pair.

    Args:
        pair: ``pre``/``post`` ``(y, x)`` float32 with projected ``x``/``y`` and a CRS.
        out: the cube path (created if missing; the pair appended if new).
        meta: the pair's identity and dates.
        client: a ``distributed.Client`` (default: the current one, if any).
        attrs: provenance for the cube attributes.

    Returns the pair index in the cube.
    """
    from distributed import as_completed, default_client

    if client is None:
        try:
            client = default_client()
        except ValueError:
            client = None
    out = Path(out)
    if pair.sizes["y"] < 64 or pair.sizes["x"] < 64:
        raise ValueError(f"area to process is {pair.sizes['y']}x{pair.sizes['x']} px; "
                         "at least 64x64 is needed")
    xres, yres = _pixel_size(pair)
    crs = pair.rio.crs
    if crs is None:
        raise ValueError("the loaded pair has no CRS")
    t0 = time.monotonic()
    stats = (scene_stats_lazy(pair["pre"]), scene_stats_lazy(pair["post"]))
    gpu = workers_have_gpus(client)
    raw = displacement_raw(pair, stats, cfg, gpu=gpu)
    den = denoise_chunked(raw, logtv, denoise_halo)
    measured = (np.isfinite(pair["pre"]) & np.isfinite(pair["post"])
                & np.isfinite(raw).all("component") & lands_inside(raw))
    fields = {
        "east_raw": raw.sel(component="dx", drop=True) * xres,
        "north_raw": raw.sel(component="dy", drop=True) * -abs(yres),
        "east": den.sel(component="dx", drop=True) * xres,
        "north": den.sel(component="dy", drop=True) * -abs(yres),
        "valid": measured.astype("uint8"),
    }
    arrays = {k: v.data.rechunk((cfg.chunk, cfg.chunk)) for k, v in fields.items()}
    if not cube.cube_exists(out):
        cube.create_cube(out, x=pair.x.values, y=pair.y.values, crs=crs, chunk=cfg.chunk,
                         attrs=attrs or {})
    index = cube.add_pair(out, pre_time=meta.pre_time, post_time=meta.post_time,
                          pre_id=meta.pre_id, post_id=meta.post_id, attrs=meta.attrs)
    done = cube.done_blocks(out, index)
    nbi, nbj = arrays["valid"].numblocks
    todo = [(i, j) for i in range(nbi) for j in range(nbj) if (i, j) not in done]
    log.info("pair %d (%s -> %s): %d of %d blocks to compute (%d already in the cube)%s",
             index, meta.pre_id, meta.post_id, len(todo), nbi * nbj, len(done),
             ", on GPU workers" if gpu else "")
    names = list(arrays)

    def write(*blocks, block_info=None):
        (r0, _), (c0, _) = block_info[0]["array-location"]
        cube.write_block(str(out), index, r0, c0, dict(zip(names, blocks, strict=True)))
        return np.ones((1, 1), np.int8)

    status = da.map_blocks(write, *arrays.values(), dtype=np.int8,
                           chunks=((1,) * nbi, (1,) * nbj), name=f"write-pair{index}")
    parts = [status.blocks[i, j] for i, j in todo]
    if not parts:
        return index
    # optimize_graph=False: blockwise fusion would fold the inference into other tasks
    # and drop its GPU annotation; tasks here are whole chunks, so fusion gains nothing.
    if client is not None:
        futures = client.compute(parts, optimize_graph=False)
        for n, _ in enumerate(as_completed(futures), 1):
            _progress(n, len(parts), t0)
    else:
        dask.compute(*parts, optimize_graph=False, scheduler="threads")
        _progress(len(parts), len(parts), t0)
    return index


def _progress(done: int, total: int, t0: float) -> None:
    elapsed = time.monotonic() - t0
    log.info("blocks %d/%d done (%.2f blocks/s, %.0f s elapsed)", done, total,
             done / max(elapsed, 1e-9), elapsed)
