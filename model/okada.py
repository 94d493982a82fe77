"""Surface displacement of a rectangular dislocation in an elastic half-space (Okada, 1985).

Okada, Y. (1985), "Surface deformation due to shear and tensile faults in a half-space",
BSSA 75(4), 1135-1154. Written from the paper's closed-form equations.

Two layers:

* :func:`okada85_surface`: the solution in Okada's own frame (his Fig. 1). ``x`` runs along
  strike, the bottom edge of the fault lies at depth ``d`` from ``x = 0`` to ``x = L`` below
  ``y = 0``, and the top edge is at ``y = W cos δ``, so the fault dips toward ``-y``.
* :class:`Fault`, :func:`fault_displacement`, :func:`fault_trace`: a geographic wrapper in a
  right-handed east/north/up frame (strike clockwise from north, dip to the right of strike,
  rake per Aki & Richards), as pinned in DESIGN.md.

Singular points take their limits or the values Okada (1985, 1992) prescribes: the
``arctan(ξη/(qR))`` term is 0 where ``q = 0`` (so a vertical fault's trace gets the average
of both sides), ``ln(R + η) → -ln(R - η)`` where ``R + η = 0``, ``I5 = 0`` where ``ξ = 0``,
and terms whose numerator vanishes with their denominator are 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

_COS_EPS = 1e-6  # |cos δ| below this uses Okada's cos δ = 0 forms of I1..I5 (and cos δ := 0)


def _cos_sin_deg(angle_deg: float) -> tuple[float, float]:
    """cos and sin of an angle in degrees, exact (0, ±1) at multiples of 90°."""
    rad = math.radians(angle_deg % 360.0)
    c, s = math.cos(rad), math.sin(rad)
    return (0.0 if abs(c) < 1e-12 else c), (0.0 if abs(s) < 1e-12 else s)


def _div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` with 0 where ``den == 0`` (callers ensure ``num`` vanishes there too)."""
    return np.where(den != 0, num / den, 0.0)


def _r_plus(r: np.ndarray, a: np.ndarray, rest: np.ndarray) -> np.ndarray:
    """``R + a`` without cancellation: ``rest / (R - a)`` when ``a < 0``, ``rest = R² - a²``."""
    return np.where(a < 0, rest / (r - a), r + a)


def _log_r_plus(r_plus: np.ndarray, r: np.ndarray, a: np.ndarray) -> np.ndarray:
    """``ln(R + a)``; ``-ln(R - a)`` where ``R + a = 0`` (Okada 1992); 0 where ``R = 0``."""
    out = np.where(r_plus > 0, np.log(r_plus), -np.log(r - a))
    return np.where(np.isfinite(out), out, 0.0)


def _corner(xi, eta, q, cd, sd, k, u1, u2, u3):
    """Okada's f(ξ, η) for (ux, uy, uz), all three slip types summed (before Chinnery's sum)."""
    yt = eta * cd + q * sd  # ỹ
    dt = eta * sd - q * cd  # d̃
    r = np.sqrt(xi * xi + eta * eta + q * q)
    big_x = np.sqrt(xi * xi + q * q)
    r_eta = _r_plus(r, eta, xi * xi + q * q)
    r_xi = _r_plus(r, xi, eta * eta + q * q)
    r_d = _r_plus(r, dt, xi * xi + yt * yt)
    ln_eta = _log_r_plus(r_eta, r, eta)
    theta = np.where(q != 0, np.arctan(xi * eta / (q * r)), 0.0)

    if cd != 0.0:
        # Rewritten so that near-vertical dips do not lose ~1/cos²δ of precision. I5 drops
        # sign(ξ)·πμ/((λ+μ)cosδ), which cancels in Chinnery's sum (it depends on ξ only);
        # arctan(N/D) - sign(ξ)π/2 = -arctan(D/N) where N > 0 (D has the sign of ξ).
        num = eta * (big_x + q * cd) + big_x * (r + big_x) * sd
        den = xi * (r + big_x) * cd
        phi = np.where(num > 0, -np.arctan(den / num),
                       np.arctan(num / den) - np.sign(xi) * np.pi / 2)
        i5 = np.where(xi != 0, 2.0 * k / cd * phi, 0.0)
        # ln(R+d̃) - sinδ ln(R+η) = (1-sinδ) ln(R+η) + ln(1 + (d̃-η)/(R+η)), 1-sinδ = cos²δ/(1+sinδ)
        one_minus_sd = cd * cd / (1.0 + sd)
        stable = one_minus_sd * ln_eta + np.log1p((-eta * one_minus_sd - q * cd) / r_eta)
        direct = _log_r_plus(r_d, r, dt) - sd * ln_eta
        i4 = k / cd * np.where((r_eta > 0) & (r_d > 0), stable, direct)
        i3 = k * (_div(yt, cd * r_d) - ln_eta) + sd / cd * i4
        i1 = -k * _div(xi, cd * r_d) - sd / cd * i5
    else:
        r_d2 = r_d * r_d
        i1 = -0.5 * k * _div(xi * q, r_d2)
        i3 = 0.5 * k * (_div(eta, r_d) + _div(yt * q, r_d2) - ln_eta)
        i4 = -k * _div(q, r_d)
        i5 = -k * _div(xi * sd, r_d)
    i2 = -k * ln_eta - i3

    a = _div(np.ones_like(r), r * r_eta)  # 1 / (R (R + η))
    b = _div(np.ones_like(r), r * r_xi)  # 1 / (R (R + ξ))
    ux = uy = uz = 0.0
    if u1:  # strike-slip
        c = -u1 / (2 * np.pi)
        ux = ux + c * (xi * q * a + theta + i1 * sd)
        uy = uy + c * (yt * q * a + _div(q * cd, r_eta) + i2 * sd)
        uz = uz + c * (dt * q * a + _div(q * sd, r_eta) + i4 * sd)
    if u2:  # dip-slip
        c = -u2 / (2 * np.pi)
        ux = ux + c * (_div(q, r) - i3 * sd * cd)
        uy = uy + c * (yt * q * b + cd * theta - i1 * sd * cd)
        uz = uz + c * (dt * q * b + sd * theta - i5 * sd * cd)
    if u3:  # tensile
        c = u3 / (2 * np.pi)
        ux = ux + c * (q * q * a - i3 * sd * sd)
        uy = uy + c * (-dt * q * b - sd * (xi * q * a - theta) - i1 * sd * sd)
        uz = uz + c * (yt * q * b + cd * (xi * q * a - theta) - i5 * sd * sd)
    return ux, uy, uz


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ValueError(message)


def okada85_surface(x: ArrayLike, y: ArrayLike, depth: float, dip_deg: float, length: float,
                    width: float, u1: float, u2: float, u3: float, poisson: float = 0.25
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Surface displacement ``(ux, uy, uz)`` in Okada's (1985) frame, same units as the slips.

    ``x``, ``y``: observation points (any broadcastable shapes, same length unit as the
    geometry). ``depth``: depth ``d`` of the fault's *bottom* edge (> 0 down). ``dip_deg``:
    δ in [0, 90]. ``length`` L and ``width`` W (> 0). ``u1``, ``u2``, ``u3``: strike-slip,
    dip-slip and tensile dislocation of the hanging wall (``-y`` side) relative to the
    footwall (u1 > 0 left-lateral, u2 > 0 thrust for 0 < δ < 90). ``poisson``: ν, with
    μ/(λ+μ) = 1 - 2ν. Returns three float64 arrays of the broadcast shape of ``x`` and ``y``.
    """
    values = {"depth": depth, "dip_deg": dip_deg, "length": length, "width": width,
              "u1": u1, "u2": u2, "u3": u3, "poisson": poisson}
    for name, v in values.items():
        _check(math.isfinite(v), f"{name} must be finite, got {v!r}")
    _check(0.0 <= dip_deg <= 90.0, f"dip_deg must be in [0, 90], got {dip_deg}")
    _check(length > 0 and width > 0, f"length and width must be > 0, got {length}, {width}")
    _check(-1.0 < poisson <= 0.5, f"poisson must be in (-1, 0.5], got {poisson}")
    _check(depth > 0, f"depth (of the bottom edge) must be > 0, got {depth}")
    cd, sd = _cos_sin_deg(dip_deg)
    if abs(cd) < _COS_EPS:
        cd, sd = 0.0, 1.0
    _check(depth >= width * sd * (1 - 1e-9),
           f"the fault rises above the surface: depth {depth} < width*sin(dip) {width * sd}")

    x, y = np.broadcast_arrays(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
    k = 1.0 - 2.0 * poisson
    p = y * cd + depth * sd
    q = y * sd - depth * cd
    u = [np.zeros(x.shape) for _ in range(3)]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        # Chinnery: f(x, p) - f(x, p - W) - f(x - L, p) + f(x - L, p - W)
        for xi, eta, sign in ((x, p, 1), (x, p - width, -1),
                              (x - length, p, -1), (x - length, p - width, 1)):
            for comp, term in zip(u, _corner(xi, eta, q, cd, sd, k, u1, u2, u3), strict=True):
                comp += sign * term
    return u[0], u[1], u[2]


@dataclass(frozen=True)
class Fault:
    """A rectangular fault in a local east/north/up frame (DESIGN.md conventions).

    east, north: position [m] of the centre of the fault's top edge (surface projection).
    top_depth: depth [m, >= 0] of the top edge; 0 for a surface-breaking fault.
    strike_deg: strike [deg] clockwise from north. dip_deg: dip [deg, 0-90], down to the
    right of strike. length: along-strike length [m, > 0]. width: down-dip width [m, > 0].
    rake_deg: rake [deg] per Aki & Richards (0 left-lateral, 90 thrust, 180 right-lateral,
    -90 normal). slip: slip magnitude [m, >= 0]. opening: tensile opening [m], default 0.
    Any consistent length unit works in place of metres (e.g. pixels).
    """

    east: float
    north: float
    top_depth: float
    strike_deg: float
    dip_deg: float
    length: float
    width: float
    rake_deg: float
    slip: float
    opening: float = 0.0

    def __post_init__(self) -> None:
        for name, v in vars(self).items():
            _check(math.isfinite(v), f"Fault.{name} must be finite, got {v!r}")
        _check(self.top_depth >= 0, f"Fault.top_depth must be >= 0, got {self.top_depth}")
        _check(0.0 <= self.dip_deg <= 90.0, f"Fault.dip_deg must be in [0, 90], got {self.dip_deg}")
        _check(self.length > 0, f"Fault.length must be > 0, got {self.length}")
        _check(self.width > 0, f"Fault.width must be > 0, got {self.width}")
        _check(self.dip_deg > 0 or self.top_depth > 0,
               "a horizontal fault (dip_deg 0) must be buried (top_depth > 0)")
        _check(self.slip >= 0, f"Fault.slip must be >= 0 (use rake for sense), got {self.slip}")

    @property
    def bottom_depth(self) -> float:
        """Depth [m] of the bottom edge: ``top_depth + width * sin(dip)``."""
        return self.top_depth + self.width * _cos_sin_deg(self.dip_deg)[1]


def fault_displacement(fault: Fault, east: ArrayLike, north: ArrayLike, poisson: float = 0.25
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Surface displacement ``(ue, un, uz)`` [m] of ``fault`` at points ``(east, north)`` [m].

    ``east`` and ``north`` broadcast together; the outputs have their broadcast shape.
    """
    cs, ss = _cos_sin_deg(fault.strike_deg)
    cd = _cos_sin_deg(fault.dip_deg)[0]
    se, sn = ss, cs  # strike direction: Okada's +x
    le, ln = -cs, ss  # 90° counter-clockwise from strike: Okada's +y
    de = np.asarray(east, dtype=np.float64) - fault.east
    dn = np.asarray(north, dtype=np.float64) - fault.north
    x = de * se + dn * sn + fault.length / 2
    y = de * le + dn * ln + fault.width * (0.0 if abs(cd) < _COS_EPS else cd)
    cr, sr = _cos_sin_deg(fault.rake_deg)
    ux, uy, uz = okada85_surface(x, y, fault.bottom_depth, fault.dip_deg, fault.length,
                                 fault.width, fault.slip * cr, fault.slip * sr, fault.opening,
                                 poisson)
    return ux * se + uy * le, ux * sn + uy * ln, uz


def fault_trace(fault: Fault) -> tuple[tuple[float, float], tuple[float, float]]:
    """Surface projection ``((e0, n0), (e1, n1))`` [m] of the top edge, start to end of strike.

    For a surface-breaking fault (``top_depth == 0``) this is the fault trace.
    """
    cs, ss = _cos_sin_deg(fault.strike_deg)
    h = fault.length / 2
    return (fault.east - h * ss, fault.north - h * cs), (fault.east + h * ss, fault.north + h * cs)
