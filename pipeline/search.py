"""STAC search and pairing: which pre and post scenes, on which native grid.

The search is split by job: ``pipeline.aoi`` (the area and time asked for, checked),
``pipeline.stac_api`` (the only network access), ``pipeline.items`` (item parsing: grids,
times, footprints) and this module (the pairing rule and ``search_pairs``).
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
With ``SearchParams.pairs = N`` the N best usable pairs are planned on each grid, in that
order (pairs may share a scene).

Orbits
------
Sentinel-2 sees a place from two or more relative orbits (``sat:relative_orbit``), at
other view angles and through other detectors; a pair across orbits carries the parallax
of every DEM error (metres in relief), detector-boundary steps and other shadows. So the
pairing rule first looks at orbits (``SearchParams.same_orbit``):

- ``prefer`` (the default): only pairs whose two scenes are on one relative orbit, when
  any such pair is usable; else the best pairs across orbits (or of unknown orbit), with
  a warning in the log that says so.
- ``require``: only pairs on one relative orbit; none usable on any grid raises
  ``NoSameOrbitPairError`` (a scene that states no orbit is on none).
- ``any``: the score alone decides.

Each plan's ``pairing`` says why it was chosen, both orbits, and the view and sun angle
differences (``view:*`` or ``s2:mean_solar_*`` properties) for the provenance.

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
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from .aoi import bbox_from_point
from .items import (
    Bounds,
    Grid,
    _aligned,
    _scene,
    angle_differences,
    asset_grid,
    footprint,
    grid_key,
    pair_bounds,
    snap_inward,
    snap_outward,
)
from .plan import SAME_ORBIT_MODES, PairPlan, Scene, SearchParams
from .stac_api import (
    CONNECT_TIMEOUT_S,
    READ_TIMEOUT_S,
    StacUnavailableError,
    _fetch,
    cloud_search_kwargs,
    event_utc,
    open_client,
    search_interval,
)

log = logging.getLogger(__name__)

# re-exported: callers and tests import them from here
__all__ = ["CONNECT_TIMEOUT_S", "READ_TIMEOUT_S", "Grid", "StacUnavailableError", "asset_grid",
           "bbox_from_point", "footprint", "grid_key", "open_client", "snap_inward",
           "snap_outward"]

CLOUD_DAYS_PER_PERCENT = 0.5
NO_SAME_ORBIT = "no usable pair within one relative orbit under the cloud limit"


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


class NoSameOrbitPairError(NoScenesError):
    """``same_orbit=require``, and no grid has a usable pre and post on one relative
    orbit (the message lists the orbits found)."""


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
    if params.same_orbit not in SAME_ORBIT_MODES:
        raise ValueError(f"same_orbit must be one of {', '.join(SAME_ORBIT_MODES)}, got "
                         f"{params.same_orbit!r}")
    if params.pairs < 1:
        raise ValueError(f"pairs must be >= 1, got {params.pairs}")


def describe(params: SearchParams) -> str:
    """What was searched, in one line for log and error messages."""
    start, end = search_interval(params)
    bbox = ", ".join(f"{v:.4f}" for v in params.bbox)
    return (f"searched {params.stac_url} collection '{params.collection}', bbox ({bbox}), "
            f"{start:%Y-%m-%dT%H:%M}Z to {end:%Y-%m-%dT%H:%M}Z, "
            f"cloud cover <= {params.max_cloud:g}%, asset '{params.asset}', "
            f"same_orbit {params.same_orbit}")


def scene_score(scene: Scene, event: datetime, max_cloud: float) -> float:
    """Pairing score in days (lower is better): ``|time − event|`` in days plus
    ``CLOUD_DAYS_PER_PERCENT`` × cloud cover in percent (``max_cloud`` when unknown)."""
    days = abs((scene.datetime - event).total_seconds()) / 86400.0
    cloud = max_cloud if scene.cloud is None else scene.cloud
    return days + CLOUD_DAYS_PER_PERCENT * cloud


@dataclass(frozen=True)
class _Choice:
    pre: Scene
    post: Scene
    bounds: Bounds
    resolution: float
    score: float


def orbit_relation(pre: Scene, post: Scene) -> str:
    """``same`` (one relative orbit), ``different``, or ``unknown`` (an item states none)."""
    if pre.orbit is None or post.orbit is None:
        return "unknown"
    return "same" if pre.orbit == post.orbit else "different"


def _usable(pre: Scene, post: Scene, params: SearchParams, score: float
            ) -> tuple[_Choice | None, str]:
    """The pair as a choice, or None and why it cannot be processed."""
    asset = params.asset
    pre_grid, post_grid = asset_grid(pre.item, asset), asset_grid(post.item, asset)
    assert pre_grid is not None and post_grid is not None
    if not _aligned(pre_grid, post_grid):
        return None, "pre and post pixel grids do not line up"
    if abs(abs(pre_grid.transform[0]) - abs(pre_grid.transform[4])) > 1e-9:
        return None, "pixels are not square"
    bounds = pair_bounds(params.bbox, pre, post, asset)
    if bounds is None:
        return None, "pre and post do not overlap inside the AOI"
    return _Choice(pre, post, bounds, abs(pre_grid.transform[0]), score), ""


def _orbits(scenes: Iterable[Scene]) -> str:
    found = sorted({s.orbit for s in scenes if s.orbit is not None})
    unknown = any(s.orbit is None for s in scenes)
    text = ", ".join(str(o) for o in found)
    return (text + (", " if text and unknown else "") + ("unknown" if unknown else "")) \
        or "none"


def _choose_pairs(pres: list[Scene], posts: list[Scene], params: SearchParams, key: str
                  ) -> tuple[list[_Choice], str, str]:
    """Up to ``params.pairs`` best usable pairs on one grid under the orbit rule (see the
    module docstring): the choices, why there are none (when none), and how they were
    chosen (one sentence, for the log and the provenance)."""
    event = event_utc(params)

    def rank(pair: tuple[Scene, Scene]) -> tuple[float, float, str, str]:
        pre, post = pair
        score = (scene_score(pre, event, params.max_cloud)
                 + scene_score(post, event, params.max_cloud))
        days = abs((post.datetime - pre.datetime).total_seconds())
        return (round(score, 9), days, pre.id, post.id)

    reasons: set[str] = set()
    usable: dict[str, list[_Choice]] = {"same": [], "different": [], "unknown": []}
    n = params.pairs
    for pre, post in sorted(((p, q) for p in pres for q in posts), key=rank):
        relation = orbit_relation(pre, post)
        if params.same_orbit == "require" and relation != "same":
            continue
        choice, why = _usable(pre, post, params, rank((pre, post))[0])
        if choice is None:
            reasons.add(why)
            continue
        usable[relation].append(choice)
        found = (sum(map(len, usable.values())) if params.same_orbit == "any"
                 else len(usable["same"]))
        if found >= n:  # scanned in rank order: the rest can only rank lower
            break
    orbits = f"orbits of the pre scenes: {_orbits(pres)}; of the post scenes: {_orbits(posts)}"
    same, other = usable["same"], sorted(usable["different"] + usable["unknown"],
                                         key=lambda c: rank((c.pre, c.post)))
    if params.same_orbit == "any":
        chosen = sorted(same + other, key=lambda c: rank((c.pre, c.post)))[:n]
        how = "same_orbit=any: the lowest days-plus-cloud scores, whatever the orbits"
    elif same:
        chosen = same[:n]
        how = (f"same_orbit={params.same_orbit}: the lowest days-plus-cloud scores among "
               f"the {len(same)} usable pair(s) within one relative orbit")
        if len(same) < n:
            log.info("grid %s: only %d usable pair(s) within one relative orbit, %d asked "
                     "(%s)", key, len(same), n, orbits)
    elif params.same_orbit == "require":
        why = "; ".join(sorted(reasons))
        reasons_text = f"; same-orbit pairs found unusable: {why}" if why else ""
        return [], f"{NO_SAME_ORBIT} ({orbits}{reasons_text})", ""
    else:  # prefer, and no same-orbit pair
        chosen = other[:n]
        if chosen and all(orbit_relation(c.pre, c.post) == "unknown" for c in chosen):
            how = ("same_orbit=prefer: the items state no relative orbit "
                   "(sat:relative_orbit), so the lowest days-plus-cloud scores")
            log.info("grid %s: %s", key, how)
        elif chosen:
            how = ("same_orbit=prefer: no pair within one relative orbit passes the cloud "
                   f"limit ({orbits}), so across orbits: the lowest days-plus-cloud scores")
            log.warning("grid %s: no pair within one relative orbit passes the cloud limit "
                        "(%s); pairing across orbits, which adds the parallax of DEM "
                        "errors and detector steps to the field", key, orbits)
        else:
            how = ""
    if not chosen:
        return [], "; ".join(sorted(reasons)), ""
    return chosen, "", how


def pairing_record(choice: _Choice, rule: str, how: str, rank: int, of: int,
                   max_cloud: float) -> dict:
    """What the provenance keeps of a chosen pair: both relative orbits, whether they are
    the same, the view and sun angle differences (post − pre, degrees), the score and the
    rank, and why it was chosen (one sentence)."""
    pre, post = choice.pre, choice.post
    relation = orbit_relation(pre, post)
    return {
        "pre_relative_orbit": pre.orbit,
        "post_relative_orbit": post.orbit,
        "same_orbit": None if relation == "unknown" else relation == "same",
        "same_orbit_rule": rule,
        "pre_view_angles_deg": dict(pre.view),
        "post_view_angles_deg": dict(post.view),
        **angle_differences(pre.view, post.view),
        "pairing_score_days": round(choice.score, 6),
        "pairing_rank": rank,
        "pairing_reason": (f"{how}; pair {rank} of {of}: score {choice.score:.2f} d "
                           f"(pre {pre.id}, cloud {_cloud(pre.cloud)}, orbit "
                           f"{_orbit(pre.orbit)}; post {post.id}, cloud {_cloud(post.cloud)}, "
                           f"orbit {_orbit(post.orbit)}; cloud limit {max_cloud:g}%)"),
    }


def _cloud(cloud: float | None) -> str:
    return "unknown" if cloud is None else f"{cloud:g}%"


def _orbit(orbit: int | None) -> str:
    return "unknown" if orbit is None else str(orbit)


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
    no_orbit_pair: list[str] = []
    for key in sorted(grids):
        pres = [s for s in grids[key] if s.datetime < event]
        posts = [s for s in grids[key] if s.datetime >= event]
        if not pres or not posts:
            one_sided.append(f"{key}: before the event {_dates(pres)}; "
                             f"after it {_dates(posts)}")
            log.info("grid %s skipped: %d pre-event and %d post-event scene(s)", key,
                     len(pres), len(posts))
            continue
        choices, why, how = _choose_pairs(pres, posts, params, key)
        if not choices:
            if why.startswith(NO_SAME_ORBIT):
                no_orbit_pair.append(f"{key} {why[len(NO_SAME_ORBIT) + 1:]}")
            else:
                not_overlapping.append(f"{key} ({why})")
            log.info("grid %s skipped: no usable pair (%s)", key, why)
            continue
        for rank, choice in enumerate(choices, start=1):
            pre, post = choice.pre, choice.post
            log.info("grid %s: pre %s (%s, cloud %s%%, orbit %s), post %s (%s, cloud %s%%, "
                     "orbit %s), EPSG:%d, bounds %s at %g m", key, pre.id,
                     pre.datetime.isoformat(), pre.cloud, _orbit(pre.orbit), post.id,
                     post.datetime.isoformat(), post.cloud, _orbit(post.orbit), pre.epsg,
                     choice.bounds, choice.resolution)
            record = pairing_record(choice, params.same_orbit, how, rank, len(choices),
                                    params.max_cloud)
            plans.append(PairPlan(pre=pre, post=post, asset=params.asset, epsg=pre.epsg,
                                  bounds=choice.bounds, resolution=choice.resolution,
                                  pairing=record))
    if plans:
        return plans

    if no_orbit_pair:
        raise NoSameOrbitPairError(f"{NO_SAME_ORBIT}, and same_orbit is require: "
                                   f"{'; '.join(no_orbit_pair)}; {what}")

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
