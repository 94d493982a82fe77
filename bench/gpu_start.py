"""The correlator start of MicroFlow (``model.correlator_start``) in torch, batched over
tiles, so that it runs on the GPU next to the network (``bench/gpu_run.py``).

Same method and numbers as ``model.correlator.frequency_correlate`` with
``model.correlator_start.START_CORRELATOR`` (window 32, step 16): Hann-apodised windows,
normalised cross-power spectrum, integer peak then the post window re-extracted at the
integer shift, parabolic start, COSI-Corr frequency mask, robust Gauss–Newton phase-plane
fit with one pass of the moved post window, SNR; then windows with a low SNR filled
(normalised Gaussian convolution, σ 1.5 windows), a 3 × 3 median on the window grid and
bilinear interpolation to every pixel. Every window of every tile is one row of one
batched tensor: no Python loop over windows or tiles. Needs torch only.

``tests/bench/test_gpu_run.py`` checks it against the numpy/scipy correlator on CPU.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

WINDOW, STEP, MAX_SHIFT = 32, 16, 10
MASK_THRESHOLD, ROBUST_ITERS, GN_ITERS, REFINE_ITERS, MAX_NODATA = 0.9, 3, 3, 1, 0.25
MIN_SNR = 0.2  # as model.correlator_start.MIN_SNR
_TINY = 1e-12
_BISQUARE_C = 4.685
_RAMP = 2


def _hann(w: int, shift: torch.Tensor) -> torch.Tensor:
    """``(N, w)`` periodic Hann windows peaking at ``w/2 + shift``, zero off their support."""
    u = torch.arange(w, device=shift.device, dtype=torch.float64)[None] - shift.reshape(-1, 1)
    h = 0.5 - 0.5 * torch.cos(2 * math.pi * u / w)
    return torch.where((u >= 0) & (u <= w), h, torch.zeros_like(h)).float()


def _patches(img: torch.Tensor, b: torch.Tensor, r0: torch.Tensor, c0: torch.Tensor,
             w: int) -> torch.Tensor:
    """``(N, w, w)`` patches of ``img (B, H, W)``: tile ``b``, top-left ``(r0, c0)``."""
    ar = torch.arange(w, device=img.device)
    rows = (r0[:, None] + ar)[:, :, None]
    cols = (c0[:, None] + ar)[:, None, :]
    return img[b[:, None, None], rows, cols]


def _prepare(a: torch.Tensor, b: torch.Tensor, apod_a: torch.Tensor, apod_b: torch.Tensor):
    """Common nodata taper, weighted de-meaning, apodisation (``_prepare_pair``)."""
    valid = ~(torch.isnan(a) | torch.isnan(b))
    frac = 1.0 - valid.float().mean((1, 2))
    taper = torch.ones_like(a)
    holed = frac > 0
    if bool(holed.any()):
        k = 2 * _RAMP + 1
        v = F.pad(valid[holed].float()[:, None], (_RAMP,) * 4, mode="replicate")
        core = -F.max_pool2d(-v, k, stride=1)
        core = F.pad(core, (_RAMP,) * 4, mode="replicate")
        taper[holed] = F.avg_pool2d(core, k, stride=1)[:, 0]
    out, flat = [], torch.zeros(len(a), dtype=torch.bool, device=a.device)
    for p, apod in ((a, apod_a), (b, apod_b)):
        wgt = taper * apod
        p = torch.where(valid, p, torch.zeros_like(p))
        wsum = wgt.double().sum((1, 2))
        mean = (p * wgt).double().sum((1, 2)) / wsum.clamp(min=_TINY)
        p = (p - mean.float()[:, None, None]) * wgt
        flat |= p.abs().amax((1, 2)) <= 1e-5 * mean.abs().float()
        out.append(p)
    return out[0], out[1], frac, flat


def _cross(f1: torch.Tensor, f2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = f1 * torch.conj(f2)
    amp = x.abs()
    return x * torch.where(amp > _TINY, 1.0 / amp.clamp(min=_TINY), torch.zeros_like(amp)), amp


def _peak(q: torch.Tensor, w: int, allowed: torch.Tensor):
    """Integer peak of ``irfft2(conj(Q))`` within ``allowed`` and parabolic offsets."""
    corr = torch.fft.irfft2(torch.conj(q), s=(w, w))
    corr = torch.where(allowed, corr, torch.full_like(corr, -math.inf))
    flat = corr.reshape(len(q), -1).argmax(1)
    py, px = flat // w, flat % w
    n = torch.arange(len(q), device=q.device)
    c0 = corr[n, py, px]

    def parabola(cm, cp):
        cm = torch.where(torch.isfinite(cm), cm, c0)
        cp = torch.where(torch.isfinite(cp), cp, c0)
        den = cm - 2 * c0 + cp
        ok = den < -_TINY
        s = torch.where(ok, 0.5 * (cm - cp) / torch.where(ok, den, -torch.ones_like(den)),
                        torch.zeros_like(den))
        return s.clamp(-0.5, 0.5)

    sy = parabola(corr[n, (py - 1) % w, px], corr[n, (py + 1) % w, px])
    sx = parabola(corr[n, py, (px - 1) % w], corr[n, py, (px + 1) % w])
    iy = torch.where(py >= w // 2, py - w, py)
    ix = torch.where(px >= w // 2, px - w, px)
    return iy, ix, sy.double(), sx.double()


def _fit_plane(q, wgt0, wy, wx, d0, robust_iters, gn_iters):
    """Robust Gauss–Newton phase-plane fit of all windows: ``d (N, 2)`` and SNR ``(N,)``."""
    d = d0.clone()
    wgt = wgt0

    def phasors(d):
        out = []
        for freqs, col in ((wy, d[:, :1]), (wx, d[:, 1:])):
            phase = (freqs[None, :] * col).float()
            out.append(torch.polar(torch.ones_like(phase), -phase))
        return out

    for it in range(robust_iters + 1):
        wd = wgt.double()
        hyy = wd.sum(2) @ wy**2
        hxx = wd.sum(1) @ wx**2
        hxy = torch.einsum("nyx,y,x->n", wd, wy, wx)
        det = hyy * hxx - hxy * hxy
        ok = det > 1e-9 * (hyy * hxx).clamp(min=_TINY)
        det = torch.where(ok, det, torch.ones_like(det))
        wq = wgt * q
        for _ in range(gn_iters):
            ey, ex = phasors(d)
            gy = (ey * torch.matmul(wq, ex[:, :, None])[:, :, 0]).imag.double() @ wy
            gx = (torch.matmul(ey[:, None, :], wq)[:, 0] * ex).imag.double() @ wx
            zero = torch.zeros_like(gy)
            dy = torch.where(ok, ((hxx * gy - hxy * gx) / det).clamp(-0.5, 0.5), zero)
            dx = torch.where(ok, ((hyy * gx - hxy * gy) / det).clamp(-0.5, 0.5), zero)
            d = d + torch.stack([dy, dx], 1)
        ey, ex = phasors(d)
        cos_res = (q * ey[:, :, None] * ex[:, None, :]).real
        if it == robust_iters:
            break
        res = (2.0 - 2.0 * cos_res).clamp(min=0.0).sqrt()
        wtot = wgt.double().sum((1, 2)).clamp(min=_TINY)
        sigma = 1.2533 * (wgt * res).double().sum((1, 2)) / wtot
        u = res / (_BISQUARE_C * sigma.clamp(min=1e-3)).float()[:, None, None]
        wgt = wgt0 * torch.where(u < 1.0, (1.0 - u * u) ** 2, torch.zeros_like(u))
    wtot = wgt.double().sum((1, 2))
    snr = (wgt * cos_res).double().sum((1, 2)) / wtot.clamp(min=_TINY)
    snr = torch.where(ok & (wtot > 0), snr.clamp(0.0, 1.0), torch.zeros_like(snr))
    d[~ok] = math.nan
    return d, snr


def correlate_tiles(pre: torch.Tensor, post: torch.Tensor, chunk: int = 1 << 14
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Window grid ``(dx, dy, snr)``, each ``(B, ny, nx)``, of ``(B, H, W)`` float32 tiles
    (NaN = nodata), on their device; ``chunk`` windows per batched step (memory)."""
    w, step = WINDOW, STEP
    dev = pre.device
    nb, h, wid = pre.shape
    rows = torch.arange(w // 2, h - w // 2 + 1, step, device=dev)
    cols = torch.arange(w // 2, wid - w // 2 + 1, step, device=dev)
    ms = min(MAX_SHIFT, w // 2 - 1)
    pad = ms + 1
    post_pad = F.pad(post.float(), (pad,) * 4, value=math.nan)
    pre = pre.float()
    hann = _hann(w, torch.zeros(1, device=dev, dtype=torch.float64))[0]
    apod = hann[:, None] * hann[None, :]
    wy = 2 * math.pi * torch.fft.fftfreq(w, device=dev, dtype=torch.float64)
    wx = 2 * math.pi * torch.fft.rfftfreq(w, device=dev, dtype=torch.float64)
    mult = torch.where(wx[None, :] > 0, 2.0, 1.0).to(dev) * torch.ones((w, 1), device=dev,
                                                                      dtype=torch.float64)
    mult[:, -1] = 0.0
    mult[w // 2, :] = 0.0
    mult[0, 0] = 0.0
    fit = mult > 0
    ar = torch.arange(w, device=dev)
    lag = torch.where(ar >= w // 2, ar - w, ar)
    sy_, sx_ = torch.meshgrid(lag, lag, indexing="ij")
    coarse_ok = (sy_.abs() <= ms) & (sx_.abs() <= ms)
    fine_ok = (sy_.abs() <= 1) & (sx_.abs() <= 1)
    bb, rr, cc = torch.meshgrid(torch.arange(nb, device=dev), rows, cols, indexing="ij")
    bb, rr, cc = bb.reshape(-1), rr.reshape(-1), cc.reshape(-1)
    out_d = torch.full((len(rr), 2), math.nan, device=dev, dtype=torch.float64)
    out_snr = torch.zeros(len(rr), device=dev, dtype=torch.float64)
    for lo in range(0, len(rr), chunk):
        b = bb[lo:lo + chunk]
        r0 = rr[lo:lo + chunk] - w // 2
        c0 = cc[lo:lo + chunk] - w // 2
        pre_p = _patches(pre, b, r0, c0, w)
        post_p = _patches(post_pad, b, r0 + pad, c0 + pad, w)
        p1, p2 = _prepare(pre_p, post_p, apod, apod)[:2]
        q, _ = _cross(torch.fft.rfft2(p1), torch.fft.rfft2(p2))
        iy, ix, _, _ = _peak(q, w, coarse_ok)
        post_p = _patches(post_pad, b, r0 + pad + iy, c0 + pad + ix, w)
        p1, p2, frac, flat = _prepare(pre_p, post_p, apod, apod)
        f1 = torch.fft.rfft2(p1)
        q, amp = _cross(f1, torch.fft.rfft2(p2))
        fy, fx, sy, sx = _peak(q, w, fine_ok)
        r = torch.stack([fy + sy, fx + sx], 1).double()
        for k in range(REFINE_ITERS + 1):
            if k > 0:
                ry, rx = (torch.nan_to_num(r[:, i]).clamp(-2.0, 2.0) for i in (0, 1))
                apod_post = _hann(w, ry)[:, :, None] * _hann(w, rx)[:, None, :]
                _, p2, _, flat_k = _prepare(pre_p, post_p, apod, apod_post)
                q, amp = _cross(f1, torch.fft.rfft2(p2))
                flat |= flat_k
            nls = torch.log10(amp.double() + _TINY)
            nls = nls - nls.amax((1, 2), keepdim=True)
            mean_nls = (nls * fit).sum((1, 2), keepdim=True) / fit.sum()
            wgt0 = (mult * (nls >= MASK_THRESHOLD * mean_nls)).float()
            robust = ROBUST_ITERS if k == REFINE_ITERS else 0
            r, snr = _fit_plane(q, wgt0, wy, wx, r, robust, GN_ITERS)
        d = r + torch.stack([iy, ix], 1).double()
        bad = (frac > MAX_NODATA) | flat | torch.isnan(d[:, 0])
        d[bad] = math.nan
        out_d[lo:lo + chunk] = d
        out_snr[lo:lo + chunk] = torch.where(bad, torch.zeros_like(snr), snr)
    shape = (nb, len(rows), len(cols))
    return (out_d[:, 1].reshape(shape).float(), out_d[:, 0].reshape(shape).float(),
            out_snr.reshape(shape).float())


def _symmetric_index(n: int, r: int, device) -> torch.Tensor:
    """Indices of ``n`` samples padded by ``r`` with scipy's ``reflect`` (d c b a | a b…)."""
    i = torch.arange(-r, n + r, device=device) % (2 * n)
    return torch.where(i >= n, 2 * n - 1 - i, i)


def _gaussian(g: torch.Tensor, sigma: float = 1.5, truncate: float = 4.0) -> torch.Tensor:
    """scipy ``ndimage.gaussian_filter(g, sigma)`` (mode reflect) of ``(B, ny, nx)``."""
    r = int(truncate * sigma + 0.5)
    x = torch.arange(-r, r + 1, device=g.device, dtype=torch.float64)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    k = (k / k.sum()).to(g.dtype)
    out = g[:, _symmetric_index(g.shape[1], r, g.device)]
    out = F.conv2d(out[:, None], k.view(1, 1, -1, 1))[:, 0]
    out = out[:, :, _symmetric_index(g.shape[2], r, g.device)]
    return F.conv2d(out[:, None], k.view(1, 1, 1, -1))[:, 0]


def _fill(grid: torch.Tensor, good: torch.Tensor) -> torch.Tensor:
    """``grid (B, ny, nx)`` with bad windows filled from the good ones (per tile)."""
    g = torch.where(good, grid, torch.zeros_like(grid))
    num = _gaussian(g)
    den = _gaussian(good.double())
    out = []
    for i in range(len(grid)):
        if bool(good[i].all()):
            out.append(grid[i])
        elif not bool(good[i].any()):
            out.append(torch.zeros_like(grid[i]))
        else:
            med = torch.quantile(grid[i][good[i]], 0.5)
            filled = torch.where(den[i] > 1e-3, num[i] / den[i].clamp(min=1e-3), med)
            out.append(torch.where(good[i], grid[i], filled))
    return torch.stack(out)


def _median3(g: torch.Tensor) -> torch.Tensor:
    """3 × 3 median (mode nearest) of ``(B, ny, nx)``."""
    p = F.pad(g[:, None], (1, 1, 1, 1), mode="replicate")
    return F.unfold(p, 3).median(1).values.reshape(g.shape)


def _dense(grid: torch.Tensor, nodes: int, size: int, axis: int) -> torch.Tensor:
    """Linear interpolation of ``grid`` along ``axis`` (1 or 2) from the window centres
    ``w/2 + k·step`` to ``size`` pixels, edge-extended."""
    x = torch.arange(size, device=grid.device, dtype=torch.float64)
    f = ((x - WINDOW // 2) / STEP).clamp(0, nodes - 1)
    i0 = f.floor().long().clamp(0, max(nodes - 2, 0))
    t = (f - i0).clamp(0, 1).to(grid.dtype)
    i1 = (i0 + 1).clamp(max=nodes - 1)
    a, b = grid.index_select(axis, i0), grid.index_select(axis, i1)
    shape = [1, 1, 1]
    shape[axis] = size
    t = t.view(shape)
    return a * (1 - t) + b * t


def correlator_start(pre: torch.Tensor, post: torch.Tensor) -> torch.Tensor:
    """``(B, 2, H, W)`` float32 ``(dx, dy)`` px start fields of ``(B, 1, H, W)`` tiles, as
    ``model.correlator_start.correlator_init`` gives them, on the tiles' device."""
    h, w = pre.shape[-2:]
    dx, dy, snr = correlate_tiles(pre[:, 0], post[:, 0])
    good = torch.isfinite(dx) & torch.isfinite(dy) & (snr >= MIN_SNR)
    out = []
    for g in (dx, dy):
        g = _median3(_fill(torch.nan_to_num(g.double()), good))
        g = _dense(_dense(g.float(), g.shape[1], h, 1), g.shape[2], w, 2)
        out.append(g)
    return torch.stack(out, 1)
