"""Procedural textures for training variety: shaded terrain, ridges and grain, at several scales.

Pure maths on numpy arrays. The families are chosen to differ from the benchmark's unseen
texture, the isotropic ``1/f^β`` fractal with β in 1.5–2.2 (``bench.benchmark``), so
that texture stays one no training sample came from:

- ``terrain``: a ``1/f^β`` surface (β 3–4, smooth relief) lit by a sun (Lambertian
  shading): directional, bright and dark slopes as in imagery of mountains;
- ``ridged``: ``(1 - |n|/max|n|)²`` of band-pass noise ``n``: a network of sharp crests;
- ``grain``: near-white noise (β 0.3–1.0): fine isotropic grain (sand, gravel, scrub).

Each is drawn at a random scale: generated ``zoom``× smaller and resampled up (cubic),
``zoom`` in 1–3, so a family spans sharp to smooth.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .temporal_change import fractal_noise

PROCEDURAL_KINDS = ("terrain", "ridged", "grain")
MAX_ZOOM = 3.0  # largest resampling factor (texture feature size multiplier)


def hillshade(dem: np.ndarray, azimuth_deg: float, elevation_deg: float,
              pixel: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
    """Lambertian shading ``(H, W)`` float32 in [0, 1] of a north-up DEM.

    Args:
        dem: ``(H, W)`` elevation, rows going south, columns going east (same unit as
            ``pixel``).
        azimuth_deg: direction the sunlight comes from, clockwise from north (0 = north,
            90 = east).
        elevation_deg: sun height above the horizon (deg); flat ground shades to
            ``sin(elevation)``.
        pixel: ``(row, col)`` spacing in the DEM's unit.
    """
    dz_drow, dz_dcol = np.gradient(np.asarray(dem, np.float64), *pixel)
    dz_deast, dz_dnorth = dz_dcol, -dz_drow
    az, el = np.radians(azimuth_deg), np.radians(elevation_deg)
    sun = (np.sin(az) * np.cos(el), np.cos(az) * np.cos(el), np.sin(el))  # east, north, up
    lit = (-dz_deast * sun[0] - dz_dnorth * sun[1] + sun[2]) / np.sqrt(
        1.0 + dz_deast**2 + dz_dnorth**2)
    return np.clip(lit, 0.0, 1.0).astype(np.float32)


def _standardise(img: np.ndarray) -> np.ndarray:
    img = img - img.mean()
    return (img / max(float(img.std()), 1e-12)).astype(np.float32)


def _at_scale(make, shape: tuple[int, int], zoom: float) -> np.ndarray:
    """``make(small_shape)`` resampled up by ``zoom`` and cut to ``shape``."""
    h, w = shape
    small = (int(np.ceil(h / zoom)) + 4, int(np.ceil(w / zoom)) + 4)
    img = make(small)
    if zoom != 1.0:
        img = ndimage.zoom(img, zoom, order=3, mode="reflect")
    return img[:h, :w]


def procedural_texture(shape: tuple[int, int], rng: np.random.Generator, kind: str,
                       zoom: float | None = None) -> np.ndarray:
    """One texture ``(H, W)`` float32, zero mean, unit std, of family ``kind``.

    ``zoom`` (≥ 1, default random in [1, ``MAX_ZOOM``]) is the resampling factor: larger
    is smoother. See the module docstring for the families.
    """
    if kind not in PROCEDURAL_KINDS:
        raise ValueError(f"unknown texture kind {kind!r}; choose from {PROCEDURAL_KINDS}")
    zoom = float(rng.uniform(1.0, MAX_ZOOM) if zoom is None else zoom)
    if zoom < 1.0:
        raise ValueError(f"zoom must be >= 1, got {zoom}")
    if kind == "terrain":
        beta = rng.uniform(3.0, 4.0)
        relief = rng.uniform(0.15, 0.5)  # slope scale: std of the unit-step gradient
        azimuth, elevation = rng.uniform(0.0, 360.0), rng.uniform(30.0, 65.0)

        def make(s):
            z = fractal_noise(s, rng, beta).astype(np.float64)
            g = np.hypot(*np.gradient(z))
            return hillshade(z * relief / max(float(g.std()), 1e-12), azimuth, elevation)
    elif kind == "ridged":
        band = rng.uniform(1.5, 4.0)  # crest spacing scale (px): the band-pass's inner sigma

        def make(s):
            n = rng.standard_normal(s)
            n = (ndimage.gaussian_filter(n, band, mode="wrap")
                 - ndimage.gaussian_filter(n, 3.0 * band, mode="wrap"))
            return (1.0 - np.abs(n) / np.abs(n).max()) ** 2
    else:  # grain
        beta = rng.uniform(0.3, 1.0)

        def make(s):
            return fractal_noise(s, rng, beta)
    return _standardise(_at_scale(make, shape, zoom))
