"""What a stack of pairs buys, and what it costs (``model.stack``), on generated fields.

Each date gets its own error field (a date's temporal change: what every pair using that
date sees), each pair its own matching noise on top; the pairs' σ is the true one. For a
set of pairs the script prints the stack's RMS error against one pair's, the ratio
expected for independent pairs (1/√N), the share of errors within 2σ, and the time per
megapixel. Run: ``python -m bench.stack_gain``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from model.stack import stack_component

DESIGNS = {
    "4 independent pairs (8 dates)": ([0, 1, 2, 3], [0, 1, 2, 3]),
    "9 independent pairs (18 dates)": (list(range(9)), list(range(9))),
    "2 pairs sharing the post (3 dates)": ([0, 1], [0, 0]),
    "6 pairs of 3 pre x 2 post dates": ([0, 1, 2, 0, 1, 2], [0, 0, 0, 1, 1, 1]),
    "9 pairs of 3 pre x 3 post dates": ([0, 1, 2] * 3, [0] * 3 + [1] * 3 + [2] * 3),
}


def measure(pres: list[int], posts: list[int], date_share: float, size: int,
            rng: np.random.Generator) -> dict[str, float]:
    """One design: ``date_share`` of a pair's error variance comes from its two dates."""
    sd = 0.1  # one pair's error, px
    sd_date = sd * np.sqrt(date_share / 2)
    sd_pair = sd * np.sqrt(1 - date_share)
    e_pre = rng.normal(0, sd_date, (max(pres) + 1, size, size))
    e_post = rng.normal(0, sd_date, (max(posts) + 1, size, size))
    v = np.stack([e_pre[i] + e_post[j] + rng.normal(0, sd_pair, (size, size))
                  for i, j in zip(pres, posts, strict=True)])
    s = np.full_like(v, sd)
    t0 = time.perf_counter()
    r = stack_component(v, s, pres, posts)
    seconds = time.perf_counter() - t0
    ok = np.isfinite(r.value)
    return {"single_rms": float(np.sqrt(np.mean(v[0] ** 2))),
            "stack_rms": float(np.sqrt(np.mean(r.value[ok] ** 2))),
            "coverage_single": float(np.mean(np.abs(v[0]) <= 2 * s[0])),
            "coverage_stack": float(np.mean(np.abs(r.value[ok]) <= 2 * r.sigma[ok])),
            "measured": float(ok.mean()),
            "s_per_mpx": seconds / (size * size / 1e6)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--size", type=int, default=256, help="field side, px (default 256)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = p.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    print("| pairs | share of a pair's error from its dates | stack / one pair RMS | "
          "1/√N | within 2σ: one pair, stack | measured | s per Mpx, one component |")
    print("|---|---|---|---|---|---|---|")
    for name, (pres, posts) in DESIGNS.items():
        for share in (0.0, 0.5, 1.0):
            if share == 0.0 and "independent" not in name:
                continue
            m = measure(pres, posts, share, args.size, rng)
            print(f"| {name} | {share:.0%} | {m['stack_rms'] / m['single_rms']:.3f} | "
                  f"{1 / np.sqrt(len(pres)):.3f} | {m['coverage_single']:.3f}, "
                  f"{m['coverage_stack']:.3f} | {m['measured']:.1%} | "
                  f"{m['s_per_mpx']:.2f} |")


if __name__ == "__main__":
    main()
