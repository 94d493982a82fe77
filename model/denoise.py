"""Non-convex log-TV denoising of displacement fields (pure torch, CPU or GPU).

For each ``(H, W)`` plane independently (Bertrand et al. 2025, MicroFlow):

    minimise  E(u) = ‖u − f‖² + λ Σ_pixels log(|∇u| + ε)

with |∇u| the isotropic magnitude of forward differences (Neumann boundary: the last
column/row has no difference). log is concave in |∇u|, so E is minimised by
majorise–minimise: at the iterate u_k, log(t + ε) ≤ log(t_k + ε) + (t − t_k)/(t_k + ε),
and each outer step solves the weighted-TV problem

    min_u ‖u − f‖² + λ Σ w_i |(∇u)_i|,   w_i = 1/(|∇u_k|_i + ε)

with the accelerated Chambolle–Pock primal–dual method (O(1/k²) for the strongly convex
data term), warm-started from the previous u and dual field. Small gradients (noise) get
weights near 1/ε and are flattened; a fault's jump gets a weight near 1/|jump| and stays
sharp. All planes are solved at once, vectorised on the device.

Missing data: NaN (or ±inf) pixels get a zero data weight, so the regulariser fills them
from their surroundings (starting from a pull–push average of the data around them); they
are NaN again in the output.

Defaults (px units, chosen on a 256² ramp + bump + 2 px step field with 0.1 px noise):
λ = 0.06, ε = 0.15, 6 × 20 iterations cut the noise ~9× away from the step and keep its
height within 2 %; ``LogTVConfig.for_noise(σ)`` rescales them to other noise levels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class LogTVConfig:
    """Parameters of log-TV, for displacement fields in pixels.

    Attributes:
        lam: λ (px²), weight of the log penalty. In flat areas the effective TV weight is
            λ/ε (px); across a jump of height h it is λ/(h + ε).
        eps: ε (px per px), gradient scale: gradients well below ε are smoothed away,
            well above it kept. The defaults suit noise of 0.02–0.2 px and fault steps of
            0.5–5 px.
        outer_iters: majorise–minimise steps (reweightings).
        inner_iters: primal–dual iterations per weighted-TV solve (warm-started).
        tau0: initial primal step of the accelerated primal–dual solver (σ0 = 1/(8 τ0)).
    """

    lam: float = 0.06
    eps: float = 0.15
    outer_iters: int = 6
    inner_iters: int = 20
    tau0: float = 0.25

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lam) and self.lam >= 0):
            raise ValueError(f"lam must be finite and >= 0, got {self.lam}")
        if not (math.isfinite(self.eps) and self.eps > 0):
            raise ValueError(f"eps must be finite and > 0, got {self.eps}")
        if self.outer_iters < 1 or self.inner_iters < 1:
            raise ValueError("outer_iters and inner_iters must be >= 1")
        if not self.tau0 > 0:
            raise ValueError(f"tau0 must be > 0, got {self.tau0}")

    @classmethod
    def for_noise(cls, sigma: float, **kwargs: Any) -> LogTVConfig:
        """The defaults rescaled to a noise std ``sigma`` (px): λ = 6σ², ε = 1.5σ.

        E(u; f) with (λ, ε) equals, up to a constant, E(a·u; a·f)/a² with (a²λ, a·ε),
        so the defaults (tuned for σ = 0.1 px) scale this way to other noise levels.
        """
        if not sigma > 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
        return cls(lam=6.0 * sigma**2, eps=1.5 * sigma, **kwargs)


def _grad(u: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Forward differences of ``u (N, H, W)`` into ``out (2, N, H, W)`` = (∂x, ∂y).

    The last column of ``out[0]`` and last row of ``out[1]`` must already be zero.
    """
    torch.sub(u[..., :, 1:], u[..., :, :-1], out=out[0, ..., :, :-1])
    torch.sub(u[..., 1:, :], u[..., :-1, :], out=out[1, ..., :-1, :])
    return out


def _div(p: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``−∇ᵀp`` for ``p (2, N, H, W)`` whose last column/row (x/y) are zero."""
    px, py = p[0], p[1]
    out[..., :, 0] = px[..., :, 0]
    torch.sub(px[..., :, 1:], px[..., :, :-1], out=out[..., :, 1:])
    out[..., 0, :] += py[..., 0, :]
    out[..., 1:, :] += py[..., 1:, :] - py[..., :-1, :]
    return out


def _norm(g: torch.Tensor) -> torch.Tensor:
    """Pointwise Euclidean norm of ``g (2, ...)`` over its first axis."""
    return torch.addcmul(g[0].square(), g[1], g[1]).sqrt_()


def _as_tensor(x: np.ndarray | torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A real-valued array or tensor as a tensor of ``dtype`` (tensors keep their device)."""
    if isinstance(x, np.ndarray):
        if x.dtype.kind not in "fiu":
            raise TypeError(f"expected a real-valued array, got dtype {x.dtype}")
        np_dtype = np.float64 if dtype == torch.float64 else np.float32
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np_dtype))
    if not torch.is_tensor(x):
        raise TypeError(f"expected a numpy array or torch tensor, got {type(x).__name__}")
    if x.is_complex() or x.dtype == torch.bool:
        raise TypeError(f"expected a real-valued tensor, got dtype {x.dtype}")
    return x.to(dtype)


def logtv_energy(u: np.ndarray | torch.Tensor, f: np.ndarray | torch.Tensor,
                 lam: float, eps: float) -> float:
    """E(u) = ‖u − f‖² + λ Σ log(|∇u| + ε), summed over all planes, in float64.

    ``u`` and ``f`` (px) have the same shape ``(..., H, W)``; ``u`` must be finite. NaN
    pixels of ``f`` carry no data term.
    """
    u64 = _as_tensor(u, torch.float64)
    f64 = _as_tensor(f, torch.float64).to(u64.device)
    data = torch.where(torch.isfinite(f64), u64 - f64, 0.0).square().sum()
    planes = u64.reshape(-1, *u64.shape[-2:])
    grad_norm = _norm(_grad(planes, planes.new_zeros((2, *planes.shape))))
    return float(data + lam * torch.log(grad_norm + eps).sum())


def _fill_holes(f: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Initial guess in holes (``m == 0``) of ``f (N, H, W)``: a pull–push pyramid.

    Masked 2×2 averages go down to 1×1, then each level's holes take the bilinear
    upsampling of the coarser level. Planes with no data come back as zeros.
    """
    if f.shape[-2] <= 1 and f.shape[-1] <= 1:
        return torch.where(m > 0, f, 0.0)
    k = (min(2, f.shape[-2]), min(2, f.shape[-1]))
    num = F.avg_pool2d((f * m)[:, None], k, ceil_mode=True)
    den = F.avg_pool2d(m[:, None], k, ceil_mode=True)
    coarse_m = (den > 0).to(f.dtype)
    coarse = _fill_holes((num / den.clamp(min=1e-12))[:, 0], coarse_m[:, 0])
    up = F.interpolate(coarse[:, None], size=f.shape[-2:], mode="bilinear", align_corners=False)
    return torch.where(m > 0, f, up[:, 0])


def _mm_solve(f: torch.Tensor, m: torch.Tensor | None, cfg: LogTVConfig) -> torch.Tensor:
    """Majorise–minimise on planes ``f (N, H, W)``; ``m`` is the 0/1 data mask or None."""
    u = f.clone()
    p = f.new_zeros((2, *f.shape))  # dual field, |p_i| ≤ λ w_i
    g = f.new_zeros((2, *f.shape))
    d = torch.empty_like(f)
    mf = f if m is None else f * m
    for _ in range(cfg.outer_iters):
        # 1/bound = (|∇u_k| + ε)/λ, the projection of p onto |p_i| ≤ λ w_i
        inv_bound = _norm(_grad(u, g)).add_(cfg.eps).div_(cfg.lam)
        tau, sigma = cfg.tau0, 1.0 / (8.0 * cfg.tau0)
        ubar = u
        for _ in range(cfg.inner_iters):
            p.add_(_grad(ubar, g), alpha=sigma)
            p.div_(_norm(p).mul_(inv_bound).clamp_(min=1.0))
            # prox of τ‖u − f‖²_m: u = (v + 2τ m f) / (1 + 2τ m), v = u + τ div p
            v = torch.add(u, _div(p, d), alpha=tau).add_(mf, alpha=2.0 * tau)
            if m is None:
                u_new = v.mul_(1.0 / (1.0 + 2.0 * tau))
            else:
                u_new = v.div_(m * (2.0 * tau) + 1.0)
            theta = 1.0 / math.sqrt(1.0 + 4.0 * tau)  # strong convexity γ = 2
            tau, sigma = tau * theta, sigma / theta
            ubar = torch.lerp(u, u_new, 1.0 + theta)  # u_new + θ (u_new − u)
            u = u_new
    return u


def logtv_denoise(field: np.ndarray | torch.Tensor, config: LogTVConfig = LogTVConfig(), *,
                  device: str | torch.device | None = None) -> np.ndarray | torch.Tensor:
    """Denoise every ``(H, W)`` plane of a displacement field with log-TV.

    Args:
        field: displacement in pixels, shape ``(H, W)``, ``(C, H, W)`` or ``(B, C, H, W)``
            (e.g. ``(2, H, W)`` = (dx, dy)), numpy array or torch tensor. Each plane is
            denoised independently. NaN marks missing pixels.
        config: λ, ε and iteration counts, see :class:`LogTVConfig`.
        device: where to compute (default: the tensor's device, CPU for numpy).

    Returns:
        Same type and shape as ``field``, float32, in pixels (a tensor comes back on the
        input's device). Pixels that were NaN are NaN again; the values around them come
        from data outside plus the regulariser's fill of the hole.
    """
    x = _as_tensor(field, torch.float32)
    if x.ndim not in (2, 3, 4):
        raise ValueError(f"expected shape (H, W), (C, H, W) or (B, C, H, W), got {tuple(x.shape)}")
    f = x.reshape(-1, *x.shape[-2:]).to(device if device is not None else x.device)
    valid = torch.isfinite(f)
    with torch.no_grad():
        if config.lam == 0 or f.numel() == 0:
            u = f.clone()
        elif bool(valid.all()):
            u = _mm_solve(f, None, config)
        else:
            # holes start from a smooth fill; the mask drops their data term
            m = valid.to(f.dtype)
            u = _mm_solve(_fill_holes(torch.where(valid, f, 0.0), m), m, config)
        u = torch.where(valid, u, torch.nan).reshape(x.shape)
    if torch.is_tensor(field):
        return u.to(field.device)
    return u.cpu().numpy()
