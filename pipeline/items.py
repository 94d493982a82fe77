"""STAC item parsing: an asset's native pixel grid, the grid's name, the acquisition time,
and where the asset has pixels (footprints, snapping to the pixel grid). Pure metadata.

Times use pystac's parser; grids pystac's projection extension (asset fields first, then
item properties; ``proj:code``, ``proj:epsg``, ``proj:wkt2`` or ``proj:projjson``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime

from pyproj import CRS, Transformer

from .plan import Scene

Bounds = tuple[float, float, float, float]
_SNAP_TOL = 1e-3  # pixel: coordinates this close to a pixel edge are on it


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


def _projection(item: dict, asset: str):
    """pystac's projection extension of ``item``'s ``asset``: asset fields first, then the
    item's properties (``additional_read_properties``)."""
    from pystac import Item
    from pystac.extensions.projection import ProjectionExtension

    parsed = Item.from_dict(item, preserve_dict=True, migrate=False)
    return ProjectionExtension.ext(parsed.assets[asset], add_if_missing=True)


def asset_grid(item: dict, asset: str) -> Grid | None:
    """The grid of ``item``'s ``asset`` from the projection extension (pystac: asset fields
    first, then item properties; ``proj:code``, ``proj:epsg``, ``proj:wkt2`` or
    ``proj:projjson``), or None if incomplete."""
    proj = _projection(item, asset)
    crs = proj.crs_string
    epsg = None
    if crs:
        epsg = (int(crs.split(":", 1)[1]) if crs.upper().startswith("EPSG:")
                else CRS.from_user_input(crs).to_epsg())
    transform, shape = proj.transform, proj.shape
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


def relative_orbit(item: dict) -> int | None:
    """The item's relative orbit number (``sat:relative_orbit``, or the older
    ``sentinel:relative_orbit`` / ``s2:relative_orbit``), None when it says none."""
    p = item.get("properties", {})
    for key in ("sat:relative_orbit", "s2:relative_orbit", "sentinel:relative_orbit"):
        value = p.get(key)
        if value is not None:
            try:
                return int(value)
            except (TypeError, ValueError):
                return None
    return None


VIEW_ANGLES = ("incidence", "view_azimuth", "sun_elevation", "sun_azimuth")
"""The angles :func:`view_angles` reads, degrees."""


def view_angles(item: dict) -> dict[str, float]:
    """The viewing and sun angles ``item`` states, degrees: ``incidence`` (from the view
    extension's ``view:incidence_angle``, else ``view:off_nadir``), ``view_azimuth``
    (``view:azimuth``), ``sun_elevation`` (``view:sun_elevation``, else 90° −
    ``s2:mean_solar_zenith``), ``sun_azimuth`` (``view:sun_azimuth``, else
    ``s2:mean_solar_azimuth``). Angles the item does not state are left out."""
    p = item.get("properties", {})

    def first(*keys: str) -> float | None:
        for key in keys:
            value = p.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool) \
                    and math.isfinite(value):
                return float(value)
        return None

    zenith = first("s2:mean_solar_zenith")
    found = {
        "incidence": first("view:incidence_angle", "view:off_nadir"),
        "view_azimuth": first("view:azimuth"),
        "sun_elevation": first("view:sun_elevation"),
        "sun_azimuth": first("view:sun_azimuth", "s2:mean_solar_azimuth"),
    }
    if found["sun_elevation"] is None and zenith is not None:
        found["sun_elevation"] = 90.0 - zenith
    return {k: v for k, v in found.items() if v is not None}


def angle_differences(a: dict[str, float], b: dict[str, float]) -> dict[str, float | None]:
    """``<angle>_difference_deg``: ``b − a`` for each of :data:`VIEW_ANGLES`, degrees
    (azimuths wrapped to (−180, 180]); None where either does not state the angle."""
    out: dict[str, float | None] = {}
    for name in VIEW_ANGLES:
        d = None
        if name in a and name in b:
            d = b[name] - a[name]
            if name.endswith("azimuth"):
                d = (d + 180.0) % 360.0 - 180.0
                d = 180.0 if d == -180.0 else d
            d = round(d, 6)
        out[f"{name}_difference_deg"] = d
    return out


BOA_OFFSET_DN = 1000.0
"""DN that Sentinel-2 L2A products of processing baseline 04.00 and later add to every
band (``BOA_ADD_OFFSET = -1000``: reflectance = (DN − 1000) / 10 000)."""


def _baseline(value) -> float | None:
    try:
        return float(str(value).strip())
    except (TypeError, ValueError):
        return None


def boa_offset_dn(item: dict, asset: str) -> float:
    """DN to subtract from ``item``'s ``asset`` to put it on the scale of baselines before
    04.00 (reflectance × 10 000): :data:`BOA_OFFSET_DN` when the stored values carry the
    offset, else 0.

    In order: ``earthsearch:boa_offset_applied`` (or ``sentinel:boa_offset_applied``) true
    means Earth Search already removed it (0); else a processing baseline
    (``s2:processing_baseline`` or ``sentinel:processing_baseline``) of 04.00 or later
    means the values carry it (Collection-1 ``sentinel-2-c1-l2a`` items are all 05.xx);
    else the asset's ``raster:bands`` ``offset``/``scale`` (−0.1 / 0.0001 is 1000 DN);
    else 0.
    """
    p = item.get("properties", {})
    applied = p.get("earthsearch:boa_offset_applied", p.get("sentinel:boa_offset_applied"))
    if applied is True:
        return 0.0
    baseline = _baseline(p.get("s2:processing_baseline", p.get("sentinel:processing_baseline")))
    if baseline is not None:
        return BOA_OFFSET_DN if baseline >= 4.0 else 0.0
    if applied is False:
        return 0.0
    bands = item.get("assets", {}).get(asset, {}).get("raster:bands") or [{}]
    offset, scale = bands[0].get("offset"), bands[0].get("scale")
    if isinstance(offset, int | float) and isinstance(scale, int | float) and scale > 0:
        return float(round(-offset / scale, 6)) if offset < 0 else 0.0
    return 0.0


def _scene(item: dict, asset: str) -> Scene | None:
    grid, t = asset_grid(item, asset), _item_time(item)
    if grid is None or t is None:
        return None
    cloud = item.get("properties", {}).get("eo:cloud_cover")
    return Scene(id=item["id"], datetime=t, epsg=grid.epsg, grid_key=grid_key(item, grid),
                 cloud=None if cloud is None else float(cloud), item=item,
                 orbit=relative_orbit(item), view=view_angles(item))


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
