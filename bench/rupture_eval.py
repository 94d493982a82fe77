"""Trace and slip errors of ``model.rupture`` on generated surface ruptures.

Each case is an Okada (1985) field (``model.okada``) of one or more rectangular faults on
a grid of ``RES`` m pixels, plus spatially correlated noise whose σ is given to the
measurement as the pixels' σ (as the cube's calibrated σ would be). The truth:

- the trace: the top edges of the surface-breaking faults (px);
- the step at a point of the trace: the Okada field just right of it minus just left of
  it (±0.05 px), in the fault-parallel (right-lateral +) and perpendicular (extension +)
  components at the measured local strike.

Scores per case: ``trace_max_px`` / ``trace_p95_px`` (distance of the measured vertices to
the true trace), ``missed_px`` (true trace farther than 2 px from any measured segment,
share), ``slip_ok`` (share of offsets within 20 % + 0.3 m of the true step, both
components), ``cover_1s`` / ``cover_2s`` (share of component errors within 1σ / 2σ),
and for cases with no rupture the number of segments found (must be 0).

    python -m bench.rupture_eval            # prints a Markdown table
"""

from __future__ import annotations

import argparse
import itertools
import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from model.okada import Fault, fault_displacement, fault_trace
from model.rupture import Rupture, RuptureConfig, find_rupture

log = logging.getLogger(__name__)
RES = 10.0  # m per px
SHAPE = (192, 192)
NOISE_M = 0.25  # σ of the noise (m) after its smoothing
NOISE_PX = 1.5  # Gaussian correlation of the noise (px)
TOL_REL, TOL_ABS = 0.20, 0.30  # the slip tolerance: 20 % + 0.3 m


@dataclass
class Case:
    """A generated field with its faults; ``shift`` (m, east/north) is planted on top."""

    name: str
    faults: list[Fault]
    shift: tuple[float, float] = (0.0, 0.0)
    ruptured: bool = True
    east: np.ndarray = field(default=None, repr=False)
    north: np.ndarray = field(default=None, repr=False)
    sigma: np.ndarray = field(default=None, repr=False)


def _xy(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float64)
    return cols * RES, -rows * RES  # east, north (m) of pixel centres


def _at(faults: list[Fault], col: np.ndarray, row: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    e = np.zeros(np.shape(col))
    n = np.zeros(np.shape(col))
    for f in faults:
        ue, un, _ = fault_displacement(f, np.asarray(col) * RES, -np.asarray(row) * RES)
        e, n = e + ue, n + un
    return e, n


def _fault(col: float, row: float, strike: float, dip: float, rake: float, slip: float,
           length_px: float, top: float = 0.0, width: float = 6000.0) -> Fault:
    """A fault whose top edge is centred on pixel ``(col, row)``."""
    return Fault(east=col * RES, north=-row * RES, top_depth=top, strike_deg=strike,
                 dip_deg=dip, length=length_px * RES, width=width, rake_deg=rake, slip=slip)


def cases() -> list[Case]:
    """The generated ruptures of the issue, and fields with no rupture."""
    c, r = SHAPE[1] / 2 + 0.3, SHAPE[0] / 2 + 0.4  # off the pixel centres
    long = 400.0  # px: longer than the scene, the trace crosses it
    return [
        Case("strike-slip", [_fault(c, r, 30, 90, 180, 3.0, long)]),
        Case("left-lateral", [_fault(c, r, 100, 85, 0, 2.5, long)]),
        Case("thrust", [_fault(c, r, 80, 35, 90, 4.0, long)]),
        Case("normal", [_fault(c, r, 160, 60, -90, 4.0, long)]),
        Case("oblique", [_fault(c, r, 45, 70, 135, 4.0, long)]),
        Case("bent trace", [_fault(*_end(c, r, 20, -1, 70), 20, 90, 180, 3.0, 140),
                            _fault(*_end(c, r, 60, 1, 70), 60, 90, 180, 3.0, 140)]),
        Case("step-over", [_fault(c - 8, r - 35, 0, 90, 180, 3.0, 100),
                           _fault(c + 8, r + 35, 0, 90, 180, 3.0, 100)]),
        Case("planted offset", [_fault(c, r, 30, 90, 180, 3.0, long)], shift=(6.4, -17.5)),
        Case("blind", [_fault(c, r, 30, 90, 180, 3.0, long, top=1500.0)], ruptured=False),
        Case("blind thrust", [_fault(c, r, 80, 30, 90, 4.0, long, top=1000.0)],
             ruptured=False),
        Case("uniform shift", [], shift=(6.4, -17.5), ruptured=False),
    ]


def _end(c: float, r: float, strike: float, sign: int, half: float) -> tuple[float, float]:
    """Centre of a fault of strike ``strike`` and half-length ``half`` px that ends at
    ``(c, r)`` (``sign`` -1: before it, +1: after it)."""
    s = math.radians(strike)
    return c + sign * half * math.sin(s), r - sign * half * math.cos(s)


def make_field(case: Case, rng: np.random.Generator, noise_m: float = NOISE_M) -> Case:
    """Fill ``case.east``, ``north`` (m) and ``sigma`` (m) on ``SHAPE``, with noise of σ
    ``noise_m`` (m) correlated over ``NOISE_PX``."""
    rows, cols = np.mgrid[0:SHAPE[0], 0:SHAPE[1]].astype(np.float64)
    e, n = _at(case.faults, cols, rows)
    gain = noise_m / ndimage.gaussian_filter(rng.standard_normal((512, 512)), NOISE_PX).std()
    noise = [gain * ndimage.gaussian_filter(rng.standard_normal(SHAPE), NOISE_PX)
             for _ in range(2)]
    case.east = (e + case.shift[0] + noise[0]).astype(np.float32)
    case.north = (n + case.shift[1] + noise[1]).astype(np.float32)
    case.sigma = np.full(SHAPE, noise_m, np.float32)
    return case


def true_trace(case: Case) -> list[np.ndarray]:
    """Top edges of the surface-breaking faults, clipped to the grid, ``(2, 2)`` px."""
    out = []
    for f in case.faults:
        if f.top_depth > 0:
            continue
        (e0, n0), (e1, n1) = fault_trace(f)
        out.append(np.array([[e0 / RES, -n0 / RES], [e1 / RES, -n1 / RES]]))
    return out


def _dist_to_segments(pts: np.ndarray, segs: list[np.ndarray]) -> np.ndarray:
    """Distance (px) of points ``(n, 2)`` to the nearest of the polylines."""
    best = np.full(len(pts), np.inf)
    for s in segs:
        for a, b in itertools.pairwise(s):
            d = b - a
            t = np.clip(((pts - a) @ d) / max(d @ d, 1e-12), 0, 1)
            best = np.minimum(best, np.hypot(*(pts - (a + t[:, None] * d)).T))
    return best


def true_step(case: Case, col: float, row: float, strike_deg: float, reach: float = 3.0
              ) -> tuple[float, float]:
    """(parallel, perpendicular) step of the true field across a measured trace point (m):
    along the normal through it, within ``reach`` px, the largest jump between samples
    0.05 px apart (the true discontinuity), in the components at ``strike_deg``."""
    s = math.radians(strike_deg)
    t_en = np.array([math.sin(s), math.cos(s)])
    n_en = np.array([t_en[1], -t_en[0]])
    n_px = np.array([n_en[0], -n_en[1]])  # (dcol, drow)
    k = np.arange(-reach, reach + 0.025, 0.05)
    e, n = _at(case.faults, col + k * n_px[0], row + k * n_px[1])
    j = int(np.argmax(np.hypot(np.diff(e), np.diff(n))))
    d = np.array([e[j + 1] - e[j], n[j + 1] - n[j]])
    return float(-(d @ t_en)), float(d @ n_en)


def score(case: Case, rup: Rupture) -> dict:
    """The scores of the module docstring for one measured case."""
    out = {"case": case.name, "segments": len(rup.segments)}
    if not case.ruptured:
        return out
    truth = true_trace(case)
    verts = [s.vertices for s in rup.segments]
    if not verts:
        return {**out, "trace_max_px": math.inf, "missed": 1.0}
    allv = np.concatenate(verts)
    d = _dist_to_segments(allv, truth)
    samples = []
    for t in truth:  # the true trace inside the grid, 1 px apart, away from the border
        n = int(np.hypot(*(t[1] - t[0])))
        p = t[0] + np.linspace(0, 1, n)[:, None] * (t[1] - t[0])
        m = 12  # the step map's reach at the border
        inside = (p[:, 0] > m) & (p[:, 0] < SHAPE[1] - m) & (p[:, 1] > m) & \
            (p[:, 1] < SHAPE[0] - m)
        samples.append(p[inside])
    samples = np.concatenate(samples)
    missed = float((_dist_to_segments(samples, verts) > 2.0).mean())
    errs, sig, ok = [], [], []
    for s in rup.segments:
        for o in s.offsets:
            tp, tn = true_step(case, o.col, o.row, o.strike_deg)
            for got, want, sg in ((o.slip_parallel, tp, o.sigma_parallel),
                                  (o.slip_perpendicular, tn, o.sigma_perpendicular)):
                errs.append(got - want)
                sig.append(sg)
                ok.append(abs(got - want) <= TOL_REL * abs(want) + TOL_ABS)
    errs, sig = np.abs(np.array(errs)), np.array(sig)
    return {**out, "trace_max_px": float(d.max()), "trace_p95_px": float(np.percentile(d, 95)),
            "missed": missed, "offsets": len(errs) // 2,
            "slip_ok": float(np.mean(ok)) if ok else 0.0,
            "slip_err_m": float(np.median(errs)) if len(errs) else math.nan,
            "cover_1s": float(np.mean(errs <= sig)) if len(errs) else math.nan,
            "cover_2s": float(np.mean(errs <= 2 * sig)) if len(errs) else math.nan}


def run_eval(seeds: tuple[int, ...] = (0, 1, 2), cfg: RuptureConfig | None = None
             ) -> list[dict]:
    """Scores of every case for each seed (with the measurement's seconds)."""
    cfg = cfg or RuptureConfig()
    rows = []
    for seed in seeds:
        for case in cases():
            make_field(case, np.random.default_rng(seed))
            t0 = time.perf_counter()
            rup = find_rupture(case.east, case.north, case.sigma, case.sigma,
                               pixel_size=(RES, RES), cfg=cfg)
            rows.append({**score(case, rup), "seed": seed,
                         "seconds": time.perf_counter() - t0})
    return rows


def markdown(rows: list[dict]) -> str:
    """A Markdown table of the scores, one line per case (all seeds pooled)."""
    names = list(dict.fromkeys(r["case"] for r in rows))
    lines = [f"Generated ruptures on {SHAPE[0]}x{SHAPE[1]} px of {RES:g} m, noise σ "
             f"{NOISE_M} m correlated over {NOISE_PX} px, {len({r['seed'] for r in rows})} "
             "seeds (`python -m bench.rupture_eval`).", "",
             "| case | segments | trace max (px) | trace p95 (px) | true trace missed | "
             "offsets | slip within 20 % + 0.3 m | median error (m) | ≤ 1σ | ≤ 2σ |",
             "|---|---|---|---|---|---|---|---|---|---|"]

    def fmt(v, f="{:.2f}"):
        return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f.format(v)

    for name in names:
        rs = [r for r in rows if r["case"] == name]
        seg = "/".join(str(r["segments"]) for r in rs)
        if "trace_max_px" not in rs[0] and "missed" not in rs[0]:
            lines.append(f"| {name} (no rupture) | {seg} | – | – | – | – | – | – | – | – |")
            continue
        g = {k: [r.get(k, math.nan) for r in rs] for k in
             ("trace_max_px", "trace_p95_px", "missed", "offsets", "slip_ok", "slip_err_m",
              "cover_1s", "cover_2s")}
        lines.append(
            f"| {name} | {seg} | {fmt(max(g['trace_max_px']))} | "
            f"{fmt(float(np.nanmax(g['trace_p95_px'])))} | "
            f"{fmt(100 * max(g['missed']), '{:.0f} %')} | {sum(g['offsets'])} | "
            f"{fmt(100 * float(np.nanmean(g['slip_ok'])), '{:.0f} %')} | "
            f"{fmt(float(np.nanmedian(g['slip_err_m'])))} | "
            f"{fmt(100 * float(np.nanmean(g['cover_1s'])), '{:.0f} %')} | "
            f"{fmt(100 * float(np.nanmean(g['cover_2s'])), '{:.0f} %')} |")
    secs = [r["seconds"] for r in rows]
    lines += ["", f"Measurement time per {SHAPE[0]}x{SHAPE[1]} field: median "
              f"{np.median(secs):.2f} s (this machine)."]
    return "\n".join(lines) + "\n"


def rupture_section(seeds: tuple[int, ...] = (0, 1, 2)) -> str:
    """The benchmark's Markdown section: trace and slip errors on the generated cases."""
    log.info("rupture-map section")
    return "## Rupture map: trace and slip errors\n\n" + markdown(run_eval(seeds))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, default=3, help="noise seeds per case (default 3)")
    args = p.parse_args(argv)
    print(markdown(run_eval(tuple(range(args.seeds)))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
