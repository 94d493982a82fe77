"""Non-convex log-TV denoising of displacement fields (torch, CPU or GPU).

For each component independently (Bertrand et al. 2025, MicroFlow):

    minimise  E(u) = ‖u − f‖² + λ Σ_pixels log(|∇u| + ε)

with |∇u| the isotropic magnitude of forward differences (Neumann boundary). The
log penalty is concave in |∇u|, so E is minimised by majorise–minimise: at the iterate
u_k, log(t + ε) ≤ log(t_k + ε) + (t − t_k)/(t_k + ε), and each outer step solves the
weighted-TV problem

    min_u ‖u − f‖² + λ Σ w_i |(∇u)_i|,   w_i = 1/(|∇u_k|_i + ε)

with a primal–dual (Chambolle–Pock) solver, warm-started from the previous step. Small
gradients get large weights (smoothed away); the fault's jump gets a small weight and
stays sharp. NaN pixels carry no data term (the regulariser fills them) and come back NaN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class LogTVConfig:
    """Parameters of log-TV for fields in pixels.

    Attributes:
        lam: λ, weight of the log penalty (px²).
        eps: ε, px/px; gradients well below ε are smoothed, well above it kept.
        outer_iters: majorise–minimise steps (reweightings).
        inner_iters: primal–dual iterations per weighted-TV solve.
    """

    lam: float = 0.03
    eps: float = 0.1
    outer_iters: int = 8
    inner_iters: int = 60

    def __post_init__(self) -> None:
        if not self.lam >= 0:
            raise ValueError(f"lam must be >= 0, got {self.lam}")
        if not self.eps > 0:
            raise ValueError(f"eps must be > 0, got {self.eps}")
        if self.outer_iters < 1 or self.inner_iters < 1:
            raise ValueError("outer_iters and inner_iters must be >= 1")


def _grad(u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    gx = torch.zeros_like(u)
    gy = torch.zeros_like(u)
    gx[..., :, :-1] = u[..., :, 1:] - u[..., :, :-1]
    gy[..., :-1, :] = u[..., 1:, :] - u[..., :-1, :]
    return gx, gy


def _div(px: torch.Tensor, py: torch.Tensor) -> torch.Tensor:
    """Negative adjoint of ``_grad``."""
    d = torch.zeros_like(px)
    d[..., :, 0] = px[..., :, 0]
    d[..., :, 1:-1] = px[..., :, 1:-1] - px[..., :, :-2]
    d[..., :, -1] = -px[..., :, -2]
    d[..., 0, :] += py[..., 0, :]
    d[..., 1:-1, :] += py[..., 1:-1, :] - py[..., :-2, :]
    d[..., -1, :] += -py[..., -2, :]
    return d


def logtv_energy(u, f, lam: float, eps: float) -> float:
    """E(u) = ‖u − f‖² + λ Σ log(|∇u| + ε), summed over every plane (finite f only)."""
    u = torch.as_tensor(np.asarray(u) if not torch.is_tensor(u) else u, dtype=torch.float64)
    f = torch.as_tensor(np.asarray(f) if not torch.is_tensor(f) else f, dtype=torch.float64)
    m = torch.isfinite(f)
    data = torch.where(m, u - torch.nan_to_num(f), torch.zeros_like(u)).pow(2).sum()
    gx, gy = _grad(u)
    return float(data + lam * torch.log(torch.sqrt(gx**2 + gy**2) + eps).sum())


def _solve(f: torch.Tensor, m: torch.Tensor, cfg: LogTVConfig) -> torch.Tensor:
    """MM + Chambolle–Pock on ``(N, H, W)`` planes; ``m`` is the data mask (1/0)."""
    u = f.clone()
    px = torch.zeros_like(f)
    py = torch.zeros_like(f)
    # ½‖u − f‖²_m + Σ τ_i |∇u|_i with τ = λ w / 2 (the energy's data term has no ½)
    t = sigma = 1.0 / math.sqrt(8.0)
    for _ in range(cfg.outer_iters):
        gx, gy = _grad(u)
        tau = 0.5 * cfg.lam / (torch.sqrt(gx**2 + gy**2) + cfg.eps)
        ubar = u
        for _ in range(cfg.inner_iters):
            gx, gy = _grad(ubar)
            px = px + sigma * gx
            py = py + sigma * gy
            scale = torch.clamp(torch.sqrt(px**2 + py**2) / tau.clamp(min=1e-12), min=1.0)
            px = px / scale
            py = py / scale
            v = u + t * _div(px, py)
            u_new = (v + t * m * f) / (1.0 + t * m)
            ubar = 2.0 * u_new - u
            u = u_new
    return u


def logtv_denoise(field, config: LogTVConfig = LogTVConfig(), *, device=None):
    """Denoise every ``(H, W)`` plane of ``field`` with log-TV.

    Args:
        field: ``(H, W)``, ``(C, H, W)`` or ``(B, C, H, W)`` numpy array or torch tensor,
            a displacement field in pixels (NaN = missing).
        config: λ, ε and iteration counts.
        device: torch device for the work (default: the tensor's, or CPU for numpy).

    Returns:
        The same type and shape, float32, NaN where the input was NaN.
    """
    is_tensor = torch.is_tensor(field)
    if not is_tensor and not isinstance(field, np.ndarray):
        raise TypeError(f"expected a numpy array or torch tensor, got {type(field).__name__}")
    if field.ndim not in (2, 3, 4):
        raise ValueError(f"expected (H, W), (C, H, W) or (B, C, H, W), got shape "
                         f"{tuple(field.shape)}")
    x = field if is_tensor else torch.from_numpy(np.ascontiguousarray(field))
    out_device = x.device
    dev = torch.device(device) if device is not None else x.device
    shape = x.shape
    f = x.reshape(-1, shape[-2], shape[-1]).to(dev, torch.float32)
    m = torch.isfinite(f)
    f0 = torch.where(m, f, torch.zeros_like(f))
    # start missing pixels at their plane's mean so the regulariser fills them smoothly
    n = m.sum(dim=(1, 2), keepdim=True).clamp(min=1)
    mean = f0.sum(dim=(1, 2), keepdim=True) / n
    f0 = torch.where(m, f0, mean.expand_as(f0))
    with torch.no_grad():
        u = _solve(f0, m.to(f0.dtype), config)
    u = torch.where(m, u, torch.full_like(u, float("nan"))).reshape(shape)
    if is_tensor:
        return u.to(out_device)
    return u.cpu().numpy().astype(np.float32)
