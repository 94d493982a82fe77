"""STAC items for local COGs, shaped like Earth Search v1 ``sentinel-2-l2a`` items.

``make_item`` writes what the rest of the pipeline reads from a real catalogue: the
acquisition time, the scene cloud cover (``eo:cloud_cover``, percent), the native grid
(``proj:code`` on the item, ``proj:shape`` and ``proj:transform`` on every asset, as the
projection extension v2 spells them), and the MGRS tile (``mgrs:*``). The geometry is
the footprint of the grid in EPSG:4326, so a STAC API answers spatial queries on it.
Grids that cross the antimeridian are not supported.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime

from pyproj import Transformer

COG = "image/tiff; application=geotiff; profile=cloud-optimized"
JPEG = "image/jpeg"
EO = "https://stac-extensions.github.io/eo/v1.1.0/schema.json"
PROJ = "https://stac-extensions.github.io/projection/v2.0.0/schema.json"
MGRS = "https://stac-extensions.github.io/mgrs/v1.0.0/schema.json"
SAT = "https://stac-extensions.github.io/sat/v1.0.0/schema.json"
VIEW = "https://stac-extensions.github.io/view/v1.0.0/schema.json"
EXTENSIONS = [EO, PROJ, MGRS]

# Earth Search v1 asset name -> (Sentinel-2 band, centre wavelength in micrometres)
S2_BANDS: dict[str, tuple[str, float]] = {
    "coastal": ("B01", 0.443),
    "blue": ("B02", 0.490),
    "green": ("B03", 0.560),
    "red": ("B04", 0.665),
    "rededge1": ("B05", 0.704),
    "rededge2": ("B06", 0.740),
    "rededge3": ("B07", 0.783),
    "nir": ("B08", 0.842),
    "nir08": ("B8A", 0.865),
    "nir09": ("B09", 0.945),
    "swir16": ("B11", 1.610),
    "swir22": ("B12", 2.190),
}
_NON_REFLECTANCE_TITLES = {
    "scl": "Scene classification map (SCL)",
    "aot": "Aerosol optical thickness (AOT)",
    "wvp": "Water vapour (WVP)",
    "visual": "True color image",
    "thumbnail": "Thumbnail image",
}

Transform6 = tuple[float, float, float, float, float, float]


def as_transform(transform: Iterable[float]) -> Transform6:
    """The first six affine coefficients ``(a, b, c, d, e, f)`` of a 6-tuple or an
    ``affine.Affine`` (which iterates over nine): ``x = a·col + b·row + c``,
    ``y = d·col + e·row + f``, in CRS units (metres for UTM)."""
    coeffs = [float(v) for v in transform]
    if len(coeffs) not in (6, 9):
        raise ValueError(f"an affine transform has 6 (or 9) coefficients, got {len(coeffs)}")
    return (coeffs[0], coeffs[1], coeffs[2], coeffs[3], coeffs[4], coeffs[5])


def footprint_ring(epsg: int, transform: Iterable[float], shape: Sequence[int],
                   densify: int = 10) -> list[list[float]]:
    """Closed ``[lon, lat]`` ring (degrees, counter-clockwise) of the outer edge of a grid
    of ``shape = (H, W)`` pixels placed by ``transform`` in ``EPSG:epsg``.

    Each edge gets ``densify`` points so that the ring follows the curved image of the
    straight grid edges in longitude/latitude.
    """
    a, b, c, d, e, f = as_transform(transform)
    h, w = int(shape[0]), int(shape[1])
    # pixel-space corners, counter-clockwise on a north-up grid: UL, LL, LR, UR
    corners = [(0.0, 0.0), (0.0, float(h)), (float(w), float(h)), (float(w), 0.0)]
    cols: list[float] = []
    rows: list[float] = []
    for (c0, r0), (c1, r1) in zip(corners, corners[1:] + corners[:1], strict=True):
        for k in range(densify):
            cols.append(c0 + (c1 - c0) * k / densify)
            rows.append(r0 + (r1 - r0) * k / densify)
    xs = [a * col + b * row + c for col, row in zip(cols, rows, strict=True)]
    ys = [d * col + e * row + f for col, row in zip(cols, rows, strict=True)]
    lon, lat = Transformer.from_crs(epsg, 4326, always_xy=True).transform(xs, ys)
    ring = [[float(x), float(y)] for x, y in zip(lon, lat, strict=True)]
    if _signed_area(ring) < 0:  # a south-up grid (e > 0) runs clockwise
        ring.reverse()
    return [*ring, ring[0]]


def _signed_area(ring: list[list[float]]) -> float:
    """Shoelace area of an open ring; positive when counter-clockwise."""
    return 0.5 * sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1)
                     in zip(ring, ring[1:] + ring[:1], strict=True))


def _utc_text(dt: datetime) -> str:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _asset(name: str, href: str, shape: Sequence[int], transform: Transform6) -> dict:
    is_jpeg = href.lower().endswith((".jpg", ".jpeg"))
    asset: dict = {"href": href, "type": JPEG if is_jpeg else COG}
    if name in S2_BANDS:
        band, wavelength = S2_BANDS[name]
        asset["title"] = f"{name.capitalize()} ({band})"
        asset["eo:bands"] = [{"name": band, "common_name": name,
                              "center_wavelength": wavelength}]
        asset["roles"] = ["data", "reflectance"]
    else:
        asset["title"] = _NON_REFLECTANCE_TITLES.get(name, name)
        asset["roles"] = ["thumbnail"] if name == "thumbnail" else (
            ["visual"] if name == "visual" else ["data"])
    asset["proj:shape"] = [int(shape[0]), int(shape[1])]
    asset["proj:transform"] = list(transform)
    return asset


def make_item(item_id: str, dt: datetime, assets: Mapping[str, str], *, epsg: int,
              transform: Iterable[float], shape: Sequence[int], cloud_cover: float | None,
              mgrs: tuple[str, str, str] = ("11", "S", "KU"),
              collection: str = "sentinel-2-l2a", relative_orbit: int | None = None,
              properties: Mapping[str, object] | None = None) -> dict:
    """A STAC 1.1 item dict for local COGs, shaped like an Earth Search v1 item.

    Args:
        item_id: the item id.
        dt: acquisition time; naive times are taken as UTC.
        assets: asset name (Earth Search v1: ``red``, ``nir``, ``scl``, ...) -> href
            (a local absolute path). Every asset shares one grid.
        epsg: EPSG code of the grid's projected CRS (e.g. 32611 for UTM 11N).
        transform: affine ``(a, b, c, d, e, f)`` of the grid (or an ``affine.Affine``),
            in CRS units: pixel size ``a``, ``e`` (``e < 0`` north-up) and upper-left
            corner ``(c, f)``, metres for UTM.
        shape: ``(H, W)``, pixels.
        cloud_cover: scene cloud cover in percent, or None to leave ``eo:cloud_cover``
            out (as some catalogues do).
        mgrs: MGRS tile as ``(utm_zone, latitude_band, grid_square)``, e.g.
            ``("11", "S", "KU")`` for tile 11SKU.
        collection: the collection id.
        relative_orbit: the Sentinel-2 relative orbit (``sat:relative_orbit``, 1-143),
            or None to leave it out.
        properties: more item properties, as a catalogue gives them (e.g.
            ``view:sun_elevation``, ``view:incidence_angle`` in degrees,
            ``s2:processing_baseline``, ``earthsearch:boa_offset_applied``); the view
            and sat extensions are declared when their fields are there.

    Returns:
        The item as a JSON-able dict: geometry and bbox in EPSG:4326 (degrees) from the
        grid's footprint; properties ``datetime``, ``eo:cloud_cover``, ``proj:code``
        (``"EPSG:<epsg>"``) and ``mgrs:*``; per asset ``type``, ``roles``, ``proj:shape``
        and ``proj:transform``.
    """
    coeffs = as_transform(transform)
    if len(shape) != 2 or min(int(n) for n in shape) <= 0:
        raise ValueError(f"shape must be (H, W) with positive sizes, got {shape}")
    ring = footprint_ring(epsg, coeffs, shape)
    lons = [p[0] for p in ring]
    lats = [p[1] for p in ring]
    props: dict = {"datetime": _utc_text(dt)}
    if cloud_cover is not None:
        if not 0.0 <= float(cloud_cover) <= 100.0:
            raise ValueError(f"cloud_cover is a percentage, got {cloud_cover}")
        props["eo:cloud_cover"] = float(cloud_cover)
    props["proj:code"] = f"EPSG:{int(epsg)}"
    props["mgrs:utm_zone"] = int(mgrs[0])
    props["mgrs:latitude_band"] = str(mgrs[1])
    props["mgrs:grid_square"] = str(mgrs[2])
    if relative_orbit is not None:
        if not 1 <= int(relative_orbit) <= 143:
            raise ValueError(f"a Sentinel-2 relative orbit is in 1..143, got {relative_orbit}")
        props["sat:relative_orbit"] = int(relative_orbit)
    props.update(properties or {})
    extensions = list(EXTENSIONS)
    if any(k.startswith("sat:") for k in props):
        extensions.append(SAT)
    if any(k.startswith("view:") for k in props):
        extensions.append(VIEW)
    return {
        "type": "Feature",
        "stac_version": "1.1.0",
        "stac_extensions": extensions,
        "id": item_id,
        "collection": collection,
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "bbox": [min(lons), min(lats), max(lons), max(lats)],
        "properties": props,
        "links": [],
        "assets": {name: _asset(name, href, shape, coeffs) for name, href in assets.items()},
    }


def make_collection(collection_id: str, items: Sequence[dict]) -> dict:
    """A STAC 1.1 collection dict whose spatial and temporal extent cover ``items``
    (the whole Earth and an open interval when there are none)."""
    bboxes = [item["bbox"] for item in items]
    times = sorted(item["properties"]["datetime"] for item in items
                   if item["properties"].get("datetime"))
    if bboxes:
        spatial = [min(b[0] for b in bboxes), min(b[1] for b in bboxes),
                   max(b[2] for b in bboxes), max(b[3] for b in bboxes)]
    else:
        spatial = [-180.0, -90.0, 180.0, 90.0]
    temporal = [times[0], times[-1]] if times else [None, None]
    codes = sorted({item["properties"]["proj:code"] for item in items
                    if "proj:code" in item["properties"]})
    collection = {
        "type": "Collection",
        "stac_version": "1.1.0",
        "stac_extensions": [],
        "id": collection_id,
        "title": collection_id,
        "description": f"{collection_id}: local Cloud-Optimized GeoTIFFs",
        "license": "other",
        "extent": {"spatial": {"bbox": [spatial]}, "temporal": {"interval": [temporal]}},
        "links": [],
    }
    if codes:
        collection["summaries"] = {"proj:code": codes}
    return collection
