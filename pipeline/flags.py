"""The ``valid`` flag of every pixel: measured, or why not (pure numpy, block-wise).

Codes (``pipeline.cube.FLAGS``), first match wins:

2. ``cloud``: the scene classification marks a cloud, cloud shadow or defect;
0. ``no_data``: a band of ``pre`` or ``post`` is missing (nodata value, NaN, outside the
   scene);
3. ``edge`` (from the inputs): within ``edge_margin`` px (a square neighbourhood) of a
   ``no_data`` or ``cloud`` pixel. The network sees such a gap inside its receptive field
   and its estimate there is biased; issue 9 measured a 95th-percentile error of 18 m
   within 5 px of a nodata edge against 1.9 m elsewhere, hence the default of 8 px;
4. ``low_confidence``: σ (px) of either component above ``max_sigma``, or more than
   ``model.uncertainty.CROWD_SHARE`` of the pixels within
   ``model.uncertainty.CROWD_RADIUS_PX`` so (``model.uncertainty.low_confidence``; blocks
   get that radius of halo, see :func:`low_confidence_block`);
3. ``edge`` (from the field): the match ``(row + dy, col + dx)`` falls outside the processed
   area, or the model gave no finite value;
1. ``measured``: everything else.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .cube import CLOUD, EDGE, LOW_CONFIDENCE, MEASURED, NO_DATA


def input_codes(stack: np.ndarray, *, n_images: int, margin: int) -> np.ndarray:
    """``(1, h, w)`` float32 codes 0/1/2/3 from the inputs of a block (with its halo).

    ``stack`` is ``(n_images + 1, h, w)``: the pre and post bands (NaN = missing), then
    the cloud mask (1 = cloud).
    """
    images, cloud = stack[:n_images], stack[n_images] > 0.5
    missing = ~np.isfinite(images).all(axis=0)
    code = np.full(missing.shape, MEASURED, np.float32)
    gap = missing | cloud
    if margin > 0 and gap.any():
        near = ndimage.maximum_filter(gap, size=2 * margin + 1, mode="constant", cval=0)
        code[near] = EDGE
    code[missing] = NO_DATA
    code[cloud] = CLOUD  # clouds are also NaN in the images: the reason is the cloud
    return code[None]


def low_confidence_block(sigma: np.ndarray, *, max_sigma: float, radius: int) -> np.ndarray:
    """``(1, h, w)`` float32 1/0: ``model.uncertainty.low_confidence`` of a σ block
    ``(2, h, w)`` px with its halo (``radius`` px, so blocks agree with the whole)."""
    from model.uncertainty import low_confidence

    return low_confidence(sigma, max_sigma, radius).astype(np.float32)[None]


def final_codes(inputs: np.ndarray, raw: np.ndarray, sigma: np.ndarray, *, row0: int,
                col0: int, shape: tuple[int, int], max_sigma: float,
                unsure: np.ndarray | None = None) -> np.ndarray:
    """``(h, w)`` uint8 flags of a block from its input codes ``(h, w)``, raw field
    ``(2, h, w)`` px, σ ``(2, h, w)`` px (NaN where unknown), its origin and the image
    shape. ``unsure``: ``(h, w)`` low-confidence mask (:func:`low_confidence_block`);
    None: σ above ``max_sigma`` only."""
    h, w = inputs.shape
    rows = np.arange(row0, row0 + h, dtype=np.float32)[:, None] + raw[1]
    cols = np.arange(col0, col0 + w, dtype=np.float32)[None, :] + raw[0]
    inside = (rows >= 0) & (rows <= shape[0] - 1) & (cols >= 0) & (cols <= shape[1] - 1)
    if unsure is None:
        with np.errstate(invalid="ignore"):
            unsure = (sigma > max_sigma).any(axis=0)
    unsure = np.asarray(unsure) > 0.5
    code = inputs.astype(np.uint8)
    ok = code == MEASURED
    code[ok & unsure] = LOW_CONFIDENCE
    code[ok & ~unsure & ~(inside & np.isfinite(raw).all(axis=0))] = EDGE
    return code
