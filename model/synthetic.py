"""Semi-synthetic image pairs: real texture warped by an Okada fault field, plus change.

The true field ``d = (dx, dy)`` (pixels) lives on the ``pre`` grid, and ``post`` is made
so that ``post(y) = texture(x)`` where ``x + d(x) = y`` (DESIGN's convention
``post(row + dy, col + dx) = pre(row, col)``). That implicit equation is solved per
``post`` pixel by fixed-point iteration ``x ← y − d(x)`` with ``d`` evaluated
analytically, so pixels next to a discontinuous fault are right, not smeared.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from .okada import Fault, fault_displacement, fault_trace
from .temporal_change import RealisticChange, apply_realistic_change, fractal_noise

# name -> (low, high) bounds of the largest displacement magnitude in the pair, pixels
RANGES: dict[str, tuple[float, float]] = {
    "translation": (0.0, 3.0),
    "very_small": (0.05, 0.5),
    "small": (0.5, 2.0),
    "large": (2.0, 10.0),
}

DisplacementFn = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass
class SyntheticPair:
    """One generated pair.

    Attributes:
        pre, post: ``(H, W)`` float32 images.
        flow: ``(2, H, W)`` float32 true ``(dx, dy)`` in pixels on the ``pre`` grid.
        fault_mask: ``(H, W)`` bool, pixels on the surface trace (all False for a
            blind fault or a translation).
        valid: ``(H, W)`` bool on the ``pre`` grid, pixels whose truth can be measured:
            False where ``post`` does not show that ground (hidden under the other side
            of a fault whose sides converge, see :func:`visible_in_post`; thick cloud or
            open water of a realistic change).
        params: the random parameters that made the pair.
    """

    pre: np.ndarray
    post: np.ndarray
    flow: np.ndarray
    fault_mask: np.ndarray
    valid: np.ndarray
    params: dict = field(default_factory=dict)


@dataclass(frozen=True)
class TemporalChange:
    """Ranges of the radiometric and land-cover changes between ``pre`` and ``post``.

    Gains are multiplicative, offsets and noise in units of the texture's std.
    """

    gain: tuple[float, float] = (0.8, 1.25)
    offset: tuple[float, float] = (-0.3, 0.3)
    blur_sigma: tuple[float, float] = (0.0, 0.8)  # px, applied to one of the two images
    illumination: tuple[float, float] = (0.0, 0.25)  # relative gain change across the tile
    patches: tuple[int, int] = (0, 6)  # number of land-cover patches
    patch_radius: tuple[float, float] = (4.0, 24.0)  # px
    noise: tuple[float, float] = (0.005, 0.04)  # per image


def fractal_texture(shape: tuple[int, int], rng: np.random.Generator, beta: float = 1.8
                    ) -> np.ndarray:
    """Synthetic ``1/f^beta`` texture ``(H, W)`` float32, zero mean, unit std."""
    return fractal_noise(shape, rng, beta)


GENERATOR_VERSION = 3
"""Bumped whenever the pairs or their ``valid`` change for the same seed, so that sample
files from an older generator are found stale: 1, the first; 2, ``valid`` on the ``pre``
grid (hidden ground not valid); 3, new ground in a fault's gap (:func:`post_ground`)."""


def source_coords(fn: DisplacementFn, shape: tuple[int, int], iterations: int = 30,
                  tol: float = 1e-4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ground (``pre``-grid) position seen at each ``post`` pixel.

    Solves ``x + d(x) = y`` for every ``post`` pixel ``y`` by fixed-point iteration
    ``x ← y − d(x)``, with ``fn(cols, rows) -> (dx, dy)`` in pixels.

    Returns:
        ``rows``, ``cols`` ``(H, W)`` float64 of ``x``, and a bool ``(H, W)`` mask of the
        pixels where the fixed point converged (the truth is unique there).
    """
    h, w = shape
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float64)
    xr, xc = _fixed_point(fn, rows, cols, iterations, tol)
    dx, dy = fn(xc, xr)
    converged = np.maximum(np.abs(xr + dy - rows), np.abs(xc + dx - cols)) < 1e-2
    return xr, xc, converged


def _fixed_point(fn: DisplacementFn, yr: np.ndarray, yc: np.ndarray, iterations: int,
                 tol: float) -> tuple[np.ndarray, np.ndarray]:
    """``x ← y − d(x)`` from ``x = y`` (``rows``, ``cols`` arrays, px) until no pixel moves
    by ``tol`` px or after ``iterations``: the ground point ``post`` shows at ``y``."""
    xr, xc = yr.copy(), yc.copy()
    for _ in range(iterations):
        dx, dy = fn(xc, xr)
        nr, nc = yr - dy, yc - dx
        step = np.maximum(np.abs(nr - xr), np.abs(nc - xc))
        xr, xc = nr, nc
        if step.max() < tol:
            break
    return xr, xc


def visible_in_post(fn: DisplacementFn, shape: tuple[int, int], iterations: int = 30,
                    tol: float = 1e-4, agree_px: float = 0.1) -> np.ndarray:
    """``(H, W)`` bool on the ``pre`` grid: the ground at ``x`` is what ``post`` shows at
    ``y = x + d(x)``.

    ``post`` at ``y`` shows the ground that the fixed point ``x ← y − d(x)`` started at
    ``y`` reaches (as :func:`source_coords` builds it). Where the two sides of a fault
    converge, two ground points land on the same ``y``; ``post`` shows one of them and
    the other is hidden: no image can measure its displacement, so it is not valid.
    A pixel counts as visible when the fixed point comes back to within ``agree_px`` px.
    """
    h, w = shape
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float64)
    dx, dy = fn(cols, rows)
    xr, xc = _fixed_point(fn, rows + dy, cols + dx, iterations, tol)
    return np.hypot(xr - rows, xc - cols) < agree_px


def post_ground(fn: DisplacementFn, shape: tuple[int, int], texture_shape: tuple[int, int],
                origin: tuple[int, int] = (0, 0), iterations: int = 30, tol: float = 1e-4
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ground ``post`` shows at each pixel, as ``pre``-grid ``rows``, ``cols`` (float64).

    Where the fixed point of :func:`source_coords` converged, that ground. Where it did not,
    no ground lands: a fault opened there, and the iteration, swinging between the two
    sides, would end on ground that ``post`` also shows beside the gap, so one ``pre``
    pixel would match two places. Those pixels show ground from half the texture away in
    both axes (wrapped into ``texture_shape``, ``pre`` at ``origin`` inside it), far
    beyond any displacement the ranges draw: ground new to that neighbourhood, as a scarp
    or freshly exposed soil is. Also returns the bool ``(H, W)`` convergence mask.
    """
    xr, xc, converged = source_coords(fn, shape, iterations, tol)
    (th, tw), (r0, c0) = texture_shape, origin
    xr = np.where(converged, xr, (xr + r0 + th / 2) % th - r0)
    xc = np.where(converged, xc, (xc + c0 + tw / 2) % tw - c0)
    return xr, xc, converged


def resample_post(texture: np.ndarray, fn: DisplacementFn, shape: tuple[int, int],
                  origin: tuple[int, int] = (0, 0), iterations: int = 30, tol: float = 1e-4
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Make ``post`` from ``texture`` for a displacement function.

    Args:
        texture: ``(Ht, Wt)`` image; ``pre`` is ``texture[r0:r0+H, c0:c0+W]``.
        fn: ``fn(cols, rows) -> (dx, dy)``, pixels, at ``pre``-grid positions.
        shape: ``(H, W)`` of the pair.
        origin: ``(r0, c0)`` of ``pre`` inside ``texture``.

    Returns:
        ``post`` ``(H, W)`` float32 (where a fault opens, new ground: :func:`post_ground`),
        and a bool ``(H, W)`` mask of the pixels where the fixed point converged.
    """
    xr, xc, converged = post_ground(fn, shape, texture.shape, origin, iterations, tol)
    return _sample(texture, xr, xc, origin), converged


def _sample(texture: np.ndarray, rows: np.ndarray, cols: np.ndarray,
            origin: tuple[int, int]) -> np.ndarray:
    r0, c0 = origin
    post = ndimage.map_coordinates(texture.astype(np.float64), [rows + r0, cols + c0],
                                   order=3, mode="reflect")
    return post.astype(np.float32)


def random_fault(rng: np.random.Generator, shape: tuple[int, int],
                 surface_prob: float = 0.7) -> Fault:
    """A random strike-slip, normal or thrust fault crossing an ``(H, W)`` pixel grid.

    Coordinates are in pixels: east = column, north = −row. Slip is 1 (rescaled later).
    """
    h, w = shape
    size = float(max(h, w))
    mechanism = rng.choice(["strike-slip", "normal", "thrust"])
    if mechanism == "strike-slip":
        dip = rng.uniform(60, 90)
        rake = rng.choice([0.0, 180.0]) + rng.uniform(-15, 15)
    elif mechanism == "normal":
        dip = rng.uniform(40, 70)
        rake = -90.0 + rng.uniform(-15, 15)
    else:
        dip = rng.uniform(20, 45)
        rake = 90.0 + rng.uniform(-15, 15)
    surface = rng.random() < surface_prob
    return Fault(
        east=w / 2 + rng.uniform(-0.2, 0.2) * w,
        north=-(h / 2 + rng.uniform(-0.2, 0.2) * h),
        top_depth=0.0 if surface else rng.uniform(0.03, 0.3) * size,
        strike_deg=rng.uniform(0, 360),
        dip_deg=dip,
        length=rng.uniform(0.8, 4.0) * size,
        width=rng.uniform(0.3, 1.5) * size,
        rake_deg=rake,
        slip=1.0,
    )


def fault_field(fault: Fault, scale: float = 1.0) -> DisplacementFn:
    """``fn(cols, rows) -> (dx, dy)`` in pixels for a fault given in pixel coordinates."""

    def fn(cols: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ue, un, _ = fault_displacement(fault, cols, -rows)
        return scale * ue, -scale * un

    return fn


def trace_mask(fault: Fault, shape: tuple[int, int], half_width: float = 0.75) -> np.ndarray:
    """Pixels within ``half_width`` px of the fault's surface trace (empty if blind)."""
    h, w = shape
    if fault.top_depth > 0:
        return np.zeros(shape, dtype=bool)
    (e0, n0), (e1, n1) = fault_trace(fault)
    p0 = np.array([e0, -n0])
    p1 = np.array([e1, -n1])
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float64)
    v = p1 - p0
    t = np.clip(((cols - p0[0]) * v[0] + (rows - p0[1]) * v[1]) / (v @ v), 0.0, 1.0)
    dist = np.hypot(cols - (p0[0] + t * v[0]), rows - (p0[1] + t * v[1]))
    return dist <= half_width


def apply_temporal_change(pre: np.ndarray, post: np.ndarray, rng: np.random.Generator,
                          change: TemporalChange, other: np.ndarray | None = None
                          ) -> tuple[np.ndarray, np.ndarray]:
    """Radiometric, blur, illumination, land-cover and noise changes to a pair.

    ``other`` (same shape) supplies unrelated texture for land-cover patches.
    """
    std = float(np.nanstd(pre)) or 1.0
    h, w = pre.shape
    pre, post = pre.copy(), post.copy()
    post = post * rng.uniform(*change.gain) + rng.uniform(*change.offset) * std
    sigma = rng.uniform(*change.blur_sigma)
    if sigma > 0.05:
        if rng.random() < 0.5:
            post = ndimage.gaussian_filter(post, sigma)
        else:
            pre = ndimage.gaussian_filter(pre, sigma)
    angle = rng.uniform(0, 2 * np.pi)
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float32)
    ramp = (np.cos(angle) * (cols / w - 0.5) + np.sin(angle) * (rows / h - 0.5))
    post = post * (1.0 + rng.uniform(*change.illumination) * ramp)
    for _ in range(rng.integers(change.patches[0], change.patches[1] + 1)):
        cr, cc = rng.uniform(0, h), rng.uniform(0, w)
        a, b = rng.uniform(*change.patch_radius, size=2)
        th = rng.uniform(0, np.pi)
        u = (cols - cc) * np.cos(th) + (rows - cr) * np.sin(th)
        v = -(cols - cc) * np.sin(th) + (rows - cr) * np.cos(th)
        inside = (u / a) ** 2 + (v / b) ** 2 <= 1.0
        if other is not None and rng.random() < 0.5:
            post[inside] = other[inside] * std + float(np.mean(post))
        else:
            post[inside] = post[inside] * rng.uniform(0.5, 1.5) + rng.normal(0, 0.5) * std
    pre = pre + rng.normal(0, rng.uniform(*change.noise) * std, pre.shape)
    post = post + rng.normal(0, rng.uniform(*change.noise) * std, post.shape)
    return pre.astype(np.float32), post.astype(np.float32)


def make_pair(texture: np.ndarray, rng: np.random.Generator, size: tuple[int, int] = (256, 256),
              displacement_range: str = "small", temporal_change: bool = False,
              change: TemporalChange | RealisticChange = TemporalChange()) -> SyntheticPair:
    """Generate one semi-synthetic pair from a texture.

    Args:
        texture: ``(Ht, Wt)`` real-valued image, at least ``size`` plus a 16 px margin on
            each side (the margin supplies the content that moves into view). NaN-free.
        rng: random generator (all randomness comes from it).
        size: ``(H, W)`` of the pair, pixels.
        displacement_range: a key of ``RANGES``. ``translation`` is a uniform shift of
            up to 3 px; the fault ranges scale an Okada field so its largest magnitude
            falls in the range.
        temporal_change: apply ``change`` (noise-free otherwise).
        change: a ``TemporalChange`` (global radiometry, blur, ellipse patches, noise) or
            a ``RealisticChange`` (parcels, clouds and shadows, haze, water, sensor; see
            ``model.temporal_change``). Neither alters ``flow``; a realistic change
            marks thick-cloud and open-water pixels not ``valid``, and records the
            effects drawn in ``params["effects"]``.
    """
    if displacement_range not in RANGES:
        raise ValueError(f"unknown displacement_range {displacement_range!r}; "
                         f"choose from {sorted(RANGES)}")
    texture = np.asarray(texture, dtype=np.float64)
    h, w = size
    margin = 16
    th, tw = texture.shape
    if th < h + 2 * margin or tw < w + 2 * margin:
        raise ValueError(f"texture {texture.shape} too small for a {size} pair "
                         f"(needs {margin} px margin on each side)")
    if not np.isfinite(texture).all():
        raise ValueError("texture contains NaN or inf")
    r0 = int(rng.integers(margin, th - h - margin + 1))
    c0 = int(rng.integers(margin, tw - w - margin + 1))
    pre = texture[r0:r0 + h, c0:c0 + w]
    lo, hi = RANGES[displacement_range]
    params: dict = {"range": displacement_range, "origin": (r0, c0)}
    if displacement_range == "translation":
        mag = rng.uniform(lo, hi)
        ang = rng.uniform(0, 2 * np.pi)
        tdx, tdy = mag * np.cos(ang), mag * np.sin(ang)

        def fn(cols, rows):
            return np.full_like(cols, tdx), np.full_like(rows, tdy)

        mask = np.zeros(size, dtype=bool)
        params.update(dx=tdx, dy=tdy)
    else:
        fault = random_fault(rng, size)
        rows, cols = np.mgrid[0:h, 0:w].astype(np.float64)
        udx, udy = fault_field(fault)(cols, rows)
        peak = float(np.percentile(np.hypot(udx, udy), 99.5)) or 1.0
        target = rng.uniform(lo, hi)
        fn = fault_field(fault, scale=target / peak)
        mask = trace_mask(fault, size)
        params.update(fault=fault, peak=target)
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float64)
    dx, dy = fn(cols, rows)
    flow = np.stack([dx, dy]).astype(np.float32)
    xr, xc, _ = post_ground(fn, size, texture.shape, (r0, c0))
    post = _sample(texture, xr, xc, (r0, c0))
    valid = visible_in_post(fn, size)
    pre = pre.astype(np.float32)
    if temporal_change and isinstance(change, RealisticChange):
        pre, post, hidden, effects = apply_realistic_change(pre, post, rng, change, flow,
                                                            (xr, xc))
        valid = valid & ~hidden
        params["effects"] = effects
    elif temporal_change:
        ro = int(rng.integers(0, th - h + 1))
        co = int(rng.integers(0, tw - w + 1))
        other = texture[ro:ro + h, co:co + w].astype(np.float32)
        other = (other - other.mean()) / (other.std() + 1e-6)
        pre, post = apply_temporal_change(pre, post, rng, change, other)
    params["temporal_change"] = temporal_change
    params["realistic"] = bool(temporal_change and isinstance(change, RealisticChange))
    return SyntheticPair(pre=pre, post=post, flow=flow, fault_mask=mask, valid=valid,
                         params=params)
