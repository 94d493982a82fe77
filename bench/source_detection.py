"""Offset recovery and source detection: the joint fit of ``model.source_fit`` on known cases.

Two parts:

``fit``
    fields built directly from an Okada rectangle (``model.synthetic.random_fault``
    geometry, slip 2–15 m, pixel size 10 m) plus a planted co-registration offset of up
    to 1 px per component and Gaussian noise, and pure shifts with the same noise. Cheap:
    the fit alone, seconds per case. Reports true and false detection rates, the offset
    error (px), the median error of the field with the fitted offset removed (px) and the
    errors of strike, dip, rake, slip and Mw.
``pair``
    the same kind of scenes as images (the demo texture warped by the field plus the
    offset), written as GeoTIFFs and run through ``process_pair`` with default settings
    (``--ramp auto``); scores ``east``/``north`` against the truth and reads
    ``source_model`` from the provenance. Minutes per case on a CPU.

    python -m bench.source_detection --cases 30            # the fit part
    python -m bench.source_detection --pairs 3 --size 256  # plus end-to-end pairs
    python -m bench.source_detection --cases 0 --cost      # seconds per fit by scene size
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.okada import Fault, fault_displacement, fault_trace
from model.source_fit import fit_source
from model.synthetic import random_fault

RES_M = 10.0  # pixel size of the generated cases, m
NOISE_PX = 0.03  # noise of the generated fields, px (the raw field's on clean texture)
SIGMA_PX = 0.05  # σ the fit is given, px
MECHANISMS = ("strike-slip", "normal", "thrust")


@dataclass(frozen=True)
class Case:
    """A generated case: ``fault`` in metres (None for a pure shift), planted ``offset``
    ``(dx, dy)`` px, the scene ``size`` px and whether its trace crosses the scene."""

    fault: Fault | None
    offset: tuple[float, float]
    size: int
    trace_in_scene: bool


def _trace_in_scene(fault: Fault, size: int) -> bool:
    """Whether the surface trace (top depth 0) crosses the scene (x 0..size·RES_M,
    y −size·RES_M..0)."""
    if fault.top_depth > 0:
        return False
    (x0, y0), (x1, y1) = fault_trace(fault)
    t = np.linspace(0, 1, 200)
    xs, ys = x0 + t * (x1 - x0), y0 + t * (y1 - y0)
    ext = size * RES_M
    return bool(np.any((xs >= 0) & (xs <= ext) & (ys <= 0) & (ys >= -ext)))


def make_case(rng: np.random.Generator, size: int, mechanism: str | None,
              surface: bool | None = None, partial: bool = False) -> Case:
    """One case: a fault of ``mechanism`` (None: a pure shift), surface-breaking or blind
    (``surface``; None: random), with a planted offset of up to 1 px per component.
    ``partial`` moves the rupture's centre outside the scene so only part of it is seen.
    """
    offset = tuple(float(v) for v in rng.uniform(-1.0, 1.0, 2))
    if mechanism is None:
        return Case(None, offset, size, False)
    while True:
        f = random_fault(rng, (size, size), surface_prob=0.5 if surface is None
                         else float(surface))
        if _mechanism(f) == mechanism:
            break
    east, north = f.east * RES_M, f.north * RES_M
    length = f.length * RES_M
    if partial:  # the rupture ends inside the scene: its centre half its length away
        s = math.radians(f.strike_deg)
        length = rng.uniform(0.6, 1.5) * size * RES_M
        east += math.sin(s) * length / 2
        north += math.cos(s) * length / 2
    fault = Fault(east, north, f.top_depth * RES_M, f.strike_deg, f.dip_deg, length,
                  f.width * RES_M, f.rake_deg, float(rng.uniform(2.0, 15.0)))
    return Case(fault, offset, size, _trace_in_scene(fault, size))


def _mechanism(f: Fault) -> str:
    r = ((f.rake_deg + 180) % 360) - 180
    if abs(r - 90) <= 30:
        return "thrust"
    if abs(r + 90) <= 30:
        return "normal"
    return "strike-slip"


def truth_px(case: Case, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``(2, ...)`` true deformation ``(dx, dy)`` px at pixel ``rows``, ``cols`` (no
    offset)."""
    if case.fault is None:
        return np.zeros((2, *np.broadcast(rows, cols).shape))
    ue, un, _ = fault_displacement(case.fault, cols * RES_M, -rows * RES_M)
    return np.stack([ue / RES_M, -un / RES_M])


def score_fit(case: Case, rng: np.random.Generator, step: int = 4) -> dict:
    """Fit a case's field (truth + offset + noise on every ``step``-th pixel) and score."""
    rows, cols = np.mgrid[0:case.size:step, 0:case.size:step].astype(float)
    d = truth_px(case, rows, cols)
    obs = d + np.array(case.offset)[:, None, None] + rng.normal(0, NOISE_PX, d.shape)
    x, y = cols * RES_M, -rows * RES_M
    t = time.perf_counter()
    fit = fit_source(obs[0] * RES_M, -obs[1] * RES_M, x, y,
                     np.full(x.shape, 1.0 / (SIGMA_PX * RES_M) ** 2))
    seconds = time.perf_counter() - t
    off = (fit.offset[0] / RES_M, -fit.offset[1] / RES_M)
    corrected = obs - np.array(off)[:, None, None]
    out = {"fault": case.fault is not None, "detected": fit.detected,
           "trace_in_scene": case.trace_in_scene, "seconds": seconds,
           "offset_err_px": float(np.hypot(off[0] - case.offset[0], off[1] - case.offset[1])),
           "field_err_px": float(max(np.median(np.abs(corrected[k] - d[k])) for k in (0, 1))),
           "scale_ratio": fit.scale_ratio, "snr": fit.snr}
    if case.fault is not None and fit.detected:
        p, f = fit.params, case.fault
        out.update(strike_err_deg=_angle_err(p["strike_deg"], f.strike_deg, p["dip_deg"]),
                   dip_err_deg=abs(p["dip_deg"] - f.dip_deg),
                   rake_err_deg=abs(((p["rake_deg"] - f.rake_deg) + 180) % 360 - 180),
                   slip_rel_err=abs(p["slip_m"] - f.slip) / f.slip,
                   mw_err=abs(p["Mw"] - (2 / 3) * (math.log10(
                       30e9 * min(f.length, 3 * case.size * RES_M) * f.width * f.slip) - 9.1)))
    return out


def _angle_err(a: float, b: float, dip: float) -> float:
    """Strike error (deg); a vertical fault's strike is defined modulo 180°."""
    e = abs((a - b + 180) % 360 - 180)
    return min(e, 180 - e) if dip > 80 else e


def run_fit(n_cases: int, size: int = 512, seed: int = 0) -> dict:
    """The fit part over ``n_cases`` faults (mechanisms, surface/blind and partial scenes in
    turn) and ``n_cases // 3`` pure shifts; returns the rows and a summary."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_cases):
        mech = MECHANISMS[i % 3]
        case = make_case(rng, size, mech, surface=(i // 3) % 2 == 0, partial=i % 5 == 4)
        r = score_fit(case, rng)
        r.update(mechanism=mech, surface=case.fault.top_depth == 0, partial=i % 5 == 4)
        rows.append(r)
    for _ in range(max(1, n_cases // 3)):
        r = score_fit(make_case(rng, size, None), rng)
        r.update(mechanism="shift", surface=False, partial=False)
        rows.append(r)
    return {"rows": rows, "summary": summarise(rows)}


def summarise(rows: list[dict]) -> dict:
    """Detection rates, offset and field errors, parameter errors (medians and worst)."""
    faults = [r for r in rows if r["fault"]]
    shifts = [r for r in rows if not r["fault"]]
    det = [r for r in faults if r["detected"]]
    s = {"faults": len(faults), "shifts": len(shifts),
         "true_detection_rate": len(det) / max(len(faults), 1),
         "false_detection_rate": sum(r["detected"] for r in shifts) / max(len(shifts), 1),
         "offset_err_px_median": float(np.median([r["offset_err_px"] for r in rows])),
         "offset_err_px_max": float(np.max([r["offset_err_px"] for r in rows])),
         "field_err_px_median": float(np.median([r["field_err_px"] for r in rows])),
         "field_err_px_max": float(np.max([r["field_err_px"] for r in rows])),
         "seconds_median": float(np.median([r["seconds"] for r in rows]))}
    traced = [r for r in det if r["trace_in_scene"]]
    if traced:
        s["strike_err_deg_max_trace_in_scene"] = float(
            np.max([r["strike_err_deg"] for r in traced]))
    for k in ("strike_err_deg", "dip_err_deg", "rake_err_deg", "slip_rel_err", "mw_err"):
        if det:
            s[f"{k}_median"] = float(np.median([r[k] for r in det]))
    return s


def report(summary: dict, title: str = "fit") -> str:
    """A Markdown section."""
    lines = [f"### Offset recovery and source detection ({title})", "",
             "| quantity | value |", "|---|---|"]
    for k, v in summary.items():
        lines.append(f"| {k} | {v:.3f} |" if isinstance(v, float) else f"| {k} | {v} |")
    return "\n".join(lines)


def section(n_cases: int = 12, seed: int = 0) -> str:
    """The benchmark's section (fit part), for ``bench.benchmark``."""
    return report(run_fit(n_cases, seed=seed)["summary"])


def run_pairs(n_pairs: int, size: int, out_dir: Path, seed: int = 1) -> list[dict]:
    """End-to-end: ``n_pairs`` scenes (thrust, strike-slip, normal in turn) and one pure
    shift through ``process_pair`` with default settings."""
    import rasterio
    from rasterio.transform import from_origin

    from model.synthetic import resample_post
    from pipeline import cube
    from pipeline.config import RunConfig
    from pipeline.demo import TEXTURE
    from pipeline.process import geotiff_source, process_pair

    with rasterio.open(TEXTURE) as src:
        tex = src.read(1).astype(np.float64)
    rng = np.random.default_rng(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    kinds = [("thrust", "strike-slip", "normal")[i % 3] for i in range(n_pairs)] + [None]
    for i, mech in enumerate(kinds):
        case = make_case(rng, size, mech, surface=i % 2 == 0)
        origin = (16, 16)

        def fn(cols, rows_, case=case):
            d = truth_px(case, rows_, cols)
            return d[0] + case.offset[0], d[1] + case.offset[1]

        post, _ = resample_post(tex, fn, (size, size), origin)
        pre = tex[16:16 + size, 16:16 + size]
        t = from_origin(600000.0, 4200000.0, RES_M, RES_M)
        paths = []
        for name, arr in (("pre", pre), ("post", post)):
            p = out_dir / f"case{i}_{name}.tif"
            with rasterio.open(p, "w", driver="GTiff", width=size, height=size, count=1,
                               dtype="uint16", crs="EPSG:32611", transform=t,
                               nodata=0) as dst:
                dst.write(np.clip(np.rint(arr), 1, 65535).astype(np.uint16), 1)
            paths.append(p)
        cfg = RunConfig.from_flat(out=str(out_dir / f"case{i}.zarr"), workers=1,
                                  quicklooks=False, if_exists="overwrite")
        t0 = time.perf_counter()
        res = process_pair(geotiff_source(*paths, cfg), cfg, progress=False)
        seconds = time.perf_counter() - t0
        ds = cube.open_cube(res.cube).isel(pair=res.index)
        prov = cube.pair_provenance(cube.open_cube(res.cube), res.index)
        rr, cc = np.mgrid[0:size, 0:size].astype(float)
        truth = truth_px(case, rr, cc)
        valid = ds.valid.values == 1
        east, north = ds.east.values / RES_M, -ds.north.values / RES_M
        east_raw = ds.east_raw.values / RES_M
        src = prov["source_model"]
        row = {"mechanism": mech or "shift", "seconds": seconds, "valid": float(valid.mean()),
               "detected": src["detected"], "strike_deg": src["strike_deg"],
               "true_strike_deg": None if case.fault is None else case.fault.strike_deg,
               "east_err_px": float(np.median(np.abs(east - truth[0])[valid])),
               "north_err_px": float(np.median(np.abs(north - truth[1])[valid])),
               "east_raw_err_px": float(np.median(np.abs(east_raw - truth[0] - case.offset[0])
                                                  [valid])),
               "removed_px": prov["ramp_fit"].get("dx_px", {}).get("offset"),
               "planted_px": case.offset}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def run_cost(sides: tuple[int, ...] = (512, 2048, 10980), seed: int = 0) -> list[dict]:
    """CPU and wall seconds of one fit on a thrust field (Okada + offset + noise) read as
    the pipeline reads it (``pipeline.graph.ramp_step`` decimation) for scenes of these
    sides (px, 10 m)."""
    from pipeline.graph import ramp_step

    rng = np.random.default_rng(seed)
    rows_out = []
    for side in sides:
        step = ramp_step(side, side)
        rows, cols = np.mgrid[0:side:step, 0:side:step].astype(float)
        x, y = cols * RES_M, -rows * RES_M
        c = side * RES_M / 2
        fault = Fault(c, -c, 0.0, 30, 40, side * 30.0, side * 8.0, 90, 10)
        ue, un, _ = fault_displacement(fault, x, y)
        e = ue + 3.0 + rng.normal(0, NOISE_PX * RES_M, x.shape)
        n = un - 5.0 + rng.normal(0, NOISE_PX * RES_M, x.shape)
        t, c0 = time.perf_counter(), time.process_time()
        fit = fit_source(e, n, x, y, np.full(x.shape, 1.0 / (SIGMA_PX * RES_M) ** 2))
        row = {"side_px": side, "step": step, "samples_read": int(x.size),
               "wall_s": time.perf_counter() - t, "cpu_s": time.process_time() - c0,
               "evaluations": fit.evaluations, "detected": fit.detected,
               "offset_err_px": float(np.hypot(fit.offset[0] / RES_M - 0.3,
                                               -fit.offset[1] / RES_M - 0.5))}
        print(json.dumps(row), flush=True)
        rows_out.append(row)
    return rows_out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=30, help="generated faults for the fit part "
                   "(plus a third as many pure shifts; default 30)")
    p.add_argument("--pairs", type=int, default=0, help="end-to-end scenes through "
                   "process_pair, plus one pure shift (default 0: none)")
    p.add_argument("--size", type=int, default=512, help="scene side, px (default 512)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--out", default="/tmp/source_detection", help="folder for the pairs' "
                   "GeoTIFFs and cubes (default /tmp/source_detection)")
    p.add_argument("--cost", action="store_true", help="also time one fit on 512, 2048 "
                   "and 10980 px scenes (CPU and wall seconds)")
    p.add_argument("--json", help="write the rows and summary to this JSON file")
    a = p.parse_args(argv)
    if a.cost:
        cost = run_cost(seed=a.seed)
    result = run_fit(a.cases, a.size, a.seed)
    print(report(result["summary"]))
    for r in result["rows"]:
        if r["fault"] != r["detected"] or r["offset_err_px"] > 0.05:
            print("  miss:", json.dumps({k: (round(v, 3) if isinstance(v, float) else v)
                                        for k, v in r.items()}))
    if a.pairs:
        result["pairs"] = run_pairs(a.pairs, a.size, Path(a.out), a.seed + 1)
    if a.cost:
        result["cost"] = cost
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
