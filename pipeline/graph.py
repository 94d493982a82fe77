"""The displacement graph of one pair: lazy Dask arrays from the loaded images, no I/O.

Two stages, so that the co-registration ramp can be fitted on the whole scene's raw field
before ``east``/``north`` are written, without ever running the model twice:

``measure_graph``
    pre/post bands → per-block MicroFlow with a halo (``pipeline.infer``) → ``(dx, dy, σx,
    σy)`` px → flags (``pipeline.flags``) → ``east_raw``, ``north_raw`` in metres, NaN
    wherever the pixel is not measured; ``east_sigma``, ``north_sigma`` in metres, NaN
    where there is no data (no data or cloud), kept where the pixel is flagged for its σ.
``finish_graph``
    the stored raw field and σ (read back from the cube with a halo) and the same input
    flags → confidence-weighted log-TV (``pipeline.denoise``) → minus the ramp →
    ``east``, ``north`` (m) and ``valid``.

Conventions (DESIGN.md): ``post(row + dy, col + dx) ≈ pre(row, col)``;
``east = dx · xres``, ``north = −dy · |yres|`` on north-up grids.
"""

from __future__ import annotations

import math

import dask.array as da
import numpy as np
import xarray as xr

from .config import RunConfig
from .cube import CLOUD, MEASURED, NO_DATA
from .denoise import denoise_chunked
from .flags import final_codes, input_codes, low_confidence_block
from .infer import infer_block
from .model_ref import ModelRef
from .overlap import with_halo

Stats = tuple[tuple[tuple[float, float], tuple[float, float]], ...]
"""Per band ``((pre_mean, pre_std), (post_mean, post_std))``."""


def pixel_size(pair: xr.Dataset) -> tuple[float, float]:
    """``(xres, yres)`` in metres per pixel (``yres`` < 0 on north-up grids)."""
    return float(pair.x[1] - pair.x[0]), float(pair.y[1] - pair.y[0])


def scene_stats(pair: xr.Dataset, step: int = 8) -> Stats:
    """Scene-wide normalisation statistics of each band of ``pre`` and ``post``
    (``model.inference.scene_stats``: median and 1.4826·MAD) from a ``step``-decimated
    read (bounded memory; this reads pixels)."""
    from model.inference import scene_stats as stats_of

    subs = []
    for b in range(pair.sizes["band"]):
        subs += [pair["pre"].data[b, ::step, ::step], pair["post"].data[b, ::step, ::step]]
    values = da.compute(*subs)
    out = []
    for b in range(pair.sizes["band"]):
        try:
            out.append((stats_of(values[2 * b]), stats_of(values[2 * b + 1])))
        except ValueError:
            raise ValueError(f"band {pair.band.values[b]} has no valid pixel in pre or post "
                             "in the processed area") from None
    return tuple(out)


def _images(pair: xr.Dataset, tile: int) -> da.Array:
    """``(2B, H, W)``: the pre bands then the post bands, chunked ``(2B, tile, tile)``."""
    stack = da.concatenate([pair["pre"].data, pair["post"].data], axis=0)
    return stack.rechunk((-1, tile, tile)).astype(np.float32)


def _input_codes(pair: xr.Dataset, cfg: RunConfig) -> da.Array:
    """Lazy ``(1, H, W)`` input flags (no data, cloud, edge near a gap)."""
    images = _images(pair, cfg.tiling.tile)
    cloud = pair["cloud"].data if "cloud" in pair else da.zeros(
        images.shape[1:], dtype=bool, chunks=images.chunks[1:])
    stack = da.concatenate([images, cloud.astype(np.float32)[None].rechunk(
        (1, *images.chunks[1:]))], axis=0)
    margin = cfg.confidence.edge_margin
    return with_halo(input_codes, stack, margin, out_channels=1, name="input-flags",
                     n_images=images.shape[0], margin=margin)


def _flags(codes_in: da.Array, raw: da.Array, sigma: da.Array, max_sigma: float) -> da.Array:
    from model.uncertainty import CROWD_RADIUS_PX

    shape = codes_in.shape[1:]
    unsure = with_halo(low_confidence_block, sigma.astype(np.float32), CROWD_RADIUS_PX,
                       out_channels=1, name="low-confidence", max_sigma=max_sigma,
                       radius=CROWD_RADIUS_PX).rechunk((1, *codes_in.chunks[1:]))

    def block(c, r, s, u, block_info=None):
        (row0, _), (col0, _) = block_info[None]["array-location"]
        return final_codes(c[0], r, s, row0=row0, col0=col0, shape=shape,
                           max_sigma=max_sigma, unsure=u[0])

    return da.map_blocks(block, codes_in, raw, sigma, unsure, drop_axis=0, dtype=np.uint8,
                         chunks=codes_in.chunks[1:], name="flags")


def measure_graph(pair: xr.Dataset, stats: Stats, cfg: RunConfig, model: ModelRef,
                  gpu: bool = False) -> dict[str, da.Array]:
    """Lazy ``east_raw``, ``north_raw`` (NaN where not measured), ``east_sigma``,
    ``north_sigma`` (NaN where no data or cloud) ``(H, W)`` float32 m, chunked
    ``(tile, tile)``.

    ``pair``: ``pre``/``post`` ``(band, y, x)`` float32 (NaN = missing), optional
    ``cloud`` ``(y, x)`` bool; projected ``x``/``y`` (m). ``gpu`` annotates inference
    tasks for GPU workers.
    """
    t = cfg.tiling
    images = _images(pair, t.tile)
    field = with_halo(infer_block, images, t.halo, out_channels=4, name="microflow-infer",
                      gpu=gpu, n_bands=pair.sizes["band"], stats=stats, model=model,
                      device=cfg.model.device, torch_threads=cfg.model.torch_threads,
                      batch_size=t.batch_size, flip_average=cfg.model.flip_average)
    raw, sigma = field[:2], field[2:]
    codes_in = _input_codes(pair, cfg)
    no_data = (codes_in == NO_DATA) | (codes_in == CLOUD)  # the images have no pixel there
    sigma = da.where(no_data, np.float32(np.nan), sigma)  # before the flags: as stored
    codes = _flags(codes_in, raw, sigma, cfg.confidence.max_sigma)
    measured = codes == MEASURED
    raw = da.where(measured[None], raw, np.float32(np.nan))
    xres, yres = pixel_size(pair)
    return _as_cube_chunks({"east_raw": raw[0] * np.float32(xres),
                            "north_raw": raw[1] * np.float32(-abs(yres)),
                            "east_sigma": sigma[0] * np.float32(abs(xres)),
                            "north_sigma": sigma[1] * np.float32(abs(yres))}, t.tile)


def _as_cube_chunks(arrays: dict[str, da.Array], tile: int) -> dict[str, da.Array]:
    """``(tile, tile)`` chunks, as the cube's: Dask's overlap may have merged a last chunk
    narrower than the halo into its neighbour."""
    return {k: v.rechunk((tile, tile)) for k, v in arrays.items()}


def stored_field(stored: xr.Dataset, xres: float, yres: float) -> tuple[da.Array, da.Array]:
    """The stored raw field and σ of one pair of the cube, back in px: ``(2, H, W)`` each."""
    raw = da.stack([stored["east_raw"].data / np.float32(xres),
                    stored["north_raw"].data / np.float32(-abs(yres))])
    sigma = da.stack([stored["east_sigma"].data / np.float32(abs(xres)),
                      stored["north_sigma"].data / np.float32(abs(yres))])
    return raw, sigma


def finish_graph(pair: xr.Dataset, stored: xr.Dataset, ramp, cfg: RunConfig,
                 gpu: bool = False) -> dict[str, da.Array]:
    """Lazy ``east``, ``north`` ``(H, W)`` float32 m and ``valid`` uint8 of one pair.

    ``stored``: the pair's ``east_raw``… as written by the measure stage (lazy, chunked
    ``(tile, tile)``); ``ramp``: a ``model.ramp.Ramp`` (px, scene pixel indices) or None;
    ``gpu`` annotates the log-TV tasks for GPU workers (log-TV runs on the worker's GPU).
    """
    xres, yres = pixel_size(pair)
    raw, sigma = stored_field(stored, xres, yres)
    codes = _flags(_input_codes(pair, cfg), raw, sigma, cfg.confidence.max_sigma)
    measured = codes == MEASURED
    raw = da.where(measured[None], raw, np.float32(np.nan))
    den = denoise_chunked(da.concatenate([raw, sigma]), cfg.denoise.logtv(), cfg.denoise.halo,
                          gpu=gpu, device=cfg.model.device,
                          torch_threads=cfg.model.torch_threads)
    if ramp is not None:
        def minus_ramp(block, block_info=None):
            _, (r0, r1), (c0, c1) = block_info[None]["array-location"]
            rows, cols = np.ogrid[r0:r1, c0:c1]
            return block - ramp.evaluate(rows, cols)

        den = da.map_blocks(minus_ramp, den, dtype=np.float32, name="minus-ramp")
    den = da.where(measured[None], den, np.float32(np.nan))
    return _as_cube_chunks({"east": den[0] * np.float32(xres),
                            "north": den[1] * np.float32(-abs(yres)), "valid": codes},
                           cfg.tiling.tile)


RAMP_MAX_SAMPLES = 1024 * 1024
"""The ramp is fitted on at most this many pixels per component (a decimated read), so the
driver's memory does not grow with the scene (the fit's float64 work arrays are ~30× it)."""


def ramp_step(height: int, width: int) -> int:
    """Decimation of the ramp fit's read: 4, or more so that at most
    :data:`RAMP_MAX_SAMPLES` pixels are read."""
    return max(4, math.ceil(math.sqrt(height * width / RAMP_MAX_SAMPLES)))


def fit_ramp(stored: xr.Dataset, mode: str, xres: float, yres: float,
             step: int | None = None):
    """The co-registration ramp of a pair's stored raw field (``model.ramp.fit_ramp`` on a
    ``step``-decimated read, default :func:`ramp_step`, weighted by 1/σ² where σ is
    known); None for ``keep``; ``auto`` fits what ``offset`` does (``process_pair`` uses
    it when the joint fit of ``pipeline.source_model`` detects no source)."""
    from model.ramp import fit_ramp as fit

    if mode == "keep":
        return None
    if mode == "auto":  # without a detected source, auto removes what offset does
        mode = "offset"
    raw, sigma = stored_field(stored, xres, yres)
    step = step or ramp_step(*raw.shape[1:])
    raw, sigma = da.compute(raw[:, ::step, ::step], sigma[:, ::step, ::step])
    weights = None
    if np.isfinite(sigma).any():
        with np.errstate(divide="ignore"):
            weights = np.where(np.isfinite(sigma), 1.0 / np.maximum(sigma, 0.05) ** 2, 0.0)
    return fit(raw, weights, mode, stride=step)
