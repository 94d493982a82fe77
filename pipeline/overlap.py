"""The one place that gives Dask blocks a halo of their neighbours: ``with_halo``.

Inference, edge flags and the chunked denoise all run a function on each ``(C, C)``
block plus ``halo`` px of context from the neighbouring blocks (none along the image
border), and keep the block's core. ``dask.array.map_overlap`` does the overlap and the
trimming; this wraps it for ``(channels, y, x)`` stacks whose function changes the number
of channels (so ``map_overlap``'s own ``chunks`` argument, which means the grown blocks,
is not used).
"""

from __future__ import annotations

from collections.abc import Callable

import dask
import dask.array as da
import numpy as np


def with_halo(func: Callable[..., np.ndarray], stack: da.Array, halo: int, *,
              out_channels: int, name: str, gpu: bool = False, **kwargs) -> da.Array:
    """``func(block (c, h + 2·halo', w + 2·halo'), **kwargs) -> (out_channels, h', w')``
    per block, where ``halo'`` is ``halo`` inside the image and 0 along its border, and
    ``h', w'`` = the block with its halo; the result is trimmed back to the block.

    ``stack`` is ``(c, H, W)`` with one chunk along ``c``. ``gpu`` annotates the tasks
    with ``resources={"GPU": 1}`` (for clusters whose workers advertise GPUs).
    """
    stack = stack.rechunk({0: -1})
    depth = {0: 0, 1: halo, 2: halo}
    grown = da.overlap.overlap(stack, depth=depth, boundary="none")
    annotations = {"resources": {"GPU": 1}} if gpu else {}
    with dask.annotate(**annotations):
        out = da.map_blocks(func, grown, dtype=np.float32, name=name,
                            chunks=((out_channels,), *grown.chunks[1:]), **kwargs)
    out = da.overlap.trim_internal(out, depth, boundary="none")
    # back to the input's chunks: overlap merges a last chunk narrower than the halo into
    # its neighbour, and every stage downstream works on the cube's chunks
    return out.rechunk(((out_channels,), *stack.chunks[1:]))
