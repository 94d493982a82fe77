"""Prefect flow ``region``: many events (or tiles), each into its own cube; reruns skip
finished work. Every pair's STAC Item is listed in the static STAC Catalog
``<out_dir>/catalog.json``."""

from __future__ import annotations

import json
from pathlib import Path

from prefect import flow, get_run_logger

from .earthquake_response import earthquake_response


def _complete(cube: str | Path) -> bool:
    """A cube whose every pair is marked complete (every block written)."""
    from pipeline import cube as cubes

    if not cubes.cube_exists(cube):
        return False
    entries = cubes.pairs(cube)
    return bool(entries) and all(e.complete for e in entries)


def _marker(out_dir: str | Path, name: str) -> str | Path:
    from pipeline.store import join

    return join(out_dir, f"{name}.done.json")


def _finished(out_dir: str | Path, name: str) -> bool:
    """The event's run ended (marker written) and every cube it listed is complete
    (an event over several MGRS tiles has one cube per tile)."""
    from pipeline.store import exists, read_text

    marker = _marker(out_dir, name)
    if not exists(marker):
        return False
    cubes = json.loads(read_text(marker)).get("cubes", [])
    return bool(cubes) and all(_complete(c) for c in cubes)


@flow(name="region")
def region(
    events: list[dict],
    out_dir: str,
    stac_url: str | None = None,
    collection: str | None = None,
    assets: list[str] | None = None,
    days_before: float | None = None,
    days_after: float | None = None,
    max_cloud: float | None = None,
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
    quicklook_dir: str | None = None,
) -> dict:
    """Process each event of ``events`` into ``<out_dir>/<name>.zarr`` (``out_dir``: a
    local folder or an ``s3://bucket/prefix`` URL, where the ``<name>.done.json`` markers
    go too).

    Each event is a dict with ``name``, ``event_time`` and ``bbox`` or ``point`` +
    ``radius_km`` (optionally its own ``days_before``/``days_after``/``max_cloud``). The
    other parameters are ``earthquake_response``'s, shared by all events (None: the
    default of ``pipeline.config``). All events are validated (``RunConfig``) before any
    work starts; finished cubes are skipped on rerun; one failed event does not stop the
    others (it is reported, and the flow fails at the end).
    """
    from pipeline.config import RunConfig
    from pipeline.product_item import catalog_pairs
    from pipeline.store import join, write_text

    logger = get_run_logger()
    names = [str(e.get("name", "")) for e in events]
    if not events or any(not n or "/" in n for n in names) or len(set(names)) != len(names):
        raise ValueError("events must be a non-empty list with unique, path-safe 'name's")
    shared = dict(stac_url=stac_url, collection=collection, days_before=days_before,
                  days_after=days_after, max_cloud=max_cloud, tile=tile, halo=halo,
                  batch_size=batch_size, weights=weights, device=device,
                  flip_average=flip_average, lam=lam, eps=eps,
                  denoise_halo=denoise_halo, max_sigma=max_sigma, edge_margin=edge_margin,
                  ramp=ramp, if_exists=if_exists, dask_address=dask_address, workers=workers,
                  quicklook_dir=quicklook_dir)
    per_event = ("event_time", "bbox", "point", "radius_km", "days_before", "days_after",
                 "max_cloud")
    jobs = []
    for e in events:  # validate all before starting any
        kwargs = {**shared, **{k: e[k] for k in per_event if k in e},
                  "out": str(join(out_dir, f"{e['name']}.zarr"))}
        RunConfig.from_flat(**kwargs, bands=tuple(assets) if assets else None)
        jobs.append((e["name"], {**kwargs, "assets": assets}))
    results: dict = {"done": [], "skipped": [], "failed": {}}
    for name, kwargs in jobs:
        if _finished(out_dir, name):
            logger.info("%s: finished (%s), skipped", name, _marker(out_dir, name))
            results["skipped"].append(name)
            continue
        try:
            summary = earthquake_response(**kwargs)
            catalog_pairs(out_dir, summary["pairs"], summary["quicklooks"])  # STAC Items
            write_text(_marker(out_dir, name), json.dumps(summary, indent=1))
            results["done"].append(name)
        except Exception as exc:  # keep going; report at the end
            logger.error("%s failed: %s", name, exc)
            results["failed"][name] = str(exc)
    if results["failed"]:
        raise RuntimeError(f"{len(results['failed'])} event(s) failed: {results['failed']}")
    return results
