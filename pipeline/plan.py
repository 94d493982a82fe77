"""The processing plan: which scenes, on which grid. Pure metadata, no pixels."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

SAME_ORBIT_MODES = ("prefer", "require", "any")
"""``SearchParams.same_orbit``: ``prefer`` pairs within one relative orbit when a usable
pair there exists (else across orbits, and the log says so), ``require`` only within one
orbit (else no pair), ``any`` the best pair whatever the orbits."""


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
    same_orbit: str = "prefer"
    pairs: int = 1

    def __post_init__(self) -> None:
        if self.same_orbit not in SAME_ORBIT_MODES:
            raise ValueError(f"same_orbit must be one of {', '.join(SAME_ORBIT_MODES)}, got "
                             f"{self.same_orbit!r}")
        if isinstance(self.pairs, bool) or not float(self.pairs).is_integer() \
                or int(self.pairs) < 1:
            raise ValueError(f"pairs must be a whole number >= 1, got {self.pairs!r}")
        object.__setattr__(self, "pairs", int(self.pairs))

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
            "search_same_orbit": self.same_orbit,
            "search_pairs": self.pairs,
        }


@dataclass(frozen=True)
class Scene:
    """One STAC item chosen for processing.

    ``item`` is the item as a dict (what ``stackstac.stack`` is given); ``epsg`` the code
    of its native projected grid; ``grid_key`` identifies that grid (e.g. the MGRS tile)
    so that pre and post can be matched on it; ``cloud`` in percent (None if unknown);
    ``orbit`` the relative orbit (``sat:relative_orbit``, None if unknown); ``view`` the
    viewing and sun angles the item states, degrees (``pipeline.items.view_angles``).
    """

    id: str
    datetime: datetime
    epsg: int
    grid_key: str
    cloud: float | None
    item: dict = field(repr=False, hash=False, compare=False)
    orbit: int | None = None
    view: dict[str, float] = field(default_factory=dict, repr=False, hash=False,
                                   compare=False)


@dataclass(frozen=True)
class PairPlan:
    """A pre/post pair on one native grid, and the area to process on it.

    ``bounds`` is ``(xmin, ymin, xmax, ymax)`` in the grid's CRS (metres), snapped to
    the pixel grid; ``resolution`` in metres. ``pairing``: why this pair was chosen and
    how its scenes were seen (orbits, view and sun angle differences in degrees; JSON-able,
    ``pipeline.search.pairing_record``), for the provenance.
    """

    pre: Scene
    post: Scene
    asset: str
    epsg: int
    bounds: tuple[float, float, float, float]
    resolution: float
    pairing: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
