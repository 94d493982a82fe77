"""Figure: one crop of each training texture source, beside the benchmark's unseen one.

    python -m bench.texture_gallery --out docs/benchmark/texture_gallery.png

Row 1: Landsat 8 B4 (the committed test-area crop stands in for the train area), the
shaded matplotlib DEM (``pipeline.textures.dem_textures``); then the procedural
families of ``model.procedural`` at zoom 1 and 3; last panel: the 1/f fractal that no
training sample comes from (the benchmark's "fractal-unseen").
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from bench.gallery import load_texture
from model.procedural import PROCEDURAL_KINDS, procedural_texture
from model.synthetic import fractal_texture
from pipeline.textures import dem_textures


def draw(out: Path, size: int = 192, seed: int = 0) -> None:
    """Save the figure (3 x 3 panels, ``size`` px crops) to ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(seed)
    panels = [("Landsat 8 B4 (test-area crop)", load_texture()[:size, :size]),
              ("shaded DEM (matplotlib sample)", dem_textures()[0].image[:size, :size])]
    for zoom in (1.0, 3.0):
        panels += [(f"{k}, zoom {zoom:g}", procedural_texture((size, size), rng, k, zoom))
                   for k in PROCEDURAL_KINDS]
    panels.append(("1/f fractal: benchmark only", fractal_texture((size, size), rng, 1.8)))
    fig, axes = plt.subplots(3, 3, figsize=(9.6, 10))
    for ax, (title, img) in zip(axes.ravel(), panels, strict=True):
        ax.imshow(img, cmap="gray")
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
    fig.suptitle("Training textures (microflow data --texture-variety) and the unseen one")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("docs/benchmark/texture_gallery.png"))
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    draw(args.out, seed=args.seed)
    print(args.out)


if __name__ == "__main__":
    main()
