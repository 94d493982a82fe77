"""Co-registration offset or ramp between two acquisitions, fitted robustly to a field.

Real pairs carry a near-uniform offset, or a plane, of 0.1–2 px between the acquisitions
(Sentinel-2 multi-temporal registration is specified at 0.3 px). Geoscientists remove it
against the far field. :func:`fit_ramp` fits, per component (``dx``, ``dy``),

    offset: d(row, col) = a             plane: d(row, col) = a + b·col + c·row

to the confident pixels away from large gradients (the rupture):

1. Pixels whose gradient magnitude (either component) is large are masked, and the mask
   is dilated, so the step across a surface rupture and its surroundings never enter the
   fit. "Large" is robust to the field's own noise: above the median gradient plus
   ``GRADIENT_K`` × 1.4826 MAD of the gradients, and at least ``MIN_GRADIENT`` px per px.
2. Iteratively reweighted least squares: first Huber, then Tukey's biweight on the
   residuals (scale 1.4826 MAD), times the caller's confidence weights (e.g. ``1/σ²``), so
   land-cover blobs, clouds and isolated wild pixels count as outliers.
3. The near field of a fault is smooth (no large gradient) but not planar, and a
   per-pixel test cannot tell it from noise. So the fit is repeated (``COHERENT_ROUNDS``
   times) without the pixels where the residual, averaged over ``SMOOTH_PX`` scene pixels
   (at least 9 samples), exceeds ``COHERENT_PX`` (dilated like the rupture): coherent
   signal that is not the plane. This stops if it would leave fewer than ``MIN_KEEP`` of
   the usable pixels.
   What remains must be far field: a rupture whose near field fills the whole scene
   cannot be told from a ramp, and its ramp should be kept (``mode="keep"``).

The field may be a decimated read of the scene: ``field[:, i, j]`` is the scene's pixel
``(offset + i·stride, offset + j·stride)``, and the coefficients are for the scene's
pixel indices, so :meth:`Ramp.evaluate` applies them block by block at full resolution.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import ndimage

RampMode = Literal["keep", "offset", "plane"]
MODES: tuple[str, ...] = ("keep", "offset", "plane")

GRADIENT_K = 6.0  # robust z-score of |∇d| above which a pixel is "rupture"
MIN_GRADIENT = 0.05  # px per px: gradients below this are never rupture
DILATE_PX = 8  # scene pixels of dilation around the rupture mask
SMOOTH_PX = 16  # scene pixels: window of the residual average (coherence test)
COHERENT_PX = 0.05  # px: an averaged residual above this is signal, not noise
COHERENT_ROUNDS = 3
MIN_KEEP = 0.2  # fraction of usable pixels the coherence test may not go below
HUBER_K = 1.345  # Huber threshold, in robust scales
TUKEY_C = 4.685  # Tukey biweight cut-off, in robust scales
COMPONENTS = ("dx", "dy")


@dataclass(frozen=True)
class Ramp:
    """A fitted co-registration offset/plane, per component, on scene pixel indices.

    Attributes:
        mode: ``"keep"`` (zero ramp), ``"offset"`` or ``"plane"``.
        coef: ``(2, 3)`` as nested tuples: for ``dx`` then ``dy``, ``(a, b, c)`` with
            ``d = a + b·col + c·row``: ``a`` in px (the value at row 0, col 0), ``b`` and
            ``c`` in px per px. ``b = c = 0`` unless ``mode == "plane"``.
        n_used: per component, pixels that entered the fit (after masking).
    """

    mode: str = "keep"
    coef: tuple[tuple[float, float, float], tuple[float, float, float]] = (
        (0.0, 0.0, 0.0), (0.0, 0.0, 0.0))
    n_used: tuple[int, int] = (0, 0)

    def evaluate(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """The ramp ``(2, ...)`` float32 px at scene pixel indices ``rows``, ``cols``.

        ``rows`` and ``cols`` broadcast together (e.g. ``np.ogrid`` of a block's slice).
        """
        r, c = np.broadcast_arrays(np.asarray(rows, np.float64), np.asarray(cols, np.float64))
        return np.stack([a + b * c + k * r for a, b, k in self.coef]).astype(np.float32)

    def as_dict(self, xres: float, yres: float) -> dict:
        """Coefficients in px and in m, for provenance (``xres``, ``yres``: m per px).

        ``east = dx·xres`` and ``north = −dy·|yres|`` on north-up grids. Slopes: per
        scene pixel along columns/rows (px/px) and per metre along easting/northing
        (m/m; rows run south, so d/dnorthing = −d/drow / |yres|).
        """
        (a, b, c), (p, q, s) = self.coef
        ay = abs(yres)
        return {
            "mode": self.mode,
            "pixels_used": list(self.n_used),
            "dx_px": {"offset": a, "per_col": b, "per_row": c},
            "dy_px": {"offset": p, "per_col": q, "per_row": s},
            "east_m": {"offset": a * xres, "per_easting": b, "per_northing": -c * xres / ay},
            "north_m": {"offset": -p * ay, "per_easting": -q * ay / xres, "per_northing": s},
            "reference": "offset at scene pixel (row 0, col 0); d = a + b*col + c*row",
        }


def rupture_mask(field: np.ndarray, stride: int = 1, dilate_px: int = DILATE_PX
                 ) -> np.ndarray:
    """``(H, W)`` bool: pixels at or near large gradients of ``field (2, H, W)`` (px).

    Gradients are central differences per scene pixel (divided by ``stride``); where a
    neighbour is NaN there is no gradient. The mask is dilated by ``dilate_px`` scene
    pixels.
    """
    mags = []
    for comp in field:
        gy, gx = np.gradient(comp)
        mags.append(np.nan_to_num(np.hypot(gx, gy), nan=0.0) / stride)
    g = np.maximum(*mags)
    vals = g[np.isfinite(field).all(axis=0)]
    if vals.size == 0:
        return np.zeros(g.shape, bool)
    med = float(np.median(vals))
    mad = 1.4826 * float(np.median(np.abs(vals - med)))
    big = g > max(med + GRADIENT_K * mad, MIN_GRADIENT)
    radius = int(np.ceil(dilate_px / stride))
    if radius > 0 and big.any():
        yy, xx = np.mgrid[-radius:radius + 1, -radius:radius + 1]
        big = ndimage.binary_dilation(big, structure=xx**2 + yy**2 <= radius**2)
    return big


def _robust_fit(design: np.ndarray, y: np.ndarray, w0: np.ndarray, iters: int = 12
                ) -> np.ndarray:
    """IRLS of ``y ≈ design @ beta``: 4 Huber steps, then Tukey, times weights ``w0``."""
    beta = np.zeros(design.shape[1])
    beta[0] = float(np.median(y))
    for it in range(iters):
        res = y - design @ beta
        scale = 1.4826 * float(np.median(np.abs(res - np.median(res))))
        scale = max(scale, 1e-6)
        u = np.abs(res) / scale
        if it < 4:
            rw = np.minimum(1.0, HUBER_K / np.maximum(u, 1e-12))
        else:
            rw = np.clip(1.0 - (u / TUKEY_C) ** 2, 0.0, None) ** 2
        w = w0 * rw
        if np.count_nonzero(w) < design.shape[1]:
            break
        sw = np.sqrt(w)
        new, *_ = np.linalg.lstsq(design * sw[:, None], y * sw, rcond=None)
        done = np.max(np.abs(new - beta)) < 1e-7
        beta = new
        if done:
            break
    return beta


def fit_ramp(field: np.ndarray, weights: np.ndarray | None = None,
             mode: RampMode = "plane", *, stride: int = 1, offset: float = 0.0) -> Ramp:
    """Fit a robust co-registration offset or plane per component of a field.

    Args:
        field: ``(2, H, W)`` ``(dx, dy)`` in px, possibly decimated (see ``stride``); NaN
            pixels are ignored.
        weights: confidence ``(2, H, W)`` or ``(H, W)``, non-negative (e.g. ``1/σ²``);
            None = all 1. Zero or NaN weights drop a pixel.
        mode: ``"keep"`` (zero ramp, nothing fitted), ``"offset"`` (``a`` only) or
            ``"plane"`` (``a + b·col + c·row``).
        stride, offset: ``field[:, i, j]`` is the scene pixel
            ``(offset + i·stride, offset + j·stride)`` (e.g. ``offset = (stride − 1)/2``
            for a block-averaged read); the coefficients are for scene pixel indices.

    Returns:
        A :class:`Ramp`. Raises ValueError if fewer than 3 (plane) or 1 (offset) usable
        pixels remain for a component.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    field = np.asarray(field, dtype=np.float64)
    if field.ndim != 3 or field.shape[0] != 2:
        raise ValueError(f"expected a (2, H, W) field, got shape {field.shape}")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if mode == "keep":
        return Ramp()
    w = np.ones(field.shape) if weights is None else np.broadcast_to(
        np.asarray(weights, dtype=np.float64), field.shape)
    if np.any(w < 0):
        raise ValueError("weights must be non-negative")
    usable = np.isfinite(field) & np.isfinite(w) & (w > 0)
    rupture = rupture_mask(np.where(usable, field, np.nan), stride)
    h, wd = field.shape[1:]
    rows = offset + stride * np.arange(h, dtype=np.float64)[:, None] * np.ones((1, wd))
    cols = offset + stride * np.arange(wd, dtype=np.float64)[None, :] * np.ones((h, 1))
    ramp = _fit_masked(field, w, usable & ~rupture, rows, cols, mode)
    keep = ~rupture
    for _ in range(COHERENT_ROUNDS):
        res = field - ramp.evaluate(rows, cols)
        coherent = _coherent_residual(res, usable, stride)
        new_keep = ~(rupture | coherent)
        if (np.count_nonzero(usable & new_keep, axis=(1, 2))
                < MIN_KEEP * np.count_nonzero(usable & ~rupture, axis=(1, 2))).any():
            break
        if np.array_equal(new_keep, keep):
            break
        keep = new_keep
        ramp = _fit_masked(field, w, usable & keep, rows, cols, mode)
    return ramp


def _coherent_residual(res: np.ndarray, usable: np.ndarray, stride: int) -> np.ndarray:
    """``(H, W)`` bool: the local mean of either residual component exceeds COHERENT_PX."""
    size = max(9, round(SMOOTH_PX / stride)) | 1  # >= 9 samples: the mean's noise is low
    out = np.zeros(res.shape[1:], bool)
    for k in range(2):
        ok = usable[k].astype(np.float64)
        num = ndimage.uniform_filter(np.where(usable[k], res[k], 0.0), size, mode="nearest")
        den = ndimage.uniform_filter(ok, size, mode="nearest")
        mean = num / np.maximum(den, 1e-12)
        out |= (den > 0.25) & (np.abs(mean) > COHERENT_PX)
    radius = int(np.ceil(DILATE_PX / stride))
    if radius > 0 and out.any():
        yy, xx = np.mgrid[-radius:radius + 1, -radius:radius + 1]
        out = ndimage.binary_dilation(out, structure=xx**2 + yy**2 <= radius**2)
    return out


def _fit_masked(field: np.ndarray, w: np.ndarray, ok: np.ndarray, rows: np.ndarray,
                cols: np.ndarray, mode: str) -> Ramp:
    """Robust offset/plane per component over the pixels ``ok (2, H, W)``."""
    # centred, scaled coordinates keep the least squares well conditioned
    r0, c0 = rows.mean(), cols.mean()
    sc = max(float(np.ptp(rows)), float(np.ptp(cols)), 1.0) / 2.0
    n_params = 3 if mode == "plane" else 1
    coef, used = [], []
    for k in range(2):
        n = int(np.count_nonzero(ok[k]))
        if n < n_params:
            raise ValueError(f"only {n} usable pixels for {COMPONENTS[k]}; "
                             f"cannot fit a {mode}")
        y = field[k][ok[k]]
        wk = w[k][ok[k]] / np.median(w[k][ok[k]])
        design = np.ones((y.size, n_params))
        if mode == "plane":
            design[:, 1] = (cols[ok[k]] - c0) / sc
            design[:, 2] = (rows[ok[k]] - r0) / sc
        beta = _robust_fit(design, y, wk)
        if mode == "plane":
            b, c = beta[1] / sc, beta[2] / sc
            a = beta[0] - b * c0 - c * r0
        else:
            a, b, c = beta[0], 0.0, 0.0
        coef.append((float(a), float(b), float(c)))
        used.append(n)
    return Ramp(mode=mode, coef=(coef[0], coef[1]), n_used=(used[0], used[1]))
