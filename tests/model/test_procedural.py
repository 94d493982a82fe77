"""Procedural training textures: hillshading physics, families, scales."""

from __future__ import annotations

import numpy as np
import pytest

from model.procedural import PROCEDURAL_KINDS, hillshade, procedural_texture


def _ramp(shape=(32, 32), east=0.0, south=0.0) -> np.ndarray:
    rows, cols = np.mgrid[:shape[0], :shape[1]].astype(np.float64)
    return east * cols + south * rows


def test_flat_ground_shades_to_the_sine_of_the_sun_elevation():
    shade = hillshade(np.zeros((8, 8)), azimuth_deg=123.0, elevation_deg=30.0)
    np.testing.assert_allclose(shade, 0.5, atol=1e-6)


def test_a_slope_is_bright_when_lit_from_the_side_it_faces():
    rising_east = _ramp(east=0.5)  # faces west
    assert hillshade(rising_east, 270, 40).mean() > hillshade(rising_east, 90, 40).mean() + 0.3
    rising_south = _ramp(south=0.5)  # rows go south: faces north
    assert hillshade(rising_south, 0, 40).mean() > hillshade(rising_south, 180, 40).mean() + 0.3


def test_pixel_spacing_scales_the_slopes():
    z = _ramp(east=1.0)  # 1 m per column
    steep, gentle = hillshade(z, 90, 40, (1.0, 1.0)), hillshade(z, 90, 40, (10.0, 10.0))
    assert gentle.mean() == pytest.approx(np.sin(np.radians(40)), abs=0.1)
    assert steep.mean() < gentle.mean() - 0.2  # lit from the east, facing west


@pytest.mark.parametrize("kind", PROCEDURAL_KINDS)
def test_each_family_is_a_standardised_finite_image_reproducible_from_its_seed(kind):
    a = procedural_texture((96, 80), np.random.default_rng(4), kind)
    b = procedural_texture((96, 80), np.random.default_rng(4), kind)
    assert a.shape == (96, 80) and a.dtype == np.float32 and np.isfinite(a).all()
    assert abs(a.mean()) < 1e-4 and a.std() == pytest.approx(1.0, abs=1e-4)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kind", PROCEDURAL_KINDS)
def test_a_larger_zoom_makes_a_smoother_texture(kind):
    def roughness(zoom: float) -> float:
        t = procedural_texture((128, 128), np.random.default_rng(0), kind, zoom=zoom)
        return float(np.mean(np.diff(t, axis=1) ** 2))

    assert roughness(3.0) < 0.6 * roughness(1.0)


def test_families_are_distinct_images():
    rng = np.random.default_rng(1)
    imgs = {k: procedural_texture((64, 64), rng, k, zoom=1.0) for k in PROCEDURAL_KINDS}
    # grain is near-white: neighbours barely correlate; shaded terrain is smooth
    lag1 = {k: float(np.corrcoef(v[:, :-1].ravel(), v[:, 1:].ravel())[0, 1])
            for k, v in imgs.items()}
    assert lag1["grain"] < 0.5 < lag1["terrain"]


def test_unknown_family_or_zoom_below_one_is_refused():
    with pytest.raises(ValueError, match="unknown texture kind"):
        procedural_texture((32, 32), np.random.default_rng(0), "marble")
    with pytest.raises(ValueError, match="zoom"):
        procedural_texture((32, 32), np.random.default_rng(0), "grain", zoom=0.5)
