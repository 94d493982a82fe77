"""The joint source + co-registration fit of a pair's stored raw field, and its record.

``process_pair`` calls :func:`fit_source_model` on the stored ``east_raw``/``north_raw``
(a decimated read, as the ramp fit reads it), then :func:`coregistration_ramp` gives the
part ``--ramp auto`` removes from ``east``/``north`` (the co-registration only, never the
source), and :func:`source_provenance` the ``source_model`` object of the provenance.
The maths is ``model.source_fit``.
"""

from __future__ import annotations

import math

import dask.array as da
import numpy as np
import xarray as xr

from model.ramp import Ramp
from model.source_fit import NUMBERS, SourceFit, fit_source

from .graph import ramp_step, stored_field

SIGMA_FLOOR_PX = 0.05  # σ below this does not weigh more (as the ramp fit does)


def fit_source_model(stored: xr.Dataset, xres: float, yres: float, *,
                     step: int | None = None) -> SourceFit:
    """``model.source_fit.fit_source`` on a ``step``-decimated read (default
    :func:`pipeline.graph.ramp_step`) of one pair's stored raw field (m), weighted by
    ``1/σ²`` (σ in m, floored at :data:`SIGMA_FLOOR_PX` px). Raises ValueError when too
    few pixels are measured."""
    raw, sigma = stored_field(stored, xres, yres)  # px
    step = step or ramp_step(*raw.shape[1:])
    raw, sigma = da.compute(raw[:, ::step, ::step], sigma[:, ::step, ::step])
    ay = abs(yres)
    east, north = raw[0] * xres, -raw[1] * ay
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.stack([1.0 / (np.maximum(sigma[0], SIGMA_FLOOR_PX) * abs(xres)) ** 2,
                      1.0 / (np.maximum(sigma[1], SIGMA_FLOOR_PX) * ay) ** 2])
    w = np.where(np.isfinite(w), w, 0.0)
    if not np.isfinite(sigma).any():
        w = np.ones_like(w)
    x, y = np.meshgrid(stored.x.values[::step], stored.y.values[::step])
    return fit_source(east, north, x, y, w)


def coregistration_ramp(fit: SourceFit, xres: float, yres: float) -> Ramp:
    """The fitted co-registration offset as a ``model.ramp.Ramp`` in px (what
    ``--ramp auto`` removes when a source is detected): ``dx = east/xres``,
    ``dy = −north/|yres|``."""
    dx, dy = fit.offset[0] / xres, -fit.offset[1] / abs(yres)
    return Ramp(mode="offset", coef=((float(dx), 0.0, 0.0), (float(dy), 0.0, 0.0)),
                n_used=(fit.n_samples, fit.n_samples))


def _num(v) -> float | None:
    """A JSON-safe number: None for NaN/inf."""
    return float(v) if v is not None and math.isfinite(float(v)) else None


def _line(line) -> list | None:
    return None if line is None else [[float(a), float(b)] for a, b in line]


def source_provenance(fit: SourceFit | None, xres: float, yres: float, *,
                      removed: Ramp | None = None, why: str = "") -> dict:
    """The ``source_model`` provenance object of a fit (None: not fitted, ``why``).

    Keys: ``detected``; the numbers ``Mw``, ``strike_deg``, ``dip_deg``, ``rake_deg``,
    ``slip_m``, ``length_m``, ``width_m``, ``top_depth_m``, ``centroid_x``,
    ``centroid_y`` (m, the cube's CRS), each with ``<name>_sigma``; ``trace`` (surface
    projection of the top edge ``[[x, y], [x, y]]`` when it breaks the surface, else
    None); ``top_edge`` (the same, buried or not); ``residual_rms_m`` (robust scale of the
    chosen model's residuals); ``coregistration`` (offset in px and m, whether it was
    removed); ``detection`` (the statistics and thresholds). When no source is detected
    the numbers, ``trace`` and ``top_edge`` are None (the best rectangle tried is kept
    under ``detection.best_rectangle`` for diagnosis only).
    """
    from model import source_fit as sf

    if fit is None:
        out = {"detected": False, "why": why or "not fitted"}
        out.update({k: None for k in NUMBERS})
        out.update({f"{k}_sigma": None for k in NUMBERS})
        out.update({"trace": None, "top_edge": None, "residual_rms_m": None,
                    "coregistration": None})
        return out
    ay = abs(yres)
    out: dict = {"detected": bool(fit.detected)}
    best = {k: _num(fit.params.get(k)) for k in NUMBERS}
    for k in NUMBERS:  # no numbers for a source that is not there
        out[k] = best[k] if fit.detected else None
        out[f"{k}_sigma"] = _num(fit.params.get(f"{k}_sigma")) if fit.detected else None
    out["trace"] = _line(fit.trace) if fit.detected else None
    out["top_edge"] = _line(fit.top_edge) if fit.detected else None
    out["residual_rms_m"] = _num(fit.residual_rms_m)
    off_e, off_n = fit.offset
    out["coregistration"] = {
        "model": "offset + source" if fit.detected else "offset",
        "offset_px": {"dx": off_e / xres, "dy": -off_n / ay},
        "offset_m": {"east": off_e, "north": off_n},
        "offset_only_px": {"dx": fit.offset_only[0] / xres, "dy": -fit.offset_only[1] / ay},
        "removed": removed is not None,
        "removed_px": (None if removed is None else
                       {"dx": removed.coef[0][0], "dy": removed.coef[1][0]}),
    }
    out["detection"] = {
        "scale_ratio": _num(fit.scale_ratio), "max_scale_ratio": sf.MAX_SCALE_RATIO,
        "snr": _num(fit.snr), "min_snr": sf.MIN_SNR,
        "plane_ratio": _num(fit.plane_ratio), "max_plane_ratio": sf.MAX_PLANE_RATIO,
        "strong": {"max_scale_ratio": sf.MAX_SCALE_RATIO_STRONG, "min_snr": sf.MIN_SNR_STRONG},
        "min_Mw": sf.MIN_MW,
        "max_slip_m": sf.MAX_SLIP_M, "offset_only_rms_m": _num(fit.null_rms_m),
        "samples": fit.n_samples, "evaluations": fit.evaluations,
        "best_rectangle": None if fit.detected else best,
    }
    return out
