"""Training texture variety: the shaded matplotlib DEM and the procedural mix."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.textures import DEM_SUNS, DEM_ZOOMS, VARIETY_SOURCES, dem_textures, training_crops


def test_the_dem_is_shaded_under_every_sun_and_zoom():
    textures = dem_textures()
    assert len(textures) == len(DEM_SUNS) * len(DEM_ZOOMS)
    assert all(np.isfinite(t.image).all() and t.image.std() > 0.02 for t in textures)
    by_name = {t.name: t.image for t in textures}
    # the same relief lit from opposite sides (315° and 135°): bright slopes turn dark
    a, b = by_name["jacksboro_fault_dem.npz:sun315/45:x1"], by_name[
        "jacksboro_fault_dem.npz:sun135/55:x1"]
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] < -0.5


def test_full_variety_crops_need_no_landsat_and_cycle_over_the_sources(tmp_path):
    # root=tmp_path: an empty cache, so any Landsat read would try a download and fail
    rng = np.random.default_rng(0)
    crops = training_crops("train", 2 * len(VARIETY_SOURCES), 96, rng, variety=1.0,
                           root=tmp_path)
    assert len(crops) == 2 * len(VARIETY_SOURCES)
    for c in crops:
        assert c.shape == (96, 96) and np.isfinite(c).all()
        assert abs(float(c.mean())) < 1e-3 and float(c.std()) == pytest.approx(1.0, abs=1e-3)
    assert len({c.tobytes() for c in crops}) == len(crops)


def test_variety_is_refused_outside_the_train_split_and_outside_0_1(tmp_path):
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="train split only"):
        training_crops("val", 4, 96, rng, variety=0.5, root=tmp_path)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        training_crops("train", 4, 96, rng, variety=1.5, root=tmp_path)
