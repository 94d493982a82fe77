"""Benchmark metrics of displacement methods on semi-synthetic pairs (pure, no I/O)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .metrics import FAULT_NEIGHBOURHOOD_PX, epe, near_fault, smoothness
from .synthetic import SyntheticPair

Method = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (pre, post) -> (2, H, W) px


@dataclass
class PairScore:
    """Scores of one method on one pair (EPE in px; smoothness ‖∇f‖ in px/px)."""

    method: str
    texture: str
    range: str
    change: bool
    epe: float
    epe_fault: float  # within `fault_k` px of the surface trace (NaN if none)
    smooth_near: float
    smooth_far: float
    true_smooth_near: float
    true_smooth_far: float
    seconds: float
    flow: np.ndarray | None = field(default=None, repr=False)


def score_pair(name: str, flow: np.ndarray, pair: SyntheticPair, texture: str,
               seconds: float, fault_k: float = FAULT_NEIGHBOURHOOD_PX, border: int = 8,
               keep_flow: bool = False) -> PairScore:
    """Score one estimated ``(2, H, W)`` field against the pair's truth.

    Pixels within ``border`` px of the image edge and where the truth is undefined
    (``pair.valid`` False) are left out.
    """
    mask = pair.valid.copy()
    if border:
        mask[:border] = mask[-border:] = False
        mask[:, :border] = mask[:, -border:] = False
    near = near_fault(pair.fault_mask, fault_k) & mask
    sn, sf = smoothness(np.where(mask, flow, np.nan), pair.fault_mask, fault_k)
    tn, tf = smoothness(np.where(mask, pair.flow, np.nan), pair.fault_mask, fault_k)
    return PairScore(name, texture, pair.params["range"], bool(pair.params["temporal_change"]),
                     epe(flow, pair.flow, mask), epe(flow, pair.flow, near) if near.any()
                     else float("nan"), sn, sf, tn, tf, seconds,
                     flow if keep_flow else None)


def run_methods(pairs: list[SyntheticPair], methods: dict[str, Method], texture: str,
                derived: dict[str, tuple[str, Callable[[np.ndarray], np.ndarray]]] | None = None,
                keep_flows: bool = False) -> list[PairScore]:
    """Run every method on every pair and score it.

    ``derived`` maps a name to ``(base method, post-processing)`` (e.g. log-TV on the
    raw MicroFlow field) so the base is not recomputed.
    """
    scores = []
    for pair in pairs:
        flows: dict[str, np.ndarray] = {}
        for name, fn in methods.items():
            t0 = time.perf_counter()
            flows[name] = fn(pair.pre, pair.post)
            scores.append(score_pair(name, flows[name], pair, texture,
                                     time.perf_counter() - t0, keep_flow=keep_flows))
        for name, (base, post) in (derived or {}).items():
            t0 = time.perf_counter()
            flow = post(flows[base])
            scores.append(score_pair(name, flow, pair, texture, time.perf_counter() - t0,
                                     keep_flow=keep_flows))
    return scores


def summarise(scores: list[PairScore]) -> dict[tuple[str, str, str, bool], dict[str, float]]:
    """Mean of each metric per (texture, range, method, change)."""
    groups: dict[tuple[str, str, str, bool], list[PairScore]] = {}
    for s in scores:
        groups.setdefault((s.texture, s.range, s.method, s.change), []).append(s)
    out = {}
    for key, group in groups.items():
        out[key] = {m: float(np.nanmean([getattr(s, m) for s in group]))
                    if not all(np.isnan(getattr(s, m)) for s in group) else float("nan")
                    for m in ("epe", "epe_fault", "smooth_near", "smooth_far",
                              "true_smooth_near", "true_smooth_far", "seconds")}
        out[key]["n"] = len(group)
    return out
