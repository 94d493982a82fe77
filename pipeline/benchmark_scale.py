"""Scale benchmark: a generated 8192x8192 pair through ``microflow pair``.

Run it under GNU time to get the peak RSS of the whole process tree's parent::

    .venv/bin/python -m pipeline.benchmark_scale --size 8192 --workers 2 --out /tmp/scale

It writes the pair as tiled GeoTIFFs (texture: the committed Landsat crop mirrored to
size, moved by a smooth ±0.5 px fault-like field), then runs ``microflow pair`` in a
child process under ``/usr/bin/time -v`` and prints wall time, Mpx/s and the peak RSS of
the driver and of each Dask worker (memory is bounded by tile size × workers, not by the
scene size).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def make_scene(out: Path, size: int, block: int = 1024) -> tuple[Path, Path]:
    """Write ``pre.tif`` and ``post.tif`` of ``size``² px, streaming blocks of ``block``²."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    from model.synthetic import resample_post
    from pipeline.demo import TEXTURE

    out.mkdir(parents=True, exist_ok=True)
    with rasterio.open(TEXTURE) as src:
        tex = src.read(1).astype(np.float64)
    n = size + 64  # mirror-tile the crop just past the scene size (float32: bounded memory)
    tex = tex.astype(np.float32)
    row = np.concatenate([tex, tex[:, ::-1]] * (n // (2 * tex.shape[1]) + 1), axis=1)[:, :n]
    big = np.concatenate([row, row[::-1]] * (n // (2 * row.shape[0]) + 1), axis=0)[:n]
    h = w = size
    # a smooth-edged fault-like field: ±0.5 px parallel to a line through the centre
    angle = np.deg2rad(30.0)

    def fn(cols, rows):
        dist = (cols - w / 2) * np.cos(angle) - (rows - h / 2) * np.sin(angle)
        s = 0.5 * np.tanh(dist / 20.0)
        return s * np.sin(angle), s * np.cos(angle)

    profile = dict(driver="GTiff", width=w, height=h, count=1, dtype="uint16",
                   crs="EPSG:32611", transform=from_origin(400000, 4000000, 10, 10),
                   tiled=True, blockxsize=512, blockysize=512, compress="deflate", nodata=0)
    paths = out / "pre.tif", out / "post.tif"
    with rasterio.open(paths[0], "w", **profile) as pre, rasterio.open(paths[1], "w",
                                                                       **profile) as post:
        for r in range(0, h, block):
            for c in range(0, w, block):
                win = Window(c, r, min(block, w - c), min(block, h - r))
                sub = big[r + 32:r + 32 + win.height, c + 32:c + 32 + win.width]
                pre.write(np.clip(sub, 1, 65535).astype(np.uint16), 1, window=win)

                def local(cols, rows, r=r, c=c):
                    return fn(cols + c, rows + r)

                # only this block's neighbourhood (displacements are < 1 px)
                sub_big = big[r:r + win.height + 64, c:c + win.width + 64]
                moved, _ = resample_post(sub_big, local, (win.height, win.width),
                                         origin=(32, 32))
                post.write(np.clip(moved, 1, 65535).astype(np.uint16), 1, window=win)
    return paths


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=8192)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--chunk", type=int, default=512)
    p.add_argument("--out", default="/tmp/microflow-scale")
    args = p.parse_args(argv)
    out = Path(args.out)
    t0 = time.monotonic()
    pre, post = make_scene(out, args.size)
    print(f"scene written in {time.monotonic() - t0:.0f} s: {pre}, {post}", flush=True)
    cube = out / "scale.zarr"
    if cube.exists():
        import shutil

        shutil.rmtree(cube)
    microflow = Path(sys.executable).with_name("microflow")
    cmd = ["/usr/bin/time", "-v", str(microflow), "pair", str(pre), str(post), "--out",
           str(cube), "--workers", str(args.workers), "--chunk", str(args.chunk),
           "--tile", str(args.chunk)]
    t0 = time.monotonic()
    res = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.monotonic() - t0
    sys.stderr.write(res.stderr[-3000:])
    if res.returncode != 0:
        return res.returncode
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", res.stderr).group(1))
    worker_rss = [float(x) for x in re.findall(r"worker peak RSS ([0-9.]+) MiB", res.stderr)]
    report = {"size": f"{args.size}x{args.size}", "workers": args.workers,
              "chunk": args.chunk, "wall_s": round(wall, 1),
              "mpx_per_s": round(args.size**2 / 1e6 / wall, 3),
              "driver_peak_rss_mib": round(rss_kb / 1024, 1),
              "worker_peak_rss_mib": worker_rss}
    print(json.dumps(report, indent=1))
    (out / "scale_report.json").write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
