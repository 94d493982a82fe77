"""Displacement estimation for whole images: normalise, tile, batch, blend, denoise."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from .correlator_start import model_start
from .denoise import LogTVConfig, logtv_denoise, weights_from_sigma
from .microflow import MicroFlow
from .normalize import as_float_image, normalize, robust_stats
from .precision import device_or_default, use_bf16
from .registry import load_model
from .sharpen import sharpen_field
from .tiling import DEFAULT_HALO, DEFAULT_TILE, Mosaic, Tile, tile_grid
from .uncertainty import sigma_features

_MODEL_CACHE: dict[tuple[str, str], MicroFlow] = {}


def get_model(weights: str | None, device: torch.device) -> MicroFlow:
    """Load a model once per (weights, device) in this process and reuse it."""
    key = (str(weights), str(device))
    if key not in _MODEL_CACHE:
        _MODEL_CACHE[key] = load_model(weights, device=device)
    return _MODEL_CACHE[key]


def scene_stats(image: np.ndarray) -> tuple[float, float]:
    """Robust centre and scale of the finite pixels of a float image (see
    :func:`model.normalize.robust_stats`)."""
    return robust_stats(image)


FLIPS: tuple[tuple[int, ...], ...] = ((), (-1,), (-2,), (-2, -1))
"""The flips of :func:`predict_tiles`'s ``flips`` average: none, left-right, up-down, both."""


def _unflip(fields: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """``(B, 2k, H, W)`` fields (``k`` stacked ``(dx, dy)``) of flipped images, back in the
    unflipped frame: flipped back, ``dx`` negated for a left-right flip, ``dy`` for an
    up-down one."""
    if not dims:
        return fields
    sign = fields.new_tensor([-1.0 if -1 in dims else 1.0, -1.0 if -2 in dims else 1.0])
    sign = sign.repeat(fields.shape[1] // 2)
    return fields.flip(dims) * sign.view(1, -1, 1, 1)


def flip_average(predict: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                 pre: torch.Tensor, post: torch.Tensor) -> torch.Tensor:
    """Mean of ``predict(pre, post)`` over the four :data:`FLIPS` of the images.

    ``predict`` maps ``(B, 1, H, W)`` images to ``(B, 2k, H, W)`` float fields (``k``
    stacked ``(dx, dy)`` in px); each flip's field is brought back and sign-corrected, so
    the mean is exactly equivariant to the flips.
    """
    total = None
    for dims in FLIPS:
        a, b = (pre.flip(dims), post.flip(dims)) if dims else (pre, post)
        f = _unflip(predict(a, b).float(), dims)
        total = f if total is None else total + f
    return total / len(FLIPS)


Stats = tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def final_iterates(model: MicroFlow, pre: torch.Tensor, post: torch.Tensor,
                   stats: Stats | None = None, levels: int | None = None, bf16: bool = False,
                   with_start: bool = False) -> tuple[torch.Tensor, ...]:
    """The last two iterates ``(B, 2, H, W)`` float32 px on ``(B, 1, H, W)`` images, as at
    inference: from the model's own start (``levels`` None; else that many coarse-to-fine
    levels), then fault-sharpened if ``model.config.sharpen`` (``model.sharpen``). The
    previous iterate moves with the sharpening, so σ's "the last iteration still moved"
    feature measures the network alone. σ's calibration runs through here too.
    ``with_start`` also returns the start field ``df_0`` (zeros for a model with no
    correlator start), σ's consistency evidence: ``(flow, previous, start)``.
    """
    init = model_start(model, pre, post) if levels is None else None
    with torch.autocast(device_type=pre.device.type, dtype=torch.bfloat16, enabled=bf16):
        flows = model(pre, post, stats=stats, levels=levels, init=init)
    flow = flows[-1].float()
    previous = flows[-2].float() if len(flows) > 1 else torch.zeros_like(flow)
    if model.config.sharpen:
        pre_stats, post_stats = (None, None) if stats is None else stats
        sharp = sharpen_field(normalize(pre, pre_stats), normalize(post, post_stats), flow)
        flow, previous = sharp, previous + (sharp - flow)
    if with_start:
        return flow, previous, (torch.zeros_like(flow) if init is None else init.float())
    return flow, previous


@torch.no_grad()
def predict_tiles(model: MicroFlow, pre_tiles: np.ndarray, post_tiles: np.ndarray,
                  stats: tuple[tuple[float, float], tuple[float, float]],
                  bf16: bool | None = None, levels: int | None = None,
                  sigma: bool = False, flips: bool = False) -> np.ndarray:
    """Run the model on a batch of tiles.

    Args:
        pre_tiles, post_tiles: ``(B, th, tw)`` float32 (NaN = nodata).
        stats: scene-wide ``((pre_center, pre_scale), (post_center, post_scale))``.
        levels: coarse-to-fine levels (default: the model's own start: coarse-to-fine,
            or the correlator's field if ``model.config.correlator_start``).
        sigma: also return the per-pixel uncertainty (``model.sigma_model``).
        flips: average the model over the four :data:`FLIPS` of the images (each with its
            own start), 4x the time; the result is exactly equivariant to those flips.
    Returns:
        ``(B, 2, th, tw)`` float32 ``(dx, dy)`` in pixels (final iteration), or with
        ``sigma`` ``(B, 4, th, tw)`` = ``(dx, dy, σx, σy)`` px.
    """
    device = next(model.parameters()).device
    bf16 = use_bf16(device) if bf16 is None else bf16
    pre = torch.from_numpy(np.ascontiguousarray(pre_tiles[:, None])).to(device)
    post = torch.from_numpy(np.ascontiguousarray(post_tiles[:, None])).to(device)
    t = [(torch.tensor(m, device=device), torch.tensor(s, device=device)) for m, s in stats]

    def last_two(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # (B, 6, H, W)
        return torch.cat(final_iterates(model, a, b, (t[0], t[1]), levels, bf16,
                                        with_start=True), dim=1)

    both = flip_average(last_two, pre, post) if flips else last_two(pre, post)
    flow, previous, start = both[:, :2], both[:, 2:4], both[:, 4:]
    if not sigma:
        return flow.cpu().numpy()
    feats = sigma_features(normalize(pre, t[0]), normalize(post, t[1]), flow, previous,
                           start, model.config.warp_mode)
    s = model.sigma_model.predict(feats)
    return torch.cat([flow, s], dim=1).cpu().numpy()


def infer_mosaic(
    model: MicroFlow,
    pre: np.ndarray,
    post: np.ndarray,
    stats: tuple[tuple[float, float], tuple[float, float]],
    tile: int = DEFAULT_TILE,
    halo: int = DEFAULT_HALO,
    batch_size: int = 1,
    progress: Callable[[int, int], None] | None = None,
    levels: int | None = None,
    sigma: bool = False,
    flips: bool = False,
) -> np.ndarray:
    """Raw (not denoised) field ``(2, H, W)`` of two float32 images, by tiles.

    Tiles of ``tile + 2*halo`` px are batched (equal shapes together) and blended with
    feathered weights; ``stats`` are scene-wide normalisation statistics; ``levels``
    overrides the model's coarse-to-fine levels. With ``sigma`` the result is
    ``(4, H, W)`` = ``(dx, dy, σx, σy)`` px (see :mod:`model.uncertainty`); ``flips``
    averages over the four flips of each tile (:func:`predict_tiles`).
    """
    tiles = tile_grid(pre.shape, tile, halo)
    mosaic = Mosaic(4 if sigma else 2, pre.shape, halo)
    groups: dict[tuple[int, int], list[Tile]] = {}
    for t in tiles:
        groups.setdefault(t.shape, []).append(t)
    done = 0
    for group in groups.values():
        for i in range(0, len(group), batch_size):
            batch = group[i:i + batch_size]
            flows = predict_tiles(model, np.stack([pre[t.slices] for t in batch]),
                                  np.stack([post[t.slices] for t in batch]), stats,
                                  levels=levels, sigma=sigma, flips=flips)
            for t, f in zip(batch, flows, strict=True):
                mosaic.add(t, f)
            done += len(batch)
            if progress is not None:
                progress(done, len(tiles))
    return mosaic.result()


def estimate_displacement(
    pre: np.ndarray,
    post: np.ndarray,
    *,
    denoise: bool = True,
    weights: str | None = None,
    device: str | torch.device | None = None,
    tile: int = DEFAULT_TILE,
    halo: int = DEFAULT_HALO,
    batch_size: int = 1,
    nodata: float | None = None,
    denoise_config: LogTVConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
    levels: int | None = None,
    return_sigma: bool = False,
    flip_average: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Dense displacement ``(dx, dy)`` from ``pre`` to ``post`` with MicroFlow.

    Args:
        pre, post: 2-D images of equal shape ``(H, W)``, H, W >= 64, any real dtype
            (e.g. uint16 DN). NaN (and ``nodata`` if given) mark missing pixels.
        denoise: apply log-TV denoising to the stitched field.
        weights: shipped model name or ``.safetensors`` path (default: the best shipped
            model for the device).
        device: ``"cpu"``, ``"cuda"``… (default CUDA if available).
        tile, halo: tile core and context sizes in pixels for large images.
        batch_size: tiles per forward pass.
        progress: called as ``progress(done, total)`` after each batch of tiles.
        levels: coarse-to-fine levels, overriding the model's (0: single scale).
        return_sigma: also return σ, and weight log-TV's data term by it (confident
            pixels pull, unconfident ones are filled from their neighbours).
        flip_average: average the model over the four left-right/up-down flips of the
            images (4x the time; lower error, most near faults; see the README).

    Returns:
        ``(2, H, W)`` float32 ``(dx, dy)`` in pixels such that
        ``post(row + dy, col + dx) ≈ pre(row, col)``; NaN where ``pre`` or ``post`` is
        missing. With ``return_sigma``, ``(field, sigma)``: ``sigma`` ``(2, H, W)``
        float32, one standard deviation of ``(dx, dy)`` in px (of the raw field; see
        :mod:`model.uncertainty` for what it covers), NaN where the field is.
    """
    a = as_float_image(pre, nodata)
    b = as_float_image(post, nodata)
    if a.shape != b.shape:
        raise ValueError(f"pre and post must have the same shape, got {a.shape} and {b.shape}")
    if min(a.shape) < 64:
        raise ValueError(f"images must be at least 64x64 pixels, got {a.shape}")
    dev = device_or_default(device)
    model = get_model(weights, dev)
    stats = (scene_stats(a), scene_stats(b))
    out = infer_mosaic(model, a, b, stats, tile, halo, batch_size, progress, levels,
                       sigma=return_sigma, flips=flip_average)
    missing = ~(np.isfinite(a) & np.isfinite(b))
    out[:, missing] = np.nan
    flow, sigma = out[:2], out[2:] if return_sigma else None
    if denoise:
        weights = None if sigma is None else weights_from_sigma(sigma)
        flow = logtv_denoise(flow, denoise_config or LogTVConfig(), device=dev,
                             weights=weights, weights_reference=1.0)
        flow[:, missing] = np.nan
    flow = flow.astype(np.float32)
    return (flow, sigma.astype(np.float32)) if return_sigma else flow
