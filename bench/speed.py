"""CPU speed of ``estimate_displacement`` beside the frequency correlator, with a profile.

    python -m bench.speed --size 1024 --threads 2 --out docs/benchmark/speed.json

One generated ``size``² pair (fractal texture, an Okada field of the ``small`` range), so
the EPE of every timed run is known and a speed-up that costs accuracy shows. Times are
the best of ``--repeats`` runs after a warm-up; throughput is reported as Mpx/s and as a
ratio to the correlator (window 32, step 8) timed in the same process, because absolute
times on a shared machine are noisy. The profile (cProfile, one run with σ and log-TV)
gives the seconds spent in each stage of the run path.

Run it from another checkout (``PYTHONPATH=<checkout> python <this file>``) to measure an
older version of the model code on the same machine.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

STAGES = {  # stage -> function names whose cumulative time it is (first found wins)
    "normalisation statistics": ("scene_stats",),
    "correlator start": ("correlator_init",),
    "network passes": ("forward",),  # MicroFlow.forward: warps + U-Net iterations
    "fault sharpening": ("sharpen_field",),
    "σ features": ("sigma_features",),
    "stitching": ("add", "result"),  # Mosaic
    "log-TV": ("logtv_denoise",),
}
STAGE_FILES = {"forward": "microflow.py", "add": "tiling.py", "result": "tiling.py"}


def _best_time(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def _stage_seconds(stats: pstats.Stats) -> dict[str, float]:
    """Cumulative seconds per :data:`STAGES` entry, from a cProfile run."""
    table = stats.stats  # type: ignore[attr-defined]
    out = {}
    for stage, names in STAGES.items():
        total = 0.0
        for (file, _line, func), (_cc, _nc, _tt, ct, _callers) in table.items():
            if func in names and (func not in STAGE_FILES or file.endswith(STAGE_FILES[func])):
                total += ct
        out[stage] = round(total, 3)
    return out


def measure(size: int = 1024, repeats: int = 2, seed: int = 0) -> dict:
    """Time MicroFlow (raw, + log-TV, + σ and weighted log-TV) and the correlator."""
    import torch

    from model.correlator import CorrelatorConfig, frequency_correlate
    from model.inference import estimate_displacement
    from model.metrics import epe
    from model.synthetic import fractal_texture, make_pair

    rng = np.random.default_rng(seed)
    pair = make_pair(fractal_texture((size + 64, size + 64), rng), rng, (size, size), "small")
    a, b = pair.pre, pair.post
    estimate_displacement(a[:256, :256], b[:256, :256])  # load the model, warm up
    corr_cfg = CorrelatorConfig()
    runs = {
        "correlator (window 32, step 8)": lambda: frequency_correlate(a, b, corr_cfg
                                                                      ).to_dense(a.shape),
        "MicroFlow raw": lambda: estimate_displacement(a, b, denoise=False),
        "MicroFlow + log-TV": lambda: estimate_displacement(a, b, denoise=True),
        "MicroFlow + σ + weighted log-TV (the pipeline's)":
            lambda: estimate_displacement(a, b, denoise=True, return_sigma=True)[0],
    }
    mpx = size * size / 1e6
    rows = {}
    for name, fn in runs.items():
        seconds, field = _best_time(fn, repeats)
        rows[name] = {"seconds": round(seconds, 3), "mpx_per_s": round(mpx / seconds, 4),
                      "epe_px": round(epe(np.asarray(field), pair.flow, pair.valid), 4)}
    corr = rows["correlator (window 32, step 8)"]["mpx_per_s"]
    for row in rows.values():
        row["ratio_to_correlator"] = round(row["mpx_per_s"] / corr, 3)
    prof = cProfile.Profile()
    prof.enable()
    estimate_displacement(a, b, denoise=True, return_sigma=True)
    prof.disable()
    stats = pstats.Stats(prof)
    stages = _stage_seconds(stats)
    stages["total"] = round(stats.total_tt, 3)  # type: ignore[attr-defined]
    return {"image": f"{size}x{size}", "threads": torch.get_num_threads(),
            "repeats": repeats, "runs": rows, "profile_seconds": stages}


def to_markdown(result: dict) -> str:
    """The result as two Markdown tables (runs, then the profile by stage)."""
    lines = [f"Image {result['image']}, {result['threads']} torch threads, best of "
             f"{result['repeats']}.", "",
             "| run | s | Mpx/s | × correlator | EPE (px) |", "|---|---|---|---|---|"]
    for name, r in result["runs"].items():
        lines.append(f"| {name} | {r['seconds']} | {r['mpx_per_s']} | "
                     f"{r['ratio_to_correlator']} | {r['epe_px']} |")
    lines += ["", "| stage (σ + weighted log-TV run, cProfile) | s |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in result["profile_seconds"].items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=1024, help="pair side, px")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", help="write the result here as JSON (and .md beside it)")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    result = measure(args.size, args.repeats)
    text = to_markdown(result)
    print(text, end="")
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1) + "\n")
        out.with_suffix(".md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
