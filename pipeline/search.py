"""STAC search and pairing: which pre and post scenes, on which native grid.

Produces ``PairPlan``s, pure metadata: nothing here reads pixels. Pairing rule, per
native grid (MGRS tile): among scenes under the cloud limit, ``pre`` is the scene before
the event and ``post`` the scene at or after it that minimise

    score = |scene time − event time| in days + CLOUD_DAYS_PER_PERCENT × cloud cover (%)

so a scene one day further from the event wins if it has 2 % less cloud (unknown cloud
counts as 0). Each grid with both a pre and a post becomes one plan, processed on its
own grid; grids lacking one of them are skipped (and logged).
"""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime, timedelta

from pyproj import Transformer

from .plan import PairPlan, Scene, SearchParams

log = logging.getLogger(__name__)

CLOUD_DAYS_PER_PERCENT = 0.5
TIMEOUT_S = 10.0


class StacUnavailableError(RuntimeError):
    """The STAC API could not be reached or is not a STAC API."""


class NoScenesError(ValueError):
    """No usable scene or pair for what was searched."""


class CloudLimitError(NoScenesError):
    """Scenes exist, but all are over the cloud limit."""


class NoPairError(NoScenesError):
    """Scenes exist, but no grid has both a pre-event and a post-event scene."""


def bbox_from_point(lon: float, lat: float, radius_km: float) -> tuple[float, float, float, float]:
    """``(west, south, east, north)`` degrees of a square of half-side ``radius_km``."""
    if not (-180 <= lon <= 180 and -90 < lat < 90) or radius_km <= 0:
        raise ValueError(f"bad point ({lon}, {lat}) or radius {radius_km} km")
    dlat = radius_km / 111.32
    dlon = radius_km / (111.32 * max(math.cos(math.radians(lat)), 1e-6))
    return (lon - dlon, lat - dlat, lon + dlon, lat + dlat)


def describe(params: SearchParams) -> str:
    """What was searched, for error messages."""
    start, end = _interval(params)
    return (f"collection '{params.collection}' at {params.stac_url}, bbox "
            f"{tuple(round(v, 4) for v in params.bbox)}, {start:%Y-%m-%d} to {end:%Y-%m-%d}, "
            f"asset '{params.asset}', cloud cover <= {params.max_cloud}%")


def _interval(params: SearchParams) -> tuple[datetime, datetime]:
    t = params.event_time if params.event_time.tzinfo else params.event_time.replace(tzinfo=UTC)
    return t - timedelta(days=params.days_before), t + timedelta(days=params.days_after)


def _open(url: str):
    from pystac_client import Client

    try:
        return Client.open(url, timeout=TIMEOUT_S)
    except Exception as e:  # connection refused, DNS, HTTP error, not a STAC API
        raise StacUnavailableError(f"cannot reach a STAC API at {url}: {e}") from e


def _search(client, params: SearchParams, cloud_query: bool) -> list[dict]:
    from pystac_client import ConformanceClasses

    start, end = _interval(params)
    kwargs = {}
    if cloud_query and client.conforms_to(ConformanceClasses.QUERY):
        kwargs["query"] = {"eo:cloud_cover": {"lte": params.max_cloud}}
    try:
        search = client.search(collections=[params.collection], bbox=list(params.bbox),
                               datetime=[start, end], max_items=1000, **kwargs)
        return list(search.items_as_dicts())
    except Exception as e:
        raise StacUnavailableError(f"search failed at {params.stac_url}: {e}") from e


def _epsg(item: dict, asset: str) -> int:
    for src in (item["assets"][asset], item["properties"]):
        code = src.get("proj:code")
        if code and str(code).upper().startswith("EPSG:"):
            return int(str(code).split(":")[1])
        if src.get("proj:epsg"):
            return int(src["proj:epsg"])
    raise NoScenesError(f"item {item['id']} has no proj:code / proj:epsg: cannot find its grid")


def _grid(item: dict, asset: str) -> tuple[tuple[float, ...], tuple[int, int]]:
    a = item["assets"][asset]
    p = item["properties"]
    transform = a.get("proj:transform") or p.get("proj:transform")
    shape = a.get("proj:shape") or p.get("proj:shape")
    if not transform or not shape:
        raise NoScenesError(f"item {item['id']} asset '{asset}' has no proj:transform and "
                            "proj:shape: cannot place it on its grid")
    return tuple(float(v) for v in transform[:6]), (int(shape[0]), int(shape[1]))


def _grid_key(item: dict, epsg: int, transform: tuple) -> str:
    p = item["properties"]
    if "mgrs:utm_zone" in p and "mgrs:grid_square" in p:
        return f"{p['mgrs:utm_zone']}{p.get('mgrs:latitude_band', '')}{p['mgrs:grid_square']}"
    for key in ("s2:mgrs_tile", "grid:code"):
        if key in p:
            return str(p[key])
    return f"EPSG:{epsg}:{transform[2]:.0f}:{transform[5]:.0f}"


def _scene(item: dict, asset: str) -> Scene:
    epsg = _epsg(item, asset)
    transform, _ = _grid(item, asset)
    dt = datetime.fromisoformat(item["properties"]["datetime"].replace("Z", "+00:00"))
    cloud = item["properties"].get("eo:cloud_cover")
    return Scene(id=item["id"], datetime=dt, epsg=epsg, grid_key=_grid_key(item, epsg, transform),
                 cloud=None if cloud is None else float(cloud), item=item)


def _score(scene: Scene, event: datetime) -> float:
    days = abs((scene.datetime - event).total_seconds()) / 86400
    return days + CLOUD_DAYS_PER_PERCENT * (scene.cloud or 0.0)


def _bounds(params: SearchParams, pre: Scene, post: Scene, asset: str
            ) -> tuple[tuple[float, float, float, float], float] | None:
    """AOI ∩ both footprints in the grid's CRS, snapped outward to its pixels."""
    (a, _, c, _, e, f), (_h, _w) = _grid(pre.item, asset)
    to_grid = Transformer.from_crs(4326, pre.epsg, always_xy=True)
    x0, y0, x1, y1 = to_grid.transform_bounds(*params.bbox, densify_pts=21)
    xmin, xmax = math.floor((x0 - c) / a) * a + c, math.ceil((x1 - c) / a) * a + c
    ymax, ymin = f + math.floor((y1 - f) / e) * e, f + math.ceil((y0 - f) / e) * e
    for s in (pre, post):
        (sa, _, sc, _, se, sf), (sh, sw) = _grid(s.item, asset)
        xmin, xmax = max(xmin, sc), min(xmax, sc + sa * sw)
        ymin, ymax = max(ymin, sf + se * sh), min(ymax, sf)
    if xmax - xmin < a or ymax - ymin < abs(e):
        return None
    return (xmin, ymin, xmax, ymax), float(a)


def search_pairs(params: SearchParams) -> list[PairPlan]:
    """Search the catalogue and plan one pre/post pair per native grid.

    Raises:
        StacUnavailableError: the API cannot be reached.
        NoScenesError (or CloudLimitError, NoPairError): nothing usable, with a message
            naming what was searched.
    """
    what = describe(params)
    client = _open(params.stac_url)
    items = _search(client, params, cloud_query=True)
    if not items:
        everything = _search(client, params, cloud_query=False)
        if everything:
            items = everything  # the server filtered on cloud: report below
        else:
            raise NoScenesError(f"no scene found for {what}")
    with_asset = [i for i in items if params.asset in i.get("assets", {})]
    if not with_asset:
        names = sorted({k for i in items for k in i.get("assets", {})})
        raise NoScenesError(f"none of the {len(items)} scenes has asset '{params.asset}' "
                            f"(assets: {', '.join(names)}); searched {what}")
    if len(with_asset) < len(items):
        log.info("%d scene(s) without asset '%s' ignored", len(items) - len(with_asset),
                 params.asset)
    scenes = [_scene(i, params.asset) for i in with_asset]
    clear = [s for s in scenes if s.cloud is None or s.cloud <= params.max_cloud]
    if not clear:
        lowest = min(s.cloud for s in scenes if s.cloud is not None)
        raise CloudLimitError(f"{len(scenes)} scene(s) found but all are over the cloud limit "
                              f"of {params.max_cloud}% (lowest cloud cover: {lowest:.1f}%); "
                              f"searched {what}")
    event = params.event_time if params.event_time.tzinfo else params.event_time.replace(
        tzinfo=UTC)
    grids: dict[str, list[Scene]] = {}
    for s in clear:
        grids.setdefault(s.grid_key, []).append(s)
    plans, found, outside = [], [], []
    for key, group in sorted(grids.items()):
        pres = [s for s in group if s.datetime < event]
        posts = [s for s in group if s.datetime >= event]
        found.append(f"{key}: {len(pres)} before, {len(posts)} after")
        if not pres or not posts:
            log.info("grid %s skipped: %d pre-event and %d post-event scene(s)", key,
                     len(pres), len(posts))
            continue
        pre = min(pres, key=lambda s: _score(s, event))
        post = min(posts, key=lambda s: _score(s, event))
        if pre.epsg != post.epsg:
            log.info("grid %s skipped: pre and post in different CRS", key)
            continue
        placed = _bounds(params, pre, post, params.asset)
        if placed is None:
            outside.append(key)
            continue
        bounds, res = placed
        log.info("grid %s: pre %s (%s, cloud %s%%), post %s (%s, cloud %s%%)", key, pre.id,
                 pre.datetime.date(), pre.cloud, post.id, post.datetime.date(), post.cloud)
        plans.append(PairPlan(pre=pre, post=post, asset=params.asset, epsg=pre.epsg,
                              bounds=bounds, resolution=res))
    if not plans:
        if outside:
            raise NoScenesError(f"the AOI lies outside every scene's footprint on grid(s) "
                                f"{', '.join(outside)}; searched {what}")
        raise NoPairError(f"no grid has both a pre-event and a post-event scene "
                          f"({'; '.join(found)}); searched {what}")
    return plans
