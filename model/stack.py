"""Stacks of pairs: the σ-weighted robust combination of co-registered displacement fields.

Several pairs of one grid measure the same ground displacement with errors that are partly
independent (each pair's own matching noise) and partly shared (a pair error that comes
from one date, such as a cloud shadow, a harvested parcel or a sensor artefact of that
scene, is in every pair that uses the date). :func:`stack_component` combines the ``K``
fields of one component pixel by pixel:

1. **Robust mean.** Start from the median of the pairs; keep the pairs within
   ``cutoff`` standard deviations of the current estimate (of their difference to it:
   the pair's σ and the estimate's, scaled by the spread factor of step 3); the estimate
   is the weighted mean ``m = Σ w_k v_k / Σ w_k`` of those kept, ``w_k = 1/σ_k²``;
   repeat ``iterations`` times.
2. **σ from the pairs' σ**, with their shared dates: the pairs' errors are taken as
   correlated by ``rho`` for a shared pre scene plus ``rho`` for a shared post scene
   (``rho = 0.5``: each date carries half of a pair's error variance), so
   ``σ_formal² = Σ_kl w_k w_l C_kl σ_k σ_l / (Σ w)²``. Independent pairs give
   ``σ/√K``; pairs that share a date give more.
3. **σ from the spread between pairs.** ``Q = Σ w_k (v_k − m)²`` is compared with what
   the pairs' σ and correlations predict for it, ``E[Q]``, both summed over a window of
   ``pool_px`` px; where the pairs scatter more than their σ says, σ is scaled up by
   ``√(ΣQ / ΣE[Q])`` (never down).
4. **Flags.** ``measured`` where at least ``min_pairs`` pairs are kept and they are more
   than half of the pairs that measured the pixel; ``pairs_disagree`` where pairs
   measured it but too few agree; ``too_few_pairs`` where fewer than ``min_pairs``
   measured it. The value and σ are NaN wherever the flag is not ``measured``.

Pure numpy, no I/O. Fields are ``(K, H, W)``, in any one unit (pixels or metres) shared by
values and σ.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

TOO_FEW_PAIRS, MEASURED, PAIRS_DISAGREE = 0, 1, 2
STACK_FLAGS = {TOO_FEW_PAIRS: "too_few_pairs", MEASURED: "measured",
               PAIRS_DISAGREE: "pairs_disagree"}


@dataclass(frozen=True)
class StackConfig:
    """How pairs are combined (see the module docstring).

    ``min_pairs``: pairs that must agree at a pixel; ``cutoff``: a pair further than this
    many of its own σ from the estimate is left out there; ``iterations`` of the
    reweighting; ``rho``: error correlation a shared date adds between two pairs;
    ``pool_px``: side of the window (px) over which the spread is compared with σ.
    """

    min_pairs: int = 2
    cutoff: float = 3.0
    iterations: int = 4
    rho: float = 0.5
    pool_px: int = 15

    def __post_init__(self) -> None:
        if self.min_pairs < 1:
            raise ValueError(f"min_pairs must be >= 1, got {self.min_pairs}")
        if not self.cutoff > 0:
            raise ValueError(f"cutoff must be > 0, got {self.cutoff}")
        if self.iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {self.iterations}")
        if not 0.0 <= self.rho <= 0.5:
            raise ValueError(f"rho must be in [0, 0.5] (two shared dates make 1), got "
                             f"{self.rho}")
        if self.pool_px < 1 or self.pool_px % 2 == 0:
            raise ValueError(f"pool_px must be odd and >= 1, got {self.pool_px}")

    @property
    def context_px(self) -> int:
        """Pixels of neighbouring blocks a chunked stack needs to equal the whole: each
        reweighting uses the spread pooled over ``pool_px``."""
        return self.iterations * (self.pool_px // 2)


@dataclass
class StackResult:
    """One stacked component: ``value`` and ``sigma`` ``(H, W)`` float32 (NaN where not
    measured), ``count`` ``(H, W)`` uint8 pairs kept, ``flag`` ``(H, W)`` uint8
    (``STACK_FLAGS``), ``inflation`` ``(H, W)`` float32: the factor (≥ 1) the spread
    between pairs put on σ."""

    value: np.ndarray
    sigma: np.ndarray
    count: np.ndarray
    flag: np.ndarray
    inflation: np.ndarray


def date_correlation(pre: list | np.ndarray, post: list | np.ndarray, rho: float
                     ) -> np.ndarray:
    """``(K, K)`` error correlation of ``K`` pairs from their scenes: 1 on the diagonal,
    ``rho`` per shared scene elsewhere (``pre[k]``, ``post[k]``: any ids of the scenes)."""
    pre, post = np.asarray(pre), np.asarray(post)
    if pre.shape != post.shape or pre.ndim != 1:
        raise ValueError("pre and post must be two lists of one id per pair")
    c = rho * (pre[:, None] == pre[None, :]) + rho * (post[:, None] == post[None, :])
    np.fill_diagonal(c, 1.0)
    return c.astype(np.float64)


def box_sum(a: np.ndarray, size: int) -> np.ndarray:
    """Sum of ``a`` ``(H, W)`` over a ``size`` × ``size`` window centred on each pixel,
    cut at the array's edge (NaN counts as 0)."""
    a = np.nan_to_num(np.asarray(a, dtype=np.float64))
    r = size // 2
    h, w = a.shape
    c = np.zeros((h + 1, w + 1))
    c[1:, 1:] = a.cumsum(0).cumsum(1)
    y0 = np.clip(np.arange(h) - r, 0, h)
    y1 = np.clip(np.arange(h) + r + 1, 0, h)
    x0 = np.clip(np.arange(w) - r, 0, w)
    x1 = np.clip(np.arange(w) + r + 1, 0, w)
    return (c[y1][:, x1] - c[y0][:, x1] - c[y1][:, x0] + c[y0][:, x0])


def _weighted_mean(v: np.ndarray, w: np.ndarray) -> np.ndarray:
    total = w.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (w * np.nan_to_num(v)).sum(0) / total, np.nan)


def _sigma(v: np.ndarray, m: np.ndarray, w: np.ndarray, sd: np.ndarray, corr: np.ndarray,
           measured: np.ndarray, cfg: StackConfig) -> tuple[np.ndarray, np.ndarray]:
    """The estimate's variance from the pairs' σ and shared dates, and the factor (≥ 1)
    by which the spread between pairs, pooled over ``cfg.pool_px``, exceeds it."""
    total = w.sum(0)
    # the pairs' error covariance per pixel is Σ_kl = C_kl σ_k σ_l (σ 0 for pairs left
    # out), so (Σ a)_k = σ_k Σ_l C_kl σ_l a_l: no K x K array per pixel is needed
    with np.errstate(invalid="ignore", divide="ignore"):
        a = np.where(total > 0, w / total, 0.0)  # the estimate's weights, Σ a = 1
        cov_a = sd * np.tensordot(corr, sd * a, axes=(1, 0))
        var_m = np.where(total > 0, (a * cov_a).sum(0), np.nan)
        # E[Q] = Σ_k w_k Var(v_k − m) = Σ_k w_k (Σ_kk − 2 (Σ a)_k + aᵀ Σ a)
        expected_q = (w * (sd**2 - 2.0 * cov_a + np.nan_to_num(var_m)[None])).sum(0)
        q = (w * np.nan_to_num(v - m[None]) ** 2).sum(0)
        pooled_q = box_sum(np.where(measured, q, 0.0), cfg.pool_px)
        pooled_e = box_sum(np.where(measured, expected_q, 0.0), cfg.pool_px)
        inflation = np.where(pooled_e > 0, np.maximum(1.0, pooled_q / pooled_e), 1.0)
    return var_m, inflation


def stack_component(values: np.ndarray, sigma: np.ndarray, pre: list, post: list,
                    cfg: StackConfig = StackConfig()) -> StackResult:
    """Stack ``K`` co-registered fields of one component (see the module docstring).

    Args:
        values: ``(K, H, W)`` the pairs' field (NaN where a pair did not measure).
        sigma: ``(K, H, W)`` their one-standard-deviation σ, same unit, > 0.
        pre, post: one id per pair of its pre and post scene (pairs sharing an id share
            that date's error).
        cfg: the combination's settings.
    """
    v = np.asarray(values, dtype=np.float64)
    s = np.asarray(sigma, dtype=np.float64)
    if v.ndim != 3 or v.shape != s.shape:
        raise ValueError(f"values and sigma must be (K, H, W) of one shape, got {v.shape} "
                         f"and {s.shape}")
    k = v.shape[0]
    if k == 0:
        raise ValueError("no pair to stack")
    if len(pre) != k or len(post) != k:
        raise ValueError(f"one pre and one post id per pair: {k} pairs, {len(pre)} and "
                         f"{len(post)} ids")
    ok = np.isfinite(v) & np.isfinite(s) & (s > 0)
    s = np.where(ok, s, np.inf)
    w_all = np.where(ok, 1.0 / s**2, 0.0)
    n_ok = ok.sum(0)
    with warnings.catch_warnings():  # pixels no pair measured: NaN, said by the flag
        warnings.simplefilter("ignore", RuntimeWarning)
        m = np.nanmedian(np.where(ok, v, np.nan), axis=0)
        var_m = np.nanmedian(np.where(ok, s**2, np.nan), axis=0)  # the median's, roughly
    corr = date_correlation(pre, post, cfg.rho)
    inflation = np.ones(v.shape[1:])
    for _ in range(cfg.iterations):
        # residual to the estimate: the pair's σ and the estimate's, both scaled by what the
        # spread says of them
        limit = cfg.cutoff * np.sqrt((s**2 + np.nan_to_num(var_m, nan=0.0)) * inflation)
        keep = ok & (np.abs(np.nan_to_num(v - m[None], nan=np.inf)) <= limit)
        w = np.where(keep, w_all, 0.0)
        m = _weighted_mean(v, w)
        n_keep = keep.sum(0)
        measured = (n_keep >= cfg.min_pairs) & (2 * n_keep > n_ok)
        var_m, inflation = _sigma(v, m, w, np.where(keep, s, 0.0), corr, measured, cfg)
    sigma_out = np.sqrt(var_m * inflation)
    flag = np.where(measured, MEASURED,
                    np.where(n_ok >= cfg.min_pairs, PAIRS_DISAGREE, TOO_FEW_PAIRS))
    return StackResult(
        value=np.where(measured, m, np.nan).astype(np.float32),
        sigma=np.where(measured, sigma_out, np.nan).astype(np.float32),
        count=np.where(measured, n_keep, 0).astype(np.uint8),
        flag=flag.astype(np.uint8),
        inflation=np.where(measured, inflation, np.nan).astype(np.float32))


def stack_field(east: np.ndarray, north: np.ndarray, east_sigma: np.ndarray,
                north_sigma: np.ndarray, pre: list, post: list,
                cfg: StackConfig = StackConfig()) -> dict[str, np.ndarray]:
    """Stack both components; a pixel is ``measured`` only where both are (else the worse
    flag: ``pairs_disagree`` before ``too_few_pairs``), and NaN in both otherwise.

    Returns ``east``, ``north``, ``east_sigma``, ``north_sigma`` ``(H, W)`` float32,
    ``count`` (uint8, the fewer pairs kept of the two components) and ``flag`` (uint8).
    """
    e = stack_component(east, east_sigma, pre, post, cfg)
    n = stack_component(north, north_sigma, pre, post, cfg)
    both = (e.flag == MEASURED) & (n.flag == MEASURED)
    disagree = (e.flag == PAIRS_DISAGREE) | (n.flag == PAIRS_DISAGREE)
    flag = np.where(both, MEASURED, np.where(disagree, PAIRS_DISAGREE, TOO_FEW_PAIRS))
    nan = np.float32(np.nan)
    return {"east": np.where(both, e.value, nan), "north": np.where(both, n.value, nan),
            "east_sigma": np.where(both, e.sigma, nan),
            "north_sigma": np.where(both, n.sigma, nan),
            "count": np.where(both, np.minimum(e.count, n.count), 0).astype(np.uint8),
            "flag": flag.astype(np.uint8)}
