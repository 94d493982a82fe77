"""Several bands: combine per-band displacement fields robustly, per pixel and component.

Each band of a pair is estimated on its own (``flows (B, 2, H, W)`` px with its
``sigmas (B, 2, H, W)`` px). :func:`combine_bands` then, for every pixel and component:

1. takes the weighted median ``m`` of the bands (weights ``1/σ²``);
2. rejects the bands with ``|d_b − m| > k·sqrt(σ_b² + σ_m²)`` (``k = REJECT_K``, ``σ_m``
   the σ of the band at the median): a band whose estimate disagrees with the others
   beyond both uncertainties (e.g. a band blind to a change the others see). The band
   closest to the median is never rejected, so something always remains;
3. averages the remaining ``n`` bands with inverse-variance weights:
   ``d = Σ w_b d_b / Σ w_b``, ``σ_iv² = 1 / Σ w_b``;
4. lets their disagreement feed σ (Birge ratio): ``χ² = Σ w_b (d_b − d)²``, and
   ``σ = σ_iv · max(1, sqrt(χ² / (n − 1)))`` for ``n ≥ 2`` (``σ = σ_iv`` for ``n = 1``).
   Bands that agree within their σ lower it (by up to √n); bands that disagree raise it,
   up to the weighted standard error of their spread.

Bands see the same ground and the same temporal change, so their errors are correlated
and ``σ_iv`` is optimistic; the Birge factor only catches the part of that the bands
disagree on. NaN (in the flow or σ) drops a band at that pixel; a pixel with no band
left is NaN in both outputs.
"""

from __future__ import annotations

import numpy as np

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


def combine_bands(flows: np.ndarray, sigmas: np.ndarray, reject_k: float = REJECT_K
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Combine per-band fields into one field and its σ (see the module docstring).

    Args:
        flows: ``(B, 2, H, W)`` ``(dx, dy)`` per band, px; NaN = no estimate.
        sigmas: ``(B, 2, H, W)`` one-standard-deviation uncertainty per band, px (> 0;
            NaN or inf drops the band at that pixel).
        reject_k: rejection threshold in units of each band's σ.

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
        chi2 = (wk * (fv - mean[None]) ** 2).sum(axis=0)
        birge = np.sqrt(np.where(n >= 2, chi2 / np.maximum(n - 1, 1), 0.0))
    sigma = sigma_iv * np.maximum(1.0, birge)
    none = n == 0
    mean[none] = np.nan
    sigma[none] = np.nan
    return mean.astype(np.float32), sigma.astype(np.float32)
