"""Prefect flow ``region``: many events (or tiles), each into its own cube; reruns skip
finished work."""

from __future__ import annotations

import json
from pathlib import Path

from prefect import flow, get_run_logger

from .earthquake_response import earthquake_response
from .params import EARTH_SEARCH, check_processing, search_params


def _complete(cube: Path) -> bool:
    """A cube whose every pair has all its blocks written."""
    from pipeline import cube as cubes

    if not cubes.cube_exists(cube):
        return False
    ds = cubes.open_cube(cube)
    if "valid" not in ds or ds.sizes.get("pair", 0) == 0:
        return False
    nb = ds.valid.data.numblocks
    return all(len(cubes.done_blocks(cube, i)) == nb[1] * nb[2] for i in range(nb[0]))


def _marker(out_dir: str | Path, name: str) -> Path:
    return Path(out_dir) / f"{name}.done.json"


def _finished(out_dir: str | Path, name: str) -> bool:
    """The event's run ended (marker written) and every cube it listed is complete
    (an event over several MGRS tiles has one cube per tile)."""
    marker = _marker(out_dir, name)
    if not marker.is_file():
        return False
    cubes = json.loads(marker.read_text()).get("cubes", [])
    return bool(cubes) and all(_complete(Path(c)) for c in cubes)


@flow(name="region")
def region(
    events: list[dict],
    out_dir: str,
    stac_url: str = EARTH_SEARCH,
    collection: str = "sentinel-2-l2a",
    asset: str = "red",
    days_before: float = 60.0,
    days_after: float = 60.0,
    max_cloud: float = 20.0,
    chunk: int = 512,
    tile: int = 512,
    halo: int = 64,
    weights: str | None = None,
    dask_address: str | None = None,
    workers: int = 2,
) -> dict:
    """Process each event of ``events`` into ``<out_dir>/<name>.zarr``.

    Each event is a dict with ``name``, ``event_time`` and ``bbox`` or ``point`` +
    ``radius_km`` (optionally its own ``days_before``/``days_after``/``max_cloud``). All
    are validated before any work starts; finished cubes are skipped on rerun; one failed
    event does not stop the others (it is reported, and the flow fails at the end).
    """
    logger = get_run_logger()
    check_processing(chunk, tile, halo, workers)
    names = [str(e.get("name", "")) for e in events]
    if not events or any(not n or "/" in n for n in names) or len(set(names)) != len(names):
        raise ValueError("events must be a non-empty list with unique, path-safe 'name's")
    for e in events:  # validate all before starting any
        search_params(stac_url=stac_url, collection=collection, asset=asset,
                      event_time=e.get("event_time", ""), bbox=e.get("bbox"),
                      point=e.get("point"), radius_km=e.get("radius_km"),
                      days_before=e.get("days_before", days_before),
                      days_after=e.get("days_after", days_after),
                      max_cloud=e.get("max_cloud", max_cloud))
    results: dict = {"done": [], "skipped": [], "failed": {}}
    for e in events:
        cube = Path(out_dir) / f"{e['name']}.zarr"
        if _finished(out_dir, e["name"]):
            logger.info("%s: finished (%s), skipped", e["name"], _marker(out_dir, e["name"]))
            results["skipped"].append(e["name"])
            continue
        try:
            summary = earthquake_response(
                out=str(cube), event_time=e["event_time"], stac_url=stac_url,
                collection=collection, asset=asset, bbox=e.get("bbox"), point=e.get("point"),
                radius_km=e.get("radius_km"), days_before=e.get("days_before", days_before),
                days_after=e.get("days_after", days_after),
                max_cloud=e.get("max_cloud", max_cloud), chunk=chunk, tile=tile, halo=halo,
                weights=weights, dask_address=dask_address, workers=workers)
            _marker(out_dir, e["name"]).write_text(json.dumps(summary, indent=1))
            results["done"].append(e["name"])
        except Exception as exc:  # keep going; report at the end
            logger.error("%s failed: %s", e["name"], exc)
            results["failed"][e["name"]] = str(exc)
    if results["failed"]:
        raise RuntimeError(f"{len(results['failed'])} event(s) failed: {results['failed']}")
    return results
