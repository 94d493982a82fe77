"""The rupture map of one cube pair: the surface trace and the slip along strike, as
GeoJSON (RFC 7946, lon/lat) and a figure.

:func:`write_rupture_map` reads the pair (``east``/``north`` denoised for the trace,
``east_raw``/``north_raw`` with ``east_sigma``/``north_sigma`` for the offsets, pixels with
``valid`` = 1 only), measures it with :func:`model.rupture.find_rupture` on the cube's grid
(block-averaged when a side exceeds ``max_px``), converts the geometry from pixels to the
cube's CRS and then to lon/lat, and writes

- ``<quicklook-dir>/<cube stem>_pair<N>_rupture.geojson``, always: a FeatureCollection of
  ``kind = "trace"`` LineStrings and ``kind = "offset"`` Points (empty, with
  ``properties.rupture_found = false`` and the reason, when there is no rupture);
- ``<quicklook-dir>/<cube stem>_pair<N>_rupture.png`` when a rupture is found: slip along
  strike with 1σ error bars beside a map of the trace over the displacement.

A source model in the pair's provenance (``source_model`` with ``detected`` and a
``trace`` ``[[x, y], [x, y]]`` in the cube's CRS) seeds the trace in a corridor around it;
without one the trace starts from the field's own steps. Sign conventions and the
GeoJSON schema: ``docs/rupture-map.md``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import warnings
from pathlib import Path

import dask
import numpy as np
import xarray as xr

from model.rupture import DEFAULT_PROFILE_STEP_PX, Rupture, RuptureConfig, find_rupture

log = logging.getLogger(__name__)
SEED_CORRIDOR_PX = 6.0  # px either side of a source model's trace where weak steps seed
SIGN_CONVENTION = {
    "slip_parallel_m": "right-lateral (dextral) positive, left-lateral negative",
    "slip_perpendicular_m": "extension (the sides move apart) positive, shortening negative",
    "offset": "side right of the segment's direction minus side left of it, at the trace",
    "strike_deg": "azimuth of the segment's direction, degrees clockwise from north",
    "vertical": "not measured (the optical field is horizontal only)",
}
FIELDS = ("east", "north", "east_raw", "north_raw", "east_sigma", "north_sigma")


def _read(ds: xr.Dataset, index: int, max_px: int
          ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray], int]:
    """The pair's fields (NaN where ``valid`` != 1), block-averaged to at most ``max_px``
    a side; returns x ``(w,)``, y ``(h,)`` (m), the arrays and the averaging step."""
    p = ds.isel(pair=index)
    measured = p["valid"] == 1
    f = xr.Dataset({n: p[n].astype(np.float32).where(measured) for n in FIELDS})
    step = max(1, math.ceil(max(f.sizes["y"], f.sizes["x"]) / max_px))
    if step > 1:
        f = f.coarsen(y=step, x=step, boundary="trim").mean()
    (f,) = dask.compute(f)
    return (f.x.values.astype(np.float64), f.y.values.astype(np.float64),
            {n: np.asarray(f[n].values, np.float64) for n in FIELDS}, step)


def _seed_mask(source: dict | None, x: np.ndarray, y: np.ndarray) -> np.ndarray | None:
    """A corridor of ``SEED_CORRIDOR_PX`` around a detected source model's trace."""
    if not isinstance(source, dict) or not source.get("detected") or not source.get("trace"):
        return None
    try:
        (x0, y0), (x1, y1) = source["trace"][:2]
    except (TypeError, ValueError):
        log.warning("source_model.trace %r is not [[x, y], [x, y]]; ignored", source["trace"])
        return None
    dx, dy = x[1] - x[0], y[1] - y[0]
    a = np.array([(x0 - x[0]) / dx, (y0 - y[0]) / dy])
    b = np.array([(x1 - x[0]) / dx, (y1 - y[0]) / dy])
    rows, cols = np.mgrid[0:len(y), 0:len(x)].astype(np.float64)
    d = b - a
    t = np.clip(((cols - a[0]) * d[0] + (rows - a[1]) * d[1]) / max(d @ d, 1e-12), 0, 1)
    dist = np.hypot(cols - (a[0] + t * d[0]), rows - (a[1] + t * d[1]))
    return dist <= SEED_CORRIDOR_PX


def measure_pair(ds: xr.Dataset, index: int, profile_step_m: float | None = None, *,
                 max_px: int = 4096) -> tuple[Rupture, dict]:
    """Trace and offsets of ``pair`` ``index`` of an opened cube.

    ``profile_step_m``: metres between profiles (None: ``DEFAULT_PROFILE_STEP_PX`` pixels).
    Returns the :class:`model.rupture.Rupture` (pixel positions on the read grid) and the
    grid it was measured on: ``x``, ``y`` (m), ``step`` (block averaging), ``res`` (m/px),
    ``cfg`` (the :class:`~model.rupture.RuptureConfig`), ``seeded`` (bool).
    """
    from .cube import pair_provenance

    x, y, f, step = _read(ds, index, max_px)
    xres, yres = abs(float(x[1] - x[0])), abs(float(y[1] - y[0]))
    res = math.sqrt(xres * yres)
    step_px = DEFAULT_PROFILE_STEP_PX if profile_step_m is None else profile_step_m / res
    cfg = RuptureConfig(step_px=max(float(step_px), 2.0))
    seed = _seed_mask(pair_provenance(ds, index).get("source_model"), x, y)
    rup = find_rupture(f["east"], f["north"], f["east_sigma"], f["north_sigma"],
                       pixel_size=(xres, yres), east_fit=f["east_raw"],
                       north_fit=f["north_raw"], seed_mask=seed, cfg=cfg)
    return rup, {"x": x, "y": y, "step": step, "res": res, "cfg": cfg,
                 "seeded": seed is not None, "magnitude": np.hypot(f["east"], f["north"])}


def _to_xy(pts: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``(n, 2)`` ``(col, row)`` px of the read grid to projected ``(x, y)`` m."""
    return np.stack([x[0] + pts[:, 0] * (x[1] - x[0]), y[0] + pts[:, 1] * (y[1] - y[0])],
                    axis=1)


def _arc_m(vertices_xy: np.ndarray, vertices_px: np.ndarray, s_px: float) -> float:
    """Arc length (m) at arc length ``s_px`` (px) along a polyline given both ways."""
    dm = np.concatenate([[0], np.cumsum(np.hypot(*np.diff(vertices_xy, axis=0).T))])
    dp = np.concatenate([[0], np.cumsum(np.hypot(*np.diff(vertices_px, axis=0).T))])
    return float(np.interp(s_px, dp, dm))


def _strike_axis(rup: Rupture, grid: dict) -> tuple[np.ndarray, np.ndarray]:
    """Origin and unit direction (m) of the rupture's overall strike (principal axis of
    its vertices, pointing north-ish), from the end of the rupture it starts at."""
    pts = np.concatenate([_to_xy(s.vertices, grid["x"], grid["y"]) for s in rup.segments])
    c = pts.mean(axis=0)
    vals, vecs = np.linalg.eigh(np.cov((pts - c).T) if len(pts) > 2 else np.eye(2))
    d = vecs[:, np.argmax(vals)]
    if math.degrees(math.atan2(d[0], d[1])) % 360 >= 180:
        d = -d
    return c + ((pts - c) @ d).min() * d, d


def rupture_geojson(rup: Rupture, grid: dict, crs, meta: dict) -> dict:
    """The RFC 7946 FeatureCollection (lon/lat, WGS 84) of a measured rupture.

    ``crs``: the cube's CRS (anything ``pyproj.CRS.from_user_input`` takes); ``meta``:
    extra collection properties (pair, cube, ...). Numbers in metres.
    """
    from pyproj import CRS, Transformer

    to_ll = Transformer.from_crs(CRS.from_user_input(crs), CRS.from_epsg(4326),
                                 always_xy=True)

    def lonlat(xy: np.ndarray) -> list[list[float]]:
        lon, lat = to_ll.transform(xy[:, 0], xy[:, 1])
        return [[round(float(a), 7), round(float(b), 7)] for a, b in zip(lon, lat, strict=True)]

    cfg: RuptureConfig = grid["cfg"]
    res = grid["res"]
    features = []
    if rup.segments:
        origin, axis = _strike_axis(rup, grid)
    for k, seg in enumerate(rup.segments):
        vxy = _to_xy(seg.vertices, grid["x"], grid["y"])
        par = [o.slip_parallel for o in seg.offsets]
        features.append({"type": "Feature", "geometry": {
            "type": "LineString", "coordinates": lonlat(vxy)}, "properties": {
            "kind": "trace", "segment": k,
            "length_m": round(float(np.hypot(*np.diff(vxy, axis=0).T).sum()), 1),
            "n_offsets": len(seg.offsets),
            "median_slip_parallel_m": round(float(np.median(par)), 3) if par else None,
            "median_slip_perpendicular_m": round(float(np.median(
                [o.slip_perpendicular for o in seg.offsets])), 3) if par else None}})
        for o in seg.offsets:
            pxy = _to_xy(np.array([[o.col, o.row]]), grid["x"], grid["y"])
            features.append({"type": "Feature", "geometry": {
                "type": "Point", "coordinates": lonlat(pxy)[0]}, "properties": {
                "kind": "offset", "segment": k,
                "distance_along_m": round(_arc_m(vxy, seg.vertices, o.distance_along_px), 1),
                "along_strike_m": round(float((pxy[0] - origin) @ axis), 1),
                "strike_deg": round(o.strike_deg, 1),
                "slip_parallel_m": round(o.slip_parallel, 4),
                "slip_perpendicular_m": round(o.slip_perpendicular, 4),
                "sigma_parallel_m": round(o.sigma_parallel, 4),
                "sigma_perpendicular_m": round(o.sigma_perpendicular, 4),
                "slip_east_m": round(o.slip_east, 4), "slip_north_m": round(o.slip_north, 4),
                "x": round(float(pxy[0, 0]), 2), "y": round(float(pxy[0, 1]), 2),
                "n_pixels_left": o.n_left, "n_pixels_right": o.n_right}})
    props = {
        **meta,
        "rupture_found": bool(rup.segments),
        "reason": rup.reason or None,
        "segments": len(rup.segments),
        "crs_measured_in": CRS.from_user_input(crs).to_string(),
        "units": "m",
        "sign_convention": SIGN_CONVENTION,
        "profile_step_m": round(cfg.step_px * res, 2),
        "swath_length_m": round(2 * cfg.swath_half_length_px * res, 2),
        "swath_width_m": round(2 * cfg.half_width() * res, 2),
        "trace_gap_m": round(cfg.gap_px * res, 2),
        "trace_field": "east, north (denoised)",
        "offset_field": "east_raw, north_raw with east_sigma, north_sigma",
        "seeded_by_source_model": grid["seeded"],
        "block_average_px": grid["step"],
    }
    return {"type": "FeatureCollection", "properties": props, "features": features}


def plot_rupture(ds: xr.Dataset, index: int, rup: Rupture, grid: dict, out_png: str | Path
                 ) -> Path:
    """Slip along strike (1σ error bars, both components) beside a map of the trace and
    the profile points over the displacement magnitude. Returns the PNG path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .quicklook import crs_label, pair_title

    x, y, mag = grid["x"], grid["y"], grid["magnitude"]
    k = max(1, math.ceil(max(mag.shape) / 600))  # the map needs no more pixels than this
    if k > 1:
        h, w = (mag.shape[0] // k) * k, (mag.shape[1] // k) * k
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mag = np.nanmean(mag[:h, :w].reshape(h // k, k, w // k, k), axis=(1, 3))
        x, y = x[:w].reshape(-1, k).mean(axis=1), y[:h].reshape(-1, k).mean(axis=1)
    fig, (ax_map, ax_slip) = plt.subplots(1, 2, figsize=(16, 6.2),
                                          gridspec_kw={"width_ratios": (1.0, 1.4)})
    fig.subplots_adjust(left=0.05, right=0.98, bottom=0.1, top=0.86, wspace=0.18)
    finite = mag[np.isfinite(mag)]
    top = float(np.percentile(finite, 98)) if finite.size else 1.0
    dx, dy = x[1] - x[0], y[1] - y[0]
    extent = [(x[0] - dx / 2) / 1e3, (x[-1] + dx / 2) / 1e3, (y[-1] + dy / 2) / 1e3,
              (y[0] - dy / 2) / 1e3]
    im = ax_map.imshow(mag, extent=extent, origin="upper", cmap=plt.get_cmap(
        "magma").with_extremes(bad="0.82"), vmin=0.0, vmax=top if top > 0 else 1.0,
        interpolation="nearest")
    ax_map.set_aspect("equal")
    fig.colorbar(im, ax=ax_map, shrink=0.8, label="displacement magnitude (m)")
    origin, axis = _strike_axis(rup, grid)
    for k, seg in enumerate(rup.segments):
        vxy = _to_xy(seg.vertices, grid["x"], grid["y"]) / 1e3
        ax_map.plot(vxy[:, 0], vxy[:, 1], "-", color="c", lw=1.8,
                    label="trace" if k == 0 else None)
        ax_map.annotate(f"{k}", vxy[0], color="c", fontsize=9)
        if seg.offsets:
            pxy = _to_xy(np.array([[o.col, o.row] for o in seg.offsets]), grid["x"],
                         grid["y"])
            ax_map.plot(pxy[:, 0] / 1e3, pxy[:, 1] / 1e3, "o", ms=3, color="w", mec="k",
                        mew=0.5, label="profiles" if k == 0 else None)
            along = (pxy - origin) @ axis / 1e3
            for name, color, label in (("parallel", "C3", "fault-parallel (right-lateral +)"),
                                       ("perpendicular", "C0", "fault-normal (extension +)")):
                ax_slip.errorbar(along, [getattr(o, f"slip_{name}") for o in seg.offsets],
                                 yerr=[getattr(o, f"sigma_{name}") for o in seg.offsets],
                                 fmt="o-", ms=3, lw=1, capsize=2, color=color,
                                 label=label if k == 0 else None)
    ax_map.set_xlim(x.min() / 1e3, x.max() / 1e3)
    ax_map.set_ylim(y.min() / 1e3, y.max() / 1e3)
    ax_map.set_xlabel("easting (km)")
    ax_map.set_ylabel("northing (km)")
    ax_map.legend(fontsize=8, loc="upper right")
    ax_map.set_title("surface trace over the denoised displacement", fontsize=10)
    az = math.degrees(math.atan2(axis[0], axis[1])) % 360
    ax_slip.axhline(0, color="0.6", lw=0.6)
    ax_slip.set_xlabel(f"distance along strike N{az:.0f}°E (km)")
    ax_slip.set_ylabel("offset at the trace (m), 1σ bars")
    ax_slip.grid(alpha=0.3)
    ax_slip.legend(fontsize=8, loc="best")
    ax_slip.set_title("slip along strike (horizontal; the vertical is not measured)",
                      fontsize=10)
    fig.suptitle(f"{pair_title(ds, index)}\n{len(rup.segments)} trace segment(s); "
                 f"{crs_label(ds)}", fontsize=11)
    out = Path(out_png)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def _write_json(path: Path, obj: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def write_rupture_map(cube: str | Path, index: int, quicklook_dir: str | Path | None = None,
                      profile_step_m: float | None = None) -> list[Path]:
    """Measure pair ``index`` of ``cube`` and write its rupture map (module docstring).

    ``quicklook_dir``: as for the quick-looks (default beside a local cube, the current
    directory for an ``s3://`` one); ``profile_step_m``: metres between profiles (None:
    ``model.rupture.DEFAULT_PROFILE_STEP_PX`` pixels). Returns the files written: the
    GeoJSON, then the PNG when a rupture is found.
    """
    from .cube import open_cube
    from .product_item import rupture_map_path
    from .quicklook import quicklook_stem

    ds = open_cube(cube)
    rup, grid = measure_pair(ds, index, profile_step_m)
    stem = quicklook_stem(cube, quicklook_dir)
    stem.parent.mkdir(parents=True, exist_ok=True)
    geojson = rupture_map_path(cube, index, quicklook_dir)
    meta = {"pair": int(index), "cube": str(cube),
            "pre_id": str(ds.pre_id.values[index]), "post_id": str(ds.post_id.values[index])}
    _write_json(geojson, rupture_geojson(rup, grid, ds.rio.crs, meta))
    files = [geojson]
    n_off = sum(len(s.offsets) for s in rup.segments)
    if rup.segments:
        files.append(plot_rupture(ds, index, rup, grid,
                                  Path(f"{stem}_pair{index}_rupture.png")))
        log.info("rupture map of %s pair %d: %d segment(s), %d offsets: %s", cube, index,
                 len(rup.segments), n_off, ", ".join(map(str, files)))
    else:
        log.info("rupture map of %s pair %d: no rupture (%s): %s", cube, index, rup.reason,
                 geojson)
    return files


def provenance_entry(files: list[Path], rupture_found: bool | None = None) -> dict:
    """What the pair's provenance records of its rupture map (``rupture_map``)."""
    entry = {"geojson": str(files[0]) if files else None,
             "figure": str(files[1]) if len(files) > 1 else None}
    if files:
        props = json.loads(Path(files[0]).read_text()).get("properties", {})
        entry.update(rupture_found=props.get("rupture_found"),
                     segments=props.get("segments"))
    return entry

