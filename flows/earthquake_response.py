"""Prefect flow ``earthquake_response``: STAC search → pairs → cubes and quick-looks.

Prefect tasks are coarse (search, process one pair, quick-looks) and run in the flow
process; the tile work inside ``process`` runs as plain Dask tasks on the cluster (a
``LocalCluster`` by default, or the scheduler at ``dask_address``). So no Dask worker
ever runs Prefect code or needs the Prefect API. Processing is resumable: blocks
already in the cube are skipped, so a retried or rerun task only computes what is
missing.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from .params import EARTH_SEARCH, check_processing, search_params


@contextmanager
def dask_client(address: str | None, workers: int):
    """A ``distributed.Client``: to ``address``, or to a new local cluster of processes."""
    from distributed import Client, LocalCluster

    if address:
        client = Client(address, timeout="20s")
        try:
            yield client
        finally:
            client.close()
        return
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        yield client


def _transient(task, task_run, state) -> bool:
    """Retry only what a retry can fix: an unreachable catalogue, not 'no scenes'."""
    from pipeline.search import StacUnavailableError

    try:
        exc = state.result(raise_on_failure=False)
    except Exception:
        return True
    return isinstance(exc, StacUnavailableError | OSError)


@task(name="search", retries=2, retry_delay_seconds=3, retry_condition_fn=_transient,
      cache_policy=NO_CACHE)
def search_task(params):
    from pipeline.search import search_pairs

    plans = search_pairs(params)
    get_run_logger().info("%d pair(s) planned: %s", len(plans),
                          ", ".join(f"{p.pre.id} -> {p.post.id}" for p in plans))
    return plans


@task(name="process-pair", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def process_task(plan, cube: str, params, cfg) -> int:
    """Load, infer (Dask tile tasks), denoise and write one pair; resumable."""
    from model.denoise import LogTVConfig
    from pipeline.event import process_plan

    res = process_plan(plan, Path(cube), params, cfg=cfg, logtv=LogTVConfig(),
                       quicklooks=False)
    return res.pair_index


@task(name="quicklooks", retries=1, cache_policy=NO_CACHE)
def quicklook_task(cube: str, index: int) -> list[str]:
    from pipeline.event import draw_quicklooks

    return [str(p) for p in draw_quicklooks(Path(cube), index)]


@flow(name="earthquake-response")
def earthquake_response(
    out: str,
    event_time: str,
    stac_url: str = EARTH_SEARCH,
    collection: str = "sentinel-2-l2a",
    asset: str = "red",
    bbox: list[float] | None = None,
    point: list[float] | None = None,
    radius_km: float | None = None,
    days_before: float = 60.0,
    days_after: float = 60.0,
    max_cloud: float = 20.0,
    chunk: int = 512,
    tile: int = 512,
    halo: int = 64,
    weights: str | None = None,
    dask_address: str | None = None,
    workers: int = 2,
    quicklooks: bool = True,
) -> dict:
    """Displacement cube(s) for one event.

    Args:
        out: cube path (``.zarr``); several MGRS tiles give ``<stem>_<tile>.zarr``.
        event_time: ISO 8601 (UTC if no zone).
        bbox: ``[W, S, E, N]`` degrees, or ``point`` ``[lon, lat]`` with ``radius_km``.
        days_before, days_after: search windows (days); max_cloud: percent.
        chunk, tile, halo: Dask/cube chunk, model tile core and context (pixels).
        weights: shipped model name or ``.safetensors`` path (default: best shipped).
        dask_address: ``tcp://host:port`` of an existing scheduler (default: local).
        workers: local cluster size when no address is given.

    Returns a summary: cube paths, pair indices and ids, quick-looks, seconds.
    """
    from pipeline.event import cube_path_for
    from pipeline.infer import InferenceConfig

    params = search_params(stac_url=stac_url, collection=collection, asset=asset,
                           event_time=event_time, bbox=bbox, point=point, radius_km=radius_km,
                           days_before=days_before, days_after=days_after, max_cloud=max_cloud)
    check_processing(chunk, tile, halo, workers)
    if not str(out).strip():
        raise ValueError("out (the cube path) is required")
    cfg = InferenceConfig(chunk=chunk, tile=tile, halo=halo, weights=weights)
    logger = get_run_logger()
    t0 = time.monotonic()
    plans = search_task(params)
    summary: dict = {"cubes": [], "pairs": [], "quicklooks": []}
    with dask_client(dask_address, workers) as client:
        logger.info("Dask scheduler %s with %d worker(s)", client.scheduler.address,
                    len(client.scheduler_info()["workers"]))
        for plan in plans:
            cube = str(cube_path_for(Path(out), plan, len(plans)))
            index = process_task(plan, cube, params, cfg)
            summary["cubes"].append(cube)
            summary["pairs"].append({"cube": cube, "pair": index, "pre_id": plan.pre.id,
                                     "post_id": plan.post.id, "grid": plan.pre.grid_key})
            if quicklooks:
                summary["quicklooks"].extend(quicklook_task(cube, index))
    summary["seconds"] = round(time.monotonic() - t0, 1)
    logger.info("done: %s", summary)
    return summary


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(earthquake_response(**json.loads(sys.argv[1])), indent=1))
