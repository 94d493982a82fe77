"""Realistic temporal change between two acquisitions: what a satellite sees change.

The pair's texture is read as top-of-atmosphere reflectance (``R = mean + std · t``, with a
random scene mean and contrast), the effects are applied in reflectance, and the result is
mapped back to the texture's units. The true displacement is never touched: the effects
change the *images* only. Where a pixel's truth can no longer be measured (under a thick
cloud, under open water) it is returned as not valid.

Effects, each on its own switch (probability) with its strength drawn per pair or image:

- **Parcels** (ground objects): an anisotropic Voronoi mosaic, 5–60 px across, with
  straight shared edges, anti-aliased to the exact sub-pixel edge position. Every parcel
  has its own gain and offset in both images (a crop-type pattern both dates share, plus
  optional ploughing stripes and dark boundary lines). A share of the parcels changes
  between the dates, in one of the two images: new gain (sometimes inverted contrast),
  new offset, and a texture change (ploughing stripes appear or vanish, the texture is
  smoothed out, or replaced by a new pattern). The mosaic lives in ground coordinates:
  it is evaluated at each ``post`` pixel's ground position (the generator's exact inverse
  of the displacement), so parcels, stripes and boundaries move with the ground, across
  the fault too.
- **Clouds and shadows** (image objects, per image): soft-edged blobs of optical
  thickness ``τ`` composited as ``R·e^-τ + R_cloud·(1 − e^-τ)``, which saturates to a
  flat bright core; the shadow is the cloud's opacity shifted by a sun-geometry offset
  and darkens the ground. Pixels seeing the ground through a transmission below
  ``cloud_invalid_transmission`` are not valid (in ``post``, mapped to the ``pre`` grid
  through the displacement).
- **Haze** (per image): a smooth low-contrast veil.
- **Water and wet soil** (ground objects, in one of the two images): dark patches that
  appear or vanish; open water is flat and not valid, wet soil is only darkened.
- **Sensor** (per image): global gain/offset, per-column detector gain (striping),
  signal-dependent noise at Sentinel-2 SNR, saturation, and JPEG2000-like compression
  (low-pass kept, small high-frequency detail shrunk to zero).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

Range = tuple[float, float]


@dataclass(frozen=True)
class RealisticChange:
    """Probabilities and strength ranges of realistic temporal change.

    A range ``(lo, hi)`` is drawn uniformly per pair (or per image where said), except
    those marked *log-uniform*. Reflectances are top-of-atmosphere, 0–1. Offsets in
    *texture std* units are multiples of the scene's contrast ``reflectance_std``.
    """

    # scene: the texture read as reflectance R = mean + std * (normalised texture)
    reflectance_mean: Range = (0.05, 0.15)
    reflectance_std: Range = (0.015, 0.05)

    # parcels (per pair)
    parcel_prob: float = 0.9  # pair has a parcel mosaic
    parcel_size: Range = (5.0, 60.0)  # px, mean parcel diameter, log-uniform
    parcel_elongation: Range = (1.0, 3.0)  # length / width, random orientation
    parcel_gain: Range = (0.6, 1.6)  # shared by both dates, per parcel, log-uniform
    parcel_offset: float = 0.8  # std of the shared per-parcel offset, texture std
    changed_share: Range = (0.2, 0.8)  # share of parcels that change between the dates
    change_gain: Range = (0.4, 2.5)  # multiplies a changed parcel's gain, log-uniform
    change_offset: float = 1.5  # std of a changed parcel's extra offset, texture std
    invert_prob: float = 0.25  # a changed parcel's contrast is inverted
    texture_change_prob: float = 0.6  # a changed parcel's texture changes (3 kinds)
    striped_prob: float = 0.25  # a parcel is ploughed (stripes) in both dates
    stripe_period: Range = (2.5, 8.0)  # px
    stripe_amplitude: Range = (0.3, 1.5)  # texture std
    smooth_sigma: float = 2.0  # px, "smoothed out" texture change
    boundary_prob: float = 0.5  # pair has dark boundary lines (hedges, tracks)
    boundary_width: Range = (0.4, 1.2)  # px, Gaussian half-width
    boundary_darkness: Range = (0.5, 2.0)  # texture std

    # clouds and haze (per image)
    cloud_prob: float = 0.2
    cloud_cover: Range = (0.02, 0.35)  # share of the image with τ > 0
    cloud_sharpness: Range = (2.0, 10.0)  # τ per noise std above the threshold
    cloud_reflectance: Range = (0.3, 0.8)
    shadow_shift: Range = (3.0, 25.0)  # px, cloud-to-shadow distance, random azimuth
    shadow_darkening: Range = (0.3, 0.7)  # fraction of the ground signal removed
    cloud_invalid_transmission: float = 0.5  # e^-τ below this: not valid
    haze_prob: float = 0.2
    haze_transmission: Range = (0.5, 0.9)
    haze_reflectance: Range = (0.1, 0.3)

    # water and wet soil (per pair, in one of the two images)
    water_prob: float = 0.25
    water_cover: Range = (0.02, 0.15)
    water_edge: Range = (2.0, 10.0)  # sharpness of the soft edge, per noise std
    open_water_prob: float = 0.5  # else wet soil
    water_reflectance: Range = (0.01, 0.05)
    wet_darkening: Range = (0.2, 0.5)  # fraction of the reflectance removed
    water_invalid: float = 0.5  # open-water weight above this: not valid

    # sensor (per image)
    gain: Range = (0.9, 1.1)
    offset: Range = (-0.01, 0.01)  # reflectance
    snr: Range = (100.0, 250.0)  # at 10 % reflectance; noise std ∝ sqrt(R)
    striping_prob: float = 0.35
    striping: Range = (0.005, 0.03)  # std of the per-column relative gain
    saturation: Range = (0.5, 1.0)  # reflectance where the sensor clips
    compression_prob: float = 0.5
    compression_sigma: Range = (0.4, 0.9)  # px, low-pass kept intact
    compression_threshold: Range = (0.5, 3.0)  # detail below this many noise stds dropped


def _log_uniform(rng: np.random.Generator, r: Range, size=None):
    return np.exp(rng.uniform(np.log(r[0]), np.log(r[1]), size))


def fractal_noise(shape: tuple[int, int], rng: np.random.Generator, beta: float = 1.8
                  ) -> np.ndarray:
    """``1/f^beta`` noise ``(H, W)`` float32, zero mean, unit std (periodic)."""
    h, w = shape
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    f = np.sqrt(fx**2 + fy**2)
    f[0, 0] = 1.0
    spec = (rng.standard_normal((h, w // 2 + 1)) + 1j * rng.standard_normal((h, w // 2 + 1)))
    img = np.fft.irfft2(spec / f ** (beta / 2), s=(h, w))
    return ((img - img.mean()) / img.std()).astype(np.float32)


@dataclass(frozen=True)
class ParcelMosaic:
    """Voronoi parcels of a jittered grid of seeds, in an anisotropic frame.

    ``u = transform @ (row, col)`` maps pixels to the mosaic frame, where the seeds sit
    one per ``spacing``-sized cell. Straight lines stay straight under the affine map, so
    shared edges are straight in the image too.
    """

    transform: np.ndarray  # (2, 2)
    origin: np.ndarray  # (2,), mosaic-frame corner of cell (0, 0)
    spacing: float
    seeds: np.ndarray  # (ny, nx, 2), mosaic frame

    @property
    def n(self) -> int:
        return self.seeds.shape[0] * self.seeds.shape[1]

    @classmethod
    def random(cls, shape: tuple[int, int], rng: np.random.Generator, size: float,
               elongation: float, margin: float = 24.0) -> ParcelMosaic:
        """A mosaic covering ``shape`` plus ``margin`` px, parcels ``size`` px across."""
        th = rng.uniform(0, np.pi)
        rot = np.array([[np.cos(th), np.sin(th)], [-np.sin(th), np.cos(th)]])
        a = np.diag([1.0, 1.0 / elongation]) @ rot
        spacing = size / np.sqrt(elongation)
        h, w = shape
        corners = np.array([[-margin, -margin], [-margin, w + margin],
                            [h + margin, -margin], [h + margin, w + margin]]) @ a.T
        lo = corners.min(0) - 2.5 * spacing
        n = np.ceil((corners.max(0) + 2.5 * spacing - lo) / spacing).astype(int)
        ij = np.stack(np.meshgrid(np.arange(n[0]), np.arange(n[1]), indexing="ij"), -1)
        seeds = lo + (ij + rng.random((n[0], n[1], 2))) * spacing
        return cls(a, lo, spacing, seeds)

    def locate(self, rows: np.ndarray, cols: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Nearest and second-nearest parcel at pixel positions (real coordinates within
        the mosaic's margin around the image).

        Returns ``(first, second, dist)``: parcel indices and the distance (px, ≥ 0) to
        the straight edge between them.
        """
        shp = rows.shape
        a = self.transform
        u0 = (a[0, 0] * rows + a[0, 1] * cols).ravel()
        u1 = (a[1, 0] * rows + a[1, 1] * cols).ravel()
        nx = self.seeds.shape[1]
        cell = (np.floor((u0 - self.origin[0]) / self.spacing).astype(np.int64) * nx
                + np.floor((u1 - self.origin[1]) / self.spacing).astype(np.int64))
        # a point's nearest seeds lie in its cell's 5 x 5 block less the corners (a seed
        # there is >= 1.41 cells away, never nearer than the point's own cell's seed)
        offs = np.array([di * nx + dj for di in range(-2, 3) for dj in range(-2, 3)
                         if abs(di) + abs(dj) < 4])
        k = np.clip(cell[:, None] + offs[None, :], 0, self.n - 1)  # (beyond the margin)
        # pick the two nearest in float32 (fast), then measure them in float64
        s0, s1 = (self.seeds[..., i].ravel().astype(np.float32) for i in (0, 1))
        d2 = ((s0[k] - u0.astype(np.float32)[:, None]) ** 2
              + (s1[k] - u1.astype(np.float32)[:, None]) ** 2)
        n = np.arange(len(u0))
        i1 = d2.argmin(1)
        d2[n, i1] = np.inf
        idx = np.stack([k[n, i1], k[n, d2.argmin(1)]])
        flat = self.seeds.reshape(-1, 2)
        best = np.stack([(flat[i, 0] - u0) ** 2 + (flat[i, 1] - u1) ** 2 for i in idx])
        # distance to the bisector, measured in pixels: the bisector is linear in u,
        # f(u) = (|u - s2|^2 - |u - s1|^2) / 2 = (s1 - s2)·u + c, and u = A p
        grad = (flat[idx[0]] - flat[idx[1]]) @ a  # (N, 2), d f / d p
        dist = 0.5 * (best[1] - best[0]) / np.maximum(np.hypot(grad[:, 0], grad[:, 1]), 1e-9)
        return idx[0].reshape(shp), idx[1].reshape(shp), dist.reshape(shp)


@dataclass
class _ParcelState:
    """Per-parcel appearance in one image (arrays of length ``mosaic.n``)."""

    gain: np.ndarray
    offset: np.ndarray
    mode: np.ndarray  # 0 texture, 1 smoothed texture, 2 new pattern
    stripe_amp: np.ndarray
    stripe_angle: np.ndarray
    stripe_period: np.ndarray
    stripe_phase: np.ndarray


def _parcel_states(n: int, rng: np.random.Generator, c: RealisticChange
                   ) -> tuple[list[_ParcelState], int]:
    """Appearance of ``n`` parcels in (pre, post), and how many changed."""
    gain = _log_uniform(rng, c.parcel_gain, n)
    offset = rng.normal(0, c.parcel_offset, n)
    striped = rng.random(n) < c.striped_prob
    amp = np.where(striped, rng.uniform(*c.stripe_amplitude, n), 0.0)
    angle = rng.uniform(0, np.pi, n)
    period = rng.uniform(*c.stripe_period, n)
    phase = rng.uniform(0, 2 * np.pi, n)
    base = _ParcelState(gain, offset, np.zeros(n, np.int8), amp, angle, period, phase)
    changed = rng.random(n) < rng.uniform(*c.changed_share)
    date = rng.integers(0, 2, n)  # which image shows the change
    new = _ParcelState(**{k: v.copy() for k, v in base.__dict__.items()})
    new.gain = gain * _log_uniform(rng, c.change_gain, n)
    new.gain = np.where(rng.random(n) < c.invert_prob, -new.gain, new.gain)
    new.offset = offset + rng.normal(0, c.change_offset, n)
    tex = (rng.random(n) < c.texture_change_prob) * rng.integers(1, 4, n)  # 0: none
    # 1: stripes appear (or vanish if ploughed), 2: smoothed out, 3: new pattern
    new.stripe_amp = np.where(tex == 1, np.where(striped, 0.0,
                                                 rng.uniform(*c.stripe_amplitude, n)), amp)
    new.stripe_angle = np.where(tex == 1, rng.uniform(0, np.pi, n), angle)
    new.stripe_period = np.where(tex == 1, rng.uniform(*c.stripe_period, n), period)
    new.mode = np.where(tex == 2, 1, np.where(tex == 3, 2, 0)).astype(np.int8)
    new.stripe_amp = np.where(tex == 2, 0.0, new.stripe_amp)  # smoothing flattens furrows
    states = []
    for d in (0, 1):
        sel = changed & (date == d)
        states.append(_ParcelState(**{k: np.where(sel, getattr(new, k), getattr(base, k))
                                      for k in base.__dict__}))
    return states, int(changed.sum())


def _parcel_image(t: np.ndarray, rows: np.ndarray, cols: np.ndarray, mosaic: ParcelMosaic,
                  st: _ParcelState, rng: np.random.Generator, c: RealisticChange,
                  boundary: tuple[float, float] | None) -> np.ndarray:
    """Texture ``t`` (texture std units) restyled parcel by parcel at ground ``rows, cols``."""
    first, second, dist = mosaic.locate(rows, cols)
    smooth = 0.5 * ndimage.gaussian_filter(t, c.smooth_sigma)  # flatter and blurred
    pattern = fractal_noise(t.shape, rng, rng.uniform(1.5, 3.0))

    def value(k: np.ndarray) -> np.ndarray:
        m = st.mode[k]
        src = np.where(m == 0, t, np.where(m == 1, smooth, pattern))
        ang = st.stripe_angle[k]
        stripes = st.stripe_amp[k] * np.sin(
            2 * np.pi * (cols * np.cos(ang) + rows * np.sin(ang)) / st.stripe_period[k]
            + st.stripe_phase[k])
        return st.gain[k] * src + st.offset[k] + stripes

    w = np.clip(0.5 + dist, 0.5, 1.0)  # a pixel's area share of its nearest parcel
    z = w * value(first) + (1 - w) * value(second)
    if boundary is not None:
        width, dark = boundary
        z = z - dark * np.exp(-((dist / width) ** 2))
    return z


def _cloud(shape: tuple[int, int], rng: np.random.Generator, c: RealisticChange
           ) -> np.ndarray:
    """Cloud optical thickness ``τ`` ``(H, W)``: soft-edged blobs covering a drawn share."""
    n = fractal_noise(shape, rng, 3.2)
    q = np.quantile(n, 1.0 - rng.uniform(*c.cloud_cover))
    return rng.uniform(*c.cloud_sharpness) * np.clip(n - q, 0.0, None)


def _soft_floor(r: np.ndarray, floor: float = 0.02) -> np.ndarray:
    """Reflectance kept positive: below ``floor`` it decays exponentially (smoothly, and
    monotonically, so dark parcels keep their texture instead of clipping to black)."""
    return np.where(r < floor, floor * np.exp((np.minimum(r, floor) - floor) / floor), r)


def _compress(r: np.ndarray, sigma: float, threshold: float) -> np.ndarray:
    """JPEG2000-like loss: keep the low-pass, soft-threshold the high-frequency detail."""
    low = ndimage.gaussian_filter(r, sigma)
    high = r - low
    return low + np.sign(high) * np.maximum(np.abs(high) - threshold, 0.0)


def apply_realistic_change(pre: np.ndarray, post: np.ndarray, rng: np.random.Generator,
                           change: RealisticChange, flow: np.ndarray,
                           post_ground: tuple[np.ndarray, np.ndarray]
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Apply realistic temporal change to a pair; the true ``flow`` is not changed.

    Args:
        pre, post: ``(H, W)`` images (texture units; ``post`` already displaced).
        rng: all randomness comes from it.
        change: probabilities and strengths.
        flow: ``(2, H, W)`` true ``(dx, dy)``, px, on the ``pre`` grid (used only to find
            which ``pre`` pixels a ``post`` cloud hides).
        post_ground: ``(rows, cols)`` ``(H, W)`` each: the ``pre``-grid (ground) position
            seen at each ``post`` pixel, i.e. ``x`` with ``x + d(x) = y``.

    Returns:
        ``pre``, ``post`` (float32, the input's units), ``invalid`` ``(H, W)`` bool on the
        ``pre`` grid (truth not measurable: thick cloud in either image, open water), and
        a dict saying which effects were drawn.
    """
    c = change
    h, w = pre.shape
    mu, sd = float(pre.mean()), float(pre.std()) or 1.0
    r_mean, r_std = rng.uniform(*c.reflectance_mean), rng.uniform(*c.reflectance_std)
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float64)
    ground = [(rows, cols), (np.asarray(post_ground[0], np.float64),
                             np.asarray(post_ground[1], np.float64))]
    z = [(pre.astype(np.float64) - mu) / sd, (post.astype(np.float64) - mu) / sd]
    info: dict = {}
    invalid = np.zeros((h, w), bool)

    if rng.random() < c.parcel_prob:
        size = float(_log_uniform(rng, c.parcel_size))
        mosaic = ParcelMosaic.random((h, w), rng, size, rng.uniform(*c.parcel_elongation))
        states, n_changed = _parcel_states(mosaic.n, rng, c)
        boundary = None
        if rng.random() < c.boundary_prob:
            boundary = (rng.uniform(*c.boundary_width), rng.uniform(*c.boundary_darkness))
        for i in (0, 1):
            z[i] = _parcel_image(z[i], *ground[i], mosaic, states[i], rng, c, boundary)
        info["parcels"] = {"size": size, "changed": n_changed, "boundary": boundary is not None}
    refl = [_soft_floor(r_mean + r_std * zi) for zi in z]

    if rng.random() < c.water_prob:  # ground object, in one image
        pad = 32
        noise = fractal_noise((h + 2 * pad, w + 2 * pad), rng, 3.0)
        q = np.quantile(noise, 1.0 - rng.uniform(*c.water_cover))
        field = np.clip((noise - q) * rng.uniform(*c.water_edge), 0.0, 1.0)
        i = int(rng.integers(2))
        gr, gc = ground[i]
        wt = ndimage.map_coordinates(field, [gr + pad, gc + pad], order=1, mode="nearest")
        if rng.random() < c.open_water_prob:
            refl[i] = refl[i] * (1 - wt) + wt * rng.uniform(*c.water_reflectance)
            invalid |= field[pad:pad + h, pad:pad + w] > c.water_invalid
            info["water"] = ("pre", "post")[i]
        else:
            refl[i] = refl[i] * (1 - wt * rng.uniform(*c.wet_darkening))
            info["wet_soil"] = ("pre", "post")[i]

    for i, name in enumerate(("pre", "post")):
        r = refl[i]
        if rng.random() < c.cloud_prob:
            tau = _cloud((h, w), rng, c)
            az = rng.uniform(0, 2 * np.pi)
            dist = rng.uniform(*c.shadow_shift)
            shade = ndimage.shift(1.0 - np.exp(-tau), (dist * np.sin(az), dist * np.cos(az)),
                                  order=1, mode="constant")
            r = r * (1.0 - rng.uniform(*c.shadow_darkening) * shade)
            trans = np.exp(-tau)
            r = r * trans + rng.uniform(*c.cloud_reflectance) * (1.0 - trans)
            if i == 1:  # where each pre pixel's ground point is seen in post
                trans = ndimage.map_coordinates(trans, [rows + flow[1], cols + flow[0]],
                                                order=1, mode="nearest")
            invalid |= trans < c.cloud_invalid_transmission
            info.setdefault("cloud", []).append(name)
        if rng.random() < c.haze_prob:
            veil = 0.5 + 0.5 * np.tanh(fractal_noise((h, w), rng, 3.5))
            t_min, t_max = c.haze_transmission
            trans = t_max - (t_max - t_min) * rng.uniform(0.3, 1.0) * veil
            r = r * trans + rng.uniform(*c.haze_reflectance) * (1.0 - trans)
            info.setdefault("haze", []).append(name)
        r = r * rng.uniform(*c.gain) + rng.uniform(*c.offset)
        if rng.random() < c.striping_prob:
            r = r * (1.0 + rng.normal(0.0, rng.uniform(*c.striping), w))[None, :]
            info.setdefault("striping", []).append(name)
        noise_ref = 0.1 / rng.uniform(*c.snr)  # noise std at 10 % reflectance
        r = r + rng.standard_normal((h, w)) * noise_ref * np.sqrt(np.clip(r, 0, None) / 0.1)
        r = np.clip(r, 0.0, rng.uniform(*c.saturation))
        if rng.random() < c.compression_prob:
            r = _compress(r, rng.uniform(*c.compression_sigma),
                          rng.uniform(*c.compression_threshold) * noise_ref)
            info.setdefault("compression", []).append(name)
        refl[i] = r

    out = [(mu + sd * (r - r_mean) / r_std).astype(np.float32) for r in refl]
    return out[0], out[1], invalid, info
