"""Gallery of random pairs with realistic temporal change (a figure for the benchmark).

    python -m bench.gallery --out docs/benchmark/temporal_change_gallery.png

Texture: the committed Landsat 8 B4 crop of the demo event
(``pipeline/demo_data/landsat8_224077_b4_test_area.tif``, USGS, public domain). Each pair
is drawn by ``model.synthetic.make_pair`` with ``RealisticChange()`` and a fault field of
the *small* range; the title lists the effects drawn, and red marks the pixels flagged
not valid (thick cloud, open water).
"""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

import numpy as np

from model.synthetic import RANGES, make_pair
from model.temporal_change import RealisticChange

TEXTURE = (Path(__file__).resolve().parents[1]
           / "pipeline/demo_data/landsat8_224077_b4_test_area.tif")


def load_texture(path: Path = TEXTURE) -> np.ndarray:
    """The crop as float64, zero mean and unit std."""
    import rasterio

    with rasterio.open(path) as ds:
        image = ds.read(1).astype(np.float64)
    return (image - image.mean()) / image.std()


def describe(effects: dict) -> str:
    """One short line per pair: which effects were drawn (and in which image)."""
    parts = []
    if "parcels" in effects:
        p = effects["parcels"]
        parts.append(f"parcels {p['size']:.0f} px, {p['changed']} changed")
    for key in ("water", "wet_soil"):
        if key in effects:
            parts.append(f"{key.replace('_', ' ')} ({effects[key]})")
    for key in ("cloud", "haze", "striping"):
        if key in effects:
            parts.append(f"{key} ({'+'.join(effects[key])})")
    return ", ".join(parts) or "sensor only"


def draw(out: Path, n: int = 8, size: int = 160, seed: int = 0,
         displacement_range: str = "small") -> None:
    """Draw ``n`` pairs (pre, post) side by side, two pairs per row, and save ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    texture = load_texture()
    rng = np.random.default_rng(seed)
    cols = 2
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, 2 * cols, figsize=(4 * cols * 2 * 0.9, 3.9 * rows),
                             squeeze=False)
    for k in range(n):
        pair = make_pair(texture, rng, (size, size), displacement_range,
                         temporal_change=True, change=RealisticChange())
        r, c = divmod(k, cols)
        for j, (name, img) in enumerate((("pre", pair.pre), ("post", pair.post))):
            ax = axes[r, 2 * c + j]
            lo, hi = np.percentile(img, [1, 99])
            ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
            if j == 0 and not pair.valid.all():
                overlay = np.zeros((*img.shape, 4))
                overlay[~pair.valid] = (1.0, 0.0, 0.0, 0.35)
                ax.imshow(overlay, interpolation="nearest")
            title = f"#{k + 1} {name}"
            if j == 0:
                title += "\n" + textwrap.shorten(describe(pair.params["effects"]), 60)
            ax.set_title(title, fontsize=7, loc="left")
            ax.set_xticks([])
            ax.set_yticks([])
    lo, hi = RANGES[displacement_range]
    fig.suptitle(f"Realistic temporal change: {n} random {size} px pairs on Landsat 8 B4 "
                 f"texture, {displacement_range} fault fields ({lo}–{hi} px). "
                 "Red on pre: not valid (thick cloud, open water).", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.975))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="docs/benchmark/temporal_change_gallery.png")
    p.add_argument("--pairs", type=int, default=8)
    p.add_argument("--size", type=int, default=160)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--range", default="small", choices=sorted(RANGES))
    args = p.parse_args(argv)
    draw(Path(args.out), args.pairs, args.size, args.seed, args.range)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
