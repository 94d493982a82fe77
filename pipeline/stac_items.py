"""STAC items for local COGs, shaped like Earth Search v1 ``sentinel-2-l2a`` items."""

from __future__ import annotations

from datetime import UTC, datetime

from pyproj import Transformer

COG = "image/tiff; application=geotiff; profile=cloud-optimized"
EXTENSIONS = [
    "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
    "https://stac-extensions.github.io/projection/v2.0.0/schema.json",
    "https://stac-extensions.github.io/mgrs/v1.0.0/schema.json",
]


def _footprint(epsg: int, transform: tuple, shape: tuple[int, int]) -> list[list[float]]:
    a, _, c, _, e, f = transform[:6]
    h, w = shape
    xs = [c, c + a * w, c + a * w, c, c]
    ys = [f, f, f + e * h, f + e * h, f]
    to_ll = Transformer.from_crs(epsg, 4326, always_xy=True)
    lon, lat = to_ll.transform(xs, ys)
    return [[float(x), float(y)] for x, y in zip(lon, lat, strict=True)]


def make_item(item_id: str, dt: datetime, assets: dict[str, str], *, epsg: int,
              transform: tuple, shape: tuple[int, int], cloud_cover: float | None,
              mgrs: tuple[str, str, str] = ("11", "S", "KU"),
              collection: str = "sentinel-2-l2a") -> dict:
    """An item dict with ``proj:code``, per-asset ``proj:shape``/``proj:transform``,
    ``eo:cloud_cover`` (percent) and the ``mgrs:*`` tile, for local asset paths.

    ``transform`` is the affine ``(a, b, c, d, e, f)`` of every asset (pixel size ``a``,
    ``e``; upper-left corner ``c``, ``f``) in ``EPSG:epsg``; ``shape`` is ``(H, W)``.
    """
    ring = _footprint(epsg, transform, shape)
    lons = [p[0] for p in ring]
    lats = [p[1] for p in ring]
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    props = {
        "datetime": dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "proj:code": f"EPSG:{epsg}",
        "mgrs:utm_zone": int(mgrs[0]),
        "mgrs:latitude_band": mgrs[1],
        "mgrs:grid_square": mgrs[2],
    }
    if cloud_cover is not None:
        props["eo:cloud_cover"] = float(cloud_cover)
    return {
        "type": "Feature",
        "stac_version": "1.1.0",
        "stac_extensions": EXTENSIONS,
        "id": item_id,
        "collection": collection,
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "bbox": [min(lons), min(lats), max(lons), max(lats)],
        "properties": props,
        "links": [],
        "assets": {
            name: {"href": href, "type": COG, "roles": ["data"],
                   "proj:shape": [int(shape[0]), int(shape[1])],
                   "proj:transform": [float(v) for v in transform[:6]]}
            for name, href in assets.items()
        },
    }


def make_collection(collection_id: str, items: list[dict]) -> dict:
    """A collection whose extent covers ``items``."""
    bboxes = [i["bbox"] for i in items] or [[-180, -90, 180, 90]]
    times = sorted(i["properties"]["datetime"] for i in items) or [None]
    return {
        "type": "Collection",
        "stac_version": "1.1.0",
        "id": collection_id,
        "description": f"{collection_id} (local)",
        "license": "proprietary",
        "extent": {
            "spatial": {"bbox": [[min(b[0] for b in bboxes), min(b[1] for b in bboxes),
                                  max(b[2] for b in bboxes), max(b[3] for b in bboxes)]]},
            "temporal": {"interval": [[times[0], times[-1]]]},
        },
        "links": [],
    }
