"""Confidence-weighted log-TV of the raw field, block by block with a halo (Dask).

Each block sees ``halo`` px of its neighbours (``pipeline.overlap.with_halo``), so the
result matches the whole-mosaic solve within a small tolerance (see the tests). Pixels
not measured (NaN) get no data term and are filled from their neighbours by the
regulariser, then set back to NaN; with σ given, the data term is weighted by
``model.denoise.weights_from_sigma`` (``1/σ²``), so pixels the model cannot trust lean on
their confident neighbours.
"""

from __future__ import annotations

import dask.array as da
import numpy as np

from model.denoise import LogTVConfig

from .overlap import with_halo


def denoise_block(stack: np.ndarray, *, cfg: LogTVConfig, device: str | None = None,
                  torch_threads: int = 1) -> np.ndarray:
    """``(2, h, w)`` float32 px: log-TV of ``stack[:2]`` (``dx, dy``, NaN = not measured),
    weighted by σ ``stack[2:4]`` when the stack has it and σ is known. ``device``: None =
    CUDA if the worker has it, as for the model."""
    import torch

    from model.denoise import logtv_denoise, weights_from_sigma
    from model.precision import device_or_default

    torch.set_num_threads(torch_threads)
    dev = device_or_default(device)
    field = np.asarray(stack[:2], dtype=np.float32)
    if not np.isfinite(field).any():
        return field
    weights = None
    if stack.shape[0] >= 4 and np.isfinite(stack[2:4]).any():
        weights = weights_from_sigma(np.asarray(stack[2:4], dtype=np.float32))
    # absolute weights (reference 1): a pixel weighs the same in its chunk as in the whole
    return np.asarray(logtv_denoise(field, cfg, device=dev, weights=weights,
                                    weights_reference=None if weights is None else 1.0),
                      dtype=np.float32)


def denoise_chunked(stack: da.Array, cfg: LogTVConfig = LogTVConfig(), halo: int = 32, *,
                    gpu: bool = False, device: str | None = None, torch_threads: int = 1
                    ) -> da.Array:
    """log-TV of a lazy ``(2 or 4, H, W)`` stack (``dx, dy[, σx, σy]`` px), chunk by chunk
    with ``halo`` px of overlap; returns the lazy ``(2, H, W)`` result. NaN stays NaN.
    ``gpu`` annotates the tasks for GPU workers (as the model's)."""
    if not isinstance(stack, da.Array):
        stack = da.from_array(stack, chunks=(-1, 512, 512))
    return with_halo(denoise_block, stack, halo, out_channels=2, name="logtv-denoise",
                     gpu=gpu, cfg=cfg, device=device, torch_threads=torch_threads)
