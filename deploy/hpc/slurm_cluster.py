"""Run the MicroFlow earthquake-response flow on a SLURM cluster with dask-jobqueue.

This script is the Dask *scheduler and client*: run it on a login or submit node that
the compute nodes can reach over TCP. It submits N SLURM jobs, each one Dask worker with
one GPU (``--gres=gpu:1``), one thread, and the ``GPU=1`` resource that the pipeline's
tile tasks ask for; it then runs the ``earthquake_response`` flow against that cluster
(``dask_address=cluster.scheduler_address``) and cancels the jobs at the end.

Requirements:
- this package installed in a Python environment on a SHARED file system, visible under
  the same path from the compute nodes (the workers run that same interpreter), plus
  ``pip install dask-jobqueue``;
- ``--out`` on a shared file system too: the workers write the cube's blocks;
- outbound HTTPS from the compute nodes to the STAC API and its assets (Earth Search:
  AWS S3 in us-west-2), or a local STAC mirror given with ``--stac-url``;
- a Prefect API: set PREFECT_API_URL to your Prefect server to see the run in its UI;
  without it Prefect starts a temporary local server for the duration of the run.

Example (Kahramanmaraş 2023, four GPU jobs on partition ``gpu``)::

    python deploy/hpc/slurm_cluster.py --jobs 4 --queue gpu --account myproject \\
        --walltime 02:00:00 --prologue "module load cuda/12.4" \\
        --out /scratch/$USER/cubes/turkey.zarr --event-time 2023-02-06T01:17:00Z \\
        --point 37.04 37.17 --radius-km 15

Add ``--dry-run`` to print the SLURM job script and exit without submitting anything.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    slurm = p.add_argument_group("SLURM jobs (one Dask worker with one GPU per job)")
    slurm.add_argument("--jobs", type=int, default=2, help="number of SLURM jobs (workers)")
    slurm.add_argument("--queue", default=None, help="partition (sbatch -p)")
    slurm.add_argument("--account", default=None, help="account to charge (sbatch -A)")
    slurm.add_argument("--walltime", default="01:00:00", help="per job, HH:MM:SS")
    slurm.add_argument("--job-cpus", type=int, default=8,
                       help="CPUs booked per job (data loading, torch threads); the Dask "
                            "worker itself runs one task at a time")
    slurm.add_argument("--memory", default="32GB", help="memory per job (and worker limit)")
    slurm.add_argument("--gres", default="gpu:1",
                       help="generic resource per job (e.g. gpu:a100:1)")
    slurm.add_argument("--interface", default=None,
                       help="network interface the workers reach the scheduler on "
                            "(e.g. ib0); default: the host's main address")
    slurm.add_argument("--prologue", action="append", default=[],
                       help="shell line run before the worker starts (repeatable), e.g. "
                            "'module load cuda/12.4'")
    slurm.add_argument("--log-directory", default="slurm-logs",
                       help="where the jobs' stdout/stderr go")
    slurm.add_argument("--wait-timeout", type=float, default=1800.0,
                       help="seconds to wait for the first worker to join")
    slurm.add_argument("--dry-run", action="store_true",
                       help="print the job script and exit; submit nothing")

    flow = p.add_argument_group("earthquake_response flow")
    flow.add_argument("--out", help="cube path (.zarr) on a shared file system")
    flow.add_argument("--event-time", help="ISO 8601, e.g. 2023-02-06T01:17:00Z")
    where = flow.add_mutually_exclusive_group()
    where.add_argument("--bbox", type=float, nargs=4, metavar=("W", "S", "E", "N"))
    where.add_argument("--point", type=float, nargs=2, metavar=("LON", "LAT"))
    flow.add_argument("--radius-km", type=float, default=None)
    flow.add_argument("--stac-url", help="default: pipeline.aoi.SEARCH_DEFAULTS")
    flow.add_argument("--collection")
    flow.add_argument("--asset", nargs="+", metavar="A", help="asset name(s)")
    flow.add_argument("--days-before", type=float)
    flow.add_argument("--days-after", type=float)
    flow.add_argument("--max-cloud", type=float)
    flow.add_argument("--tile", type=int)
    flow.add_argument("--halo", type=int)
    flow.add_argument("--ramp", choices=("keep", "offset", "plane"))
    flow.add_argument("--max-sigma", type=float)
    flow.add_argument("--weights", default=None, help="default: best shipped model")
    args = p.parse_args(argv)
    if not args.dry_run:
        missing = [f"--{n.replace('_', '-')}" for n in ("out", "event_time")
                   if getattr(args, n) is None]
        if args.bbox is None and args.point is None:
            missing.append("--bbox or --point")
        if missing:
            p.error("required unless --dry-run: " + ", ".join(missing))
        # every setting checked here, before any SLURM job is submitted
        from pipeline.config import RunConfig

        try:
            RunConfig.from_flat(**flow_settings(args))
        except ValueError as e:
            p.error(str(e))
    return args


def flow_settings(args: argparse.Namespace) -> dict:
    """The flow's settings from the arguments (None: the pipeline's default)."""
    return dict(out=args.out, event_time=args.event_time, stac_url=args.stac_url,
                collection=args.collection, bands=tuple(args.asset) if args.asset else None,
                bbox=args.bbox, point=args.point, radius_km=args.radius_km,
                days_before=args.days_before, days_after=args.days_after,
                max_cloud=args.max_cloud, tile=args.tile, halo=args.halo, ramp=args.ramp,
                max_sigma=args.max_sigma, weights=args.weights)


def make_cluster(args: argparse.Namespace):
    """A ``SLURMCluster`` whose every job is one single-threaded Dask worker on one GPU."""
    from dask_jobqueue import SLURMCluster  # imported here: only needed on the HPC side

    return SLURMCluster(
        # One worker process per job, one thread per worker: one tile task at a time on
        # the job's GPU. `job_cpu` still books more cores for the job, which torch and
        # the COG reads use inside that one task.
        cores=1,
        processes=1,
        job_cpu=args.job_cpus,
        memory=args.memory,
        queue=args.queue,
        account=args.account,
        walltime=args.walltime,
        interface=args.interface,
        # sbatch lines added to each job script.
        job_extra_directives=[f"--gres={args.gres}"],
        # Extra `dask worker` arguments: advertise the GPU, so the tile tasks (annotated
        # resources={"GPU": 1}) run here, one per worker.
        worker_extra_args=["--resources", "GPU=1"],
        job_script_prologue=[
            "export DO_NOT_TRACK=1",
            "export PREFECT_SERVER_ANALYTICS_ENABLED=false",
            *args.prologue,
        ],
        log_directory=args.log_directory,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Set before Prefect is imported (by the flow), and inherited by nothing else.
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

    cluster = make_cluster(args)
    try:
        print("SLURM job script for each worker:\n" + cluster.job_script(), flush=True)
        if args.dry_run:
            return 0
        cluster.scale(jobs=args.jobs)
        # This is the address to give any other run too, e.g.
        #   microflow event ... --dask-address <it>
        print(f"Dask scheduler: {cluster.scheduler_address}", flush=True)

        from distributed import Client

        with Client(cluster) as client:
            print(f"waiting for a first worker (of {args.jobs} jobs queued)...", flush=True)
            client.wait_for_workers(1, timeout=args.wait_timeout)
            # The flow opens its own client to the same scheduler; jobs still queued join
            # as they start, and the pipeline uses whatever workers are connected.
            from flows.earthquake_response import earthquake_response

            settings = flow_settings(args)
            assets = settings.pop("bands")
            summary = earthquake_response(**settings, assets=list(assets) if assets else None,
                                          dask_address=cluster.scheduler_address)
        print(json.dumps(summary, indent=1, default=str))
        return 0
    finally:
        cluster.close()  # cancels the SLURM jobs


if __name__ == "__main__":
    sys.exit(main())
