"""Quick-look PNGs of a cube pair: east/north/magnitude maps and a fault profile."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import xarray as xr


def _title(ds: xr.Dataset, pair: int) -> str:
    p = ds.isel(pair=pair)

    def day(v) -> str:
        return "unknown date" if np.isnat(v.values) else str(v.values)[:10]

    return (f"pre {p.pre_id.values} ({day(p.pre_time)}) → post {p.post_id.values} "
            f"({day(p.post_time)})")


def _masked(ds: xr.Dataset, pair: int, name: str) -> np.ndarray:
    p = ds.isel(pair=pair)
    return np.where(p.valid.values == 1, p[name].values, np.nan)


def plot_maps(ds: xr.Dataset, pair: int, out_png: str | Path) -> Path:
    """Three panels, east, north and magnitude (m), axes in km of the cube's CRS."""
    east, north = _masked(ds, pair, "east"), _masked(ds, pair, "north")
    mag = np.hypot(east, north)
    x, y = ds.x.values / 1000, ds.y.values / 1000
    extent = (x[0], x[-1], y[-1], y[0])
    lim = float(np.nanpercentile(np.abs(np.concatenate([east.ravel(), north.ravel()])), 98))
    lim = lim if np.isfinite(lim) and lim > 0 else 1.0
    crs = ds.rio.crs.to_string() if ds.rio.crs else "unknown CRS"
    fig, axes = plt.subplots(1, 3, figsize=(17, 5.2), constrained_layout=True,
                             sharey=True)
    panels = (("east", east, "RdBu_r", -lim, lim), ("north", north, "RdBu_r", -lim, lim),
              ("magnitude", mag, "viridis", 0, lim))
    for ax, (name, arr, cmap, lo, hi) in zip(axes, panels, strict=True):
        cm = plt.get_cmap(cmap).copy()
        cm.set_bad("0.75")
        ax.imshow(arr, extent=extent, cmap=cm, vmin=lo, vmax=hi, interpolation="nearest")
        ax.set_title(f"{name} displacement")
        ax.set_xlabel(f"easting (km, {crs})")
    axes[0].set_ylabel("northing (km)")
    for ax, (name, *_rest) in zip(axes, panels, strict=True):
        fig.colorbar(ax.images[0], ax=ax, shrink=0.8, label=f"{name} (m)")
    fig.suptitle(_title(ds, pair) + "   (grey: no data or cloud)")
    out = Path(out_png)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def estimate_fault_line(ds: xr.Dataset, pair: int) -> tuple[tuple[float, float],
                                                              tuple[float, float]]:
    """A straight fault line ``((x0, y0), (x1, y1))`` in metres: the principal axis of the
    pixels with the largest displacement gradient (top 1 %), weighted by it."""
    east, north = _masked(ds, pair, "east"), _masked(ds, pair, "north")
    g = np.zeros_like(east)
    for comp in (east, north):
        gy, gx = np.gradient(np.nan_to_num(comp))
        g += gx**2 + gy**2
    g[~np.isfinite(east)] = 0
    g[:3] = g[-3:] = 0
    g[:, :3] = g[:, -3:] = 0
    thr = np.percentile(g[g > 0], 99) if (g > 0).any() else np.inf
    rows, cols = np.nonzero(g >= thr)
    if rows.size < 2:
        raise ValueError("no displacement gradient to locate a fault line")
    x, y = ds.x.values[cols], ds.y.values[rows]
    w = g[rows, cols]
    cx, cy = np.average(x, weights=w), np.average(y, weights=w)
    cov = np.cov(np.stack([x - cx, y - cy]), aweights=w)
    vals, vecs = np.linalg.eigh(cov)
    d = vecs[:, np.argmax(vals)]
    half = 2.0 * np.sqrt(vals.max())
    return (cx - d[0] * half, cy - d[1] * half), (cx + d[0] * half, cy + d[1] * half)


def sample_profile(ds: xr.Dataset, pair: int, line, width_m: float | None = None,
                   n: int = 200) -> dict[str, np.ndarray]:
    """Profile perpendicular to ``line`` through its midpoint, averaged across a swath.

    Returns distance (m, positive to the left of the line's direction), and the mean
    ``east``, ``north``, ``east_raw``, ``north_raw`` and the fault-parallel component
    (m) in each distance bin.
    """
    (x0, y0), (x1, y1) = line
    d = np.array([x1 - x0, y1 - y0], float)
    d /= np.linalg.norm(d)
    nrm = np.array([-d[1], d[0]])
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    xs, ys = np.meshgrid(ds.x.values, ds.y.values)
    along = (xs - cx) * d[0] + (ys - cy) * d[1]
    across = (xs - cx) * nrm[0] + (ys - cy) * nrm[1]
    res = abs(float(ds.x[1] - ds.x[0]))
    width_m = width_m or 20 * res
    half_len = 0.45 * min(np.ptp(xs), np.ptp(ys))
    keep = (np.abs(along) <= width_m / 2) & (np.abs(across) <= half_len)
    edges = np.linspace(-half_len, half_len, n + 1)
    idx = np.digitize(across[keep], edges) - 1
    out = {"distance": (edges[:-1] + edges[1:]) / 2}
    valid = ds.isel(pair=pair).valid.values[keep] == 1
    for name in ("east", "north", "east_raw", "north_raw"):
        v = ds.isel(pair=pair)[name].values[keep]
        ok = valid & np.isfinite(v)
        s = np.bincount(idx[ok], v[ok], minlength=n)[:n]
        c = np.bincount(idx[ok], minlength=n)[:n]
        with np.errstate(invalid="ignore"):
            out[name] = s / np.where(c > 0, c, np.nan)
    out["parallel"] = out["east"] * d[0] + out["north"] * d[1]
    out["parallel_raw"] = out["east_raw"] * d[0] + out["north_raw"] * d[1]
    return out


def plot_profile(ds: xr.Dataset, pair: int, out_png: str | Path, line=None,
                 width_m: float | None = None) -> Path:
    """Fault-perpendicular profile of the fault-parallel, east and north components."""
    line = line or estimate_fault_line(ds, pair)
    prof = sample_profile(ds, pair, line, width_m)
    km = prof["distance"] / 1000
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5), constrained_layout=True)
    ax = axes[0]
    ax.plot(km, prof["parallel_raw"], ".", ms=3, color="0.6", label="raw")
    ax.plot(km, prof["parallel"], "-", color="C3", lw=2, label="log-TV denoised")
    ax.axvline(0, color="k", lw=0.8, ls="--")
    ax.set_xlabel("distance from fault line (km)")
    ax.set_ylabel("fault-parallel displacement (m)")
    ax.legend()
    ax.set_title("fault-parallel component")
    ax = axes[1]
    for name, color in (("east", "C0"), ("north", "C1")):
        ax.plot(km, prof[f"{name}_raw"], ".", ms=3, color=color, alpha=0.4)
        ax.plot(km, prof[name], "-", color=color, lw=2, label=f"{name} (denoised)")
    ax.axvline(0, color="k", lw=0.8, ls="--")
    ax.set_xlabel("distance from fault line (km)")
    ax.set_ylabel("displacement (m)")
    ax.legend()
    (x0, y0), (x1, y1) = line
    ax.set_title(f"line ({x0 / 1000:.2f}, {y0 / 1000:.2f}) → ({x1 / 1000:.2f}, {y1 / 1000:.2f}) km")
    fig.suptitle(_title(ds, pair))
    out = Path(out_png)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out
