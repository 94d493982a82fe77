"""The embedded demo event: a synthetic rupture on real Landsat texture, served by STAC.

``build_demo_event`` makes a pre and a post COG (Earth Search asset names ``red`` and
``scl``) from the committed Landsat 8 crop (test-split area, 30 m, EPSG:32621): the
post image is the pre image moved by an Okada (1985) right-lateral strike-slip rupture,
with mild radiometric change, noise and one cloud masked in ``scl``. The true
displacement is saved beside them. ``run_demo`` serves the items with a real local STAC
API server on loopback and runs the event job against it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from model.okada import Fault, fault_displacement
from model.synthetic import resample_post

from .config import RunConfig

log = logging.getLogger(__name__)

TEXTURE = Path(__file__).parent / "demo_data" / "landsat8_224077_b4_test_area.tif"
EVENT_TIME = datetime(2020, 6, 1, 12, 0, tzinfo=UTC)
PRE_TIME = datetime(2020, 5, 18, 13, 50, tzinfo=UTC)  # the real acquisition
POST_TIME = datetime(2020, 6, 3, 13, 50, tzinfo=UTC)  # fictional, like the event


@dataclass
class DemoEvent:
    """Files of the demo: COGs, STAC items, and the truth (m, on the pre grid)."""

    folder: Path
    items: list[dict]
    bbox: tuple[float, float, float, float]
    truth: Path
    fault: Fault


def demo_fault(transform, shape: tuple[int, int], slip_m: float) -> Fault:
    """A 60 km right-lateral strike-slip rupture through the scene's centre (UTM metres)."""
    h, w = shape
    cx = transform.c + transform.a * w / 2
    cy = transform.f + transform.e * h / 2
    return Fault(east=cx + 1500.0, north=cy, top_depth=0.0, strike_deg=35.0, dip_deg=85.0,
                 length=60000.0, width=15000.0, rake_deg=180.0, slip=slip_m)


def _write_cog(path: Path, array: np.ndarray, profile: dict) -> None:
    import rasterio

    prof = dict(profile, driver="GTiff", dtype=array.dtype.name, count=1, tiled=True,
                height=array.shape[0], width=array.shape[1],
                blockxsize=256, blockysize=256, compress="deflate")
    with rasterio.open(path, "w", **prof) as dst:
        dst.write(array, 1)
        dst.build_overviews([2, 4], rasterio.enums.Resampling.average)


def build_demo_event(folder: str | Path, slip_m: float = 12.0, seed: int = 7,
                     size: tuple[int, int] | None = None) -> DemoEvent:
    """Write the demo's COGs, items and truth into ``folder``.

    ``size`` crops the texture (rows, cols) for quick tests; ``slip_m`` is the fault slip
    in metres (12 m gives up to ~0.2 px on each side of the trace at 30 m pixels).
    """
    import rasterio
    from pyproj import Transformer

    from .stac_items import make_item

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    with rasterio.open(TEXTURE) as src:
        pre = src.read(1)
        profile = {k: src.profile[k] for k in ("crs", "transform", "nodata")}
    if size is not None:
        pre = pre[: size[0], : size[1]]
    h, w = pre.shape
    t = profile["transform"]
    # the texture is the pre image, with a 16 px mirrored margin so that content moves
    # into view at the edges instead of repeating the border
    fault = demo_fault(t, (h, w), slip_m)
    xres, yres = t.a, t.e

    def field(cols, rows):  # pixels on the pre grid
        east = t.c + xres * (cols + 0.5)
        north = t.f + yres * (rows + 0.5)
        ue, un, _ = fault_displacement(fault, east, north)
        return ue / xres, un / yres  # dy = -north / |yres| = north / yres (yres < 0)

    texture = np.pad(pre.astype(np.float64), 16, mode="reflect")
    post, _ = resample_post(texture, field, (h, w), origin=(16, 16))
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float64)
    dx, dy = field(cols, rows)
    # mild temporal change: gain, offset, sensor noise, then a cloud
    post = post * 1.03 + 40.0 + rng.normal(0, 8.0, post.shape)
    pre_n = pre + rng.normal(0, 8.0, pre.shape)
    scl_pre = np.full((h, w), 4, np.uint8)  # 4 = vegetation: usable
    scl_post = scl_pre.copy()
    cy, cx, r = h * 0.25, w * 0.75, min(h, w) * 0.06
    cloud = (rows - cy) ** 2 + (cols - cx) ** 2 <= r**2
    post[cloud] = 16000.0
    scl_post[cloud] = 9  # cloud, high probability
    files = {}
    for name, arr in (("pre_red", pre_n), ("post_red", post)):
        files[name] = folder / f"{name}.tif"
        _write_cog(files[name], np.clip(np.rint(arr), 1, 65535).astype(np.uint16),
                   dict(profile, nodata=0))
    for name, arr in (("pre_scl", scl_pre), ("post_scl", scl_post)):
        files[name] = folder / f"{name}.tif"
        _write_cog(files[name], arr, dict(profile, nodata=0))
    epsg = profile["crs"].to_epsg()
    common = dict(epsg=epsg, transform=tuple(t)[:6], shape=(h, w))
    items = [
        make_item("DEMO_PRE_20200518", PRE_TIME,
                  {"red": str(files["pre_red"]), "scl": str(files["pre_scl"])},
                  cloud_cover=0.0, mgrs=("21", "J", "XM"), **common),
        make_item("DEMO_POST_20200603", POST_TIME,
                  {"red": str(files["post_red"]), "scl": str(files["post_scl"])},
                  cloud_cover=float(cloud.mean() * 100), mgrs=("21", "J", "XM"), **common),
    ]
    truth = folder / "truth.npz"
    np.savez_compressed(truth, east=(dx * xres).astype(np.float32),
                        north=(-dy * abs(yres)).astype(np.float32),
                        x=t.c + xres * (np.arange(w) + 0.5), y=t.f + yres * (np.arange(h) + 0.5))
    to_ll = Transformer.from_crs(epsg, 4326, always_xy=True)
    # AOI: the central 80% of the scene, in degrees
    x0, x1 = t.c + xres * 0.1 * w, t.c + xres * 0.9 * w
    y0, y1 = t.f + yres * 0.9 * h, t.f + yres * 0.1 * h
    lon, lat = to_ll.transform([x0, x1, x0, x1], [y0, y0, y1, y1])
    bbox = (min(lon), min(lat), max(lon), max(lat))
    (folder / "items.json").write_text(json.dumps(items, indent=1, default=str))
    return DemoEvent(folder, items, bbox, truth, fault)


def truth_epe(cube_path: str | Path, truth: str | Path, pair: int = 0) -> dict[str, float]:
    """End-point error of the cube against the demo's truth, in metres and pixels."""
    from .cube import open_cube

    ds = open_cube(cube_path).isel(pair=pair)
    tr = np.load(truth)
    xs, ys = ds.x.values, ds.y.values
    col = np.searchsorted(tr["x"], xs)
    row = np.searchsorted(-tr["y"], -ys)
    te = tr["east"][np.ix_(row, col)]
    tn = tr["north"][np.ix_(row, col)]
    valid = ds.valid.values == 1
    res = abs(float(xs[1] - xs[0]))
    out = {}
    for name in ("raw", "denoised"):
        e = ds["east_raw" if name == "raw" else "east"].values
        n = ds["north_raw" if name == "raw" else "north"].values
        err = np.hypot(e - te, n - tn)[valid]
        out[f"epe_{name}_m"] = float(np.nanmean(err))
        out[f"epe_{name}_px"] = float(np.nanmean(err)) / res
    out["valid_fraction"] = float(valid.mean())
    out["max_true_displacement_m"] = float(np.hypot(te, tn).max())
    return out


def run_demo(out: Path, cfg: RunConfig | None = None, size: tuple[int, int] | None = None,
             client=None) -> dict:
    """Build the demo, serve its COGs over HTTP (range requests) and its items with a local
    STAC API, search it, process every pair with ``pipeline.process.process_pair`` (no
    Prefect), and report the EPE against the truth.

    ``cfg``: the run's settings (its ``out``, search and bands are set here); ``client``:
    a ``distributed.Client`` (default: per ``cfg.cluster``).
    """
    import time
    from dataclasses import replace

    from .aoi import search_params
    from .config import InputConfig, OutputConfig
    from .http_server import RangeFileServer
    from .process import cube_path_for, plan_source, process_pair
    from .search import search_pairs
    from .stac_items import make_collection
    from .stac_server import LocalStacServer

    out = Path(out)
    base = cfg or RunConfig(output=OutputConfig(out=str(out / "demo.zarr")))
    t0 = time.monotonic()
    event = build_demo_event(out / "scenes", size=size)
    results = []
    with RangeFileServer(out / "scenes") as files:
        items = files.items(event.items)  # hrefs are http://127.0.0.1:PORT/..., as in the cloud
        with LocalStacServer(items, [make_collection("sentinel-2-l2a", items)]) as server:
            log.info("demo STAC API serving %d items at %s, their COGs at %s", len(items),
                     server.url, files.url)
            params = search_params(event_time=EVENT_TIME, asset="red", stac_url=server.url,
                                   collection="sentinel-2-l2a", bbox=list(event.bbox),
                                   days_before=30, days_after=30, max_cloud=20)
            run = replace(base, output=replace(base.output, out=str(out / "demo.zarr")),
                          input=InputConfig(bands=("red",)), search=params)
            plans = search_pairs(run.search)
            for plan in plans:
                cube = cube_path_for(Path(run.output.out), plan, len(plans))
                results.append(process_pair(plan_source(plan, run), run, client=client,
                                            out=cube))
    seconds = round(time.monotonic() - t0, 1)
    first = results[0]
    scores = truth_epe(first.cube, event.truth, first.index)
    print(f"cube: {first.cube}")
    for p in first.quicklooks:
        print(f"quick-look: {p}")
    print("EPE against the demo's known truth: "
          f"raw {scores['epe_raw_m']:.2f} m ({scores['epe_raw_px']:.3f} px), "
          f"log-TV {scores['epe_denoised_m']:.2f} m ({scores['epe_denoised_px']:.3f} px); "
          f"largest true displacement {scores['max_true_displacement_m']:.1f} m; "
          f"{100 * scores['valid_fraction']:.1f}% of pixels measured; {seconds:.0f} s")
    (out / "demo_scores.json").write_text(json.dumps({**scores, "seconds": seconds},
                                                     indent=1))
    return scores
