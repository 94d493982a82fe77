"""Lazy loading of a planned pair with stackstac: one band on its native grid, as Dask.

This is one of the two places that read pixels (the other is the cube reader). DN are
not rescaled to reflectance, but put on one scale for every date: nodata (DN 0),
saturated pixels (DN 65535) and, where the catalogue has the scene-classification asset
(``scl``), clouds, cloud shadows and defective pixels become NaN, all tested on the DN as
stored; then the processing-baseline offset (``pipeline.items.boa_offset_dn``: 1000 DN
for baseline 04.00 and later, including Collection-1, unless Earth Search removed it) is
subtracted, so that a pre scene of an older baseline and a post scene of a newer one
share one radiometric scale (reflectance × 10 000). An unreadable asset raises: it is
never silently turned into NaN.
"""

from __future__ import annotations

import logging

import numpy as np
import rioxarray  # noqa: F401  (registers the .rio accessor)
import stackstac
import xarray as xr

from .gdal_env import stackstac_env
from .items import boa_offset_dn
from .plan import PairPlan

log = logging.getLogger(__name__)

SCL_ASSET = "scl"
# Sentinel-2 L2A scene classes that are not usable ground: no data, saturated/defective,
# cloud shadow, cloud medium and high probability, thin cirrus.
SCL_MASKED = (0, 1, 3, 8, 9, 10)
SATURATED_DN = 65535  # Sentinel-2 L1C/L2A saturation value (uint16 maximum)


def _stack(plan: PairPlan, assets: list[str], chunk: int, dtype: str) -> xr.DataArray:
    """``(image=2, band, y, x)`` stack of ``assets`` of pre then post, with only x/y/band
    coordinates."""
    da = stackstac.stack(
        [plan.pre.item, plan.post.item],
        assets=list(assets),
        epsg=plan.epsg,
        resolution=plan.resolution,
        bounds=plan.bounds,
        snap_bounds=False,
        chunksize=(1, 1, chunk, chunk),
        dtype=dtype,
        fill_value=np.float32(np.nan) if dtype == "float32" else 0,
        rescale=False,
        sortby_date=False,
        xy_coords="center",
        errors_as_nodata=(),
        gdal_env=stackstac_env(),
    )
    da = da.drop_vars([c for c in da.coords if c not in ("x", "y", "band")])
    return da.rename(time="image")


def load_pair(plan: PairPlan, chunk: int = 512, mask_clouds: bool = True,
              assets: tuple[str, ...] | None = None) -> xr.Dataset:
    """Lazy ``pre`` and ``post`` images of ``plan`` on its grid.

    Returns a Dataset with ``pre`` and ``post`` ``(band, y, x)`` float32 (DN of
    ``assets``, default ``plan.asset``, less the processing-baseline offset; NaN where
    missing, saturated or cloudy), ``cloud`` ``(y, x)`` bool (a cloud, shadow or defect in
    either scene, from ``scl``), Dask chunks ``(chunk, chunk)``, projected pixel-centre
    ``x``/``y`` in metres, and the CRS (``rio.crs``). DN 0 is nodata and 65535 saturated
    (Sentinel-2), both tested before the offset; the offsets removed are in ``attrs``
    (``pre_boa_offset_dn``, ``post_boa_offset_dn``: one per asset). Nothing is read
    until computed.
    """
    assets = tuple(assets or (plan.asset,))
    data = _stack(plan, list(assets), chunk, "float32")
    has_scl = mask_clouds and all(SCL_ASSET in s.item.get("assets", {})
                                  for s in (plan.pre, plan.post))
    if has_scl:
        scl = _stack(plan, [SCL_ASSET], chunk, "float32").isel(band=0, drop=True)
        masked = scl.isin(list(SCL_MASKED)) & ~(scl == 0)  # scl 0 is "no data": not cloud
        cloud = masked.any("image")
        data = data.where(~(scl.isin(list(SCL_MASKED)) | scl.isnull()))
    else:
        log.info("no '%s' asset: clouds are not masked", SCL_ASSET)
        cloud = xr.zeros_like(data.isel(image=0, band=0, drop=True), dtype=bool)
    # stackstac marks nodata with the fill value; DN 0 is nodata for Sentinel-2 too, and
    # 65535 saturated: both tested on the stored DN, before the baseline offset
    data = data.where((data != 0) & (data < SATURATED_DN))
    offsets = [[boa_offset_dn(s.item, a) for a in assets] for s in (plan.pre, plan.post)]
    if any(any(o) for o in offsets):
        data = data - xr.DataArray(np.asarray(offsets, np.float32), dims=("image", "band"))
        log.info("processing-baseline offset removed: pre %s DN, post %s DN",
                 offsets[0], offsets[1])
    ds = xr.Dataset({"pre": data.isel(image=0, drop=True).astype("float32"),
                     "post": data.isel(image=1, drop=True).astype("float32"),
                     "cloud": cloud})
    ds = ds.drop_vars([c for c in ds.coords if c not in ("x", "y", "band")])
    ds = ds.rio.write_crs(f"EPSG:{plan.epsg}")
    ds.attrs.update(pre_id=plan.pre.id, post_id=plan.post.id, asset="+".join(assets),
                    clouds_masked=int(has_scl), pre_boa_offset_dn=offsets[0],
                    post_boa_offset_dn=offsets[1])
    return ds
