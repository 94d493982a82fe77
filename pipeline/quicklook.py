"""Quick-look PNGs of one cube pair: east/north/magnitude maps and a fault-perpendicular profile.

Everything here reads a cube opened with :func:`pipeline.cube.open_cube` (dims
``(pair, y, x)``, projected ``x``/``y`` in metres, a CRS in ``spatial_ref``). Pixels with
``valid`` != 1 are masked and never plotted as values. Large scenes are block-averaged
before plotting (``max_px``), so a quick-look never loads a whole full-resolution scene; a
block is shown only when at least half of its pixels are measured.

The figures claim nothing the pair's provenance does not: the profile is drawn across the
fitted source's trace (``source_model``) only when a source was detected, and otherwise
the figure says "no fault detected"; the co-registration offset removed from
``east``/``north`` is stated; "% measured" is the share of the pair's pixels whose
``valid`` flag is measured, at full resolution; when a source was detected the maps show
its modelled field and the residual beside the measured field.

Sign conventions (used by :func:`estimate_fault_line` and :func:`sample_profile`): a line
``((x0, y0), (x1, y1))`` in projected metres points from its first to its second point.
Its *azimuth* is clockwise from grid north. Profile distance is positive to the *right* of
the line's direction; the fault-parallel component is positive along the line's direction
and the fault-perpendicular one toward positive distance.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import dask
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr
from matplotlib.colors import Colormap
from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar
from scipy import ndimage

log = logging.getLogger(__name__)
Line = tuple[tuple[float, float], tuple[float, float]]
COMPONENTS = ("east", "north", "east_raw", "north_raw")


# ---------------------------------------------------------------------------------------
# reading


def _pixel_size(ds: xr.Dataset) -> tuple[float, float]:
    """``(|xres|, |yres|)`` in metres."""
    return abs(float(ds.x[1] - ds.x[0])), abs(float(ds.y[1] - ds.y[0]))


def _masked_fields(ds: xr.Dataset, pair: int, names: tuple[str, ...], *, max_px: int,
                   bbox: tuple[float, float, float, float] | None = None
                   ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """``names`` of ``pair`` as numpy arrays, NaN where not measured.

    Args:
        bbox: ``(xmin, ymin, xmax, ymax)`` (m) to read only part of the grid.
        max_px: the larger side is block-averaged (NaN-aware) down to at most this.

    Returns ``x`` ``(w,)``, ``y`` ``(h,)`` (m, pixel centres) and ``{name: (h, w) float}``.
    """
    p = ds.isel(pair=pair)
    if bbox is not None:
        xmin, ymin, xmax, ymax = bbox
        cols = np.flatnonzero((p.x.values >= xmin) & (p.x.values <= xmax))
        rows = np.flatnonzero((p.y.values >= ymin) & (p.y.values <= ymax))
        if cols.size < 2 or rows.size < 2:
            raise ValueError(f"bbox {bbox} holds less than 2x2 pixels of the cube")
        p = p.isel(x=slice(cols[0], cols[-1] + 1), y=slice(rows[0], rows[-1] + 1))
    measured = p["valid"] == 1
    fields = xr.Dataset({n: p[n].astype(np.float32).where(measured) for n in names})
    step = max(1, math.ceil(max(fields.sizes["y"], fields.sizes["x"]) / max_px))
    if step > 1:
        share = measured.astype(np.float32).coarsen(y=step, x=step, boundary="trim").mean()
        fields = fields.coarsen(y=step, x=step, boundary="trim").mean().where(share >= 0.5)
    (fields,) = dask.compute(fields)
    return (fields.x.values, fields.y.values,
            {n: np.asarray(fields[n].values, dtype=np.float64) for n in names})


def _day(value: np.datetime64) -> str:
    return "unknown date" if np.isnat(value) else str(value)[:10]


def pair_title(ds: xr.Dataset, pair: int) -> str:
    """``pair i: pre <id> (<date>) → post <id> (<date>)``."""
    p = ds.isel(pair=pair)
    return (f"pair {pair}: pre {p.pre_id.values} ({_day(p.pre_time.values)}) → "
            f"post {p.post_id.values} ({_day(p.post_time.values)})")


def crs_label(ds: xr.Dataset) -> str:
    """The cube's CRS for labels, e.g. ``EPSG:32611 (WGS 84 / UTM zone 11N)``."""
    crs = ds.rio.crs
    if crs is None:
        return "unknown CRS"
    from pyproj import CRS as ProjCRS

    name = ProjCRS.from_wkt(crs.to_wkt()).name
    epsg = crs.to_epsg()
    return f"EPSG:{epsg} ({name})" if epsg else name


def measured_percent(ds: xr.Dataset, pair: int) -> float:
    """The cube's own figure: % of the pair's pixels whose ``valid`` flag is measured."""
    return float((ds["valid"].isel(pair=pair) == 1).mean().compute()) * 100


def _provenance(ds: xr.Dataset, pair: int) -> dict:
    from .cube import pair_provenance

    try:
        return pair_provenance(ds, pair)
    except (KeyError, ValueError):
        return {}


def offset_note(ds: xr.Dataset, pair: int) -> str:
    """What was removed from ``east``/``north`` as co-registration, in px and m."""
    prov = _provenance(ds, pair)
    fit = prov.get("ramp_fit") or {}
    if not prov.get("ramp_removed") or "dx_px" not in fit:
        return "no co-registration offset removed"
    e, n = fit["east_m"], fit["north_m"]
    plane = fit.get("mode") == "plane"
    return (f"co-registration {'plane' if plane else 'offset'} removed: "
            f"dx {fit['dx_px']['offset']:+.3f} px, dy {fit['dy_px']['offset']:+.3f} px "
            f"(east {e['offset']:+.2f} m, north {n['offset']:+.2f} m"
            f"{', at the top-left pixel' if plane else ''})")


def detected_source(ds: xr.Dataset, pair: int) -> dict | None:
    """The pair's ``source_model`` when a source was detected, else None."""
    src = _provenance(ds, pair).get("source_model")
    return src if isinstance(src, dict) and src.get("detected") is True else None


def source_line(src: dict) -> tuple[Line, str]:
    """The line to profile across for a detected source: its surface trace, or the
    surface projection of a buried top edge; and a label saying which."""
    if src.get("trace"):
        return tuple(map(tuple, src["trace"])), "fitted fault trace"
    return tuple(map(tuple, src["top_edge"])), "surface projection of the buried top edge"


def source_field(src: dict, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The detected source's modelled ``(east, north)`` (m) on the grid ``x (w,)``,
    ``y (h,)`` (m), from its provenance numbers (``model.okada``)."""
    from model.okada import Fault, fault_displacement

    (x0, y0), (x1, y1) = src["top_edge"]
    fault = Fault(east=(x0 + x1) / 2, north=(y0 + y1) / 2, top_depth=src["top_depth_m"],
                  strike_deg=src["strike_deg"], dip_deg=src["dip_deg"],
                  length=src["length_m"], width=src["width_m"], rake_deg=src["rake_deg"],
                  slip=src["slip_m"])
    gx, gy = np.meshgrid(x, y)
    e, n, _ = fault_displacement(fault, gx, gy)
    return e, n


def clip_line(line: Line, x: np.ndarray, y: np.ndarray) -> Line | None:
    """The part of ``line`` inside the grid's extent (``x``, ``y`` pixel centres, m), or
    None when it misses the grid."""
    (x0, y0), (x1, y1) = line
    t = np.linspace(0.0, 1.0, 2001)
    px, py = x0 + t * (x1 - x0), y0 + t * (y1 - y0)
    inside = ((px >= x.min()) & (px <= x.max()) & (py >= y.min()) & (py <= y.max()))
    if np.count_nonzero(inside) < 2:
        return None
    a, b = t[inside][[0, -1]]
    return ((x0 + a * (x1 - x0), y0 + a * (y1 - y0)), (x0 + b * (x1 - x0), y0 + b * (y1 - y0)))


# ---------------------------------------------------------------------------------------
# maps


def _nice_length(span: float) -> float:
    """A round length (1, 2 or 5 × 10^k) close to a fifth of ``span``."""
    target = span / 5
    base = 10 ** math.floor(math.log10(target))
    return max(m * base for m in (1, 2, 5) if m * base <= target)


def _show(ax, arr: np.ndarray, x: np.ndarray, y: np.ndarray, cmap: str | Colormap,
          vmin: float, vmax: float):
    """``arr`` ``(h, w)`` on km axes; north up whatever the sign of the y step."""
    dx, dy = (x[1] - x[0]) if x.size > 1 else 1.0, (y[1] - y[0]) if y.size > 1 else -1.0
    if dy > 0:  # rows going north: flip so that row 0 is the northernmost
        arr, y, dy = arr[::-1], y[::-1], -dy
    if dx < 0:
        arr, x, dx = arr[:, ::-1], x[::-1], -dx
    extent = ((x[0] - dx / 2) / 1e3, (x[-1] + dx / 2) / 1e3,
              (y[-1] + dy / 2) / 1e3, (y[0] - dy / 2) / 1e3)
    cmap = plt.get_cmap(cmap).with_extremes(bad="0.82")
    im = ax.imshow(arr, extent=extent, cmap=cmap, vmin=vmin, vmax=vmax,
                   interpolation="nearest", origin="upper")
    ax.set_aspect("equal")
    km = _nice_length(extent[1] - extent[0])
    ax.add_artist(AnchoredSizeBar(ax.transData, km, f"{km:g} km", "lower left", pad=0.4,
                                  color="k", frameon=True, size_vertical=0))
    return im


def _robust_limit(values: np.ndarray, q: float = 98) -> float:
    finite = values[np.isfinite(values)]
    lim = float(np.percentile(np.abs(finite), q)) if finite.size else 0.0
    return lim if lim > 0 else 1.0


def _source_note(src: dict | None) -> str:
    if not src:
        return "no fault detected (co-registration-only model preferred)"
    return (f"source detected: Mw {src['Mw']:.1f}, strike N{src['strike_deg']:.0f}°E, dip "
            f"{src['dip_deg']:.0f}°, rake {src['rake_deg']:.0f}°, slip {src['slip_m']:.1f} m "
            f"(one Okada rectangle, residual {src['residual_rms_m']:.2f} m)")


def plot_maps(ds: xr.Dataset, pair: int, out_png: str | Path, *, max_px: int = 1200) -> Path:
    """Three map panels of ``pair``: east, north and magnitude of the denoised displacement;
    when a source was detected, a second row with its modelled east and north and the
    residual magnitude (measured pixels only).

    East/north use a diverging colormap centred on 0 with symmetric limits (98th
    percentile of |east|, |north|), magnitude a sequential one (0 to its 98th percentile);
    colour bars in metres; axes in km of the cube's CRS, with a scale bar; unmeasured
    pixels (``valid`` 0) in grey. Scenes larger than ``max_px`` are block-averaged.

    Returns the path of the PNG written.
    """
    x, y, f = _masked_fields(ds, pair, ("east", "north"), max_px=max_px)
    east, north = f["east"], f["north"]
    magnitude = np.hypot(east, north)
    lim = _robust_limit(np.concatenate([east.ravel(), north.ravel()]))
    mag_lim = _robust_limit(magnitude)
    measured = measured_percent(ds, pair)
    src = detected_source(ds, pair)
    aspect = len(y) / len(x)
    rows = 2 if src else 1
    fig, axes = plt.subplots(rows, 3, squeeze=False,
                             figsize=(17, rows * (1.8 + 4.2 * min(max(aspect, 0.4), 2.0))),
                             constrained_layout=True)
    panels = [("east displacement (denoised)", east, "RdBu_r", -lim, lim, "east (m)"),
              ("north displacement (denoised)", north, "RdBu_r", -lim, lim, "north (m)"),
              ("displacement magnitude", magnitude, "magma", 0.0, mag_lim, "magnitude (m)")]
    if src:
        me, mn = source_field(src, x, y)
        ok = np.isfinite(east) & np.isfinite(north)
        me, mn = np.where(ok, me, np.nan), np.where(ok, mn, np.nan)  # measured pixels only
        res = np.hypot(east - me, north - mn)
        panels += [("modelled source: east", me, "RdBu_r", -lim, lim, "east (m)"),
                   ("modelled source: north", mn, "RdBu_r", -lim, lim, "north (m)"),
                   ("residual |measured − model|", res, "magma", 0.0, mag_lim,
                    "residual (m)")]
    for ax, (title, arr, cmap, lo, hi, label) in zip(axes.ravel(), panels, strict=True):
        im = _show(ax, arr, x, y, cmap, lo, hi)
        ax.set_title(title)
        ax.set_xlabel("easting (km)")
        fig.colorbar(im, ax=ax, shrink=0.85, extend="max" if cmap == "magma" else "both",
                     label=label)
    for ax in axes[:, 0]:
        ax.set_ylabel("northing (km)")
    fig.suptitle(f"{pair_title(ds, pair)}\n{crs_label(ds)}; grey: no measurement "
                 f"({measured:.1f} % measured); {offset_note(ds, pair)}\n"
                 f"{_source_note(src)}", fontsize=11)
    out = Path(out_png)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


# ---------------------------------------------------------------------------------------
# fault line


def _smooth_nan(arr: np.ndarray, sigma: float) -> np.ndarray:
    """NaN-aware Gaussian smoothing (normalised convolution); NaN where mostly unmeasured."""
    ok = np.isfinite(arr)
    num = ndimage.gaussian_filter(np.where(ok, arr, 0.0), sigma)
    den = ndimage.gaussian_filter(ok.astype(np.float64), sigma)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = num / den
    out[den < 0.5] = np.nan
    return out


def _azimuth(d: np.ndarray) -> float:
    """Azimuth (degrees clockwise from grid north) of the direction ``(dx_east, dy_north)``."""
    return float(np.degrees(np.arctan2(d[0], d[1])) % 360)


def _fit_line(px: np.ndarray, py: np.ndarray, w: np.ndarray, min_dist: float,
              iterations: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted total-least-squares line through points, with outlier rejection (points
    farther than 3 weighted RMS distances, and than ``min_dist``, are dropped and the
    line refitted).

    Returns the centre ``(2,)``, the unit direction ``(2,)`` and the mask of kept points.
    """
    keep = np.ones(px.size, bool)
    for _ in range(iterations):
        wk = w[keep]
        c = np.array([np.average(px[keep], weights=wk), np.average(py[keep], weights=wk)])
        pts = np.stack([px[keep] - c[0], py[keep] - c[1]])
        vals, vecs = np.linalg.eigh((pts * wk) @ pts.T / wk.sum())
        d = vecs[:, np.argmax(vals)]
        dist = np.abs((px - c[0]) * d[1] - (py - c[1]) * d[0])
        spread = math.sqrt(max(vals.min(), 0.0))
        new = dist <= max(3.0 * spread, min_dist)
        if new.sum() < 2 or np.array_equal(new, keep):
            break
        keep = new
    return c, d, keep


def estimate_fault_line(ds: xr.Dataset, pair: int, *, max_px: int = 800) -> Line:
    """A rough straight fault line ``((x0, y0), (x1, y1))`` in projected metres.

    The pixels with the largest gradient of the (lightly smoothed) denoised displacement,
    about two per pixel of the larger image side, are fitted by a gradient-weighted total
    least squares line with outlier rejection. The line spans the 2nd to 98th percentile
    of those pixels along it, and points along its azimuth in [0, 180) degrees (so the
    profile's positive side is east-ish of a N-S line). Raises ValueError when there is
    no displacement gradient to fit.
    """
    x, y, f = _masked_fields(ds, pair, ("east", "north"), max_px=max_px)
    g = np.zeros((len(y), len(x)))
    for comp in (f["east"], f["north"]):
        gy, gx = np.gradient(_smooth_nan(comp, 1.0))
        g = g + gx**2 + gy**2  # NaN next to unmeasured pixels: no edge artefacts
    g = np.sqrt(g)
    g[~np.isfinite(g)] = 0.0
    n_top = min(2 * max(g.shape), int(0.05 * g.size))
    if n_top < 2 or np.count_nonzero(g) < 2:
        raise ValueError("no displacement gradient to locate a fault line")
    flat = np.argpartition(g.ravel(), -n_top)[-n_top:]
    flat = flat[g.ravel()[flat] > 0]
    rows, cols = np.unravel_index(flat, g.shape)
    px, py, w = x[cols], y[rows], g[rows, cols]
    c, d, keep = _fit_line(px, py, w, min_dist=abs(float(x[1] - x[0])))
    if _azimuth(d) >= 180:
        d = -d
    along = (px[keep] - c[0]) * d[0] + (py[keep] - c[1]) * d[1]
    lo, hi = np.percentile(along, [2, 98])
    return ((float(c[0] + lo * d[0]), float(c[1] + lo * d[1])),
            (float(c[0] + hi * d[0]), float(c[1] + hi * d[1])))


# ---------------------------------------------------------------------------------------
# profile


def _line_frame(line: Line) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Midpoint, unit direction, unit right-hand normal (all ``(2,)``, m) and length (m)."""
    (x0, y0), (x1, y1) = line
    d = np.array([x1 - x0, y1 - y0], dtype=np.float64)
    length = float(np.hypot(*d))
    if length == 0:
        raise ValueError(f"line {line} has zero length")
    d /= length
    return np.array([(x0 + x1) / 2, (y0 + y1) / 2]), d, np.array([d[1], -d[0]]), length


def sample_profile(ds: xr.Dataset, pair: int, line: Line, width_m: float | None = None, *,
                   max_px: int = 2000) -> xr.Dataset:
    """Swath profile perpendicular to ``line``, through its midpoint.

    Args:
        line: ``((x0, y0), (x1, y1))`` in the cube's projected metres.
        width_m: swath width along the line (m); default a fifth of the line length, at
            least 10 pixels.
        max_px: the grid around the swath is block-averaged down to at most this.

    Returns a Dataset along ``distance`` (m from the line, positive to its right, one
    bin per pixel, spanning the swath inside the grid) with the swath means (m) of
    ``east``, ``north``, ``east_raw``, ``north_raw``, the fault-``parallel`` and
    ``perpendicular`` components (and their ``_raw``), and ``count`` (measured pixels per
    bin). Bins with no measured pixel are NaN.
    """
    centre, d, nrm, length = _line_frame(line)
    res = max(_pixel_size(ds))
    width_m = float(width_m) if width_m else max(length / 5, 10 * res)
    xs, ys = ds.x.values, ds.y.values
    reach = math.hypot(np.ptp(xs), np.ptp(ys)) + res
    corners = np.array([centre + a * d * width_m / 2 + b * nrm * reach
                        for a in (-1, 1) for b in (-1, 1)])
    bbox = (corners[:, 0].min() - res, corners[:, 1].min() - res,
            corners[:, 0].max() + res, corners[:, 1].max() + res)
    x, y, f = _masked_fields(ds, pair, COMPONENTS, max_px=max_px, bbox=bbox)
    gx, gy = np.meshgrid(x - centre[0], y - centre[1])
    along = gx * d[0] + gy * d[1]
    across = gx * nrm[0] + gy * nrm[1]
    step = max(abs(x[1] - x[0]), abs(y[1] - y[0]))
    in_swath = np.abs(along) <= width_m / 2
    ok = in_swath & np.all([np.isfinite(f[n]) for n in COMPONENTS], axis=0)
    if not in_swath.any():
        raise ValueError(f"the profile swath of line {line} misses the cube's grid")
    first = math.floor(across[in_swath].min() / step + 0.5)
    last = math.floor(across[in_swath].max() / step + 0.5)
    bins = np.floor(across[ok] / step + 0.5).astype(np.int64) - first
    nbins = last - first + 1
    count = np.bincount(bins, minlength=nbins)
    out = xr.Dataset(coords={"distance": ("distance", np.arange(first, last + 1) * step,
                                          {"long_name": "distance from the fault line, "
                                           "positive to its right", "units": "m"})})
    with np.errstate(invalid="ignore", divide="ignore"):
        for name in COMPONENTS:
            mean = np.bincount(bins, f[name][ok], minlength=nbins) / count
            out[name] = ("distance", mean, {"units": "m", "long_name": f"swath mean {name}"})
    for suffix in ("", "_raw"):
        e, n = out[f"east{suffix}"], out[f"north{suffix}"]
        out[f"parallel{suffix}"] = (e * d[0] + n * d[1]).assign_attrs(
            units="m", long_name="fault-parallel displacement (along the line)")
        out[f"perpendicular{suffix}"] = (e * nrm[0] + n * nrm[1]).assign_attrs(
            units="m", long_name="fault-perpendicular displacement (toward + distance)")
    out["count"] = ("distance", count, {"units": "1", "long_name": "measured pixels"})
    out.attrs = {"line": [list(line[0]), list(line[1])], "azimuth_deg": _azimuth(d),
                 "width_m": width_m, "pair": pair}
    return out


def _plot_components(ax, prof: xr.Dataset, names: tuple[str, str], colors: tuple[str, str],
                     labels: tuple[str, str]) -> None:
    km = prof.distance.values / 1e3
    for name, color, label in zip(names, colors, labels, strict=True):
        ax.plot(km, prof[f"{name}_raw"].values, ".", ms=3, color=color, alpha=0.35,
                label=f"{label}, raw")
        ax.plot(km, prof[name].values, "-", lw=1.8, color=color, label=f"{label}, denoised")
    ax.axvline(0, color="k", lw=0.8, ls="--")
    ax.axhline(0, color="0.6", lw=0.6)
    ax.set_ylabel("displacement (m)")
    ax.legend(fontsize=8, loc="best")
    ax.grid(alpha=0.3)


def plot_profile(ds: xr.Dataset, pair: int, out_png: str | Path, line: Line | None = None,
                 width_m: float | None = None) -> Path:
    """Fault-perpendicular swath profile of ``pair``, raw and denoised.

    ``line`` is the fault in projected metres (default: the detected source's trace from
    the provenance, clipped to the grid; ValueError when no source was detected: see
    :func:`plot_no_fault`); ``width_m`` the swath width (default: see
    :func:`sample_profile`). Three panels: the east map with the line and the swath;
    fault-parallel and -perpendicular components vs distance from the fault (km); east
    and north vs distance. Returns the path of the PNG written.
    """
    what = "given fault line"
    if line is None:
        src = detected_source(ds, pair)
        if src is None:
            raise ValueError("no fault detected for this pair: no profile to draw")
        line, what = source_line(src)
        clipped = clip_line(line, ds.x.values, ds.y.values)
        if clipped is None:
            raise ValueError(f"the {what} does not cross the scene")
        line = clipped
    line = ((float(line[0][0]), float(line[0][1])), (float(line[1][0]), float(line[1][1])))
    prof = sample_profile(ds, pair, line, width_m)
    centre, d, nrm, _ = _line_frame(line)
    az, width = prof.attrs["azimuth_deg"], prof.attrs["width_m"]

    fig = plt.figure(figsize=(17, 5.6), constrained_layout=True)
    grid = fig.add_gridspec(2, 3, width_ratios=(1.0, 1.3, 1.3))
    ax_map = fig.add_subplot(grid[:, 0])
    x, y, f = _masked_fields(ds, pair, ("east",), max_px=600)
    lim = _robust_limit(f["east"])
    im = _show(ax_map, f["east"], x, y, "RdBu_r", -lim, lim)
    fig.colorbar(im, ax=ax_map, shrink=0.7, label="east (m)", location="bottom")
    (x0, y0), (x1, y1) = line
    ax_map.plot([x0 / 1e3, x1 / 1e3], [y0 / 1e3, y1 / 1e3], "k--", lw=1.2, label=what)
    a, b = prof.distance.values[[0, -1]]
    for side in (-1, 1):
        p, q = (centre + side * d * width / 2 + s * nrm for s in (a, b))
        ax_map.plot([p[0] / 1e3, q[0] / 1e3], [p[1] / 1e3, q[1] / 1e3], "-", color="C2",
                    lw=1.0, label="profile swath" if side == 1 else None)
    start, end = centre + a * nrm, centre + b * nrm
    ax_map.annotate("", xy=end / 1e3, xytext=start / 1e3,
                    arrowprops={"arrowstyle": "->", "color": "C2", "lw": 1.5})
    ax_map.set_xlim(x.min() / 1e3, x.max() / 1e3)
    ax_map.set_ylim(y.min() / 1e3, y.max() / 1e3)
    ax_map.set_xlabel("easting (km)")
    ax_map.set_ylabel("northing (km)")
    ax_map.set_title("east (denoised), fault line and swath", fontsize=10)
    ax_map.legend(fontsize=8, loc="upper right")

    ax_fault = fig.add_subplot(grid[:, 1])
    _plot_components(ax_fault, prof, ("parallel", "perpendicular"), ("C3", "C4"),
                     (f"fault-parallel (+ toward N{az:.0f}°E)", "fault-perpendicular"))
    ax_fault.set_title("fault-parallel and fault-perpendicular components", fontsize=10)
    ax_en = fig.add_subplot(grid[:, 2], sharex=ax_fault)
    _plot_components(ax_en, prof, ("east", "north"), ("C0", "C1"), ("east", "north"))
    ax_en.set_title("east and north components", fontsize=10)
    for ax in (ax_fault, ax_en):
        ax.set_xlabel(f"distance from fault (km), + to the right of N{az:.0f}°E")
    fig.suptitle(f"{pair_title(ds, pair)}\nprofile across the {what} through "
                 f"({centre[0] / 1e3:.2f}, {centre[1] / 1e3:.2f}) km, strike "
                 f"N{az:.0f}°E, swath {width / 1e3:.2g} km wide; {crs_label(ds)}\n"
                 f"{offset_note(ds, pair)}; {measured_percent(ds, pair):.1f} % measured",
                 fontsize=11)
    out = Path(out_png)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def plot_no_fault(ds: xr.Dataset, pair: int, out_png: str | Path) -> Path:
    """The profile quick-look of a pair with no detected source: the east map and the
    statement "no fault detected", with no line and no profile. Returns the PNG path."""
    fig, (ax_map, ax_text) = plt.subplots(1, 2, figsize=(14, 5.2), constrained_layout=True,
                                          gridspec_kw={"width_ratios": (1.0, 1.2)})
    x, y, f = _masked_fields(ds, pair, ("east",), max_px=600)
    lim = _robust_limit(f["east"])
    im = _show(ax_map, f["east"], x, y, "RdBu_r", -lim, lim)
    fig.colorbar(im, ax=ax_map, shrink=0.7, label="east (m)", location="bottom")
    ax_map.set_xlabel("easting (km)")
    ax_map.set_ylabel("northing (km)")
    ax_map.set_title("east (denoised)", fontsize=10)
    ax_text.axis("off")
    ax_text.text(0.0, 0.6, "no fault detected", fontsize=20, weight="bold",
                 transform=ax_text.transAxes)
    ax_text.text(0.0, 0.3, "The joint fit of an elastic source and the co-registration\n"
                 "offset preferred the offset alone, so no fault line and\n"
                 f"no profile are drawn.\n\n{offset_note(ds, pair)}\n"
                 f"{measured_percent(ds, pair):.1f} % measured", fontsize=11,
                 transform=ax_text.transAxes, va="center")
    fig.suptitle(f"{pair_title(ds, pair)}\n{crs_label(ds)}", fontsize=11)
    out = Path(out_png)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def quicklook_stem(cube: str | Path, out_dir: str | Path | None = None) -> Path:
    """Where a cube's PNGs go, less ``_pair<i>_<kind>.png``: ``<out_dir>/<cube stem>`` when
    ``out_dir`` is given; else beside a local cube, and in the current directory for a
    remote (``s3://``) one."""
    from . import store as stores

    name = Path(stores.name(cube)).with_suffix("").name
    if out_dir is not None:
        return Path(out_dir) / name
    if stores.is_remote(cube):
        return Path.cwd() / name
    return Path(stores.normalize(cube)).with_suffix("")


def draw_quicklooks(cube: str | Path, index: int, out_dir: str | Path | None = None
                    ) -> list[Path]:
    """Map and profile PNGs ``<stem>_pair<i>_{maps,profile}.png``, with the stem from
    :func:`quicklook_stem` (beside a local cube by default); logs where they went. Where
    the pair's rupture map drew its figure (slip along strike, ``pipeline.rupture_map``),
    that figure replaces the single profile, which is then not drawn."""
    from .cube import open_cube

    ds = open_cube(cube)
    stem = quicklook_stem(cube, out_dir)
    stem.parent.mkdir(parents=True, exist_ok=True)
    maps = plot_maps(ds, index, Path(f"{stem}_pair{index}_maps.png"))
    rupture = _provenance(ds, index).get("rupture_map") or {}
    if rupture.get("figure") and Path(rupture["figure"]).is_file():
        # the rupture map's slip along strike replaces the single profile
        log.info("quick-looks of %s pair %d: %s, %s", cube, index, maps, rupture["figure"])
        return [maps]
    png = Path(f"{stem}_pair{index}_profile.png")
    src = detected_source(ds, index)
    line = None if src is None else clip_line(source_line(src)[0], ds.x.values, ds.y.values)
    profile = plot_no_fault(ds, index, png) if line is None else plot_profile(ds, index, png)
    log.info("quick-looks of %s pair %d: %s, %s", cube, index, maps, profile)
    return [maps, profile]
