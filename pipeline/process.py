"""One pair end to end: load → displacement graph → denoise → write → quick-looks.

:func:`process_pair` is the only orchestrator of a pair. ``microflow pair``, the Prefect
flows' per-pair task, the demo and the tests all call it with a :class:`PairSource` (two
GeoTIFFs: :func:`geotiff_source`; a planned STAC pair: :func:`plan_source`) and a
:class:`~pipeline.config.RunConfig`.

1. Load the pair lazily and check it (size, CRS); read scene statistics (decimated).
2. Resolve the model once (``pipeline.model_ref``) on the workers' device type; its
   file's sha256 joins the inputs' fingerprints and the settings in the pair's key.
3. Find or add the pair in the cube (``pipeline.writer.open_pair``: resume, append,
   overwrite or refuse).
4. Stage ``measure``: raw field and σ, written block by block.
5. Fit an elastic source jointly with the co-registration offset on a decimated read of
   the stored raw field (``pipeline.source_model``), and the co-registration ramp.
6. Stage ``finish``: weighted log-TV of the stored field minus the ramp, and the flags.
7. Mark the pair complete; draw the quick-looks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import xarray as xr

from . import cube
from . import store as stores
from .config import RunConfig
from .fingerprint import file_fingerprint, item_fingerprint, pair_key
from .graph import finish_graph, fit_ramp, measure_graph, pixel_size, scene_stats
from .infer import workers_have_gpus
from .model_ref import resolve_model
from .source_model import coregistration_ramp, fit_source_model, source_provenance
from .writer import PairMeta, open_pair, refuse_other_identity, scene_entries, write_stage

log = logging.getLogger(__name__)
MIN_SIZE = 64


@dataclass(frozen=True)
class PairSource:
    """Where a pair's pixels come from: ids, times, input fingerprints, provenance, and
    ``load(tile) -> xr.Dataset`` (lazy ``pre``/``post`` ``(band, y, x)``, optional
    ``cloud``, CRS)."""

    meta: PairMeta
    fingerprints: tuple[str, str]
    attrs: dict
    load: Callable[[int], xr.Dataset] = field(repr=False)


def geotiff_source(pre: str | Path, post: str | Path, cfg: RunConfig) -> PairSource:
    """Two GeoTIFFs (bands from ``cfg.input``). Raises at once for a missing or unusable
    file (the headers are opened here; pixels are not read)."""
    from .geotiff import load_geotiff_pair, pair_meta, reprojection

    pre, post = Path(pre), Path(post)
    inputs = cfg.input
    if not all(isinstance(b, int) for b in inputs.bands):
        raise ValueError(f"GeoTIFF bands are numbers, got {list(inputs.bands)}")

    def load(tile: int) -> xr.Dataset:
        return load_geotiff_pair(pre, post, inputs.bands, tile, inputs.nodata,
                                 inputs.zero_is_nodata)[0]

    meta = pair_meta(pre, post)
    attrs = {"pre_file": str(pre.resolve()), "post_file": str(post.resolve()),
             **reprojection(pre, post)}
    return PairSource(PairMeta(**meta), (file_fingerprint(pre), file_fingerprint(post)),
                      attrs, load)


def plan_source(plan, cfg: RunConfig) -> PairSource:
    """A planned STAC pair (``pipeline.plan.PairPlan``), assets from ``cfg.input``."""
    from .items import boa_offset_dn
    from .load import load_pair
    from .product_item import input_item_href

    assets = tuple(str(b) for b in cfg.input.bands)

    def load(tile: int) -> xr.Dataset:
        return load_pair(plan, chunk=tile, assets=assets)

    meta = PairMeta(plan.pre.id, plan.post.id, plan.pre.datetime, plan.post.datetime)
    used = (*assets, "scl")
    stac_url = cfg.search.stac_url if cfg.search is not None else None
    attrs = {"grid": plan.pre.grid_key, "epsg": plan.epsg, "pre_cloud": plan.pre.cloud,
             "post_cloud": plan.post.cloud,
             **getattr(plan, "pairing", {}),  # orbits, view/sun angles, why chosen
             "pre_boa_offset_dn": [boa_offset_dn(plan.pre.item, a) for a in assets],
             "post_boa_offset_dn": [boa_offset_dn(plan.post.item, a) for a in assets],
             "pre_item": input_item_href(plan.pre.item, stac_url),
             "post_item": input_item_href(plan.post.item, stac_url)}
    return PairSource(meta, (item_fingerprint(plan.pre.item, used),
                             item_fingerprint(plan.post.item, used)), attrs, load)


@dataclass
class PairResult:
    """Where one processed pair went."""

    cube: Path | str  # a local folder, or an ``s3://`` URL
    index: int
    meta: PairMeta
    blocks_computed: int
    quicklooks: list[Path]


def software_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("microflow")
    except PackageNotFoundError:
        return "unknown"


def _check_pair(pair: xr.Dataset) -> None:
    if pair.sizes["y"] < MIN_SIZE or pair.sizes["x"] < MIN_SIZE:
        raise ValueError(f"area to process is {pair.sizes['y']}x{pair.sizes['x']} px; at "
                         f"least {MIN_SIZE}x{MIN_SIZE} is needed")
    if pair.rio.crs is None:
        raise ValueError("the loaded pair has no CRS")
    xres, yres = pixel_size(pair)
    if not (xres > 0 and yres < 0):
        raise ValueError(f"the grid is not north-up (x step {xres}, y step {yres}); east/north "
                         "would be wrong")


def provenance(cfg: RunConfig, model, source: PairSource) -> dict:
    """The pair's provenance: software, model file and hash, every setting, inputs."""
    return {
        "title": "MicroFlow ground displacement",
        "software": "microflow",
        "software_version": software_version(),
        **model.as_attrs(),
        **cfg.as_attrs(),
        **source.attrs,
        "pre_fingerprint": source.fingerprints[0],
        "post_fingerprint": source.fingerprints[1],
        "displacement_convention": "post(row + dy, col + dx) = pre(row, col); "
                                   "east = dx * xres, north = -dy * |yres|",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _key(source: PairSource, cfg: RunConfig, weights_sha256: str) -> str:
    """The pair's identity: its inputs, the weights and every number of the run."""
    return pair_key(*source.fingerprints, weights_sha256, cfg.numbers_key())


def _refuse_early(out: str | Path, source: PairSource, cfg: RunConfig) -> None:
    """:class:`writer.PairExistsError` before any cluster starts, when the cube at ``out``
    holds these scenes under an identity that no device this run could pick gives."""
    device_types = (cfg.model.device.split(":")[0],) if cfg.model.device else ("cpu", "cuda")
    # the default weights can differ between CPU and GPU: refuse only if neither matches
    keys = {_key(source, cfg, resolve_model(cfg.model.weights, d).sha256) for d in device_types}
    refuse_other_identity(out, scene_entries(out, source.meta), source.meta, keys,
                          cfg.output.if_exists)


def _fit_source(stored, xres: float, yres: float, index: int):
    """The joint source + co-registration fit of the stored field, or None and why."""
    try:
        fit = fit_source_model(stored, xres, yres)
    except ValueError as e:  # too few measured pixels
        log.warning("pair %d: no source model fitted: %s", index, e)
        return None, str(e)
    p = fit.params
    log.info("pair %d: source %s (Mw %.2f, strike %.0f°, residual scale ratio %.2f)", index,
             "detected" if fit.detected else "not detected", p["Mw"], p["strike_deg"],
             fit.scale_ratio)
    return fit, ""


def process_pair(source: PairSource, cfg: RunConfig, *, client=None,
                 out: str | Path | None = None, progress: bool = True) -> PairResult:
    """Process one pair into the cube ``out`` (default ``cfg.output.out``); see the module
    docstring. ``client``: a ``distributed.Client`` (default: per ``cfg.cluster``).

    Raises ``writer.PairExistsError`` when the cube holds these scenes from other inputs or
    settings (before any cluster starts), ``writer.BlockFailedError`` when a block fails
    (finished blocks are kept: a rerun resumes), ValueError for unusable inputs (before any
    cluster starts).
    """
    from .cluster import dask_client, log_worker_memory

    cfg = cfg.resolved()  # the model's defaults, as numbers, for the graph and provenance
    out = stores.normalize(out or cfg.output.out)  # a Path, or an s3:// URL as str
    pair = source.load(cfg.tiling.tile)
    _check_pair(pair)  # all before any cluster starts: size, grid, output path, pixels
    if cube.check_target(out, x=pair.x.values, y=pair.y.values, crs=pair.rio.crs,
                         chunk=cfg.tiling.tile):
        _refuse_early(out, source, cfg)
    stats = scene_stats(pair)
    xres, yres = pixel_size(pair)
    with dask_client(cfg.cluster, client, pixels=pair.sizes["y"] * pair.sizes["x"]) as c:
        gpu = workers_have_gpus(c)
        device = cfg.model.device or ("cuda" if gpu else "cpu")
        model = resolve_model(cfg.model.weights, device.split(":")[0])
        key = _key(source, cfg, model.sha256)
        attrs = provenance(cfg, model, source)
        index = open_pair(out, x=pair.x.values, y=pair.y.values, crs=pair.rio.crs,
                          tile=cfg.tiling.tile, meta=source.meta, key=key, attrs=attrs,
                          provenance={**attrs, "pair_key": key},
                          if_exists=cfg.output.if_exists)
        log.info("pair %d: %s -> %s into %s (model %s, sha256 %s…)%s", index,
                 source.meta.pre_id, source.meta.post_id, out, model.name, model.sha256[:12],
                 ", on GPU workers" if gpu else "")
        n = write_stage(out, index, "measure", measure_graph(pair, stats, cfg, model, gpu), c,
                        progress=progress)
        stored = cube.open_cube(out).isel(pair=index)
        fit, why_src = _fit_source(stored, xres, yres, index)
        try:
            if cfg.confidence.ramp == "auto" and fit is not None and fit.detected:
                ramp = coregistration_ramp(fit, xres, yres)  # never the source itself
            else:
                ramp = fit_ramp(stored, cfg.confidence.ramp, xres, yres)
            why = "" if ramp is not None else "ramp=keep"
        except ValueError as e:  # too few confident pixels to fit: say so, keep the ramp
            log.warning("pair %d: no co-registration ramp removed: %s", index, e)
            ramp, why = None, str(e)
        cube.update_provenance(out, index, {
            "ramp_removed": ramp is not None,
            "ramp_fit": ramp.as_dict(xres, yres) if ramp is not None else {"mode": "keep",
                                                                      "why": why},
            "source_model": source_provenance(fit, xres, yres, removed=ramp,
                                              why=why_src)})
        n += write_stage(out, index, "finish", finish_graph(pair, stored, ramp, cfg, gpu), c,
                         progress=progress)
        cube.set_complete(out, index)
        log_worker_memory(c)
    files = []
    if cfg.output.rupture_map:  # first: its figure replaces the single profile
        from .rupture_map import provenance_entry, write_rupture_map

        files = write_rupture_map(out, index, cfg.output.quicklook_dir or None,
                                  cfg.output.profile_step)
        cube.update_provenance(out, index, {"rupture_map": provenance_entry(files)})
    pngs = []
    if cfg.output.quicklooks:
        from .quicklook import draw_quicklooks

        pngs = draw_quicklooks(out, index, cfg.output.quicklook_dir or None)
    from .product_item import write_item

    write_item(out, index, quicklooks=pngs, extra=files)  # the rupture map's files
    return PairResult(out, index, source.meta, n, pngs + files)


def cube_path_for(out: str | Path, plan, n_plans: int) -> Path | str:
    """``out`` itself for one grid; ``<out stem>_<grid>.zarr`` beside it for several
    (a Path, or a URL string for an ``s3://`` cube)."""
    out = stores.normalize(out)
    if n_plans == 1:
        return out
    key = "".join(ch if ch.isalnum() else "-" for ch in plan.pre.grid_key)
    name = Path(stores.name(out))
    return stores.with_name(out, f"{name.stem}_{key}{name.suffix or '.zarr'}")
