"""Validation of flow parameters: clear errors before any work starts."""

from __future__ import annotations

from datetime import UTC, datetime

from pipeline.plan import SearchParams

EARTH_SEARCH = "https://earth-search.aws.element84.com/v1"


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


def search_params(*, stac_url: str, collection: str, asset: str, event_time: str | datetime,
                  bbox: list[float] | None = None, point: list[float] | None = None,
                  radius_km: float | None = None, days_before: float = 60.0,
                  days_after: float = 60.0, max_cloud: float = 20.0) -> SearchParams:
    """Checked ``SearchParams`` from flow/CLI parameters (degrees, days, percent)."""
    from pipeline.search import bbox_from_point

    if not str(stac_url).startswith(("http://", "https://")):
        raise ValueError(f"stac_url must be an http(s) URL, got {stac_url!r}")
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
            raise ValueError(f"bbox {bbox} is not W < E in [-180, 180] and S < N in [-90, 90]")
        box = (w, s, e, n)
    if days_before < 0 or days_after < 0 or days_before + days_after == 0:
        raise ValueError("days_before and days_after must be >= 0, not both 0")
    if not 0 <= max_cloud <= 100:
        raise ValueError(f"max_cloud is a percentage in [0, 100], got {max_cloud}")
    return SearchParams(stac_url=stac_url, collection=collection, asset=asset, bbox=box,
                        event_time=parse_time(event_time), days_before=float(days_before),
                        days_after=float(days_after), max_cloud=float(max_cloud))


def check_processing(chunk: int, tile: int, halo: int, workers: int) -> None:
    """Tile, chunk and halo sizes in pixels; worker count."""
    if chunk < 64 or tile < 64:
        raise ValueError(f"chunk and tile must be >= 64 px, got {chunk}, {tile}")
    if not 0 <= halo <= min(chunk, tile) // 2:
        raise ValueError(f"halo must be in [0, min(chunk, tile)/2], got {halo}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
