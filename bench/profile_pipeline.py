"""Profile of the pipeline, not the model alone: per-stage time of a block, and where a
whole ``process_pair`` run on a local Dask cluster spends its time.

Run::

    .venv/bin/python -m bench.profile_pipeline --size 2560 --blocks 3 --out /tmp/profile

1. **Per block** (``--blocks`` blocks near the scene centre, one thread of this process,
   as a Dask worker runs them):
   each stage of the two pipeline stages timed with this thread's CPU time (user, system)
   and minor page faults (``getrusage(RUSAGE_THREAD)``), in order: read (the block with
   its halo from the GeoTIFFs, through the pipeline's loader), normalise, correlator
   start, network, sharpening, σ, input flags, write (``cube.write_block``), halo read
   (the stored field and σ with the log-TV halo, from the cube), log-TV, flags. The first
   block is a warm-up and is left out of the means.
2. **Dask** (``--dask``): ``process_pair`` on the whole scene with ``--workers`` worker
   processes, under ``distributed.get_task_stream``: compute time per task kind,
   transfer time between workers, each worker's CPU time (user, system) and minor page
   faults over the run, and the overhead: ``workers × wall`` minus the summed compute time
   (scheduling, serialisation, transfers, idle workers, the driver's steps between the
   stages).

The scene is ``pipeline.benchmark_scale``'s (reused when it exists). Figures go to
``OUT/profile.json`` and a table to stdout.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np


def _usage() -> np.ndarray:
    r = resource.getrusage(resource.RUSAGE_THREAD)
    return np.array([time.perf_counter(), r.ru_utime, r.ru_stime, r.ru_minflt], float)


class Stages:
    """Wall, user, system seconds and minor faults per named stage, per block."""

    def __init__(self) -> None:
        self.rows: list[dict[str, np.ndarray]] = []
        self.current = -1

    def block(self) -> None:
        self.rows.append({})
        self.current = len(self.rows) - 1

    def __call__(self, name: str, fn):
        a = _usage()
        out = fn()
        row = self.rows[self.current]
        row[name] = row.get(name, 0) + (_usage() - a)
        return out

    def means(self) -> dict[str, dict[str, float]]:
        """Per stage, the mean over the blocks after the first (a warm-up)."""
        rows = self.rows[1:] if len(self.rows) > 1 else self.rows
        out = {}
        for name in rows[0]:
            v = np.mean([r[name] for r in rows], axis=0)
            out[name] = {"wall_s": round(v[0], 3), "user_s": round(v[1], 3),
                         "system_s": round(v[2], 3), "minor_faults": int(v[3])}
        return out


def per_block(pre: Path, post: Path, out: Path, n_blocks: int, bf16: bool | None = None
              ) -> dict:
    """Part 1 (see the module docstring); ``bf16``: the network's autocast, None = as the
    pipeline decides (``model.precision.use_bf16``)."""
    import torch

    from model.correlator_start import model_start
    from model.inference import get_model
    from model.normalize import normalize
    from model.precision import use_bf16
    from model.sharpen import sharpen_field
    from model.uncertainty import sigma_features
    from pipeline import cube
    from pipeline.config import RunConfig
    from pipeline.denoise import denoise_block
    from pipeline.flags import final_codes, input_codes
    from pipeline.geotiff import load_geotiff_pair
    from pipeline.graph import scene_stats

    torch.set_num_threads(1)
    cfg = RunConfig.from_flat(out=str(out / "profile.zarr")).resolved()
    tile, halo, dhalo = cfg.tiling.tile, cfg.tiling.halo, cfg.denoise.halo
    margin = cfg.confidence.edge_margin
    pair, _ = load_geotiff_pair(pre, post, (1,), tile)
    h, w = pair.sizes["y"], pair.sizes["x"]
    stats = scene_stats(pair)[0]
    net = get_model(None, torch.device("cpu"))
    bf16 = use_bf16(torch.device("cpu")) if bf16 is None else bf16
    st = tuple((torch.tensor(m), torch.tensor(s)) for m, s in stats)
    path = out / "profile.zarr"
    if path.exists():
        import shutil

        shutil.rmtree(path)
    cube.create_cube(path, x=pair.x.values, y=pair.y.values, crs=pair.rio.crs, chunk=tile,
                     attrs={})
    index = cube.add_pair(path, pre_time=None, post_time=None, pre_id="pre", post_id="post")
    nbi, nbj = -(-h // tile), -(-w // tile)
    centre = [(nbi // 2 + di, nbj // 2 + dj) for di in (0, -1, 1) for dj in (0, -1, 1)]
    todo = [(i, j) for i, j in centre if 0 < i < nbi - 1 and 0 < j < nbj - 1][:n_blocks + 1]
    core = (slice(halo, halo + tile), slice(halo, halo + tile))  # of a grown interior block
    s = Stages()
    for i, j in todo:
        s.block()
        r0, c0 = i * tile, j * tile
        gr = slice(r0 - halo, r0 + tile + halo)
        gc = slice(c0 - halo, c0 + tile + halo)
        a, b = s("read", lambda gr=gr, gc=gc: (
            pair["pre"].data[0, gr, gc].compute(scheduler="sync"),
            pair["post"].data[0, gr, gc].compute(scheduler="sync")))
        ta = torch.from_numpy(np.ascontiguousarray(a, np.float32))[None, None]
        tb = torch.from_numpy(np.ascontiguousarray(b, np.float32))[None, None]
        pre_n, post_n = s("normalise", lambda ta=ta, tb=tb: (normalize(ta, st[0]),
                                                              normalize(tb, st[1])))
        with torch.no_grad():
            init = s("correlator start", lambda ta=ta, tb=tb: model_start(net, ta, tb))

            def network(ta=ta, tb=tb, init=init):
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    return net(ta, tb, stats=st, init=init)

            flows = s("network", network)
            flow, prev = flows[-1].float(), flows[-2].float()
            sharp = s("sharpening", lambda pre_n=pre_n, post_n=post_n, flow=flow:
                      sharpen_field(pre_n, post_n, flow))
            prev = prev + (sharp - flow)
            sig = s("sigma", lambda pre_n=pre_n, post_n=post_n, sharp=sharp, prev=prev:
                    net.sigma_model.predict(sigma_features(pre_n, post_n, sharp, prev,
                                                           net.config.warp_mode)))
        field = sharp[0].numpy()
        sigma = np.concatenate([sig[0].numpy()] * 2)

        def flags_in(a=a, b=b, field=field, sigma=sigma, r0=r0, c0=c0):
            stack = np.stack([a, b, np.zeros_like(a)]).astype(np.float32)
            codes = input_codes(stack, n_images=2, margin=margin)[0]
            return final_codes(codes[core], field[:, core[0], core[1]],
                               sigma[:, core[0], core[1]], row0=r0, col0=c0, shape=(h, w),
                               max_sigma=cfg.confidence.max_sigma)

        codes = s("input flags", flags_in)
        ok = codes == cube.MEASURED
        raw = np.where(ok, field[:, core[0], core[1]], np.nan).astype(np.float32)
        data = {"east_raw": raw[0] * 10, "north_raw": -raw[1] * 10,
                "east_sigma": sigma[0][core] * 10, "north_sigma": sigma[1][core] * 10}
        s("write", lambda r0=r0, c0=c0, data=data: cube.write_block(path, index, r0, c0,
                                                                    data))
    # the finish stage reads what the measure stage wrote, with the log-TV halo
    stored = cube.open_cube(path).isel(pair=index)
    scale = (("east_raw", 10.0), ("north_raw", -10.0), ("east_sigma", 10.0),
             ("north_sigma", 10.0))  # m back to px (10 m pixels)
    for k, (i, j) in enumerate(todo):
        if k == 0:
            continue  # the warm-up block: its neighbours are not all written
        s.current = k
        r0, c0 = i * tile, j * tile
        gr = slice(r0 - dhalo, r0 + tile + dhalo)
        gc = slice(c0 - dhalo, c0 + tile + dhalo)
        stack = s("halo read", lambda gr=gr, gc=gc: np.stack([
            stored[v].data[gr, gc].compute(scheduler="sync") / f for v, f in scale
        ]).astype(np.float32))
        den = s("log-TV", lambda stack=stack: denoise_block(stack, cfg=cfg.denoise.logtv()))
        s("finish flags", lambda stack=stack, den=den: np.where(np.isfinite(stack[:2]), den,
                                                                np.nan))
    return {"tile": tile, "halo": halo, "logtv_halo": dhalo, "blocks": len(todo) - 1,
            "bf16": bf16, "stages": s.means()}


def _worker_usage() -> list[float]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return [r.ru_utime, r.ru_stime, float(r.ru_minflt), r.ru_maxrss / 1024]


def dask_run(pre: Path, post: Path, out: Path, workers: int) -> dict:
    """Part 2 (see the module docstring)."""
    import shutil

    from dask.utils import key_split
    from distributed import get_task_stream

    from pipeline.cluster import dask_client
    from pipeline.config import ClusterConfig, RunConfig
    from pipeline.process import geotiff_source, process_pair

    cfg = RunConfig.from_flat(workers=workers, quicklooks=False, out=str(out / "profile-dask.zarr"))
    cube_path = out / "profile-dask.zarr"
    shutil.rmtree(cube_path, ignore_errors=True)
    source = geotiff_source(pre, post, cfg)
    with dask_client(ClusterConfig(workers=workers), pixels=1 << 40) as client:
        before = client.run(_worker_usage)
        t0 = time.perf_counter()
        with get_task_stream(client) as ts:
            process_pair(source, cfg, client=client, out=cube_path, progress=False)
        wall = time.perf_counter() - t0
        after = client.run(_worker_usage)
    kinds: dict[str, dict[str, float]] = {}
    transfer = 0.0
    for rec in ts.data:
        kind = key_split(rec["key"])
        for ss in rec["startstops"]:
            d = ss["stop"] - ss["start"]
            if ss["action"] == "compute":
                k = kinds.setdefault(kind, {"tasks": 0, "compute_s": 0.0})
                k["tasks"] += 1
                k["compute_s"] += d
            elif ss["action"] == "transfer":
                transfer += d
    compute = sum(k["compute_s"] for k in kinds.values())
    usage = {addr: [round(a - b, 2) for a, b in zip(after[addr][:3], before[addr][:3],
                                                     strict=True)] + [round(after[addr][3])]
             for addr in after}
    shutil.rmtree(cube_path, ignore_errors=True)
    return {"workers": workers, "wall_s": round(wall, 1), "compute_s": round(compute, 1),
            "transfer_s": round(transfer, 1),
            "overhead_s": round(workers * wall - compute, 1),
            "overhead_fraction": round(1 - compute / (workers * wall), 3),
            "tasks": {k: {"tasks": v["tasks"], "compute_s": round(v["compute_s"], 1)}
                      for k, v in sorted(kinds.items(), key=lambda kv: -kv[1]["compute_s"])},
            "worker_user_system_minflt_peakmib": usage}


def _reexec_with_allocator(allocator: str, argv: list[str]) -> None:
    """Restart this process with the glibc settings of ``allocator`` (glibc reads them at
    start) unless it already has them; ``MICROFLOW_ALLOCATOR`` tells the workers."""
    import os

    from pipeline.cluster import ALLOCATOR_ENV

    want = dict(ALLOCATOR_ENV) if allocator == "tuned" else {
        "MALLOC_TRIM_THRESHOLD_": "65536", "MICROFLOW_ALLOCATOR": "dask"}
    if all(os.environ.get(k) == v for k, v in want.items()):
        return
    env = {**os.environ, **want}
    if allocator == "dask":
        for k in ALLOCATOR_ENV:
            if k != "MALLOC_TRIM_THRESHOLD_":
                env.pop(k, None)
    os.execve(sys.executable, [sys.executable, "-m", "bench.profile_pipeline", *argv], env)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=2560, help="scene side, px (default 2560)")
    p.add_argument("--blocks", type=int, default=3,
                   help="blocks timed per stage after one warm-up block (default 3)")
    p.add_argument("--dask", action="store_true", help="also profile a whole process_pair")
    p.add_argument("--workers", type=int, default=2, help="Dask workers (default 2)")
    p.add_argument("--bf16", choices=("auto", "on", "off"), default="auto",
                   help="the network's bf16 autocast in the per-block profile: as the "
                        "pipeline decides, or forced (default auto)")
    p.add_argument("--allocator", choices=("tuned", "dask"), default="tuned",
                   help="allocator settings of this process and of the Dask workers: the "
                        "pipeline's (pipeline.cluster.ALLOCATOR_ENV) or Dask's default "
                        "(MALLOC_TRIM_THRESHOLD_=65536) (default tuned)")
    p.add_argument("--out", default="/tmp/microflow-profile",
                   help="folder for the scene and profile.json (default /tmp/microflow-profile)")
    args = p.parse_args(argv)
    _reexec_with_allocator(args.allocator, sys.argv[1:] if argv is None else argv)
    from pipeline.benchmark_scale import _side, make_scene

    out = Path(args.out)
    pre, post = out / "pre.tif", out / "post.tif"
    if not (pre.exists() and post.exists() and _side(pre) == args.size):
        pre, post = make_scene(out, args.size)
    report: dict = {"size": args.size, "allocator": args.allocator}
    if args.blocks:
        # in a thread of its own, as a Dask worker runs its tasks (glibc gives other
        # threads than the main one their own arena)
        import threading

        res: dict = {}
        bf16 = {"auto": None, "on": True, "off": False}[args.bf16]
        t = threading.Thread(target=lambda: res.update(per_block(pre, post, out,
                                                                 args.blocks, bf16)))
        t.start()
        t.join()
        report["per_block"] = res
        print(f"{'stage':18s} {'wall s':>8s} {'user s':>8s} {'sys s':>8s} {'faults':>9s}")
        for name, v in report["per_block"]["stages"].items():
            print(f"{name:18s} {v['wall_s']:8.3f} {v['user_s']:8.3f} {v['system_s']:8.3f} "
                  f"{v['minor_faults']:9d}")
    if args.dask:
        report["dask"] = dask_run(pre, post, out, args.workers)
        print(json.dumps(report["dask"], indent=1))
    (out / "profile.json").write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
