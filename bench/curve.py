"""Validation EPE against CPU-minutes from a training run's JSON state (all resumed runs).

    python -m bench.curve --state model/weights/next/microflow-small.json \
        --out docs/benchmark/training_curve.png

The trainer logs the validation EPE per range every ``val_every`` steps and, per resumed
run, its step range and wall minutes; minutes are spread evenly over each run's steps.
Runs are marked, because their validation files and settings may differ (each run's
settings are in the state's ``runs``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

RANGES = ("translation", "very_small", "small", "large", "all")


def minutes_at(steps: np.ndarray, runs: list[dict]) -> np.ndarray:
    """Cumulative training minutes at each of ``steps``, interpolated within each run."""
    knots_s, knots_m = [runs[0]["from_step"]], [0.0]
    for r in runs:
        if r["from_step"] != knots_s[-1]:  # a gap: the run before did not record its end
            knots_s.append(r["from_step"])
            knots_m.append(knots_m[-1])
        knots_s.append(r["to_step"])
        knots_m.append(knots_m[-1] + r["minutes"])
    return np.interp(steps, knots_s, knots_m)


def plot_curve(state: dict, out: str | Path) -> Path:
    """Write the curve PNG (EPE in px, log scale, against minutes) and return its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hist = state["history"]
    steps = np.array([h["step"] for h in hist], dtype=float)
    minutes = minutes_at(steps, state["runs"])
    fig, ax = plt.subplots(figsize=(9, 4.5), constrained_layout=True)
    for name in RANGES:
        vals = np.array([h.get(name, np.nan) for h in hist], dtype=float)
        ax.plot(minutes, vals, lw=2.2 if name == "all" else 1.0, label=name)
    for i, r in enumerate(state["runs"]):
        m = float(minutes_at(np.array([r["from_step"]]), state["runs"])[0])
        ax.axvline(m, color="0.6", lw=0.8, ls="--")
        ax.text(m, 0.99, f" run {i + 1}", fontsize=7, va="top",
                transform=ax.get_xaxis_transform())
    ax.set_yscale("log")
    ax.set_xlabel("training time, CPU minutes (one thread after run 1)")
    ax.set_ylabel("validation EPE, px (last iterate, no log-TV)")
    ax.set_title(f"{state.get('train_config', {}).get('name', 'MicroFlow')}: validation "
                 "EPE per range")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--state", required=True, help="the trainer's <name>.json")
    p.add_argument("--out", default="docs/benchmark/training_curve.png")
    args = p.parse_args(argv)
    print(plot_curve(json.loads(Path(args.state).read_text()), args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
