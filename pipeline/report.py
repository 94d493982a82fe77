"""Benchmark report: Markdown tables and PNG figures from ``model.evaluate`` scores."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from model.evaluate import PairScore, summarise
from model.synthetic import SyntheticPair

RANGE_TITLES = {"translation": "Translation only (0–3 px)", "very_small": "Very small (< 0.5 px)",
                "small": "Small (0.5–2 px)", "large": "Large (2–10 px)"}


def _fmt(v: float) -> str:
    return "–" if v is None or not np.isfinite(v) else f"{v:.3f}"


def markdown_tables(scores: list[PairScore], methods: list[str], notes: dict[str, str]) -> str:
    """One table per (texture set, displacement range): rows are methods."""
    summary = summarise(scores)
    textures = sorted({s.texture for s in scores})
    lines = []
    for tex in textures:
        lines.append(f"### Texture: {tex}\n")
        for rng_name, title in RANGE_TITLES.items():
            if not any(k[0] == tex and k[1] == rng_name for k in summary):
                continue
            lines.append(f"**{title}**\n")
            lines.append("| method | EPE, no change | EPE, temporal change | EPE ≤ 3 px of fault "
                         "| ‖∇f‖ near fault (truth) | ‖∇f‖ away (truth) | n |")
            lines.append("|---|---|---|---|---|---|---|")
            for m in methods:
                a = summary.get((tex, rng_name, m, False), {})
                b = summary.get((tex, rng_name, m, True), {})
                both = [s for s in scores if s.texture == tex and s.range == rng_name
                        and s.method == m]
                if not both:
                    continue
                fault = float(np.nanmean([s.epe_fault for s in both])) if any(
                    np.isfinite(s.epe_fault) for s in both) else float("nan")
                sn = np.nanmean([s.smooth_near for s in both])
                tn = np.nanmean([s.true_smooth_near for s in both])
                sf = np.nanmean([s.smooth_far for s in both])
                tf = np.nanmean([s.true_smooth_far for s in both])
                lines.append(f"| {m} | {_fmt(a.get('epe'))} | {_fmt(b.get('epe'))} | "
                             f"{_fmt(fault)} | {_fmt(sn)} ({_fmt(tn)}) | {_fmt(sf)} ({_fmt(tf)}) "
                             f"| {len(both)} |")
            lines.append("")
    lines.append("Overall EPE (px) per method and texture set:\n")
    lines.append("| method | " + " | ".join(textures) + " |")
    lines.append("|---|" + "---|" * len(textures))
    for m in methods:
        vals = [float(np.nanmean([s.epe for s in scores if s.method == m and s.texture == t]))
                for t in textures]
        lines.append(f"| {m} | " + " | ".join(_fmt(v) for v in vals) + " |")
    lines.append("")
    for k, v in notes.items():
        lines.append(f"- **{k}**: {v}")
    return "\n".join(lines) + "\n"


def figure_pair(pair: SyntheticPair, flows: dict[str, np.ndarray], out_png: str | Path,
                title: str = "") -> Path:
    """pre/post, true field, each method's field and error map, and a fault profile."""
    names = list(flows)
    ncol = 2 + len(names)
    fig, axes = plt.subplots(3, ncol, figsize=(3.0 * ncol, 9.0), constrained_layout=True)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, 0].imshow(pair.pre, cmap="gray")
    axes[0, 0].set_title("pre")
    axes[1, 0].imshow(pair.post, cmap="gray")
    axes[1, 0].set_title("post")
    mag_max = float(np.nanpercentile(np.abs(pair.flow), 99.5)) or 1.0
    kw = dict(cmap="RdBu_r", vmin=-mag_max, vmax=mag_max)
    for row, comp in enumerate(("dx", "dy")):
        im = axes[row, 1].imshow(pair.flow[row], **kw)
        axes[row, 1].set_title(f"true {comp} (px)")
        for k, name in enumerate(names):
            axes[row, 2 + k].imshow(flows[name][row], **kw)
            axes[row, 2 + k].set_title(f"{name} {comp}")
    fig.colorbar(im, ax=axes[:2, 1], shrink=0.6, label="px")
    axes[2, 0].axis("off")
    for k, name in enumerate(names):
        err = np.hypot(*(flows[name] - pair.flow))
        im2 = axes[2, 2 + k].imshow(err, cmap="magma", vmin=0,
                                    vmax=max(0.05, float(np.nanpercentile(err, 99))))
        axes[2, 2 + k].set_title(f"{name} |error| (px)")
        fig.colorbar(im2, ax=axes[2, 2 + k], shrink=0.7)
    ax = axes[2, 1]
    ax.set_xticks(np.linspace(0, pair.pre.shape[1], 5))
    ax.set_yticks(np.linspace(-mag_max, mag_max, 5))
    # profile along the middle row (perpendicular-ish to most faults), component of max jump
    comp = int(np.argmax([np.nanstd(pair.flow[c]) for c in (0, 1)]))
    r = pair.pre.shape[0] // 2
    band = slice(max(r - 2, 0), r + 3)
    ax.plot(pair.flow[comp][band].mean(0), "k-", lw=2, label="truth")
    for name in names:
        ax.plot(flows[name][comp][band].mean(0), lw=1, label=name)
    ax.set_title(f"profile of {('dx', 'dy')[comp]}, rows {r - 2}–{r + 2}")
    ax.set_xlabel("column (px)")
    ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.savefig(out_png, dpi=80)
    plt.close(fig)
    return Path(out_png)
