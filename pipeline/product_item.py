"""A STAC Item per product: one pair of a cube, written beside the cube as
``<cube stem>_pair<N>.json`` and listed in the cube's ``stac_items`` attribute, so that
catalogues index the results (the inputs' items are ``pipeline.stac_items``'s business).

The Item has the pair's time range (``start_datetime`` pre, ``end_datetime`` post), its
footprint in lon/lat (the grid's outline, densified), ``proj:code``/``proj:shape``/
``proj:transform`` of the grid, ``derived_from`` links to the input items when they came
from STAC, and assets: the cube (``data``), the quick-looks (``overview``), the exports
(COGs or NetCDF, ``data``) and any extra files (e.g. the rupture map GeoJSON) that exist.
Asset hrefs are relative to the Item's folder when both are local or in one bucket,
so the folder can be moved.
:func:`add_to_catalog` adds Items to a static STAC Catalog (``catalog.json``).
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pystac
import xarray as xr
from pystac.extensions.projection import ProjectionExtension
from rasterio.warp import transform_geom

from . import cube
from . import store as stores

MEDIA_TYPES = {".tif": pystac.MediaType.COG, ".tiff": pystac.MediaType.COG,
               ".png": pystac.MediaType.PNG, ".geojson": pystac.MediaType.GEOJSON,
               ".json": pystac.MediaType.JSON, ".nc": pystac.MediaType.NETCDF}
CATALOG_NAME = "catalog.json"
log = logging.getLogger(__name__)
SOFTWARE = "microflow"


def item_path(path: str | Path, pair: int) -> str | Path:
    """Where the Item of ``pair`` of the cube at ``path`` goes: beside the cube."""
    stem = Path(stores.name(path)).stem
    return stores.with_name(path, f"{stem}_pair{int(pair)}.json")


def rupture_map_path(path: str | Path, pair: int, quicklook_dir: str | Path | None = None
                     ) -> Path:
    """Where the rupture map of ``pair`` goes: ``<quick-look stem>_pair<N>_rupture.geojson``
    (``pipeline.quicklook.quicklook_stem``)."""
    from .quicklook import quicklook_stem

    stem = quicklook_stem(path, quicklook_dir)
    return stem.with_name(f"{stem.name}_pair{int(pair)}_rupture.geojson")


def input_item_href(item: Mapping[str, Any], stac_url: str | None = None) -> str | None:
    """An input STAC item's own address: its ``self`` link, else the STAC API's item URL
    (``<stac_url>/collections/<collection>/items/<id>``), else None."""
    for link in item.get("links", []):
        if link.get("rel") == "self" and link.get("href"):
            return str(link["href"])
    if stac_url and item.get("collection") and item.get("id"):
        return f"{stac_url.rstrip('/')}/collections/{item['collection']}/items/{item['id']}"
    return None


def _time(value: np.datetime64) -> datetime | None:
    return None if np.isnat(value) else pd.Timestamp(value).tz_localize(UTC).to_pydatetime()


def _parent(target: str | Path) -> str | Path:
    """The folder (or URL prefix) that holds ``target``."""
    if stores.is_remote(target):
        return str(stores.normalize(target)).rsplit("/", 1)[0]
    return Path(os.path.abspath(target)).parent


def _footprint(ds: xr.Dataset, densify: int = 16) -> dict:
    """The grid's outline (pixel edges) in lon/lat, as a GeoJSON Polygon."""
    x0, y0, x1, y1 = ds.rio.bounds()
    xs = np.linspace(x0, x1, densify + 1)
    ys = np.linspace(y0, y1, densify + 1)
    ring = ([(x, y0) for x in xs] + [(x1, y) for y in ys[1:]] + [(x, y1) for x in xs[::-1][1:]]
            + [(x0, y) for y in ys[::-1][1:]])
    geom = {"type": "Polygon", "coordinates": [[*ring]]}
    out = transform_geom(ds.rio.crs, "EPSG:4326", geom)
    return {"type": "Polygon",
            "coordinates": [[[round(float(v), 7) for v in p] for p in out["coordinates"][0]]]}


def _href(target: str | Path, item_dir: str | Path) -> str:
    """``target`` relative to the Item's folder when both are local or both in one bucket,
    else absolute."""
    if stores.is_remote(target) or stores.is_remote(item_dir):
        a, b = str(stores.normalize(target)), str(stores.normalize(item_dir))
        if stores.is_remote(a) and stores.is_remote(b) and _bucket(a) == _bucket(b):
            return posixpath.relpath(a.split("://", 1)[1], b.split("://", 1)[1])
        return a
    return os.path.relpath(os.path.abspath(target), os.path.abspath(item_dir))


def _bucket(url: str) -> str:
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{rest.split('/', 1)[0]}"


def _asset_key(path: str | Path, used: set[str]) -> str:
    key = Path(str(path)).name.rsplit(".", 1)[0]
    while key in used:
        key += "_"
    used.add(key)
    return key


def build_item(path: str | Path, pair: int, *, quicklooks: Iterable[str | Path] = (),
               exports: Iterable[str | Path] = (), extra: Iterable[str | Path] = ()
               ) -> pystac.Item:
    """The STAC Item of ``pair`` of the cube at ``path`` (not written; see module doc).

    ``quicklooks``, ``exports``, ``extra``: local files to list as assets (PNG: overview;
    other: data); those that do not exist are left out.
    """
    ds = cube.open_cube(path).isel(pair=pair)
    prov = json.loads(str(ds["provenance"].values) or "{}")
    target = item_path(path, pair)
    item_dir = _parent(target)
    geometry = _footprint(ds)
    ring = np.asarray(geometry["coordinates"][0])
    bbox = [float(ring[:, 0].min()), float(ring[:, 1].min()), float(ring[:, 0].max()),
            float(ring[:, 1].max())]
    start, end = _time(ds["pre_time"].values), _time(ds["post_time"].values)
    created = prov.get("created") or datetime.now(UTC).isoformat(timespec="seconds")
    props: dict[str, Any] = {
        "title": f"{SOFTWARE} ground displacement, {ds['pre_id'].values} -> "
                 f"{ds['post_id'].values}",
        "created": created,
        "microflow:pair": int(pair),
        "microflow:pre_id": str(ds["pre_id"].values),
        "microflow:post_id": str(ds["post_id"].values),
        "microflow:pair_key": str(ds["pair_key"].values),
        "microflow:complete": bool(int(ds["complete"].values)),
        "processing:software": {SOFTWARE: str(prov.get("software_version", "unknown"))},
    }
    for name in ("pre_file", "post_file"):
        if name in prov:
            props[f"microflow:{name}"] = prov[name]
    if start is not None and end is not None:
        props.update(start_datetime=pystac.utils.datetime_to_str(start),
                     end_datetime=pystac.utils.datetime_to_str(end))
        when = None
    else:  # STAC needs a time: the processing time, said so
        when = pystac.utils.str_to_datetime(created)
        props["microflow:time_note"] = "acquisition times unknown; datetime is when processed"
    item = pystac.Item(id=f"{Path(stores.name(path)).stem}_pair{int(pair)}", geometry=geometry,
                       bbox=bbox, datetime=when, properties=props)
    proj = ProjectionExtension.ext(item, add_if_missing=True)
    epsg = ds.rio.crs.to_epsg()
    proj.code = f"EPSG:{epsg}" if epsg else None
    if epsg is None:
        proj.wkt2 = ds.rio.crs.to_wkt()
    proj.shape = [int(ds.sizes["y"]), int(ds.sizes["x"])]
    proj.transform = list(ds.rio.transform())[:6]
    for name in ("pre_item", "post_item"):
        if prov.get(name):
            item.add_link(pystac.Link(pystac.RelType.DERIVED_FROM, prov[name],
                                      media_type=pystac.MediaType.GEOJSON,
                                      title=f"{name.split('_')[0]} scene"))
    used: set[str] = set()
    item.add_asset("cube", pystac.Asset(
        _href(stores.normalize(path), item_dir), title="displacement cube (Zarr v2, CF-1.8)",
        media_type=pystac.MediaType.VND_ZARR, roles=["data"],
        extra_fields={"microflow:pair": int(pair)}))
    used.add("cube")
    for role, files in (("overview", quicklooks), ("data", exports), ("data", extra)):
        for f in files:
            if not Path(f).is_file():
                continue
            media = MEDIA_TYPES.get(Path(f).suffix.lower())
            item.add_asset(_asset_key(f, used), pystac.Asset(
                _href(f, item_dir), title=Path(f).name, media_type=media,
                roles=["overview" if Path(f).suffix.lower() == ".png" else role]))
    item.set_self_href(str(stores.normalize(target)) if stores.is_remote(target)
                       else os.path.abspath(target))
    return item


def _write(item: pystac.Item, target: str | Path) -> None:
    d = item.to_dict(include_self_link=False, transform_hrefs=False)
    stores.write_text(target, json.dumps(d, indent=1))


def read_item(target: str | Path) -> pystac.Item:
    """An Item written by :func:`write_item` (local file or ``s3://`` object)."""
    href = str(stores.normalize(target)) if stores.is_remote(target) else os.path.abspath(
        target)
    return pystac.Item.from_dict(json.loads(stores.read_text(target)), href=href)


def write_item(path: str | Path, pair: int, *, quicklooks: Iterable[str | Path] = (),
               extra: Iterable[str | Path] = ()) -> str | Path:
    """Write (or rewrite) the Item of ``pair`` beside the cube at ``path``, keeping the
    export assets of an Item already there, and list it in the cube's ``stac_items``
    attribute. Returns where it went.

    ``quicklooks``: the pair's PNGs; ``extra``: other files to list when they exist (e.g.
    the rupture map ``<stem>_pair<N>_rupture.geojson``).
    """
    target = item_path(path, pair)
    exports = _existing_exports(target)
    item = build_item(path, pair, quicklooks=quicklooks, exports=exports, extra=extra)
    _write(item, target)
    cube.list_in_attrs(path, "stac_items", stores.name(target))
    return target


def _existing_exports(target: str | Path) -> list[str]:
    """The local export files an Item at ``target`` lists (COG/NetCDF data assets)."""
    if not stores.exists(target):
        return []
    old = read_item(target)
    return [a.get_absolute_href() for a in old.assets.values()
            if a.media_type in (pystac.MediaType.COG, pystac.MediaType.NETCDF)
            and a.get_absolute_href() and not stores.is_remote(a.get_absolute_href())]


def add_assets(path: str | Path, pair: int, files: Iterable[str | Path]) -> str | Path | None:
    """Add ``files`` (e.g. the exports of ``microflow export``) to the pair's Item, if it
    has one; returns the Item's path, or None when there is none or it cannot be written
    (a warning says so)."""
    target = item_path(path, pair)
    if not stores.exists(target):
        return None
    item = read_item(target)
    item_dir = _parent(target)
    used = set(item.assets)
    for f in files:
        key = Path(str(f)).name.rsplit(".", 1)[0]
        if key in item.assets:
            used.discard(key)
            del item.assets[key]
        item.add_asset(_asset_key(f, used), pystac.Asset(
            _href(f, item_dir), title=Path(f).name,
            media_type=MEDIA_TYPES.get(Path(f).suffix.lower()), roles=["data"]))
    try:
        _write(item, target)
    except OSError as e:  # a cube in a read-only place: the files are there all the same
        log.warning("could not list the files in the STAC Item %s: %s", target, e)
        return None
    return target


def add_to_catalog(folder: str | Path, items: Iterable[str | Path], *,
                   catalog_id: str = "microflow-products",
                   description: str = "MicroFlow ground-displacement products") -> str | Path:
    """Add the Items at ``items`` to the static STAC Catalog ``<folder>/catalog.json``
    (created if missing; an Item already listed is not listed twice), and give each Item
    its ``root``/``parent`` links. Returns the catalog's path."""
    cat_path = stores.join(folder, CATALOG_NAME)
    if stores.exists(cat_path):
        cat = json.loads(stores.read_text(cat_path))
    else:
        cat = pystac.Catalog(id=catalog_id, description=description).to_dict(
            include_self_link=False, transform_hrefs=False)
        cat["links"] = []
    listed = {link["href"] for link in cat["links"] if link.get("rel") == "item"}
    for target in items:
        rel = _href(target, folder)
        rel = rel if stores.is_remote(rel) or rel.startswith(".") else f"./{rel}"
        if rel not in listed:
            cat["links"].append({"rel": "item", "href": rel, "type": pystac.MediaType.JSON})
            listed.add(rel)
        d = json.loads(stores.read_text(target))
        back = _href(cat_path, _parent(target))
        back = back if stores.is_remote(back) or back.startswith(".") else f"./{back}"
        d["links"] = [link for link in d.get("links", []) if link.get("rel")
                      not in ("root", "parent")]
        d["links"] += [{"rel": "root", "href": back, "type": pystac.MediaType.JSON},
                       {"rel": "parent", "href": back, "type": pystac.MediaType.JSON}]
        stores.write_text(target, json.dumps(d, indent=1))
    if not any(link.get("rel") == "root" for link in cat["links"]):
        cat["links"].insert(0, {"rel": "root", "href": f"./{CATALOG_NAME}",
                                "type": pystac.MediaType.JSON})
    stores.write_text(cat_path, json.dumps(cat, indent=1))
    return cat_path


def catalog_pairs(folder: str | Path, pairs: Iterable[Mapping[str, Any]],
                  quicklooks: Iterable[str | Path] = ()) -> str | Path:
    """Rewrite the Items of ``pairs`` (``{"cube": path, "pair": N}``, as a flow's summary
    lists them) with their quick-looks (``<stem>_pair<N>_*.png`` among ``quicklooks``) and
    rupture maps, and add them to the Catalog in ``folder``; returns the catalog's path."""
    quicklooks = [Path(q) for q in quicklooks]
    items = []
    for p in pairs:
        stem = Path(stores.name(p["cube"])).stem
        mine = [q for q in quicklooks if q.name.startswith(f"{stem}_pair{int(p['pair'])}_")]
        folder_of_pngs = mine[0].parent if mine else None
        items.append(write_item(p["cube"], int(p["pair"]), quicklooks=mine, extra=[
            rupture_map_path(p["cube"], int(p["pair"]), folder_of_pngs)]))
    return add_to_catalog(folder, items)

