"""Several bands: combine per-band displacement fields robustly, per pixel and component.

Each band of a pair is estimated on its own (``flows (B, 2, H, W)`` px with its
``sigmas (B, 2, H, W)`` px). :func:`combine_bands` then, for every pixel and component:

1. takes the weighted median ``m`` of the bands (weights ``1/σ²``);
2. rejects the bands with ``|d_b − m| > k·sqrt(σ_b² + σ_m²)`` (``k = REJECT_K``, ``σ_m``
   the σ of the band at the median): a band whose estimate disagrees with the others
   beyond both uncertainties (e.g. a band blind to a change the others see). The band
   closest to the median is never rejected, so something always remains;
3. averages the remaining ``n`` bands with inverse-variance weights:
   ``d = Σ w_b d_b / Σ w_b``;
4. gives the mean the σ of correlated evidence: bands see the same ground and the same
   temporal change, so their errors correlate (``ρ`` between any two bands, per pixel).
   With ``W = Σ w_b`` and ``S = Σ 1/σ_b``, ``σ_ρ² = ((1 − ρ) W + ρ S²) / W²``: ``σ_iv² =
   1/W`` for independent bands (``ρ = 0``), and the single band's σ for identical ones
   (``ρ = 1``). For ``n`` equal σ this is ``σ² / n_eff`` with the effective number of
   independent bands ``n_eff = n / (1 + (n − 1) ρ)`` (:func:`effective_bands`);
5. lets their disagreement feed σ (Birge ratio): ``χ² = Σ w_b (d_b − d)²``, and
   ``σ = max(σ_ρ, σ_iv · sqrt(χ² / (n − 1)))`` for ``n ≥ 2`` (``σ = σ_ρ`` for ``n = 1``).
   Bands that agree lower σ by at most ``√n_eff``; bands that disagree raise it, up to
   the weighted standard error of their spread.

``ρ`` comes from :func:`band_rho`: the error correlation :data:`RHO_LANDSAT_RGB` measured
on Landsat 8 B2/B3/B4 pairs (``python -m bench.band_correlation``), raised to the local
correlation of the bands' textures where that is higher, so that bands that are copies
of each other (texture correlation 1) count as one. NaN (in the flow or σ) drops a band
at that pixel; a pixel with no band left is NaN in both outputs.
"""

from __future__ import annotations

import numpy as np

RHO_LANDSAT_RGB = 0.58
"""Correlation of the per-band errors of MicroFlow on Landsat 8 B2/B3/B4 pairs of the
validation split, same field and same temporal change per band: 0.56 (dx) and 0.60 (dy),
``n_eff`` 1.41 and 1.36 of 3 (``python -m bench.band_correlation --split val --pairs 8``;
docs/uncertainty.md). Those bands' local texture correlation is higher (median 0.97), and
:func:`band_rho` uses it there: the combined σ then covers 92.2 % (dx) and 90.2 % (dy)
within 2σ, against 78.4 % and 77.4 % with the bands taken as independent."""
TEXTURE_WINDOW = 15  # px, window of the local texture correlation between bands
REJECT_K = 3.0  # a band further than REJECT_K·sqrt(σ_b² + σ_m²) from the median is dropped
SIGMA_FLOOR = 1e-3  # px, σ below this counts as this (no band gets infinite weight)


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted median over axis 0 of ``values (B, ...)``; zero-weight entries ignored.

    Entries are sorted, and the first whose cumulative weight reaches half the total is
    taken (the lower weighted median). NaN where all weights are zero.
    """
    v = np.where(weights > 0, values, np.inf)
    order = np.argsort(v, axis=0)
    vs = np.take_along_axis(v, order, axis=0)
    ws = np.take_along_axis(weights, order, axis=0)
    cum = np.cumsum(ws, axis=0)
    total = cum[-1]
    idx = np.argmax(cum >= 0.5 * total, axis=0)
    med = np.take_along_axis(vs, idx[None], axis=0)[0]
    return np.where(total > 0, med, np.nan)


def effective_bands(n: int, rho: float) -> float:
    """Effective number of independent bands among ``n`` with error correlation ``rho``:
    ``n / (1 + (n − 1) ρ)`` (1 for identical bands, ``n`` for independent ones)."""
    return n / (1.0 + (n - 1) * rho)


def texture_correlation(images: np.ndarray, window: int = TEXTURE_WINDOW) -> np.ndarray:
    """Mean pairwise local correlation ``(H, W)`` in [0, 1] of ``(B, H, W)`` band images
    (NaN = missing, counted as 0), over ``window`` px boxes; 0 for one band.

    Bands that are copies of each other give 1; anticorrelated texture counts as 0.
    """
    from scipy.ndimage import uniform_filter

    x = np.nan_to_num(np.asarray(images, dtype=np.float64))
    n = len(x)
    if n < 2:
        return np.zeros(x.shape[1:], np.float32)
    m = np.stack([uniform_filter(b, window, mode="nearest") for b in x])
    v = np.stack([uniform_filter(b * b, window, mode="nearest") for b in x]) - m * m
    v = np.maximum(v, 0.0)
    total = np.zeros(x.shape[1:])
    for i in range(n):
        for j in range(i + 1, n):
            c = uniform_filter(x[i] * x[j], window, mode="nearest") - m[i] * m[j]
            den = np.sqrt(v[i] * v[j])
            r = np.where(den > 1e-12, c / np.where(den > 1e-12, den, 1.0), 1.0)
            total += np.clip(r, 0.0, 1.0)
    return (total / (n * (n - 1) / 2)).astype(np.float32)


def band_rho(images: np.ndarray, rho_floor: float = RHO_LANDSAT_RGB) -> np.ndarray:
    """Per-pixel error correlation ``(H, W)`` between bands, for :func:`combine_bands`:
    ``max(rho_floor, texture_correlation(images))`` of the ``(B, H, W)`` pre images."""
    return np.maximum(np.float32(rho_floor), texture_correlation(images))


def combine_bands(flows: np.ndarray, sigmas: np.ndarray, reject_k: float = REJECT_K,
                  rho: float | np.ndarray = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Combine per-band fields into one field and its σ (see the module docstring).

    Args:
        flows: ``(B, 2, H, W)`` ``(dx, dy)`` per band, px; NaN = no estimate.
        sigmas: ``(B, 2, H, W)`` one-standard-deviation uncertainty per band, px (> 0;
            NaN or inf drops the band at that pixel).
        reject_k: rejection threshold in units of each band's σ.
        rho: error correlation between bands in [0, 1], scalar or ``(H, W)`` (e.g.
            :func:`band_rho`); 0 treats the bands as independent evidence.

    Returns:
        ``(flow, sigma)``, both ``(2, H, W)`` float32 px; NaN where no band is valid.
    """
    f = np.asarray(flows, dtype=np.float64)
    s = np.asarray(sigmas, dtype=np.float64)
    if f.ndim != 4 or f.shape[1] != 2 or f.shape != s.shape:
        raise ValueError(f"expected flows and sigmas of equal shape (B, 2, H, W), got "
                         f"{f.shape} and {s.shape}")
    if not reject_k > 0:
        raise ValueError(f"reject_k must be > 0, got {reject_k}")
    r = np.clip(np.asarray(rho, dtype=np.float64), 0.0, 1.0)
    s = np.maximum(s, SIGMA_FLOOR)
    valid = np.isfinite(f) & np.isfinite(s)
    w = np.where(valid, 1.0 / np.where(valid, s, 1.0) ** 2, 0.0)
    fv = np.where(valid, f, 0.0)
    med = _weighted_median(np.where(valid, f, np.inf), w)
    resid = np.where(valid, np.abs(fv - med[None]), np.inf)
    closest = resid == resid.min(axis=0, keepdims=True)
    at_med = np.argmax(closest, axis=0)
    s_med = np.take_along_axis(np.where(valid, s, 0.0), at_med[None], axis=0)
    keep = valid & ((resid <= reject_k * np.sqrt(s**2 + s_med**2)) | closest)
    wk = np.where(keep, w, 0.0)
    wsum = wk.sum(axis=0)
    n = keep.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (wk * fv).sum(axis=0) / wsum
        sigma_iv = 1.0 / np.sqrt(wsum)
        inv_s = np.where(keep, 1.0 / s, 0.0).sum(axis=0)
        sigma_rho = np.sqrt((1.0 - r) * wsum + r * inv_s**2) / wsum
        chi2 = (wk * (fv - mean[None]) ** 2).sum(axis=0)
        birge = np.sqrt(np.where(n >= 2, chi2 / np.maximum(n - 1, 1), 0.0))
        sigma = np.maximum(sigma_rho, sigma_iv * birge)
    none = n == 0
    mean[none] = np.nan
    sigma[none] = np.nan
    return mean.astype(np.float32), sigma.astype(np.float32)
