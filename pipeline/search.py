"""STAC search and pairing: which pre and post scenes, on which native grid.

``search_pairs`` turns ``SearchParams`` into ``PairPlan``s, pure metadata: nothing here
reads pixels. It searches one collection around the event, keeps the items that have the
asset and are under the cloud limit, groups them by native grid (the MGRS tile), and
plans one pair per grid that has a scene on each side of the event.

Pairing rule
------------
Every candidate scene gets a score, in days::

    score = |scene time − event time| (days) + CLOUD_DAYS_PER_PERCENT × cloud cover (%)

with ``CLOUD_DAYS_PER_PERCENT = 0.5``: one day closer to the event is worth 2 % of cloud
cover, so 5 days and 8 % cloud (score 9) beats 10 days and 0 % (score 10). A scene whose
cloud cover is unknown counts as sitting exactly at the cloud limit. ``pre`` scenes are
strictly before the event time, ``post`` scenes at or after it. On each grid the pair is
the (pre, post) with the lowest ``score(pre) + score(post)`` among the usable pairs;
ties go to the smaller total time distance, then to the item ids. A pair is usable when
both scenes have the same CRS, the same pixel size and pixel grids that line up (no
sub-pixel resampling of either image), and their footprints overlap inside the AOI.
When every pair is usable this is simply the best-scoring pre and the best-scoring post.

The area to process (``PairPlan.bounds``) is the AOI bbox projected into the grid's
CRS, snapped outward to the pre image's pixel grid, then cut to the pixels that both the
pre and the post asset cover. An asset's footprint is its grid (``proj:transform`` and
``proj:shape``) cut to the bbox of the item geometry, since a Sentinel-2 tile seen from
the edge of a swath has data on part of its grid only.

Cloud limit: scenes with ``eo:cloud_cover <= max_cloud`` pass. The limit is sent to the
server as a *query* (``{"eo:cloud_cover": {"lte": max_cloud}}``) when the API conforms
to the query extension, else as a CQL2-JSON *filter* when it conforms to filter, else
applied here. Servers drop items without ``eo:cloud_cover`` from a limited search; a
search applied here keeps them (``Scene.cloud = None``). ``rustac serve`` has neither.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pyproj import CRS, Transformer

from .aoi import bbox_from_point
from .plan import PairPlan, Scene, SearchParams

log = logging.getLogger(__name__)

__all__ = ["bbox_from_point"]  # re-exported: it used to live here

CLOUD_DAYS_PER_PERCENT = 0.5
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 20.0
PAGE_SIZE = 100
_SNAP_TOL = 1e-3  # pixel: coordinates this close to a pixel edge are on it

Bounds = tuple[float, float, float, float]


class StacUnavailableError(RuntimeError):
    """The STAC API cannot be reached, answers with an error, or is not a STAC API."""


class NoScenesError(ValueError):
    """Nothing usable for what was searched. The subclasses say why; every message names
    the URL, collection, bbox, time interval, cloud limit and asset searched."""


class EmptySearchError(NoScenesError):
    """The search found no scene at all (no cloud limit applied)."""


class MissingAssetError(NoScenesError):
    """Scenes were found, but none has the asset (the message lists those they have)."""


class CloudLimitError(NoScenesError):
    """Scenes were found, but all are over the cloud limit."""


class NoGridError(NoScenesError):
    """Scenes were found, but none says its grid (``proj:code``/``proj:epsg`` and
    ``proj:transform`` + ``proj:shape``)."""


class NoPairError(NoScenesError):
    """Scenes were found, but no grid has both a pre-event and a post-event scene."""


class AoiOutsideError(NoScenesError):
    """Grids have pre and post scenes, but none overlap each other inside the AOI."""


def check_params(params: SearchParams) -> None:
    """Raise ValueError for a bbox, window or cloud limit that cannot be searched."""
    w, s, e, n = params.bbox
    if not (-180.0 <= w < e <= 180.0 and -90.0 <= s < n <= 90.0):
        raise ValueError(f"bbox {params.bbox} is not (west, south, east, north) in degrees "
                         "with west < east and south < north (antimeridian not supported)")
    if params.days_before < 0 or params.days_after < 0:
        raise ValueError(f"days_before ({params.days_before}) and days_after "
                         f"({params.days_after}) must not be negative")
    if not 0.0 <= params.max_cloud <= 100.0:
        raise ValueError(f"max_cloud is a percentage in [0, 100], got {params.max_cloud}")


def event_utc(params: SearchParams) -> datetime:
    """The event time, timezone-aware (UTC when ``params.event_time`` is naive)."""
    t = params.event_time
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t


def search_interval(params: SearchParams) -> tuple[datetime, datetime]:
    """``[event − days_before, event + days_after]``, both ends included, UTC."""
    t = event_utc(params).astimezone(UTC)
    return t - timedelta(days=params.days_before), t + timedelta(days=params.days_after)


def describe(params: SearchParams) -> str:
    """What was searched, in one line for log and error messages."""
    start, end = search_interval(params)
    bbox = ", ".join(f"{v:.4f}" for v in params.bbox)
    return (f"searched {params.stac_url} collection '{params.collection}', bbox ({bbox}), "
            f"{start:%Y-%m-%dT%H:%M}Z to {end:%Y-%m-%dT%H:%M}Z, "
            f"cloud cover <= {params.max_cloud:g}%, asset '{params.asset}'")


# ---------------------------------------------------------------------------- API
def open_client(url: str, timeout: float | tuple[float, float] = (CONNECT_TIMEOUT_S,
                                                                  READ_TIMEOUT_S)):
    """``pystac_client.Client`` for ``url``, failing fast (``timeout`` seconds, either
    one value or ``(connect, read)``; one retry) with StacUnavailableError naming the URL
    when it cannot be reached or is not a STAC API with item search."""
    from pystac_client import Client, ConformanceClasses
    from pystac_client.stac_api_io import StacApiIO

    try:
        client = Client.open(url, stac_io=StacApiIO(timeout=timeout, max_retries=1))
    except Exception as e:  # refused, timed out, HTTP error, not JSON, not a catalog
        raise StacUnavailableError(f"cannot open a STAC API at {url}: "
                                   f"{type(e).__name__}: {e}") from e
    if not (client.conforms_to(ConformanceClasses.ITEM_SEARCH)
            or client.get_single_link("search") is not None):
        raise StacUnavailableError(f"{url} is a STAC catalog but not a STAC API with item "
                                   "search (no item-search conformance class)")
    return client


def cloud_search_kwargs(conforms: Callable[[Any], bool], max_cloud: float) -> dict:
    """Search arguments that put the cloud limit on the server: a *query* when
    ``conforms(ConformanceClasses.QUERY)``, else a CQL2-JSON *filter* when
    ``conforms(ConformanceClasses.FILTER)``, else none (the limit is applied here)."""
    from pystac_client import ConformanceClasses

    if conforms(ConformanceClasses.QUERY):
        return {"query": {"eo:cloud_cover": {"lte": max_cloud}}}
    if conforms(ConformanceClasses.FILTER):
        return {"filter": {"op": "<=", "args": [{"property": "eo:cloud_cover"}, max_cloud]},
                "filter_lang": "cql2-json"}
    return {}


def _fetch(client, params: SearchParams, **extra: Any) -> list[dict]:
    """All items (dicts, every page) of the search, with ``extra`` search arguments."""
    try:
        search = client.search(collections=[params.collection], bbox=list(params.bbox),
                               datetime=search_interval(params), limit=PAGE_SIZE, **extra)
        return list(search.items_as_dicts())
    except Exception as e:
        raise StacUnavailableError(f"the search failed at {params.stac_url}: "
                                   f"{type(e).__name__}: {e}") from e


# ---------------------------------------------------------------------------- items
@dataclass(frozen=True)
class Grid:
    """An asset's native pixel grid: ``EPSG:epsg``, affine ``(a, b, c, d, e, f)`` in
    metres, ``shape = (H, W)`` pixels."""

    epsg: int
    transform: tuple[float, float, float, float, float, float]
    shape: tuple[int, int]

    @property
    def extent(self) -> Bounds:
        """``(xmin, ymin, xmax, ymax)`` of the grid's outer edge, CRS units."""
        a, _, c, _, e, f = self.transform
        h, w = self.shape
        xs, ys = (c, c + a * w), (f, f + e * h)
        return (min(xs), min(ys), max(xs), max(ys))

    @property
    def north_up(self) -> bool:
        a, b, _, d, e, _ = self.transform
        return b == 0 and d == 0 and a > 0 and e < 0


def _epsg_of(fields: dict) -> int | None:
    code = fields.get("proj:code")
    if isinstance(code, str) and code.upper().startswith("EPSG:"):
        return int(code.split(":", 1)[1])
    if fields.get("proj:epsg") is not None:
        return int(fields["proj:epsg"])
    for key in ("proj:wkt2", "proj:projjson"):
        if fields.get(key):
            return CRS.from_user_input(fields[key]).to_epsg()
    return None


def asset_grid(item: dict, asset: str) -> Grid | None:
    """The grid of ``item``'s ``asset`` from the projection extension (asset fields first,
    then item properties; ``proj:code`` or ``proj:epsg``), or None if incomplete."""
    on_asset, on_item = item["assets"][asset], item.get("properties", {})
    epsg = _epsg_of(on_asset) or _epsg_of(on_item)
    transform = on_asset.get("proj:transform") or on_item.get("proj:transform")
    shape = on_asset.get("proj:shape") or on_item.get("proj:shape")
    if epsg is None or not transform or not shape or len(transform) < 6 or len(shape) != 2:
        return None
    a, b, c, d, e, f = (float(v) for v in transform[:6])
    return Grid(epsg, (a, b, c, d, e, f), (int(shape[0]), int(shape[1])))


def grid_key(item: dict, grid: Grid) -> str:
    """Name of the item's native grid: ``MGRS-<tile>`` from ``mgrs:*``, ``s2:mgrs_tile``
    or ``grid:code``; else ``EPSG:<code>/<transform>`` of the asset's grid."""
    p = item.get("properties", {})
    if p.get("mgrs:utm_zone") is not None and p.get("mgrs:grid_square"):
        return (f"MGRS-{int(p['mgrs:utm_zone']):02d}{p.get('mgrs:latitude_band', '')}"
                f"{p['mgrs:grid_square']}")
    if p.get("s2:mgrs_tile"):
        return f"MGRS-{p['s2:mgrs_tile']}"
    if p.get("grid:code"):
        return str(p["grid:code"])
    return f"EPSG:{grid.epsg}/" + ",".join(f"{v:g}" for v in grid.transform)


def _item_time(item: dict) -> datetime | None:
    from pystac.utils import str_to_datetime

    p = item.get("properties", {})
    if p.get("datetime"):
        t = str_to_datetime(p["datetime"])
    elif p.get("start_datetime") and p.get("end_datetime"):
        start, end = str_to_datetime(p["start_datetime"]), str_to_datetime(p["end_datetime"])
        t = start + (end - start) / 2
    else:
        return None
    return (t.replace(tzinfo=UTC) if t.tzinfo is None else t).astimezone(UTC)


def _scene(item: dict, asset: str) -> Scene | None:
    grid, t = asset_grid(item, asset), _item_time(item)
    if grid is None or t is None:
        return None
    cloud = item.get("properties", {}).get("eo:cloud_cover")
    return Scene(id=item["id"], datetime=t, epsg=grid.epsg, grid_key=grid_key(item, grid),
                 cloud=None if cloud is None else float(cloud), item=item)


def scene_score(scene: Scene, event: datetime, max_cloud: float) -> float:
    """Pairing score in days (lower is better): ``|time − event|`` in days plus
    ``CLOUD_DAYS_PER_PERCENT`` × cloud cover in percent (``max_cloud`` when unknown)."""
    days = abs((scene.datetime - event).total_seconds()) / 86400.0
    cloud = max_cloud if scene.cloud is None else scene.cloud
    return days + CLOUD_DAYS_PER_PERCENT * cloud


# ---------------------------------------------------------------------------- geometry
def _geometry_points(geometry: dict | None) -> list[tuple[float, float]]:
    if not geometry:
        return []
    coords = geometry.get("coordinates", [])
    polygons = coords if geometry.get("type") == "MultiPolygon" else [coords]
    return [(float(p[0]), float(p[1])) for polygon in polygons for ring in polygon[:1]
            for p in ring]


def _intersect(*boxes: Bounds) -> Bounds | None:
    xmin, ymin = max(b[0] for b in boxes), max(b[1] for b in boxes)
    xmax, ymax = min(b[2] for b in boxes), min(b[3] for b in boxes)
    return (xmin, ymin, xmax, ymax) if xmin < xmax and ymin < ymax else None


def footprint(scene: Scene, asset: str) -> Bounds | None:
    """Where ``scene``'s ``asset`` has pixels, ``(xmin, ymin, xmax, ymax)`` in its CRS:
    the grid's extent cut to the bbox of the item geometry (None if they miss)."""
    grid = asset_grid(scene.item, asset)
    assert grid is not None
    points = _geometry_points(scene.item.get("geometry"))
    if not points:
        return grid.extent
    to_grid = Transformer.from_crs(4326, grid.epsg, always_xy=True)
    xs, ys = to_grid.transform([p[0] for p in points], [p[1] for p in points])
    finite = [(x, y) for x, y in zip(xs, ys, strict=True) if math.isfinite(x + y)]
    if not finite:
        return grid.extent
    geom_box = (min(x for x, _ in finite), min(y for _, y in finite),
                max(x for x, _ in finite), max(y for _, y in finite))
    return _intersect(grid.extent, geom_box)


def _snap(value: float, origin: float, step: float, up: bool) -> float:
    """``value`` moved to a pixel edge ``origin + k·step`` (``step > 0``): the next one
    above when ``up``, else below; values within _SNAP_TOL pixel of an edge stay on it."""
    k = (value - origin) / step
    nearest = round(k)
    if abs(k - nearest) < _SNAP_TOL:
        k = nearest
    return origin + step * (math.ceil(k) if up else math.floor(k))


def snap_outward(box: Bounds, grid: Grid) -> Bounds:
    """Smallest box of whole ``grid`` pixels that holds ``box`` (CRS units)."""
    a, _, c, _, e, f = grid.transform
    return (_snap(box[0], c, a, up=False), _snap(box[1], f, -e, up=False),
            _snap(box[2], c, a, up=True), _snap(box[3], f, -e, up=True))


def snap_inward(box: Bounds, grid: Grid) -> Bounds | None:
    """Largest box of whole ``grid`` pixels inside ``box`` (None if it holds none)."""
    a, _, c, _, e, f = grid.transform
    snapped = (_snap(box[0], c, a, up=True), _snap(box[1], f, -e, up=True),
               _snap(box[2], c, a, up=False), _snap(box[3], f, -e, up=False))
    return snapped if snapped[0] < snapped[2] and snapped[1] < snapped[3] else None


def _aligned(pre: Grid, post: Grid) -> bool:
    """Same CRS, same pixel size, and origins a whole number of pixels apart."""
    a, _, c, _, e, f = pre.transform
    pa, _, pc, _, pe, pf = post.transform
    if pre.epsg != post.epsg or not (pre.north_up and post.north_up):
        return False
    if abs(a - pa) > _SNAP_TOL * a or abs(e - pe) > _SNAP_TOL * abs(e):
        return False
    kx, ky = (pc - c) / a, (pf - f) / e
    return abs(kx - round(kx)) < _SNAP_TOL and abs(ky - round(ky)) < _SNAP_TOL


def pair_bounds(aoi: Bounds, pre: Scene, post: Scene, asset: str) -> Bounds | None:
    """Area to process for a pair, ``(xmin, ymin, xmax, ymax)`` in the grid's CRS
    (metres), on the pre pixel grid: the AOI (degrees) projected and snapped outward,
    cut to whole pixels inside both footprints. None when they do not overlap."""
    grid = asset_grid(pre.item, asset)
    assert grid is not None
    to_grid = Transformer.from_crs(4326, grid.epsg, always_xy=True)
    aoi_xy = to_grid.transform_bounds(*aoi, densify_pts=21)
    boxes = [snap_outward(aoi_xy, grid)]
    for scene in (pre, post):
        box = footprint(scene, asset)
        inner = None if box is None else snap_inward(box, grid)
        if inner is None:
            return None
        boxes.append(inner)
    return _intersect(*boxes)


# ---------------------------------------------------------------------------- pairing
@dataclass(frozen=True)
class _Choice:
    pre: Scene
    post: Scene
    bounds: Bounds
    resolution: float


def _choose_pair(pres: list[Scene], posts: list[Scene], params: SearchParams
                 ) -> tuple[_Choice | None, str]:
    """Best usable pair on one grid (see the module docstring), or None and why not."""
    event, asset = event_utc(params), params.asset

    def rank(pair: tuple[Scene, Scene]) -> tuple[float, float, str, str]:
        pre, post = pair
        score = (scene_score(pre, event, params.max_cloud)
                 + scene_score(post, event, params.max_cloud))
        days = abs((post.datetime - pre.datetime).total_seconds())
        return (round(score, 9), days, pre.id, post.id)

    reasons: set[str] = set()
    for pre, post in sorted(((p, q) for p in pres for q in posts), key=rank):
        pre_grid, post_grid = asset_grid(pre.item, asset), asset_grid(post.item, asset)
        assert pre_grid is not None and post_grid is not None
        if not _aligned(pre_grid, post_grid):
            reasons.add("pre and post pixel grids do not line up")
            continue
        if abs(abs(pre_grid.transform[0]) - abs(pre_grid.transform[4])) > 1e-9:
            reasons.add("pixels are not square")
            continue
        bounds = pair_bounds(params.bbox, pre, post, asset)
        if bounds is None:
            reasons.add("pre and post do not overlap inside the AOI")
            continue
        return _Choice(pre, post, bounds, abs(pre_grid.transform[0])), ""
    return None, "; ".join(sorted(reasons))


def _dates(scenes: Iterable[Scene]) -> str:
    def one(s: Scene) -> str:
        cloud = "?" if s.cloud is None else f"{s.cloud:g}"
        return f"{s.datetime:%Y-%m-%d} ({cloud}% cloud)"

    return ", ".join(one(s) for s in sorted(scenes, key=lambda s: s.datetime)) or "none"


def search_pairs(params: SearchParams, *,
                 timeout: float | tuple[float, float] = (CONNECT_TIMEOUT_S, READ_TIMEOUT_S)
                 ) -> list[PairPlan]:
    """Search the STAC API and plan one pre/post pair per native grid.

    Args:
        params: what to search: API URL, collection, asset, bbox (degrees), event time,
            days before and after it, cloud limit (percent, inclusive).
        timeout: seconds for the API to connect and to answer, one value or
            ``(connect, read)``.

    Returns:
        One ``PairPlan`` per grid (MGRS tile) that has a usable pair, sorted by grid: its
        ``bounds`` in the grid's CRS (metres) snapped to the pre pixel grid, inside both
        scenes; ``resolution`` in metres. The rule is in the module docstring.

    Raises:
        ValueError: unusable ``params`` (see ``check_params``).
        StacUnavailableError: the API cannot be reached or is not a STAC API.
        NoScenesError: nothing to process; the subclass says why (``EmptySearchError``,
            ``MissingAssetError``, ``CloudLimitError``, ``NoGridError``, ``NoPairError``,
            ``AoiOutsideError``) and the message names what was searched.
    """
    check_params(params)
    what = describe(params)
    client = open_client(params.stac_url, timeout=timeout)
    server_limit = cloud_search_kwargs(client.conforms_to, params.max_cloud)
    items = _fetch(client, params, **server_limit)
    unlimited: list[dict] | None = None if server_limit else items

    def everything() -> list[dict]:
        """The same search without the cloud limit (searched again only if needed)."""
        nonlocal unlimited
        if unlimited is None:
            unlimited = _fetch(client, params)
        return unlimited

    if not items and not everything():
        raise EmptySearchError(f"no scene found: {what}")
    pool = items or everything()  # all over a server-side limit: still check the asset
    if server_limit:
        log.info("found %d scene(s) under the cloud limit (applied by the server as a %s)",
                 len(items), next(iter(server_limit)))
    else:
        log.info("found %d scene(s); the API has neither query nor filter, so the cloud "
                 "limit is applied here", len(items))

    with_asset = [i for i in pool if params.asset in i.get("assets", {})]
    for item in pool:
        if params.asset not in item.get("assets", {}):
            log.info("scene %s ignored: no asset '%s' (it has: %s)", item.get("id"),
                     params.asset, ", ".join(sorted(item.get("assets", {}))))
    if not with_asset:
        names = sorted({name for i in pool for name in i.get("assets", {})})
        raise MissingAssetError(f"none of the {len(pool)} scene(s) found has asset "
                                f"'{params.asset}'; they have: {', '.join(names)}; {what}")

    scenes = []
    for item in with_asset:
        scene = _scene(item, params.asset)
        if scene is None:
            log.warning("scene %s ignored: no datetime, or asset '%s' has no complete grid "
                        "(proj:code or proj:epsg, proj:transform, proj:shape)",
                        item.get("id"), params.asset)
        else:
            scenes.append(scene)
    if not scenes:
        raise NoGridError(f"none of the {len(with_asset)} scene(s) with asset "
                          f"'{params.asset}' says its grid (proj:code or proj:epsg, "
                          f"proj:transform, proj:shape); {what}")

    clear = [s for s in scenes if s.cloud is None or s.cloud <= params.max_cloud]
    for s in scenes:
        if s not in clear:
            log.info("scene %s ignored: cloud cover %g%% over the limit of %g%%", s.id,
                     s.cloud, params.max_cloud)
    if not clear:
        lowest = min(s.cloud for s in scenes if s.cloud is not None)
        raise CloudLimitError(f"{len(scenes)} scene(s) found, but all are over the cloud "
                              f"limit of {params.max_cloud:g}% (lowest cloud cover: "
                              f"{lowest:g}%); {what}")

    event = event_utc(params)
    grids: dict[str, list[Scene]] = {}
    for s in clear:
        grids.setdefault(s.grid_key, []).append(s)
    plans: list[PairPlan] = []
    one_sided: list[str] = []
    not_overlapping: list[str] = []
    for key in sorted(grids):
        pres = [s for s in grids[key] if s.datetime < event]
        posts = [s for s in grids[key] if s.datetime >= event]
        if not pres or not posts:
            one_sided.append(f"{key}: before the event {_dates(pres)}; "
                             f"after it {_dates(posts)}")
            log.info("grid %s skipped: %d pre-event and %d post-event scene(s)", key,
                     len(pres), len(posts))
            continue
        choice, why = _choose_pair(pres, posts, params)
        if choice is None:
            not_overlapping.append(f"{key} ({why})")
            log.info("grid %s skipped: no usable pair (%s)", key, why)
            continue
        pre, post = choice.pre, choice.post
        log.info("grid %s: pre %s (%s, cloud %s%%), post %s (%s, cloud %s%%), EPSG:%d, "
                 "bounds %s at %g m", key, pre.id, pre.datetime.isoformat(), pre.cloud,
                 post.id, post.datetime.isoformat(), post.cloud, pre.epsg, choice.bounds,
                 choice.resolution)
        plans.append(PairPlan(pre=pre, post=post, asset=params.asset, epsg=pre.epsg,
                              bounds=choice.bounds, resolution=choice.resolution))
    if plans:
        return plans

    if not_overlapping:
        raise AoiOutsideError(f"the AOI is outside every pair of scenes: no pre and post "
                              f"overlap inside it on grid(s) {'; '.join(not_overlapping)}; "
                              f"{what}")
    over = [s for i in everything() if params.asset in i.get("assets", {})
            if (s := _scene(i, params.asset)) is not None
            and s.cloud is not None and s.cloud > params.max_cloud]
    cloudy = f"; over the cloud limit: {_dates(over)}" if over else ""
    raise NoPairError(f"no grid has both a pre-event and a post-event scene under the cloud "
                      f"limit (event {event.isoformat()}; {' | '.join(one_sided)}{cloudy}); "
                      f"{what}")
