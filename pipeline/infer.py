"""MicroFlow on one block (with its halo), as run by a Dask worker: bands in, field and σ out.

A block is one tile: the Dask chunk, the cube chunk and the model tile are the same
``(C, C)`` square (``TilingConfig.tile``), and ``pipeline.overlap.with_halo`` gives it
``halo`` px of context from its neighbours. The model runs once on it and the core is
kept, so there is no blending inside a block and no second set of overlap code.
The model is loaded once per worker process (``pipeline.model_ref.worker_model``).
"""

from __future__ import annotations

import numpy as np

from .model_ref import ModelRef, worker_model


def workers_have_gpus(client) -> bool:
    """Whether any worker of a ``distributed.Client`` advertises a ``GPU`` resource."""
    if client is None:
        return False
    workers = client.scheduler_info().get("workers", {})
    return any(w.get("resources", {}).get("GPU", 0) > 0 for w in workers.values())


def infer_block(stack: np.ndarray, *, n_bands: int, stats: tuple, model: ModelRef,
                device: str | None, torch_threads: int, batch_size: int,
                flip_average: bool = False) -> np.ndarray:
    """``(4, h, w)`` float32 ``(dx, dy, σx, σy)`` in px of one block.

    Args:
        stack: ``(2·n_bands, h, w)``: the pre bands then the post bands (NaN = missing).
        stats: per band ``((pre_mean, pre_std), (post_mean, post_std))``, scene-wide.
        model: the run's resolved model. device: None = CUDA if the worker has it.
        flip_average: average the model over the four flips of the block.

    Several bands are estimated one by one and combined by ``model.bands.combine_bands``
    as correlated evidence (``model.bands.band_rho`` of the pre bands: copies of one band
    count as one band; their disagreement feeds σ).
    """
    import torch

    from model.inference import infer_mosaic
    from model.precision import device_or_default

    torch.set_num_threads(torch_threads)
    dev = device_or_default(device)
    net = worker_model(model, dev)
    h, w = stack.shape[1:]
    flows, sigmas = [], []
    for b in range(n_bands):
        pre = np.asarray(stack[b], dtype=np.float32)
        post = np.asarray(stack[n_bands + b], dtype=np.float32)
        if not (np.isfinite(pre).any() and np.isfinite(post).any()):
            flows.append(np.full((2, h, w), np.nan, np.float32))
            sigmas.append(np.full((2, h, w), np.nan, np.float32))
            continue
        size = max(h, w)  # one tile: the whole block with its halo
        out = infer_mosaic(net, pre, post, stats[b], size, 0, batch_size, sigma=True,
                           flips=flip_average)
        flows.append(out[:2])
        sigmas.append(out[2:])
    if n_bands == 1:
        return np.concatenate([flows[0], sigmas[0]]).astype(np.float32)
    from model.bands import band_rho, combine_bands

    rho = band_rho(np.asarray(stack[:n_bands], dtype=np.float32))
    flow, sigma = combine_bands(np.stack(flows), np.stack(sigmas), rho=rho)
    return np.concatenate([flow, sigma]).astype(np.float32)
