"""MicroFlow over a lazily loaded pair, as Dask tasks: one task per chunk of tiles.

Each task gets its chunk plus a ``halo`` of context from the neighbouring chunks
(``dask.array.overlap``), runs the model on batched, feather-blended tiles inside it, and
returns the chunk's core. The model is loaded once per worker process and cached. Work
is annotated ``resources={"GPU": 1}`` when the cluster's workers advertise GPUs.
"""

from __future__ import annotations

from dataclasses import dataclass

import dask
import dask.array as da
import numpy as np
import xarray as xr


@dataclass(frozen=True)
class InferenceConfig:
    """Tiling and model settings (pixels). ``chunk`` is the Dask chunk and cube chunk
    (C); ``tile`` the model tile core inside a chunk; ``halo`` the context added around
    both."""

    chunk: int = 512
    tile: int = 512
    halo: int = 64
    batch_size: int = 1
    weights: str | None = None
    device: str | None = None  # None: CUDA if the worker has one, else CPU
    torch_threads: int = 1  # per worker: Dask provides the parallelism


def _infer_block(pre: np.ndarray, post: np.ndarray, *, stats, cfg: InferenceConfig,
                 trim: tuple[tuple[int, int], tuple[int, int]]) -> np.ndarray:
    import torch

    from model.inference import get_model, infer_mosaic

    torch.set_num_threads(cfg.torch_threads)
    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = get_model(cfg.weights, device)
    (t0, t1), (l0, l1) = trim
    a = np.asarray(pre, dtype=np.float32)
    b = np.asarray(post, dtype=np.float32)
    h, w = a.shape
    if not (np.isfinite(a).any() and np.isfinite(b).any()):
        return np.full((2, h - t0 - t1, w - l0 - l1), np.nan, np.float32)
    flow = infer_mosaic(model, a, b, stats, cfg.tile, cfg.halo, cfg.batch_size)
    return flow[:, t0:h - t1, l0:w - l1]


def _trim_for(block_id: tuple[int, int], nblocks: tuple[int, int], depth: int
              ) -> tuple[tuple[int, int], tuple[int, int]]:
    """Halo rows/cols to drop on each side (none along the image border)."""
    (i, j), (ni, nj) = block_id, nblocks
    return ((depth if i > 0 else 0, depth if i < ni - 1 else 0),
            (depth if j > 0 else 0, depth if j < nj - 1 else 0))


def workers_have_gpus(client) -> bool:
    """Whether any worker of a ``distributed.Client`` advertises a ``GPU`` resource."""
    if client is None:
        return False
    workers = client.scheduler_info().get("workers", {})
    return any(w.get("resources", {}).get("GPU", 0) > 0 for w in workers.values())


def displacement_raw(pair: xr.Dataset, stats, cfg: InferenceConfig, gpu: bool = False
                     ) -> xr.DataArray:
    """Lazy raw field ``(band=2, y, x)`` = ``(dx, dy)`` in pixels of a loaded pair.

    ``pair`` has ``pre``/``post`` ``(y, x)`` chunked ``(cfg.chunk, cfg.chunk)``;
    ``stats`` = scene-wide ``((pre_mean, pre_std), (post_mean, post_std))``.
    """
    depth = cfg.halo
    pre = pair["pre"].data.rechunk((cfg.chunk, cfg.chunk))
    post = pair["post"].data.rechunk((cfg.chunk, cfg.chunk))
    pre_o = da.overlap.overlap(pre, depth={0: depth, 1: depth}, boundary="none")
    post_o = da.overlap.overlap(post, depth={0: depth, 1: depth}, boundary="none")
    nblocks = pre.numblocks

    def run(a, b, block_info=None):
        bid = block_info[0]["chunk-location"]
        return _infer_block(a, b, stats=stats, cfg=cfg, trim=_trim_for(bid, nblocks, depth))

    annotations = {"resources": {"GPU": 1}} if gpu else {}
    with dask.annotate(**annotations):
        flow = da.map_blocks(run, pre_o, post_o, new_axis=0, dtype=np.float32,
                             chunks=((2,), *pre.chunks), name="microflow-infer")
    return xr.DataArray(flow, dims=("component", "y", "x"),
                        coords={"component": ["dx", "dy"], "x": pair.x, "y": pair.y})


def scene_stats_lazy(image: xr.DataArray, step: int = 8) -> tuple[float, float]:
    """Mean and std of the finite pixels from a ``step``-decimated read (bounded memory)."""
    sub = image.data[::step, ::step]
    mean, std = da.compute(da.nanmean(sub), da.nanstd(sub))
    if not np.isfinite(mean) or not np.isfinite(std):
        raise ValueError(f"image {image.name!r} has no valid pixel in the processed area")
    return float(mean), float(std)
