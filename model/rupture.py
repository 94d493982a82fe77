"""The surface rupture of a displacement field: its trace, and the slip along it.

Pure numpy/scipy on arrays; no I/O. Positions are in pixels of the field's grid,
``(col, row)`` floats at pixel centres (row 0 is the northernmost row of a north-up
grid); displacements, steps, slips and σ are in the field's unit (metres in a cube).

1. **Step map** (:func:`step_map`). At every pixel and for 8 orientations of a line
   through it, the step is the mean of the field 1-5 px on one side minus the mean 1-5
   px on the other side, per component; the orientation with the largest step (east and
   north together) wins. Its significance ``z`` divides each component's step by the σ
   of the two sides. Its *sharpness* compares it with the step between 11-14 px on each
   side: about 1 for a discontinuity, 0.24 for a smooth gradient (a blind fault, an
   elastic far field, a ramp), 0 for a uniform shift (whose step is 0 anyway).
2. **Trace** (:func:`trace_segments`). Ridge pixels of the step (non-maximum suppression
   across the line), sharp and significant, kept by hysteresis (``z_low`` to grow,
   ``z_high`` to seed; a seed corridor, e.g. a source model's trace, seeds at ``z_low``),
   linked into polylines: each connected set gives its longest path, then what remains
   of it gives more (splits); ends that face each other across a small gap are joined;
   short ones are dropped. Each vertex moves across the line to the parabola peak of
   the step, the line is smoothed and simplified (Douglas-Peucker).
3. **Slip** (:func:`slip_along_strike`). Every ``step_px`` along each segment, a swath
   perpendicular to the trace (``swath_half_length_px`` to each side,
   ``swath_half_width_px`` along strike), minus the trace's own ``gap_px`` and minus the
   pixels nearer to another segment; on each side a robust (Tukey biweight), σ-weighted
   straight line per component (east, north); the offset is right side minus left side
   at the trace, with 1σ from the fits (residual scatter at least the pixels' σ, errors
   correlated over ``correlation_px``).

Sign conventions (DESIGN.md east/north): a segment runs from its first to its last
vertex; ``strike_deg`` is the azimuth of that direction (clockwise from north); *right*
is 90° clockwise from it. ``slip_parallel`` > 0 is **right-lateral** (dextral), < 0
left-lateral, whichever way the segment runs. ``slip_perpendicular`` > 0 is
**extension** (the sides move apart, horizontal part of normal slip or opening), < 0
shortening (thrust). The vertical is not measured (a 2-D optical field has none).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field, replace

import numpy as np

# scipy is imported where it is used: the CLI reads DEFAULT_PROFILE_STEP_PX before any
# heavy import
DEFAULT_PROFILE_STEP_PX = 10.0  # px between slip profiles along the trace
N_ORIENT = 8  # orientations of the step detector (every 22.5°)
NEAR = (1, 2, 3, 4, 5)  # px each side for the step (the model blurs a fault over ±4 px)
FAR = (11, 12, 13, 14)  # px each side for the sharpness test


@dataclass(frozen=True)
class RuptureConfig:
    """Settings of the trace and slip measurement (px unless stated).

    z_high, z_low: significance (step / σ) that seeds a trace and that grows one.
    min_step_px: smallest step (px of displacement, ``|east, north| / pixel size``).
    min_sharpness: near step over far step (1 discontinuity, 0.24 smooth gradient).
    min_length_px: shorter segments are dropped. join_px: ends closer than this that
        face each other are joined. simplify_px: Douglas-Peucker tolerance.
    step_px: spacing of the slip profiles along the trace.
    swath_half_length_px, swath_half_width_px, gap_px: swath across/along the trace and
        the trace's own pixels left out of the fits. min_side_px: fewer measured pixels
        on a side and the profile gives no offset.
    correlation_px: the field's errors are taken as correlated over this length.
    min_offset_z: a segment whose median offset significance is below this is no trace.
    """

    z_high: float = 5.0
    z_low: float = 2.5
    min_step_px: float = 0.1
    min_sharpness: float = 0.4
    min_length_px: float = 30.0
    join_px: float = 10.0
    simplify_px: float = 0.5
    step_px: float = DEFAULT_PROFILE_STEP_PX
    swath_half_length_px: float = 30.0
    swath_half_width_px: float | None = None  # None: step_px / 2, at least 3
    gap_px: float = 6.0
    min_side_px: int = 20
    correlation_px: float = 5.0
    min_offset_z: float = 4.0

    def half_width(self) -> float:
        """Swath half-width along strike (px)."""
        return max(self.step_px / 2, 3.0) if self.swath_half_width_px is None \
            else float(self.swath_half_width_px)


@dataclass
class StepMap:
    """Per-pixel step detector output, all ``(H, W)``: ``step`` (field unit, |east, north|
    step across the best line), ``z`` (significance), ``sharp`` (near/far step ratio),
    ``normal`` ``(2, H, W)`` (unit normal of the line, ``(dcol, drow)``)."""

    step: np.ndarray
    z: np.ndarray
    sharp: np.ndarray
    normal: np.ndarray


@dataclass
class Offset:
    """The slip at one point of a trace (field unit, m in a cube; px positions)."""

    segment: int
    col: float
    row: float
    distance_along_px: float
    strike_deg: float
    slip_parallel: float
    slip_perpendicular: float
    sigma_parallel: float
    sigma_perpendicular: float
    slip_east: float
    slip_north: float
    n_left: int
    n_right: int


@dataclass
class Segment:
    """One trace polyline: ``vertices`` ``(n, 2)`` as ``(col, row)`` px, and its offsets."""

    vertices: np.ndarray
    offsets: list[Offset] = field(default_factory=list)

    @property
    def length_px(self) -> float:
        return float(np.hypot(*np.diff(self.vertices, axis=0).T).sum())


@dataclass
class Rupture:
    """Every segment found (empty: no rupture) and why there is none (``reason``)."""

    segments: list[Segment]
    reason: str = ""
    candidates: int = 0  # linked segments before the offset test


# ---------------------------------------------------------------------------------------
# step map


def _shift(a: np.ndarray, dr: int, dc: int) -> np.ndarray:
    """``out[r, c] = a[r + dr, c + dc]``, NaN outside."""
    h, w = a.shape
    out = np.full_like(a, np.nan)
    r0, r1 = max(0, -dr), min(h, h - dr)
    c0, c1 = max(0, -dc), min(w, w - dc)
    if r1 > r0 and c1 > c0:
        out[r0:r1, c0:c1] = a[r0 + dr:r1 + dr, c0 + dc:c1 + dc]
    return out


class _Padded:
    """An array padded with NaN so that shifted views cost no copy."""

    def __init__(self, a: np.ndarray, pad: int) -> None:
        self.h, self.w = a.shape
        self.pad = pad
        self.a = np.pad(a.astype(np.float32), pad, constant_values=np.nan)

    def at(self, dr: int, dc: int) -> np.ndarray:
        """View ``out[r, c] = a[r + dr, c + dc]`` (NaN outside)."""
        p = self.pad
        return self.a[p + dr:p + dr + self.h, p + dc:p + dc + self.w]

    def side_mean(self, n: tuple[float, float], dists: tuple[int, ...]) -> np.ndarray:
        """Mean at ``p + s·n`` over ``s`` in ``dists`` (nearest pixel; NaN if any is)."""
        acc = np.zeros((self.h, self.w), np.float32)
        for s in dists:
            acc += self.at(int(np.rint(s * n[1])), int(np.rint(s * n[0])))
        return acc / len(dists)


def _orientations() -> list[tuple[float, float]]:
    return [(math.cos(math.pi * k / N_ORIENT), math.sin(math.pi * k / N_ORIENT))
            for k in range(N_ORIENT)]


def _local_mean(a: np.ndarray, size: int) -> np.ndarray:
    """NaN-aware box mean of ``a`` over ``size`` x ``size`` px (NaN where all NaN)."""
    from scipy import ndimage
    ok = np.isfinite(a)
    num = ndimage.uniform_filter(np.where(ok, a, 0.0).astype(np.float32), size, mode="nearest")
    den = ndimage.uniform_filter(ok.astype(np.float32), size, mode="nearest")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, np.nan)


def step_map(east: np.ndarray, north: np.ndarray, east_sigma: np.ndarray,
             north_sigma: np.ndarray) -> StepMap:
    """The step detector of the module docstring on ``(H, W)`` fields (NaN = unmeasured).

    σ of a side's mean is the pixels' σ (their errors are correlated, so no 1/√n), from
    the local mean variance over the detector's reach. Returns a :class:`StepMap`;
    pixels whose sides reach an unmeasured pixel have step 0.
    """
    pad = max(FAR) + 1
    e, n = _Padded(np.asarray(east), pad), _Padded(np.asarray(north), pad)
    size = 2 * max(NEAR) + 1
    var2 = 2 * _local_mean(np.asarray(east_sigma, np.float64) ** 2, size)  # two sides
    van2 = 2 * _local_mean(np.asarray(north_sigma, np.float64) ** 2, size)
    shape = e.h, e.w
    best = np.zeros(shape, np.float32)
    best_k = np.zeros(shape, np.int8)
    de_best = np.zeros(shape, np.float32)
    dn_best = np.zeros(shape, np.float32)
    dirs = _orientations()
    for k, nv in enumerate(dirs):
        minus = (-nv[0], -nv[1])
        de = e.side_mean(nv, NEAR) - e.side_mean(minus, NEAR)
        dn = n.side_mean(nv, NEAR) - n.side_mean(minus, NEAR)
        s = np.hypot(de, dn)
        s[~np.isfinite(s)] = 0.0
        better = s > best
        best[better] = s[better]
        best_k[better] = k
        de_best[better] = de[better]
        dn_best[better] = dn[better]
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.sqrt(de_best.astype(np.float64) ** 2 / var2 + dn_best.astype(np.float64) ** 2
                    / van2)
    # far step along the winning orientation only, where there is a step at all
    fe = np.full(shape, np.nan, np.float32)
    fn = np.full(shape, np.nan, np.float32)
    for k, nv in enumerate(dirs):
        sel = (best_k == k) & (best > 0)
        if not sel.any():
            continue
        minus = (-nv[0], -nv[1])
        fe[sel] = (e.side_mean(nv, FAR) - e.side_mean(minus, FAR))[sel]
        fn[sel] = (n.side_mean(nv, FAR) - n.side_mean(minus, FAR))[sel]
    with np.errstate(invalid="ignore", divide="ignore"):
        far2 = fe.astype(np.float64) ** 2 + fn.astype(np.float64) ** 2
        sharp = (de_best * fe + dn_best * fn) / far2  # the far step's share that is near
        sharp = np.where(far2 > 0, np.minimum(best.astype(np.float64) ** 2 / far2, sharp), 0.0)
    sharp = np.where(np.isfinite(sharp), sharp, 0.0)
    normal = np.stack([np.array([d[0] for d in dirs])[best_k],
                       np.array([d[1] for d in dirs])[best_k]])
    return StepMap(best.astype(np.float64), np.where(np.isfinite(z), z, 0.0), sharp, normal)


# ---------------------------------------------------------------------------------------
# trace


def _ridge(sm: StepMap) -> np.ndarray:
    """Pixels whose step is a maximum across their line (non-maximum suppression)."""
    s = sm.step
    keep = s > 0
    for nv in _orientations():
        sel = (np.abs(sm.normal[0] - nv[0]) < 1e-9) & (np.abs(sm.normal[1] - nv[1]) < 1e-9)
        if not sel.any():
            continue
        dr, dc = int(np.rint(nv[1])), int(np.rint(nv[0]))
        plus = np.nan_to_num(_shift(s, dr, dc))
        minus = np.nan_to_num(_shift(s, -dr, -dc))
        keep &= ~sel | ((s >= plus) & (s > minus))
    return keep


def _longest_path(adj, nodes: np.ndarray) -> np.ndarray:
    """The longest shortest path (two breadth-first searches) among ``nodes`` of ``adj``."""
    from scipy.sparse.csgraph import breadth_first_order
    sub = adj[nodes][:, nodes]
    order, pred = breadth_first_order(sub, 0, directed=False)
    depth = np.zeros(len(nodes), np.int64)
    for v in order[1:]:
        depth[v] = depth[pred[v]] + 1
    a = order[np.argmax(depth[order])]
    order, pred = breadth_first_order(sub, a, directed=False)
    depth[:] = 0
    for v in order[1:]:
        depth[v] = depth[pred[v]] + 1
    b = order[np.argmax(depth[order])]
    path = [b]
    while path[-1] != a:
        path.append(pred[path[-1]])
    return nodes[np.array(path[::-1])]


def _pixel_graph(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]):
    """8-neighbour adjacency (sparse, symmetric) of the given pixels."""
    from scipy.sparse import coo_matrix
    index = np.full(shape, -1, np.int64)
    index[rows, cols] = np.arange(rows.size)
    src, dst = [], []
    for dr, dc in ((0, 1), (1, -1), (1, 0), (1, 1)):
        r2, c2 = rows + dr, cols + dc
        ok = (r2 >= 0) & (r2 < shape[0]) & (c2 >= 0) & (c2 < shape[1])
        j = np.full(rows.size, -1)
        j[ok] = index[r2[ok], c2[ok]]
        has = j >= 0
        src.append(np.flatnonzero(has))
        dst.append(j[has])
    src, dst = np.concatenate(src), np.concatenate(dst)
    m = coo_matrix((np.ones(src.size), (src, dst)), shape=(rows.size, rows.size))
    return (m + m.T).tocsr()


def _paths(mask: np.ndarray, min_pixels: int) -> list[np.ndarray]:
    """Ordered pixel paths ``(n, 2)`` ``(col, row)`` through ``mask``: per connected set,
    its longest path, then the longest paths of what is left beyond 2 px of it (splits)."""
    from scipy import ndimage
    from scipy.sparse.csgraph import connected_components
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return []
    adj = _pixel_graph(rows, cols, mask.shape)
    ncomp, labels = connected_components(adj, directed=False)
    todo = [np.flatnonzero(labels == c) for c in range(ncomp)]
    out = []
    while todo:
        nodes = todo.pop()
        if nodes.size < min_pixels:
            continue
        path = _longest_path(adj, nodes)
        if path.size < min_pixels:
            continue
        out.append(np.stack([cols[path], rows[path]], axis=1).astype(np.float64))
        near = np.zeros(mask.shape, bool)
        near[rows[path], cols[path]] = True
        near = ndimage.binary_dilation(near, iterations=2)
        rest = nodes[~near[rows[nodes], cols[nodes]]]
        if rest.size >= min_pixels:
            nc, lab = connected_components(adj[rest][:, rest], directed=False)
            todo.extend(rest[lab == i] for i in range(nc))
    return out


def _end_direction(path: np.ndarray, at_start: bool, n: int = 8) -> np.ndarray:
    """Unit direction pointing out of the path at one end (``(dcol, drow)``)."""
    seg = path[:n] if at_start else path[-n:][::-1]
    d = seg[0] - seg[-1]
    norm = np.hypot(*d)
    return d / norm if norm > 0 else d


def _dedupe(paths: list[np.ndarray], near_px: float = 3.0) -> list[np.ndarray]:
    """Side-by-side strands of one trace: from each path, longest first, drop the pixels
    within ``near_px`` of a longer path kept before it, and keep its longest run left."""
    kept: list[np.ndarray] = []
    for p in sorted(paths, key=len, reverse=True):
        p = _outside(p, kept, near_px)
        if p is not None:
            kept.append(p)
    return kept


def _outside(p: np.ndarray, others: list[np.ndarray], near_px: float) -> np.ndarray | None:
    """The longest run of ``p``'s points farther than ``near_px`` from all ``others``
    (None if fewer than 2 points are)."""
    if others:
        ref = np.concatenate([_densify(o, 0.5) for o in others])
        d2 = ((p[:, None, :] - ref[None, :, :]) ** 2).sum(-1).min(axis=1)
        far = d2 > near_px ** 2
        if not far.all():
            runs = np.split(np.arange(len(p)), np.flatnonzero(np.diff(far.astype(int))) + 1)
            runs = [r for r in runs if far[r[0]]]
            if not runs:
                return None
            p = p[max(runs, key=len)]
    return p if len(p) >= 2 else None


def _faces(d: np.ndarray, u: np.ndarray, dist: float, cos_max: float) -> bool:
    """Whether a gap of ``dist`` px along ``u`` lies ahead of an end pointing along ``d``:
    within the angle, or a lateral jog of at most 3 px."""
    c = float(np.dot(d, u))
    return c > 0 and (c >= cos_max or abs(d[0] * u[1] - d[1] * u[0]) * dist <= 3)


def _join(paths: list[np.ndarray], join_px: float, max_angle_deg: float = 35.0
          ) -> list[np.ndarray]:
    """Join path ends that face each other across at most ``join_px``."""
    paths = [p for p in paths]
    cos_max = math.cos(math.radians(max_angle_deg))
    changed = True
    while changed and len(paths) > 1:
        changed = False
        best = None
        for i in range(len(paths)):
            for j in range(len(paths)):
                if i == j:
                    continue
                for ei in (False, True):  # end of i: start (True) or last point
                    for ej in (True, False):
                        a = paths[i][0] if ei else paths[i][-1]
                        b = paths[j][0] if ej else paths[j][-1]
                        gap = b - a
                        dist = float(np.hypot(*gap))
                        if dist > join_px or dist == 0:
                            continue
                        u = gap / dist
                        di, dj = _end_direction(paths[i], ei), _end_direction(paths[j], ej)

                        if (_faces(di, u, dist, cos_max) and _faces(dj, -u, dist, cos_max)
                                and (best is None or dist < best[0])):
                            best = (dist, i, j, ei, ej)
        if best is not None:
            _, i, j, ei, ej = best
            pi = paths[i][::-1] if ei else paths[i]  # pi ends at the joined end
            pj = paths[j] if ej else paths[j][::-1]  # pj starts at the joined end
            merged = np.concatenate([pi, pj])
            paths = [p for k, p in enumerate(paths) if k not in (i, j)] + [merged]
            changed = True
    return paths


def _refine(path: np.ndarray, sm: StepMap, reach: int = 2) -> np.ndarray:
    """Move each pixel across its line to the peak of the step: the largest of the steps
    up to ``reach`` px on either side, then the parabola through it and its neighbours."""
    out = path.copy()
    h, w = sm.step.shape
    ks = np.arange(-reach - 1, reach + 2)
    for i, (c, r) in enumerate(path.astype(np.int64)):
        nv = sm.normal[:, r, c]
        cc = np.rint(c + ks * nv[0]).astype(int)
        rr = np.rint(r + ks * nv[1]).astype(int)
        inside = (cc >= 0) & (cc < w) & (rr >= 0) & (rr < h)
        s = np.where(inside, sm.step[np.clip(rr, 0, h - 1), np.clip(cc, 0, w - 1)], 0.0)
        j = 1 + int(np.argmax(s[1:-1]))
        den = s[j + 1] - 2 * s[j] + s[j - 1]
        t = float(np.clip(0.5 * (s[j - 1] - s[j + 1]) / den, -0.5, 0.5)) if den < 0 else 0.0
        out[i] = (c + (ks[j] + t) * nv[0], r + (ks[j] + t) * nv[1])
    return out


def _trim_tips(path: np.ndarray, sm: StepMap, share: float = 0.7, most: int = 10
               ) -> np.ndarray:
    """Drop end pixels whose step is below ``share`` of the path's median: beyond a fault
    tip the detector still sees the tip's strain for a few px (at most ``most`` px)."""
    h, w = sm.step.shape
    c = np.clip(np.rint(path[:, 0]).astype(int), 0, w - 1)
    r = np.clip(np.rint(path[:, 1]).astype(int), 0, h - 1)
    s = sm.step[r, c]
    low = s < share * np.median(s)
    i, j = 0, len(path)
    while i < min(most, j - 2) and low[i]:
        i += 1
    while j > max(len(path) - most, i + 2) and low[j - 1]:
        j -= 1
    return path[i:j]


def _smooth(path: np.ndarray, half: int = 3) -> np.ndarray:
    """Running mean of the vertices over ``2·half + 1`` (ends shrink their window)."""
    n = len(path)
    out = np.empty_like(path)
    for i in range(n):
        k = min(half, i, n - 1 - i)
        out[i] = path[i - k:i + k + 1].mean(axis=0)
    return out


def _douglas_peucker(pts: np.ndarray, tol: float) -> np.ndarray:
    """Vertices of ``pts`` ``(n, 2)`` kept by Douglas-Peucker at tolerance ``tol``."""
    keep = np.zeros(len(pts), bool)
    keep[[0, -1]] = True
    stack = [(0, len(pts) - 1)]
    while stack:
        i, j = stack.pop()
        if j <= i + 1:
            continue
        a, b = pts[i], pts[j]
        d = b - a
        norm = np.hypot(*d)
        rel = pts[i + 1:j] - a
        dist = (np.abs(rel[:, 0] * d[1] - rel[:, 1] * d[0]) / norm if norm > 0
                else np.hypot(rel[:, 0], rel[:, 1]))
        k = int(np.argmax(dist))
        if dist[k] > tol:
            keep[i + 1 + k] = True
            stack += [(i, i + 1 + k), (i + 1 + k, j)]
    return pts[keep]


def trace_segments(sm: StepMap, pixel_size: float, cfg: RuptureConfig = RuptureConfig(),
                   seed_mask: np.ndarray | None = None) -> list[np.ndarray]:
    """Trace polylines ``[(n, 2) (col, row) px]`` on a :class:`StepMap`.

    ``pixel_size``: the field's unit per px (m in a cube), for ``min_step_px``.
    ``seed_mask``: ``(H, W)`` bool, where ``z_low`` is enough to seed (a corridor
    around a first guess of the trace).
    """
    from scipy import ndimage
    ridge = _ridge(sm)
    ok = ridge & (sm.sharp >= cfg.min_sharpness) & (sm.step >= cfg.min_step_px * pixel_size)
    weak = ok & (sm.z >= cfg.z_low)
    strong = ok & (sm.z >= cfg.z_high)
    if seed_mask is not None:
        strong |= weak & seed_mask
    # the thin ridge breaks where the line runs between the detector's 8 orientations:
    # grow it into the band of sharp, significant steps around it before linking
    band = (sm.sharp >= cfg.min_sharpness) & (sm.step >= cfg.min_step_px * pixel_size) \
        & (sm.z >= cfg.z_low)
    weak = ndimage.binary_dilation(weak, np.ones((3, 3), bool)) & band
    lab, n = ndimage.label(weak, structure=np.ones((3, 3)))
    if n == 0:
        return []
    seeded = np.zeros(n + 1, bool)
    seeded[np.unique(lab[strong])] = True
    seeded[0] = False
    kept = seeded[lab]
    min_pixels = max(3, int(cfg.min_length_px / 3))
    paths = _paths(kept, min_pixels)
    paths = _join(_dedupe(paths), cfg.join_px)
    out = []
    for p in paths:
        p = _smooth(_trim_tips(_refine(p, sm), sm))
        if np.hypot(*np.diff(p, axis=0).T).sum() >= cfg.min_length_px:
            out.append(_douglas_peucker(p, cfg.simplify_px))
    return out


# ---------------------------------------------------------------------------------------
# slip


def _robust_line(d: np.ndarray, y: np.ndarray, sigma: np.ndarray, correlation_px: float,
                 iterations: int = 8) -> tuple[float, float, float] | None:
    """Tukey-biweight, σ-weighted fit ``y = a + b·d``; returns ``(a, σ_a, slope)``.

    σ_a: the fit's formal σ of ``a`` with the normalised residual scatter (never below 1,
    i.e. never better than the pixels' own σ), times ``correlation_px`` (the number of
    pixels per independent sample along each axis of the swath). None if degenerate.
    """
    w0 = 1.0 / np.maximum(sigma, 1e-12) ** 2
    x = np.stack([np.ones_like(d), d], axis=1)
    wr = np.ones_like(d)
    beta = None
    for _ in range(iterations):
        w = w0 * wr
        a = (x * w[:, None]).T @ x
        if np.linalg.cond(a) > 1e12:
            return None
        beta = np.linalg.solve(a, (x * w[:, None]).T @ y)
        r = (y - x @ beta) * np.sqrt(w0)
        scale = 1.4826 * np.median(np.abs(r - np.median(r)))
        if not scale > 0:
            break
        u = r / (4.685 * scale)
        wr = np.where(np.abs(u) < 1, (1 - u * u) ** 2, 0.0)
        if wr.sum() < 3:
            return None
    w = w0 * wr
    a = (x * w[:, None]).T @ x
    r = (y - x @ beta) * np.sqrt(w0)
    used = wr > 0
    dof = max(int(used.sum()) - 2, 1)
    chi2 = float(np.sum((r[used] ** 2) * wr[used]) / np.sum(wr[used]) * used.sum() / dof)
    cov = np.linalg.inv(a) * max(chi2, 1.0)
    return float(beta[0]), float(math.sqrt(cov[0, 0]) * correlation_px), float(beta[1])


def _tangent(vertices: np.ndarray, dist: np.ndarray, s: float, half: float
             ) -> tuple[np.ndarray, np.ndarray]:
    """Point at arc length ``s`` and the unit tangent over ``[s - half, s + half]``."""
    def at(t: float) -> np.ndarray:
        t = float(np.clip(t, 0, dist[-1]))
        return np.array([np.interp(t, dist, vertices[:, 0]), np.interp(t, dist, vertices[:, 1])])

    p = at(s)
    t = at(s + half) - at(s - half)
    return p, t / np.hypot(*t)


def _azimuth(t_px: np.ndarray, xres: float, yres: float) -> tuple[float, np.ndarray]:
    """Azimuth (deg from north) and unit (east, north) vector of a ``(dcol, drow)``."""
    v = np.array([t_px[0] * xres, -t_px[1] * yres])
    v /= np.hypot(*v)
    return float(math.degrees(math.atan2(v[0], v[1])) % 360), v


def slip_along_strike(segments: list[np.ndarray], east: np.ndarray, north: np.ndarray,
                      east_sigma: np.ndarray, north_sigma: np.ndarray,
                      pixel_size: tuple[float, float] = (1.0, 1.0),
                      cfg: RuptureConfig = RuptureConfig(),
                      scales: list[int] | None = None) -> list[Segment]:
    """Offsets every ``cfg.step_px`` along each trace polyline ``(n, 2) (col, row)``.

    ``east``, ``north`` ``(H, W)``: the field to fit (NaN unmeasured), ``*_sigma`` their
    σ; ``pixel_size``: ``(|xres|, |yres|)`` (m) for directions; ``scales``: per polyline,
    the detector scale that found it (its swath gap and length grow with it, default 1).
    Profiles whose sides have
    fewer than ``cfg.min_side_px`` measured pixels give no offset. Returns one
    :class:`Segment` per polyline, with the sign conventions of the module docstring.
    """
    from scipy import ndimage
    h, w = east.shape
    xres, yres = pixel_size
    # which segment each pixel is nearest to (its swath pixels are its own)
    owner = np.full((h, w), -1, np.int64)
    near = np.zeros((h, w), bool)
    for i, v in enumerate(segments):
        dist = np.concatenate([[0], np.cumsum(np.hypot(*np.diff(v, axis=0).T))])
        ss = np.linspace(0, dist[-1], max(2, int(dist[-1] * 2) + 1))
        c = np.clip(np.rint(np.interp(ss, dist, v[:, 0])).astype(int), 0, w - 1)
        r = np.clip(np.rint(np.interp(ss, dist, v[:, 1])).astype(int), 0, h - 1)
        near[r, c] = True
        owner[r, c] = i
    if not segments:
        return []
    _, (ir, ic) = ndimage.distance_transform_edt(~near, return_indices=True)
    nearest = owner[ir, ic]
    usable = np.isfinite(east) & np.isfinite(north) & np.isfinite(east_sigma) \
        & np.isfinite(north_sigma) & (east_sigma > 0) & (north_sigma > 0)
    half_w = cfg.half_width()
    out = []
    for i, v in enumerate(segments):
        k = scales[i] if scales else 1
        gap, half_l = cfg.gap_px * k, cfg.swath_half_length_px * k
        reach = math.ceil(math.hypot(half_w, half_l)) + 1
        seg = Segment(vertices=v)
        dist = np.concatenate([[0], np.cumsum(np.hypot(*np.diff(v, axis=0).T))])
        # stations centred on the segment, their swaths inside it and off its tips
        margin = half_w + gap
        span = dist[-1] - 2 * margin
        if span < 0:
            out.append(seg)
            continue
        n_st = int(span // cfg.step_px) + 1
        start = margin + (span - (n_st - 1) * cfg.step_px) / 2
        for s in start + cfg.step_px * np.arange(n_st):
            p, t = _tangent(v, dist, s, max(cfg.step_px, 5.0))
            nrm = np.array([-t[1], t[0]])  # (dcol, drow): 90° clockwise of t on the map
            r0, r1 = max(0, int(p[1]) - reach), min(h, int(p[1]) + reach + 2)
            c0, c1 = max(0, int(p[0]) - reach), min(w, int(p[0]) + reach + 2)
            rr, cc = np.mgrid[r0:r1, c0:c1]
            gc, gr = cc - p[0], rr - p[1]
            along = gc * t[0] + gr * t[1]
            across = gc * nrm[0] + gr * nrm[1]
            box = (np.abs(along) <= half_w) & (np.abs(across) <= half_l) \
                & (np.abs(across) > gap) & usable[r0:r1, c0:c1] \
                & (nearest[r0:r1, c0:c1] == i)
            sides = {}
            for side, m in (("left", box & (across < 0)), ("right", box & (across > 0))):
                if m.sum() < cfg.min_side_px:
                    break
                fits = [_robust_line(across[m], f[r0:r1, c0:c1][m], sg[r0:r1, c0:c1][m],
                                     cfg.correlation_px)
                        for f, sg in ((east, east_sigma), (north, north_sigma))]
                if any(f is None for f in fits):
                    break
                sides[side] = (fits, int(m.sum()))
            if len(sides) < 2:
                continue
            (fl, nl), (fr, nr_) = sides["left"], sides["right"]
            de = fr[0][0] - fl[0][0]
            dn = fr[1][0] - fl[1][0]
            se = math.hypot(fr[0][1], fl[0][1])
            sn = math.hypot(fr[1][1], fl[1][1])
            az, t_en = _azimuth(t, xres, yres)
            n_en = np.array([t_en[1], -t_en[0]])  # right of the strike, east/north
            par = -(de * t_en[0] + dn * t_en[1])  # right-lateral positive
            perp = de * n_en[0] + dn * n_en[1]  # extension positive
            s_par = math.sqrt((se * t_en[0]) ** 2 + (sn * t_en[1]) ** 2)
            s_perp = math.sqrt((se * n_en[0]) ** 2 + (sn * n_en[1]) ** 2)
            seg.offsets.append(Offset(i, float(p[0]), float(p[1]), float(s), az, par, perp,
                                      s_par, s_perp, de, dn, nl, nr_))
        out.append(seg)
    return out


def _significant(seg: Segment, min_z: float) -> bool:
    if not seg.offsets:
        return False
    z = [math.hypot(o.slip_parallel / o.sigma_parallel, o.slip_perpendicular /
                    o.sigma_perpendicular) for o in seg.offsets]
    return float(np.median(z)) >= min_z


def _coarsen(a: np.ndarray, k: int) -> np.ndarray:
    """NaN-aware ``k`` x ``k`` block mean (the last partial blocks dropped)."""
    h, w = (a.shape[0] // k) * k, (a.shape[1] // k) * k
    b = np.asarray(a[:h, :w], np.float64).reshape(h // k, k, w // k, k)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN blocks stay NaN
        return np.nanmean(b, axis=(1, 3))


def _densify(v: np.ndarray, step: float = 1.0) -> np.ndarray:
    """Points every ``step`` px along a polyline ``(n, 2)``."""
    d = np.concatenate([[0], np.cumsum(np.hypot(*np.diff(v, axis=0).T))])
    s = np.linspace(0, d[-1], max(2, int(d[-1] / step) + 1))
    return np.stack([np.interp(s, d, v[:, 0]), np.interp(s, d, v[:, 1])], axis=1)


def find_rupture(east: np.ndarray, north: np.ndarray, east_sigma: np.ndarray,
                 north_sigma: np.ndarray, *, pixel_size: tuple[float, float] = (1.0, 1.0),
                 east_fit: np.ndarray | None = None, north_fit: np.ndarray | None = None,
                 seed_mask: np.ndarray | None = None,
                 cfg: RuptureConfig = RuptureConfig(), scales: tuple[int, ...] = (1, 2)
                 ) -> Rupture:
    """Trace and slip of a field's surface rupture (see the module docstring).

    Args:
        east, north: ``(H, W)`` field where the trace is looked for (the denoised one),
            NaN where unmeasured; ``east_sigma``, ``north_sigma`` its σ (same unit).
        pixel_size: ``(|xres|, |yres|)`` in the field's unit per px (m per px in a cube).
        east_fit, north_fit: the field the offsets are fitted on (default: ``east``,
            ``north``), e.g. the raw one.
        seed_mask: ``(H, W)`` bool, where a weaker step may seed a trace.
        scales: detector scales (px per block): 1 finds sharp steps; 2 runs the detector
            on the field block-averaged by 2, for steps the model blurred over more than
            ±5 px; a coarser trace is kept only where no finer one runs within 4 px, and
            its swath leaves out twice the gap.

    Returns a :class:`Rupture`: segments that pass every test, each with its offsets;
    none, with the ``reason``, when there is no rupture.
    """
    res = float(math.sqrt(pixel_size[0] * pixel_size[1]))
    lines: list[np.ndarray] = []
    line_scale: list[int] = []
    for k in scales:
        if k == 1:
            sm = step_map(east, north, east_sigma, north_sigma)
            seeds = seed_mask
        else:
            sm = step_map(*(_coarsen(a, k) for a in (east, north, east_sigma, north_sigma)))
            seeds = None if seed_mask is None else _coarsen(seed_mask, k) > 0
        cfg_k = replace(cfg, min_length_px=cfg.min_length_px / k, join_px=cfg.join_px / k,
                        simplify_px=cfg.simplify_px / k)
        found = [(v + 0.5) * k - 0.5 for v in trace_segments(sm, res * k, cfg_k, seeds)]
        if lines:  # finer traces first: a coarser one only where none runs
            found = [f for f in (_outside(_densify(g), lines, 4.0) for g in found)
                     if f is not None and np.hypot(*np.diff(f, axis=0).T).sum()
                     >= cfg.min_length_px]
        lines += found
        line_scale += [k] * len(found)
    if not lines:
        return Rupture([], "no sharp, significant step long enough to be a trace")
    segs = slip_along_strike(lines, east if east_fit is None else east_fit,
                             north if north_fit is None else north_fit, east_sigma,
                             north_sigma, pixel_size, cfg, line_scale)
    keep = [i for i, s in enumerate(segs) if _significant(s, cfg.min_offset_z)]
    if 0 < len(keep) < len(segs):  # again without the rejected ones' pixels claimed
        segs = slip_along_strike([lines[i] for i in keep], east if east_fit is None
                                 else east_fit, north if north_fit is None else north_fit,
                                 east_sigma, north_sigma, pixel_size, cfg,
                                 [line_scale[i] for i in keep])
    else:
        segs = [segs[i] for i in keep]
    kept = segs
    for k, s in enumerate(kept):
        for o in s.offsets:
            o.segment = k
    reason = "" if kept else "candidate traces had no significant offset across them"
    return Rupture(kept, reason, candidates=len(lines))
