"""Prefect flow ``earthquake_response``: STAC search → pairs → cubes and quick-looks.

Thin: the parameters become one validated ``RunConfig`` (``pipeline.config``), then
coarse Prefect tasks run in the flow process: the search, one ``pipeline.process
.process_pair`` per pair, and the quick-looks. The tile work inside ``process_pair`` runs
as plain Dask tasks on the cluster (a ``LocalCluster`` by default, or the scheduler at
``dask_address``), so no Dask worker runs Prefect code or needs the Prefect API.
Processing is resumable: a retried or rerun task computes only the missing blocks.
Only transient failures (timeouts, HTTP 429/5xx) are retried, with backoff.
"""

from __future__ import annotations

import time
from dataclasses import replace

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE


def _transient(task, task_run, state) -> bool:
    """Retry only what a retry can fix (``pipeline.errors.is_transient``)."""
    from pipeline.errors import is_transient

    try:
        exc = state.result(raise_on_failure=False)
    except Exception as e:
        exc = e
    return isinstance(exc, BaseException) and is_transient(exc)


@task(name="search", retries=2, retry_delay_seconds=[2, 8], retry_condition_fn=_transient,
      cache_policy=NO_CACHE)
def search_task(params):
    from pipeline.search import search_pairs

    plans = search_pairs(params)
    get_run_logger().info("%d pair(s) planned: %s", len(plans),
                          ", ".join(f"{p.pre.id} -> {p.post.id}" for p in plans))
    return plans


@task(name="process-pair", retries=2, retry_delay_seconds=[5, 30],
      retry_condition_fn=_transient, cache_policy=NO_CACHE)
def process_task(plan, cube: str, cfg) -> int:
    """Load, infer (Dask tile tasks), denoise and write one pair; resumable."""
    from distributed import default_client

    from pipeline.process import plan_source, process_pair

    cfg = replace(cfg, output=replace(cfg.output, quicklooks=False))
    return process_pair(plan_source(plan, cfg), cfg, client=default_client(),
                        out=cube).index


@task(name="quicklooks", retries=1, retry_condition_fn=_transient, cache_policy=NO_CACHE)
def quicklook_task(cube: str, index: int, out_dir: str | None = None) -> list[str]:
    from pipeline.product_item import rupture_map_path, write_item
    from pipeline.quicklook import draw_quicklooks

    pngs = [str(p) for p in draw_quicklooks(cube, index, out_dir)]
    write_item(cube, index, quicklooks=pngs, extra=[rupture_map_path(cube, index, out_dir)])
    return pngs


@task(name="stack", retries=1, retry_condition_fn=_transient, cache_policy=NO_CACHE)
def stack_task(cube: str, indices: list[int], quicklooks: bool,
               out_dir: str | None = None) -> dict:
    """The σ-weighted robust stack of a cube's pairs (``pipeline.stack``), quick-looks."""
    from pipeline.stack import draw_stack_quicklooks, stack_cube

    summary = stack_cube(cube, indices)
    summary["quicklooks"] = ([str(p) for p in draw_stack_quicklooks(cube, out_dir)]
                             if quicklooks else [])
    return summary


@flow(name="earthquake-response")
def earthquake_response(
    out: str,
    event_time: str,
    stac_url: str | None = None,
    collection: str | None = None,
    assets: list[str] | None = None,
    bbox: list[float] | None = None,
    point: list[float] | None = None,
    radius_km: float | None = None,
    days_before: float | None = None,
    days_after: float | None = None,
    max_cloud: float | None = None,
    same_orbit: str | None = None,
    pairs: int | None = None,
    tile: int | None = None,
    halo: int | None = None,
    batch_size: int | None = None,
    weights: str | None = None,
    device: str | None = None,
    flip_average: bool | None = None,
    lam: float | None = None,
    eps: float | None = None,
    denoise_halo: int | None = None,
    max_sigma: float | None = None,
    edge_margin: int | None = None,
    ramp: str | None = None,
    if_exists: str | None = None,
    dask_address: str | None = None,
    workers: int | None = None,
    quicklooks: bool = True,
    quicklook_dir: str | None = None,
    rupture_map: bool = True,
    profile_step: float | None = None,
) -> dict:
    """Displacement cube(s) for one event. Every parameter left None takes the default
    of ``pipeline.config`` (written there once); see ``microflow event --help``.

    Args:
        out: cube path (``.zarr``) or ``s3://bucket/prefix/cube.zarr`` (credentials and
            endpoint from the ``AWS_*`` environment: ``pipeline.store``); several MGRS
            tiles give ``<stem>_<tile>.zarr``.
        event_time: ISO 8601 (UTC if no zone).
        assets: STAC asset names (several: estimated each, then combined).
        bbox: ``[W, S, E, N]`` degrees, or ``point`` ``[lon, lat]`` with ``radius_km``.
        days_before, days_after: search windows (days); max_cloud: percent.
        same_orbit: ``prefer``, ``require`` or ``any``: pair scenes of one relative orbit.
        pairs: pairs per grid (the best by days plus cloud); with 2 or more on a grid,
            their stack is written into its cube too (``stack_*`` variables).
        tile, halo: model tile = Dask chunk = cube chunk, and its context (px).
        lam, eps, denoise_halo: log-TV λ, ε and the chunked solve's halo (px).
        max_sigma: low-confidence threshold (px); edge_margin: px near gaps flagged edge.
        ramp: ``keep``, ``offset`` or ``plane``: co-registration ramp removed from east/north.
        if_exists: ``resume`` (default), ``append`` or ``overwrite`` for a pair whose
            inputs or settings changed.
        weights: shipped model name or ``.safetensors`` path (default: best shipped).
        flip_average: average the model over the four flips of each tile (4x the time).
        dask_address: ``tcp://host:port`` of an existing scheduler (default: local).
        workers: local cluster size when no address is given.
        quicklook_dir: local folder for the PNGs (default: beside a local cube, the
            current directory for an ``s3://`` one).
        rupture_map: write the rupture map (trace and slip GeoJSON, figure) per pair;
            profile_step: metres between its profiles (None: 10 pixels).

    Returns a summary: cube paths, pair indices and ids, quick-looks, seconds.
    """
    from pipeline.cluster import dask_client
    from pipeline.config import RunConfig
    from pipeline.process import cube_path_for

    cfg = RunConfig.from_flat(
        out=out, event_time=event_time, stac_url=stac_url, collection=collection,
        bands=tuple(assets) if assets else None, bbox=bbox, point=point, radius_km=radius_km,
        days_before=days_before, days_after=days_after, max_cloud=max_cloud,
        same_orbit=same_orbit, pairs=pairs, tile=tile,
        halo=halo, batch_size=batch_size, weights=weights, device=device,
        flip_average=flip_average, lam=lam, eps=eps,
        denoise_halo=denoise_halo, max_sigma=max_sigma, edge_margin=edge_margin, ramp=ramp,
        if_exists=if_exists, dask_address=dask_address, workers=workers,
        quicklooks=quicklooks, quicklook_dir=quicklook_dir, rupture_map=rupture_map,
        profile_step=profile_step)
    logger = get_run_logger()
    t0 = time.monotonic()
    plans = search_task(cfg.search)
    summary: dict = {"cubes": [], "pairs": [], "quicklooks": [], "stacks": []}
    n_grids = len({p.pre.grid_key for p in plans})  # several pairs of a grid: one cube
    per_cube: dict[str, list[int]] = {}
    with dask_client(cfg.cluster) as client:
        logger.info("Dask scheduler %s with %d worker(s)", client.scheduler.address,
                    len(client.scheduler_info()["workers"]))
        for plan in plans:
            cube = str(cube_path_for(cfg.output.out, plan, n_grids))
            index = process_task(plan, cube, cfg)
            if cube not in per_cube:
                summary["cubes"].append(cube)
            per_cube.setdefault(cube, []).append(index)
            summary["pairs"].append({"cube": cube, "pair": index, "pre_id": plan.pre.id,
                                     "post_id": plan.post.id, "grid": plan.pre.grid_key})
            if cfg.output.quicklooks:
                summary["quicklooks"].extend(
                    quicklook_task(cube, index, cfg.output.quicklook_dir or None))
        for cube, indices in per_cube.items():
            if len(indices) >= 2:
                stacked = stack_task(cube, indices, cfg.output.quicklooks,
                                     cfg.output.quicklook_dir or None)
                summary["stacks"].append({"cube": cube, **stacked})
                summary["quicklooks"].extend(stacked["quicklooks"])
    summary["seconds"] = round(time.monotonic() - t0, 1)
    logger.info("done: %s", summary)
    return summary


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(earthquake_response(**json.loads(sys.argv[1])), indent=1))
