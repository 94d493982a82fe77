"""Scale benchmark: a generated 8192x8192 pair through ``microflow pair``.

Run::

    .venv/bin/python -m pipeline.benchmark_scale --size 4096 --workers 2 --out /tmp/scale

It writes the pair as tiled GeoTIFFs (texture: the committed Landsat crop mirrored to
size, moved by a smooth ±0.5 px fault-like field; kept and reused by later runs of the
same size), then in the same run:

- the in-process model (``estimate_displacement(..., return_sigma=True)``: MicroFlow, σ
  and σ-weighted log-TV) on the central 1024² crop, the throughput to compare with;
- ``microflow pair`` on the whole scene in a child process (``--allocator both``: with
  the pipeline's worker allocator settings and with Dask's default, interleaved);

each under ``/usr/bin/time -v``, and prints wall time, Mpx/s, user and system CPU time,
minor page faults, the peak RSS of the driver and of each Dask worker (memory is bounded
by tile size × workers, not by the scene size), the stage times and the ratios.
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


TIME_FIELDS = {"user_s": r"User time \(seconds\): ([0-9.]+)",
               "system_s": r"System time \(seconds\): ([0-9.]+)",
               "minor_faults": r"Minor \(reclaiming a frame\) page faults: (\d+)",
               "peak_rss_kib": r"Maximum resident set size \(kbytes\): (\d+)"}


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[dict, str]:
    """Run ``cmd`` under GNU ``/usr/bin/time -v``: its wall time (s), user and system CPU
    time (s, the process and the children it waited for, e.g. Dask workers), minor page
    faults and peak RSS (KiB), and its stderr. Raises CalledProcessError on failure."""
    import os

    t0 = time.monotonic()
    res = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True,
                         env={**os.environ, **(env or {})})
    wall = time.monotonic() - t0
    if res.returncode != 0:
        sys.stderr.write(res.stderr[-3000:])
        raise subprocess.CalledProcessError(res.returncode, cmd)
    out = {"wall_s": round(wall, 1)}
    for k, rx in TIME_FIELDS.items():
        m = re.search(rx, res.stderr)
        out[k] = float(m.group(1)) if m else None
    return out, res.stderr


BASELINE = """
import sys, time, numpy as np, rasterio
from rasterio.windows import Window
from model.inference import estimate_displacement
pre, post, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
imgs = []
for path in (pre, post):
    with rasterio.open(path) as src:
        r0, c0 = (src.height - n) // 2, (src.width - n) // 2
        imgs.append(src.read(1, window=Window(c0, r0, n, n)))
estimate_displacement(imgs[0][:128, :128], imgs[1][:128, :128], return_sigma=True)  # load
t0 = time.perf_counter()
estimate_displacement(imgs[0], imgs[1], return_sigma=True, nodata=0)
import torch
print("BASELINE_S", time.perf_counter() - t0, "threads", torch.get_num_threads(), file=sys.stderr)
"""


def baseline(pre: Path, post: Path, size: int) -> dict:
    """The model in one process on the central ``size``² crop of the pair: MicroFlow with σ
    and σ-weighted log-TV (``estimate_displacement(..., return_sigma=True)``, default
    tile, all cores), timed after a warm-up call that loads the model."""
    stats, err = timed([sys.executable, "-c", BASELINE, str(pre), str(post), str(size)])
    seconds = float(re.search(r"BASELINE_S ([0-9.]+)", err).group(1))
    return {**stats, "size": size, "compute_s": seconds}


def pipeline_run(pre: Path, post: Path, out: Path, workers: int, chunk: int,
                 allocator: str) -> dict:
    """``microflow pair`` on the pair into a fresh cube, timed; ``allocator`` ``tuned`` (the
    default) or ``dask`` (``MICROFLOW_ALLOCATOR=dask``: Dask's default worker settings)."""
    import shutil

    cube = out / f"scale-{allocator}.zarr"
    if cube.exists():
        shutil.rmtree(cube)
    microflow = Path(sys.executable).with_name("microflow")
    cmd = [str(microflow), "pair", str(pre), str(post), "--out", str(cube), "--workers",
           str(workers), "--chunk", str(chunk), "--tile", str(chunk), "--no-quicklooks",
           "-q"]
    env = {"MICROFLOW_ALLOCATOR": allocator} if allocator == "dask" else {}
    stats, err = timed(cmd, env)
    shutil.rmtree(cube, ignore_errors=True)
    stages = {m.group(1): float(m.group(2)) for m in
              re.finditer(r"pair \d+ (\w+): \d+ blocks in ([0-9.]+) s", err)}
    return {**stats, "allocator": allocator, "stage_s": stages,
            "worker_peak_rss_mib": [float(x) for x in
                                    re.findall(r"worker peak RSS ([0-9.]+) MiB", err)]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=8192, help="scene side, px (default 8192)")
    p.add_argument("--workers", type=int, default=2, help="Dask workers (default 2)")
    p.add_argument("--chunk", type=int, default=512, help="tile = chunk, px (default 512)")
    p.add_argument("--out", default="/tmp/microflow-scale",
                   help="folder for the scene and the cube (default /tmp/microflow-scale)")
    p.add_argument("--baseline-size", type=int, default=1024,
                   help="side of the central crop the in-process model runs on, px "
                        "(default 1024; 0: no baseline)")
    p.add_argument("--allocator", choices=("tuned", "dask", "both"), default="tuned",
                   help="worker allocator settings: the pipeline's, Dask's default, or both "
                        "interleaved (tuned, dask, tuned, dask...) (default tuned)")
    p.add_argument("--rounds", type=int, default=1,
                   help="repetitions of the interleaved runs (default 1)")
    args = p.parse_args(argv)
    out = Path(args.out)
    t0 = time.monotonic()
    pre, post = out / "pre.tif", out / "post.tif"
    if not (pre.exists() and post.exists() and _side(pre) == args.size):
        pre, post = make_scene(out, args.size)
        print(f"scene written in {time.monotonic() - t0:.0f} s: {pre}, {post}", flush=True)
    mpx = args.size ** 2 / 1e6
    runs = []
    for r in range(args.rounds):
        if args.baseline_size:
            b = baseline(pre, post, args.baseline_size)
            b["mpx_per_s"] = round(args.baseline_size ** 2 / 1e6 / b["compute_s"], 4)
            runs.append({"round": r, "run": "in-process model", **b})
            print(json.dumps(runs[-1]), flush=True)
        for alloc in ("tuned", "dask") if args.allocator == "both" else (args.allocator,):
            try:
                res = pipeline_run(pre, post, out, args.workers, args.chunk, alloc)
            except subprocess.CalledProcessError as e:
                return e.returncode
            res["mpx_per_s"] = round(mpx / res["wall_s"], 4)
            res["system_over_user"] = round(res["system_s"] / max(res["user_s"], 1e-9), 3)
            runs.append({"round": r, "run": "microflow pair", **res})
            print(json.dumps(runs[-1]), flush=True)
    report = {"size": f"{args.size}x{args.size}", "workers": args.workers,
              "chunk": args.chunk, "runs": runs, "ratios": _ratios(runs)}
    print(json.dumps(report["ratios"], indent=1))
    (out / "scale_report.json").write_text(json.dumps(report, indent=1))
    return 0


def _side(path: Path) -> int:
    import rasterio

    with rasterio.open(path) as src:
        return src.width if src.width == src.height else -1


def _ratios(runs: list[dict]) -> dict:
    """Per round: each pipeline run's throughput over the in-process model's of the same
    round (the target is >= 0.8), and tuned over dask wall time where both ran."""
    out = {}
    for r in sorted({x["round"] for x in runs}):
        rs = [x for x in runs if x["round"] == r]
        base = next((x for x in rs if x["run"] == "in-process model"), None)
        pipes = {x["allocator"]: x for x in rs if x["run"] == "microflow pair"}
        for k, x in pipes.items():
            if base:
                out[f"round{r}_{k}_over_model"] = round(x["mpx_per_s"] / base["mpx_per_s"], 3)
        if {"tuned", "dask"} <= set(pipes):
            out[f"round{r}_dask_wall_over_tuned"] = round(
                pipes["dask"]["wall_s"] / pipes["tuned"]["wall_s"], 3)
    return out


if __name__ == "__main__":
    sys.exit(main())
