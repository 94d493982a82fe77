"""The area and time of interest of an event: checked search parameters, no network.

``search_params`` turns what a user typed (a bbox, or a point and a radius; an ISO time;
windows in days; a cloud limit in percent) into ``SearchParams``, refusing anything that
cannot be searched with one line (``ConfigError``, a ValueError).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

from pyproj import Geod

from .plan import SearchParams

Bounds = tuple[float, float, float, float]
SEARCH_DEFAULTS = {"stac_url": "https://earth-search.aws.element84.com/v1",
                   "collection": "sentinel-2-l2a", "asset": "red", "days_before": 60.0,
                   "days_after": 60.0, "max_cloud": 20.0}
"""The one place the search defaults are written."""


def bbox_from_point(lon: float, lat: float, radius_km: float) -> Bounds:
    """Bbox ``(west, south, east, north)`` in degrees that holds the circle of
    ``radius_km`` kilometres (geodesic, WGS84) around ``(lon, lat)`` degrees.

    Raises ValueError for a point off the Earth, a non-positive radius, or a circle that
    reaches a pole or crosses the antimeridian.
    """
    if not (-180.0 <= lon <= 180.0 and -90.0 < lat < 90.0):
        raise ValueError(f"({lon}, {lat}) is not a longitude, latitude in degrees")
    if not radius_km > 0:
        raise ValueError(f"radius_km must be positive, got {radius_km}")
    geod = Geod(ellps="WGS84")
    azimuths = [k * 2.0 for k in range(180)]  # every 2 degrees
    lons, lats, _ = geod.fwd([lon] * len(azimuths), [lat] * len(azimuths), azimuths,
                             [radius_km * 1000.0] * len(azimuths))
    west, east = min(lons), max(lons)
    south, north = min(lats), max(lats)
    # the widest points of the circle fall between the sampled azimuths: pad by the
    # largest chord sagitta, (1 - cos 1°) of the radius, about 0.02 %
    pad = 1.0 - math.cos(math.radians(1.0))
    west, east = west - (lon - west) * pad, east + (east - lon) * pad
    south, north = south - (lat - south) * pad, north + (north - lat) * pad
    to_pole_m = min(geod.inv(lon, lat, lon, 90.0)[2], geod.inv(lon, lat, lon, -90.0)[2])
    if to_pole_m <= radius_km * 1000.0 or north >= 90.0 or south <= -90.0:
        raise ValueError(f"a {radius_km} km circle around ({lon}, {lat}) reaches a pole")
    if east - west > 180.0 or not (west < lon < east) or west < -180.0 or east > 180.0:
        raise ValueError(f"a {radius_km} km circle around ({lon}, {lat}) crosses the "
                         "antimeridian, which a bbox cannot hold")
    return (west, south, east, north)



def parse_time(value: str | datetime) -> datetime:
    """ISO 8601 (``Z`` allowed) to an aware datetime (UTC if no zone is given)."""
    if isinstance(value, datetime):
        t = value
    else:
        try:
            t = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"event_time {value!r} is not an ISO 8601 date/time") from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def search_params(*, event_time: str | datetime, asset: str | None = None,
                  stac_url: str | None = None, collection: str | None = None,
                  bbox: list[float] | None = None, point: list[float] | None = None,
                  radius_km: float | None = None, days_before: float | None = None,
                  days_after: float | None = None, max_cloud: float | None = None
                  ) -> SearchParams:
    """Checked ``SearchParams`` (degrees, days, percent; None = ``SEARCH_DEFAULTS``);
    ``ConfigError`` (a ValueError) with one line."""
    from .config import ConfigError

    d = SEARCH_DEFAULTS
    asset = d["asset"] if asset is None else asset
    stac_url = d["stac_url"] if stac_url is None else stac_url
    collection = d["collection"] if collection is None else collection
    days_before = d["days_before"] if days_before is None else days_before
    days_after = d["days_after"] if days_after is None else days_after
    max_cloud = d["max_cloud"] if max_cloud is None else max_cloud
    try:
        return _search_params(event_time=event_time, asset=asset, stac_url=stac_url,
                              collection=collection, bbox=bbox, point=point,
                              radius_km=radius_km, days_before=days_before,
                              days_after=days_after, max_cloud=max_cloud)
    except ConfigError:
        raise
    except (ValueError, TypeError) as e:
        raise ConfigError(str(e)) from None


def _search_params(*, event_time, asset, stac_url, collection, bbox, point, radius_km,
                   days_before, days_after, max_cloud) -> SearchParams:
    if not str(stac_url).startswith(("http://", "https://")):
        raise ValueError(f"stac_url must be an http(s) URL, got {stac_url!r}")
    if not str(collection).strip():
        raise ValueError("collection must not be empty")
    if (bbox is None) == (point is None):
        raise ValueError("give exactly one of bbox [W, S, E, N] or point [lon, lat] + radius_km")
    if point is not None:
        if len(point) != 2:
            raise ValueError(f"point must be [lon, lat], got {point}")
        if radius_km is None or radius_km <= 0:
            raise ValueError("point needs a positive radius_km")
        box = bbox_from_point(float(point[0]), float(point[1]), float(radius_km))
    else:
        if len(bbox) != 4:
            raise ValueError(f"bbox must be [W, S, E, N], got {bbox}")
        w, s, e, n = map(float, bbox)
        if not (-180 <= w < e <= 180 and -90 <= s < n <= 90):
            raise ValueError(f"bbox {bbox} is not W < E in [-180, 180] and S < N in "
                             "[-90, 90] (antimeridian not supported)")
        box = (w, s, e, n)
    days_before, days_after, max_cloud = float(days_before), float(days_after), float(max_cloud)
    if not (math.isfinite(days_before) and math.isfinite(days_after)) or days_before < 0 \
            or days_after < 0 or days_before + days_after == 0:
        raise ValueError("days_before and days_after must be >= 0, not both 0")
    if not 0 <= max_cloud <= 100:
        raise ValueError(f"max_cloud is a percentage in [0, 100], got {max_cloud}")
    return SearchParams(stac_url=stac_url, collection=collection, asset=asset, bbox=box,
                        event_time=parse_time(event_time), days_before=days_before,
                        days_after=days_after, max_cloud=max_cloud)
