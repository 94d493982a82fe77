"""HTTP reads of one pair's band: wall time and requests, with and without GDAL's options.

    python -m bench.http_reads [--size 4096] [--area 1024] [--delay-ms 0 20] [--repeat 3]

Writes two Sentinel-2-like COGs (``--size``² uint16, deflate with predictor, 1024 px
blocks, overviews: the layout of Earth Search's ``sentinel-cogs``), serves them with
``pipeline.http_server.RangeFileServer`` on loopback (``--delay-ms``: the latency of each
answer, as from a cloud store), and loads a ``--area``² window of the pair with
``stackstac.stack`` as ``pipeline.load`` does (512 px chunks, two threads). Each run is a
fresh process, so that GDAL's process-wide HTTP cache starts empty. The requests are
counted from the server's access log. Variants:

- ``gdal``: GDAL's defaults (no option set);
- ``stackstac``: stackstac's ``DEFAULT_GDAL_ENV``;
- ``microflow``: ``pipeline.gdal_env.stackstac_env()``;
- ``microflow-<OPTION>``: the same without one option.

Measured on the busy 2-core machine (``--delay-ms 0 20 --repeat 5``; median, with the
request count's spread over the 5 runs; MiB of bodies sent)::

    | variant         | latency ms | requests (min-max) | HEAD | range GETs | 404 | MiB  | wall s |
    | gdal            |  0 | 31 (30-31) | 20 | 10 | 19 | 17.1 | 0.66 |
    | stackstac       |  0 | 11 (10-12) |  2 |  9 |  0 | 17.1 | 0.31 |
    | microflow       |  0 | 11 (11-13) |  2 |  9 |  0 | 17.1 | 0.42 |
    | gdal            | 20 | 30 (29-31) | 20 |  9 | 19 | 15.7 | 0.98 |
    | stackstac       | 20 | 11 (10-12) |  2 |  9 |  0 | 17.1 | 0.60 |
    | microflow       | 20 | 12 (11-13) |  2 | 10 |  0 | 17.1 | 0.54 |
    | -READDIR        | 20 | 13 (12-13) |  2 | 10 |  1 | 17.1 | 0.63 |
    | -ALLOWED_EXT    | 20 | 11 (10-12) |  2 |  9 |  0 | 17.1 | 0.53 |
    | -MAX_RETRY      | 20 | 12 (9-12)  |  2 | 10 |  0 | 17.1 | 0.49 |
    | -MULTIRANGE     | 20 | 12 (11-12) |  2 | 10 |  0 | 17.1 | 0.43 |
    | -MERGE_RANGES   | 20 | 12 (11-13) |  2 | 10 |  0 | 17.1 | 0.55 |
    | -VSI_CACHE      | 20 | 12 (10-12) |  2 | 10 |  0 | 17.1 | 0.67 |

GDAL's defaults cost 19 extra requests (a directory listing and sidecar HEADs, all 404)
and about 1.8× the time at 20 ms latency; past that, the options are within the noise
of two racing threads at this size (see ``pipeline.gdal_env``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

EPSG = 32611
RES = 10.0
CHUNK = 512


def write_cogs(folder: Path, size: int, seed: int = 0) -> list[Path]:
    """Two ``size``² uint16 COGs (pre, post) in ``folder``: Landsat texture tiled to size,
    with noise; deflate + horizontal predictor, 1024 px blocks, overviews."""
    import rasterio
    from rasterio.transform import from_origin

    from pipeline.demo import TEXTURE

    with rasterio.open(TEXTURE) as src:
        tex = src.read(1).astype(np.float32)
    reps = (-(-size // tex.shape[0]), -(-size // tex.shape[1]))
    base = np.tile(tex, reps)[:size, :size]
    rng = np.random.default_rng(seed)
    paths = []
    for name in ("pre", "post"):
        img = np.clip(base + rng.normal(0, 20, base.shape), 1, 65535).astype(np.uint16)
        path = folder / f"{name}_red.tif"
        with rasterio.open(path, "w", driver="COG", width=size, height=size, count=1,
                           dtype="uint16", crs=f"EPSG:{EPSG}", nodata=0,
                           transform=from_origin(600000.0, 4200000.0, RES, RES),
                           blocksize=1024, compress="deflate", predictor=2,
                           overview_resampling="average") as dst:
            dst.write(img, 1)
        paths.append(path)
    return paths


def make_items(hrefs: list[str], size: int) -> list[dict]:
    from rasterio.transform import from_origin

    from pipeline.stac_items import make_item

    t = tuple(from_origin(600000.0, 4200000.0, RES, RES))[:6]
    times = (datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 3, 12, tzinfo=UTC))
    return [make_item(f"BENCH_{k}", dt, {"red": href}, epsg=EPSG, transform=t,
                      shape=(size, size), cloud_cover=0.0)
            for k, (dt, href) in enumerate(zip(times, hrefs, strict=True))]


def variants() -> dict[str, tuple[dict, dict, dict] | None]:
    """Variant name -> (always, open, read) options; None for stackstac's default."""
    from pipeline import gdal_env

    ours = (dict(gdal_env.ALWAYS), dict(gdal_env.OPEN), dict(gdal_env.READ))
    out: dict[str, tuple[dict, dict, dict] | None] = {
        "gdal": ({}, {}, {}), "stackstac": None, "microflow": ours}
    for key in gdal_env.ALWAYS:
        if key == "GDAL_HTTP_RETRY_DELAY":
            continue  # no effect without errors
        out[f"microflow-{key}"] = ({k: v for k, v in ours[0].items() if k != key},
                                   ours[1], ours[2])
    out["microflow-VSI_CACHE"] = (ours[0], {}, {})
    return out


def run_one(items_file: Path, variant: str, area: int, offset: int) -> dict:
    """In this process: load the pair's window with ``variant``'s options; seconds."""
    import dask
    import stackstac

    options = variants()[variant]
    env = stackstac.DEFAULT_GDAL_ENV if options is None else stackstac.LayeredEnv(
        always=options[0], open=options[1], read=options[2])
    items = json.loads(items_file.read_text())
    x0 = 600000.0 + RES * offset
    y1 = 4200000.0 - RES * offset
    bounds = (x0, y1 - RES * area, x0 + RES * area, y1)
    t0 = time.perf_counter()
    da = stackstac.stack(items, assets=["red"], epsg=EPSG, resolution=RES, bounds=bounds,
                         snap_bounds=False, chunksize=(1, 1, CHUNK, CHUNK), dtype="float32",
                         fill_value=np.float32(np.nan), rescale=False, sortby_date=False,
                         xy_coords="center", errors_as_nodata=(), gdal_env=env)
    with dask.config.set(scheduler="threads", num_workers=2):
        values = da.values
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "finite": float(np.isfinite(values).mean()),
            "checksum": float(np.nansum(values, dtype=np.float64))}


def measure(server, items_file: Path, variant: str, area: int, offset: int) -> dict:
    """One fresh process for ``variant``; its time and the server's log of it."""
    server.reset_log()
    res = subprocess.run([sys.executable, "-m", "bench.http_reads", "--one", variant,
                          "--items", str(items_file), "--area", str(area),
                          "--offset", str(offset)],
                         capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"variant {variant} failed:\n{res.stderr[-2000:]}")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    log = server.log
    out.update(requests=len(log), head=sum(r.method == "HEAD" for r in log),
               ranges=sum(r.range is not None for r in log),
               not_found=sum(r.status == 404 for r in log),
               mib=sum(r.nbytes for r in log) / 2**20)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=4096, help="COG side, px (default 4096)")
    ap.add_argument("--area", type=int, default=1024, help="window side, px (default 1024)")
    ap.add_argument("--offset", type=int, default=1500,
                    help="window's first row and column, px (default 1500: not on a block)")
    ap.add_argument("--delay-ms", type=float, nargs="+", default=[0.0, 20.0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--variants", nargs="*", help="default: all")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--items", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(args.items, args.one, args.area, args.offset)))
        return

    from pipeline.http_server import RangeFileServer

    names = args.variants or list(variants())
    with tempfile.TemporaryDirectory(prefix="microflow-http-bench-") as tmp:
        folder = Path(tmp)
        cogs = write_cogs(folder, args.size)
        print(f"pair of {args.size}² COGs ({sum(p.stat().st_size for p in cogs) / 2**20:.1f} "
              f"MiB), window {args.area}² at ({args.offset}, {args.offset}), {CHUNK} px "
              f"chunks, 2 threads, median of {args.repeat} fresh processes")
        print("| variant | latency ms | requests (min-max) | HEAD | range GETs | 404 | MiB "
              "| wall s |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        checksums = set()
        for delay in args.delay_ms:
            with RangeFileServer(folder, delay_s=delay / 1000) as server:
                items_file = folder / "items.json"
                items_file.write_text(json.dumps(make_items(
                    [server.href(p) for p in cogs], args.size)))
                for name in names:
                    runs = [measure(server, items_file, name, args.area, args.offset)
                            for _ in range(args.repeat)]
                    checksums.update(x["checksum"] for x in runs)

                    def med(key: str, runs: list[dict] = runs) -> float:
                        return statistics.median(x[key] for x in runs)

                    counts = [x["requests"] for x in runs]
                    print(f"| {name} | {delay:g} | {med('requests'):g} ({min(counts)}-"
                          f"{max(counts)}) | {med('head'):g} | {med('ranges'):g} | "
                          f"{med('not_found'):g} | {med('mib'):.1f} | {med('seconds'):.2f} |",
                          flush=True)
        if len(checksums) != 1:
            raise SystemExit(f"variants read different pixels: {sorted(checksums)}")


if __name__ == "__main__":
    main()
