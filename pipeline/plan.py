"""The processing plan: which scenes, on which grid. Pure metadata, no pixels."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class SearchParams:
    """What the user asked the catalogue for.

    ``bbox`` is ``(west, south, east, north)`` in degrees (EPSG:4326); ``event_time`` is
    timezone-aware (UTC if none given); windows are in days; ``max_cloud`` in percent.
    """

    stac_url: str
    collection: str
    asset: str
    bbox: tuple[float, float, float, float]
    event_time: datetime
    days_before: float
    days_after: float
    max_cloud: float

    def as_attrs(self) -> dict[str, str | float]:
        """Flat, JSON-able form for cube attributes."""
        return {
            "search_stac_url": self.stac_url,
            "search_collection": self.collection,
            "search_asset": self.asset,
            "search_bbox": list(self.bbox),
            "search_event_time": self.event_time.isoformat(),
            "search_days_before": self.days_before,
            "search_days_after": self.days_after,
            "search_max_cloud": self.max_cloud,
        }


@dataclass(frozen=True)
class Scene:
    """One STAC item chosen for processing.

    ``item`` is the item as a dict (what ``stackstac.stack`` is given); ``epsg`` the code
    of its native projected grid; ``grid_key`` identifies that grid (e.g. the MGRS tile)
    so that pre and post can be matched on it; ``cloud`` in percent (None if unknown).
    """

    id: str
    datetime: datetime
    epsg: int
    grid_key: str
    cloud: float | None
    item: dict = field(repr=False, hash=False, compare=False)


@dataclass(frozen=True)
class PairPlan:
    """A pre/post pair on one native grid, and the area to process on it.

    ``bounds`` is ``(xmin, ymin, xmax, ymax)`` in the grid's CRS (metres), snapped to
    the pixel grid; ``resolution`` in metres.
    """

    pre: Scene
    post: Scene
    asset: str
    epsg: int
    bounds: tuple[float, float, float, float]
    resolution: float
