"""Joint fit of an elastic source and the co-registration offset to a displacement field.

A median, or a plane, cannot tell misregistration from ground motion inside a deforming
scene: on a thrust the hanging wall moves and the footwall does not, and the median is the
earthquake's own motion. Misregistration between two acquisitions is a constant (or a
plane) over the scene; elastic deformation has the shape of an Okada (1985) dislocation.
:func:`fit_source` fits both together, per component ``east``/``north`` (m):

    d(x, y) = u_ss · G_ss(x, y; θ) + u_ds · G_ds(x, y; θ) + c (+ plane)

with θ = (top-edge centre, strike, dip, length, width, top depth) the rectangle's geometry
(nonlinear) and ``u_ss`` (left-lateral), ``u_ds`` (thrust) slip and ``c`` (offset per
component) linear. For a given θ the linear part is solved exactly by weighted least
squares (variable projection), so the nonlinear search runs over θ only:

1. a coarse grid of 252 geometries (strikes every 30°, three dips, three trace positions,
   surface-breaking or buried, or ending mid-scene) on at most ``COARSE_SAMPLES`` points;
2. the best ``STARTS`` distinct ones refined by bounded ``scipy.optimize.least_squares``
   on that subsample, then the best two and the mirror of the best (the same trace,
   dipping the other way) on at most ``FIT_SAMPLES`` points, and the best restarted at
   other dips (``DIP_RESTARTS_DEG``: dip, width and offset trade off along a shallow
   valley);
3. the best refined, reweighted ``ROBUST_ROUNDS`` times with Huber weights (robust to
   land-cover blobs and cloud edges), the caller's weights (``1/σ²``) throughout.

The comparison model is the co-registration alone (robust offset, or plane). A source is
``detected`` when both hold:

* it explains most of what the offset leaves: the robust (1.4826·MAD) scale of the
  σ-normalised residuals drops to at most ``MAX_SCALE_RATIO`` of the offset-only one,
  and its field stands above the noise: the 95th percentile of the source field (about
  its median) is at least ``MIN_SNR`` residual scales; or, for a strong source whose
  field covers little of the scene, the ratio is at most ``MAX_SCALE_RATIO_STRONG`` and
  the field at least ``MIN_SNR_STRONG`` residual scales;
* it explains more than a co-registration plane would: the residual scale is at most
  ``MAX_PLANE_RATIO`` of a robust plane fit's (a deep or distant source's field inside the
  scene is nearly a plane, and a plane is misregistration; on the committed real pair the
  best rectangle, 84 km long and 12 km deep, left 0.98 of the plane's scale, while every
  generated fault detected by the two tests above left at most 0.91:
  ``python -m bench.source_detection --cases 30 --seed 0``);
* the fitted moment is at least ``MIN_MW`` and the slip at most ``MAX_SLIP_M``.

A local patch of wrong pixels (cloud edge, parcel change) lowers the robust scale of the
whole scene little, so it fails the first test; a uniform shift has no shape for the
source to fit. Uncertainties are formal: from the Jacobian of the weighted residuals at
the solution, scaled by the robust residual variance, so they ignore the spatial
correlation of the errors (the true ones are larger).

Everything is in metres in a local east/north frame (``x``, ``y`` the projected
coordinates of the samples). Internally lengths are divided by the scene size, which
Okada's solution allows (displacement depends on ratios of lengths, times slip).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import least_squares

from .okada import _COS_EPS, _corner, _cos_sin_deg

MU_PA = 30e9  # shear modulus for the moment, Pa
COARSE_SAMPLES = 400  # points of the coarse grid search
FIT_SAMPLES = 4000  # points of the refinement
STARTS = 4  # coarse candidates refined
DIP_RESTARTS_DEG = (20.0, 45.0, 75.0)  # dips the best rectangle is restarted from
ROBUST_ROUNDS = 1  # Huber reweighting rounds after the first refinement
HUBER_K = 1.5  # Huber threshold, in robust scales
MAX_SCALE_RATIO = 0.6  # detection: robust residual scale, source over offset-only
MIN_SNR = 2.0  # detection: 95th pct of |source field − median| / residual scale
# a strong but local source (its field covers little of the scene, so the robust scale
# of the whole scene drops less) is detected with this looser ratio and a higher SNR
MAX_SCALE_RATIO_STRONG = 0.75
MIN_SNR_STRONG = 8.0
MAX_PLANE_RATIO = 0.93  # detection: robust residual scale, source over a plane alone
MIN_MW = 4.0  # detection: smallest moment magnitude called a source
MAX_SLIP_M = 30.0  # slip bound, m (a fit needing more is not called a source)
SURFACE_FRACTION = 0.01  # a top edge shallower than this × scene size breaks the surface
# bounds in scene sizes (the scene's larger side): the rectangle may be much longer and
# wider than the scene, which may see only part of the rupture
CENTRE_BOUND = 2.0
LENGTH_BOUNDS = (0.05, 30.0)
WIDTH_BOUNDS = (0.03, 8.0)
TOP_BOUND = 2.0
DIP_BOUNDS_DEG = (5.0, 90.0)
NUMBERS = ("Mw", "strike_deg", "dip_deg", "rake_deg", "slip_m", "length_m", "width_m",
           "top_depth_m", "centroid_x", "centroid_y")


def _unit_fields(geom: np.ndarray, e: np.ndarray, n: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """East and north surface displacement of unit strike-slip and unit dip-slip.

    ``geom`` = (east, north, strike_rad, dip_rad, log length, log width, top depth) of
    the top edge's centre, in the same length unit as ``e``, ``n``. Returns
    ``(e_ss, n_ss, e_ds, n_ds)``. Both slip types come from one evaluation of Okada's
    corner terms: they are linear in the slip, so strike-slip rides on the real part
    and dip-slip on the imaginary part.
    """
    e0, n0, strike, dip, log_l, log_w, top = geom
    length, width = math.exp(log_l), math.exp(log_w)
    cd, sd = _cos_sin_deg(math.degrees(dip))
    if abs(cd) < _COS_EPS:
        cd, sd = 0.0, 1.0
    cs, ss = math.cos(strike), math.sin(strike)
    de, dn = e - e0, n - n0
    x = de * ss + dn * cs + length / 2
    y = -de * cs + dn * ss + width * cd
    depth = max(top, 0.0) + width * sd
    p = y * cd + depth * sd
    q = y * sd - depth * cd
    ux = np.zeros(x.shape, complex)
    uy = np.zeros(x.shape, complex)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for xi, eta, sign in ((x, p, 1), (x, p - width, -1),
                              (x - length, p, -1), (x - length, p - width, 1)):
            cx, cy, _ = _corner(xi, eta, q, cd, sd, 0.5, 1.0, 1.0j, 0.0)
            ux += sign * cx
            uy += sign * cy
    ue = ux * ss - uy * cs
    un = ux * cs + uy * ss
    return ue.real, un.real, ue.imag, un.imag


@dataclass(frozen=True)
class SourceFit:
    """The result of :func:`fit_source`.

    Attributes:
        detected: whether a source is there (see the module docstring).
        params: the source's numbers (keys :data:`NUMBERS`; m, degrees, Mw) and their
            one-σ formal uncertainties (``<name>_sigma``); empty when no source could be
            fitted.
        trace: surface projection of the top edge ``((x0, y0), (x1, y1))`` (m), start to
            end of strike, or None when the top edge is buried.
        top_edge: the same projection whether or not it breaks the surface (or None).
        offset: fitted co-registration offset ``(east, north)`` (m) of the model that
            was chosen (with the source when detected, else offset-only).
        plane: ``(2, 2)`` slopes ``((de/dx, de/dy), (dn/dx, dn/dy))`` (m/m) or None.
        offset_only: the offset of the offset-only model (m).
        residual_rms_m: robust (1.4826·MAD) scale of the chosen model's residuals (m).
        null_rms_m: the same for the offset-only model (m).
        scale_ratio, snr, plane_ratio: the detection statistics (see the module docstring).
        n_samples: points that entered the fit.
        evaluations: forward-model evaluations spent.
    """

    detected: bool
    params: dict = field(default_factory=dict)
    trace: tuple | None = None
    top_edge: tuple | None = None
    offset: tuple[float, float] = (0.0, 0.0)
    plane: tuple | None = None
    offset_only: tuple[float, float] = (0.0, 0.0)
    residual_rms_m: float = float("nan")
    null_rms_m: float = float("nan")
    scale_ratio: float = float("nan")
    plane_ratio: float = float("nan")
    snr: float = 0.0
    n_samples: int = 0
    evaluations: int = 0
    _geom: tuple = ()
    _slip: tuple = ()
    _origin: tuple = (0.0, 0.0, 1.0)

    def source_field(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The fitted source's ``(east, north)`` displacement (m) at points ``x``, ``y``
        (m, broadcast together); zeros when no source was fitted (detected or not, the
        fitted rectangle's field is returned when there is one)."""
        x, y = np.broadcast_arrays(np.asarray(x, float), np.asarray(y, float))
        if not self._geom:
            return np.zeros(x.shape), np.zeros(x.shape)
        x0, y0, s = self._origin
        g = _unit_fields(np.asarray(self._geom), (x - x0) / s, (y - y0) / s)
        uss, uds = self._slip
        return uss * g[0] + uds * g[2], uss * g[1] + uds * g[3]


def _design(geom, e, n, plane: bool) -> np.ndarray:
    """``(2N, k)``: unit strike-slip, unit dip-slip, east offset, north offset (+ plane)."""
    ess, nss, eds, nds = _unit_fields(geom, e, n)
    cols = [np.concatenate([ess, nss]), np.concatenate([eds, nds]),
            np.concatenate([np.ones_like(e), np.zeros_like(e)]),
            np.concatenate([np.zeros_like(e), np.ones_like(e)])]
    if plane:
        z = np.zeros_like(e)
        cols += [np.concatenate([e, z]), np.concatenate([n, z]),
                 np.concatenate([z, e]), np.concatenate([z, n])]
    return np.stack(cols, axis=1)


def _design_null_cols(e, n, plane: bool) -> np.ndarray:
    z, o = np.zeros_like(e), np.ones_like(e)
    cols = [np.concatenate([o, z]), np.concatenate([z, o])]
    if plane:
        cols += [np.concatenate([e, z]), np.concatenate([n, z]),
                 np.concatenate([z, e]), np.concatenate([z, n])]
    return np.stack(cols, axis=1)


def _solve(design: np.ndarray, d: np.ndarray, sw: np.ndarray) -> np.ndarray:
    beta, *_ = np.linalg.lstsq(design * sw[:, None], d * sw, rcond=None)
    return beta


def _robust_scale(r: np.ndarray) -> float:
    return max(1.4826 * float(np.median(np.abs(r - np.median(r)))), 1e-12)


def _huber(r: np.ndarray) -> np.ndarray:
    u = np.abs(r) / _robust_scale(r)
    return np.minimum(1.0, HUBER_K / np.maximum(u, 1e-12))


def _robust_linear(design: np.ndarray, d: np.ndarray, sw0: np.ndarray, rounds: int = 6
                   ) -> tuple[np.ndarray, np.ndarray]:
    """IRLS with Huber weights; returns ``beta`` and the final sqrt weights."""
    sw = sw0
    beta = _solve(design, d, sw)
    for _ in range(rounds):
        sw = sw0 * np.sqrt(_huber(sw0 * (d - design @ beta)))
        beta = _solve(design, d, sw)
    return beta, sw


def _subsample(n_points: int, k: int, rng: np.random.Generator) -> np.ndarray:
    if n_points <= k:
        return np.arange(n_points)
    return np.sort(rng.choice(n_points, k, replace=False))


def _bounds() -> tuple[np.ndarray, np.ndarray]:
    lo = [-CENTRE_BOUND, -CENTRE_BOUND, -np.inf, math.radians(DIP_BOUNDS_DEG[0]),
          math.log(LENGTH_BOUNDS[0]), math.log(WIDTH_BOUNDS[0]), 0.0]
    hi = [CENTRE_BOUND, CENTRE_BOUND, np.inf, math.radians(DIP_BOUNDS_DEG[1]),
          math.log(LENGTH_BOUNDS[1]), math.log(WIDTH_BOUNDS[1]), TOP_BOUND]
    return np.array(lo), np.array(hi)


def _coarse_geometries() -> list[np.ndarray]:
    """Starting rectangles (scene-size units, centred on the scene): strikes every 30°,
    dips 30/60/85°; 3 scenes long with traces through the centre or a quarter scene to
    either side, surface-breaking or buried; and one scene long, ending at the centre
    (a rupture the scene sees one end of)."""
    out = []
    for strike in np.radians(np.arange(0, 360, 30)):
        normal = np.array([math.cos(strike), -math.sin(strike)])  # right of strike
        along = np.array([math.sin(strike), math.cos(strike)])
        for dip in np.radians([30.0, 60.0, 85.0]):
            for shift in (-0.25, 0.0, 0.25):
                e0, n0 = shift * normal
                for top in (0.0, 0.15):
                    out.append(np.array([e0, n0, strike, dip, math.log(3.0),
                                         math.log(1.0), top]))
            e0, n0 = 0.5 * along
            out.append(np.array([e0, n0, strike, dip, 0.0, math.log(0.6), 0.0]))
    return out


def fit_source(east: np.ndarray, north: np.ndarray, x: np.ndarray, y: np.ndarray,
               weights: np.ndarray | None = None, *, plane: bool = False,
               seed: int = 0) -> SourceFit:
    """Fit one Okada rectangle plus a co-registration offset (or plane) to a field.

    Args:
        east, north: ``(N,)`` or any shape: ground displacement (m) at the samples; NaN
            samples are ignored.
        x, y: same shape: projected coordinates (m) of the samples (north-up).
        weights: same shape (or ``(2, ...)`` per component): confidence, e.g. ``1/σ²``
            with σ in m; None = all 1. Zero/NaN weights drop a sample.
        plane: fit a plane per component as the co-registration (else a constant).
        seed: for the subsampling of large inputs.

    Returns:
        A :class:`SourceFit`. Cost: about 100–200 forward evaluations on at most
        ``FIT_SAMPLES`` points, seconds on one CPU core whatever the input size.
    """
    e_obs = np.asarray(east, float).ravel()
    n_obs = np.asarray(north, float).ravel()
    xs = np.asarray(x, float).ravel() * np.ones_like(e_obs)
    ys = np.asarray(y, float).ravel() * np.ones_like(e_obs)
    if weights is None:
        w = np.ones((2, e_obs.size))
    else:
        w = np.asarray(weights, float)
        shape = (2, *np.shape(east))
        w = (w if w.shape == shape else np.broadcast_to(w, shape)).reshape(2, -1)
    ok = (np.isfinite(e_obs) & np.isfinite(n_obs) & np.isfinite(xs) & np.isfinite(ys)
          & np.isfinite(w).all(axis=0) & (w > 0).all(axis=0))
    if np.count_nonzero(ok) < 20:
        raise ValueError(f"only {np.count_nonzero(ok)} usable samples; cannot fit a source")
    rng = np.random.default_rng(seed)
    idx = np.flatnonzero(ok)[_subsample(int(np.count_nonzero(ok)), FIT_SAMPLES, rng)]
    x0, y0 = float(np.mean(xs[idx])), float(np.mean(ys[idx]))
    half = (float(np.ptp(xs[idx])) / 2, float(np.ptp(ys[idx])) / 2)
    scene = max(2 * max(half), 1.0)  # length unit of the fit: the scene's larger side
    e = (xs[idx] - x0) / scene
    n = (ys[idx] - y0) / scene
    d = np.concatenate([e_obs[idx], n_obs[idx]])
    wn = w[:, idx] / np.median(w[:, idx])
    sw0 = np.sqrt(np.concatenate([wn[0], wn[1]]))
    sigma_unit = 1.0 / math.sqrt(float(np.median(w[:, idx])))  # m per unit weight
    nfev = [0]

    # offset-only (or plane-only) model
    nd = _design_null_cols(e, n, plane)
    beta0, _ = _robust_linear(nd, d, sw0)
    r_null = sw0 * (d - nd @ beta0)
    s_null = _robust_scale(r_null)
    # a plane per component: what a co-registration ramp alone explains (a distant or deep
    # source's field inside the scene is close to one, and is no evidence of a source)
    nd_plane = _design_null_cols(e, n, True)
    beta_p, _ = _robust_linear(nd_plane, d, sw0)
    s_plane = _robust_scale(sw0 * (d - nd_plane @ beta_p))

    def project(geom, sw, sub=slice(None)):
        nfev[0] += 1
        m = e.size
        rows = np.r_[np.arange(m)[sub], m + np.arange(m)[sub]]
        g = _design(geom, e[sub], n[sub], plane)
        beta = _solve(g, d[rows], sw[rows])
        return beta, sw[rows] * (d[rows] - g @ beta), g

    # 1. coarse grid on a subsample, the caller's weights
    coarse = _subsample(e.size, COARSE_SAMPLES, rng)
    scored = []
    for geom in _coarse_geometries():
        _, r, _ = project(geom, sw0, coarse)
        scored.append((float(r @ r), geom))
    scored.sort(key=lambda t: t[0])
    starts: list[np.ndarray] = []
    for _, geom in scored:
        if all(abs(((geom[2] - s[2] + math.pi) % (2 * math.pi)) - math.pi) > math.radians(20)
               or abs(geom[3] - s[3]) > 0.3 for s in starts):
            starts.append(geom)
        if len(starts) == STARTS:
            break

    lo, hi = _bounds()

    def refine(geom, sw, max_nfev, sub=slice(None)):
        res = least_squares(lambda g: project(g, sw, sub)[1],
                            np.clip(geom, lo + 1e-9, hi - 1e-9), bounds=(lo, hi),
                            x_scale="jac",
                            diff_step=1e-3, max_nfev=max_nfev, method="trf", ftol=1e-12,
                            xtol=1e-12)
        return res.x, float(res.fun @ res.fun)

    # 2. refine the starts on the subsample; the best two and the mirror of the best
    #    (strike + 180°: the fault dipping the other way) again on all samples
    tried = sorted((refine(g, sw0, 12, coarse) for g in starts), key=lambda t: t[1])
    mirror = tried[0][0].copy()
    mirror[2] += math.pi
    mirror[3] = min(mirror[3], math.radians(85.0))
    finals = [refine(g, sw0, 30) for g in (tried[0][0], mirror,
                                           *(t[0] for t in tried[1:2]))]
    best, cost = min(finals, key=lambda t: t[1])
    # the dip trades off against width and offset along a shallow valley: restart the
    # best at other dips and keep whichever ends lowest
    for dip in np.radians(DIP_RESTARTS_DEG):
        if abs(dip - best[3]) > math.radians(8):
            g = best.copy()
            g[3] = dip
            cand, c = refine(g, sw0, 20)
            if c < cost:
                best, cost = cand, c
    # 3. Huber reweighting on the source model's residuals
    sw = sw0
    for _ in range(ROBUST_ROUNDS):
        _, r, _ = project(best, sw0)
        sw = sw0 * np.sqrt(_huber(r))
        best, _ = refine(best, sw, 15)
    beta, _, g = project(best, sw)
    r_src = sw0 * (d - g @ beta)
    s_src = _robust_scale(r_src)
    uss, uds = float(beta[0]), float(beta[1])
    src = (g[:, :2] @ beta[:2]) * sw0
    snr = float(np.percentile(np.abs(src - np.median(src)), 95)) / s_src if s_src else 0.0

    # formal uncertainties of the full parameter vector (geometry + linear)
    full = np.concatenate([best, beta])
    cov = _covariance(full, e, n, d, sw, plane, len(best))
    s2 = float(np.sum((sw * (d - g @ beta)) ** 2)) / max(d.size - full.size, 1)
    cov = cov * s2
    geom_m = _to_metres(full, scene, x0, y0)
    params = {k: geom_m[k] for k in NUMBERS}
    sig = _propagate(full, cov, scene, x0, y0)
    params.update({f"{k}_sigma": sig[k] for k in NUMBERS})
    ratio = s_src / s_null
    plane_ratio = s_src / s_plane if s_plane else float("inf")
    slip = params["slip_m"]
    explains = ((ratio <= MAX_SCALE_RATIO and snr >= MIN_SNR)
                or (ratio <= MAX_SCALE_RATIO_STRONG and snr >= MIN_SNR_STRONG)
                ) and plane_ratio <= MAX_PLANE_RATIO
    detected = bool(explains and params["Mw"] >= MIN_MW and slip <= MAX_SLIP_M)
    top_edge = geom_m["top_edge"]
    trace = top_edge if best[6] <= SURFACE_FRACTION else None
    coef = beta[2:] if detected else beta0
    off = (float(coef[0]), float(coef[1]))
    pl = None
    if plane:
        pl = ((float(coef[2]) / scene, float(coef[3]) / scene),
              (float(coef[4]) / scene, float(coef[5]) / scene))
        # offsets refer to (x0, y0); callers evaluate with plane_at
    return SourceFit(detected=detected, params=params, trace=trace, top_edge=top_edge,
                     offset=off, plane=pl, offset_only=(float(beta0[0]), float(beta0[1])),
                     residual_rms_m=(s_src if detected else s_null) * sigma_unit,
                     null_rms_m=s_null * sigma_unit, scale_ratio=ratio, snr=snr,
                     plane_ratio=plane_ratio,
                     n_samples=int(idx.size), evaluations=nfev[0],
                     _geom=tuple(float(v) for v in best), _slip=(uss, uds),
                     _origin=(x0, y0, scene))


def _model_full(full: np.ndarray, e, n, plane: bool, k: int) -> np.ndarray:
    g = _design(full[:k], e, n, plane)
    return g @ full[k:]


def _covariance(full, e, n, d, sw, plane, k) -> np.ndarray:
    """``(JᵀJ)⁻¹`` of the weighted residuals in the full parameter vector (unit variance)."""
    base = _model_full(full, e, n, plane, k)
    cols = []
    for i in range(full.size):
        h = 1e-4 * max(1.0, abs(full[i])) if i < k else 1.0
        p = full.copy()
        p[i] += h
        cols.append((_model_full(p, e, n, plane, k) - base) / h)
    jac = np.stack(cols, axis=1) * sw[:, None]
    return np.linalg.pinv(jac.T @ jac)


def _to_metres(full: np.ndarray, scene: float, x0: float, y0: float) -> dict:
    """The reported numbers from the internal parameter vector."""
    e0, n0, strike, dip, log_l, log_w, top = full[:7]
    uss, uds = full[7], full[8]
    length, width = math.exp(log_l) * scene, math.exp(log_w) * scene
    slip = math.hypot(uss, uds)
    m0 = MU_PA * length * width * slip
    mw = (2.0 / 3.0) * (math.log10(m0) - 9.1) if m0 > 0 else float("-inf")
    sdeg = math.degrees(strike) % 360.0
    cs, ss = math.cos(strike), math.sin(strike)
    ex, ny = x0 + e0 * scene, y0 + n0 * scene  # top-edge centre
    half_w = 0.5 * width * math.cos(dip)  # centroid: half the width down dip, projected
    cx, cy = ex + half_w * cs, ny - half_w * ss  # dips to the right of strike: (cos, −sin)
    h = length / 2
    top_edge = ((ex - h * ss, ny - h * cs), (ex + h * ss, ny + h * cs))
    return {"Mw": mw, "strike_deg": sdeg, "dip_deg": math.degrees(dip),
            "rake_deg": math.degrees(math.atan2(uds, uss)), "slip_m": slip,
            "length_m": length, "width_m": width, "top_depth_m": top * scene,
            "centroid_x": cx, "centroid_y": cy, "top_edge": top_edge}


def _propagate(full, cov, scene, x0, y0) -> dict:
    """One-σ of each reported number by the delta method (numerical gradient)."""
    base = _to_metres(full, scene, x0, y0)
    grads = {k: np.zeros(full.size) for k in NUMBERS}
    for i in range(full.size):
        h = 1e-6 * max(1.0, abs(full[i]))
        p = full.copy()
        p[i] += h
        moved = _to_metres(p, scene, x0, y0)
        for k in NUMBERS:
            diff = moved[k] - base[k]
            if k in ("strike_deg", "rake_deg"):
                diff = (diff + 180.0) % 360.0 - 180.0
            grads[k][i] = diff / h
    return {k: float(math.sqrt(max(grads[k] @ cov @ grads[k], 0.0))) for k in NUMBERS}
