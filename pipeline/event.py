"""One earthquake-response job: STAC search → pairs → cubes and quick-looks."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from model.denoise import LogTVConfig

from .infer import InferenceConfig
from .load import load_pair
from .plan import PairPlan, SearchParams
from .run import PairMeta, process_pair, provenance
from .search import search_pairs

log = logging.getLogger(__name__)


@dataclass
class PairResult:
    """Where one processed pair went."""

    plan: PairPlan
    cube: Path
    pair_index: int
    quicklooks: list[Path]


def cube_path_for(out: Path, plan: PairPlan, n_plans: int) -> Path:
    """``out`` itself for one grid; ``<out stem>_<grid>.zarr`` beside it for several."""
    if n_plans == 1:
        return out
    key = "".join(ch if ch.isalnum() else "-" for ch in plan.pre.grid_key)
    return out.with_name(f"{out.stem}_{key}{out.suffix or '.zarr'}")


def plan_meta(plan: PairPlan) -> PairMeta:
    return PairMeta(pre_id=plan.pre.id, post_id=plan.post.id, pre_time=plan.pre.datetime,
                    post_time=plan.post.datetime,
                    attrs={"grid": plan.pre.grid_key, "epsg": plan.epsg,
                           "pre_cloud": plan.pre.cloud, "post_cloud": plan.post.cloud})


def process_plan(plan: PairPlan, cube: Path, params: SearchParams, *,
                 cfg: InferenceConfig, logtv: LogTVConfig, denoise_halo: int = 32,
                 client=None, quicklooks: bool = True) -> PairResult:
    """Load, infer, denoise and write one planned pair; then draw its quick-looks."""
    pair = load_pair(plan, chunk=cfg.chunk)
    attrs = provenance(cfg, logtv, denoise_halo, band=plan.asset, extra=params.as_attrs())
    index = process_pair(pair, cube, plan_meta(plan), cfg=cfg, logtv=logtv,
                         denoise_halo=denoise_halo, client=client, attrs=attrs)
    pngs = draw_quicklooks(cube, index) if quicklooks else []
    return PairResult(plan, cube, index, pngs)


def draw_quicklooks(cube: Path, index: int) -> list[Path]:
    """Map and profile PNGs next to the cube: ``<cube stem>_pair<i>_{maps,profile}.png``."""
    from .cube import open_cube
    from .quicklook import plot_maps, plot_profile

    ds = open_cube(cube)
    stem = cube.with_suffix("")
    maps = plot_maps(ds, index, Path(f"{stem}_pair{index}_maps.png"))
    profile = plot_profile(ds, index, Path(f"{stem}_pair{index}_profile.png"))
    return [maps, profile]


def run_event(params: SearchParams, out: str | Path, *, cfg: InferenceConfig = InferenceConfig(),
              logtv: LogTVConfig = LogTVConfig(), denoise_halo: int = 32, client=None,
              quicklooks: bool = True) -> list[PairResult]:
    """Search the catalogue, then process every usable grid into its own cube."""
    out = Path(out)
    plans = search_pairs(params)
    results = []
    for plan in plans:
        cube = cube_path_for(out, plan, len(plans))
        log.info("processing %s -> %s on EPSG:%d into %s", plan.pre.id, plan.post.id,
                 plan.epsg, cube)
        results.append(process_plan(plan, cube, params, cfg=cfg, logtv=logtv,
                                    denoise_halo=denoise_halo, client=client,
                                    quicklooks=quicklooks))
    return results
