"""Real-imagery section of ``microflow benchmark``, and the several-bands line.

**Real pair** (``data/real-s2-t33uuu-north/``): two Sentinel-2 L1C acquisitions of the
same farmland, 10 days apart, no earthquake. The true field is a near-uniform
co-registration offset, about (dx, dy) = (−0.64, +1.75) px per the README (AROSICS). For
MicroFlow raw, MicroFlow + log-TV and the correlator it scores, over valid pixels:

- the share off by more than 0.5 px and 1 px (end-point distance) from the method's own
  robust offset (per-component median of its valid pixels: the **headline**, since the
  offset itself is not what is measured here), and from the README's offset;
- the robust spread 1.4826 × MAD per component (px) around the method's median;
- coverage: the share of cloud-free data pixels marked valid;
- the share of cloud pixels marked valid;
- the time each method took.

Cloud mask for scoring (``cloud_mask``): ``pre`` (2016-05-29, the cloudy date) brighter
than ``CLOUD_DN`` (TOA reflectance 0.20; the clear ``post`` has its 99th percentile at
0.17), dilated by ``CLOUD_DILATE_PX``. It catches the clouds, not their shadows. Nodata
(DN 0 in either image) is excluded from everything.

MicroFlow's σ and its validity come from ``estimate_displacement(..., return_sigma=True)``
and ``model.uncertainty.low_confidence`` (valid: finite, and not low confidence: σ of
neither component above ``DEFAULT_MAX_SIGMA_PX``, nor too many such pixels around) where
those exist; otherwise every finite pixel counts as valid and log-TV runs
unweighted (the report says which).
The correlator (window 32 px, step 8 px) is scored at its window centres; a centre is
valid where its estimate is finite.

**Several bands** (:func:`band_benchmark`): semi-synthetic pairs made from the same crop
of Landsat 8 B2, B3 and B4 (held-out test split), warped by the same field with the same
temporal change (same seed per band), estimated per band and combined by
``model.bands.combine_bands``.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

REAL_DIR = Path(__file__).resolve().parent.parent / "data" / "real-s2-t33uuu-north"
PRE = "pre_S2A_20160529_T33UUU_north.tif"
POST = "post_S2A_20160608_T33UUU_north.tif"
README_OFFSET = (-0.64, 1.75)  # (dx, dy) px, AROSICS, from the data's README
CLOUD_DN = 2000  # TOA reflectance x 10,000 on the cloudy pre date
CLOUD_DILATE_PX = 5
CORR_WINDOW, CORR_STEP = 32, 8


@dataclass
class RealScore:
    """Scores of one method on the real pair (shares in [0, 1], px, s)."""

    method: str
    off05_own: float
    off1_own: float
    off05_readme: float
    off1_readme: float
    median: tuple[float, float]
    spread: tuple[float, float]
    coverage: float
    cloud_valid: float
    seconds: float
    points: str


def load_real_pair(folder: Path = REAL_DIR) -> tuple[np.ndarray, np.ndarray]:
    """``(pre, post)`` ``(H, W)`` float32 DN of the committed real pair; 0 (nodata) → NaN."""
    import rasterio

    out = []
    for name in (PRE, POST):
        with rasterio.open(folder / name) as ds:
            a = ds.read(1).astype(np.float32)
        a[a == 0] = np.nan
        out.append(a)
    return out[0], out[1]


def cloud_mask(pre: np.ndarray) -> np.ndarray:
    """``(H, W)`` bool: ``pre > CLOUD_DN``, dilated by ``CLOUD_DILATE_PX`` (scoring only)."""
    bright = np.nan_to_num(pre, nan=0.0) > CLOUD_DN
    r = CLOUD_DILATE_PX
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    return ndimage.binary_dilation(bright, structure=xx**2 + yy**2 <= r * r)


def _robust(v: np.ndarray) -> tuple[float, float]:
    med = float(np.median(v))
    return med, 1.4826 * float(np.median(np.abs(v - med)))


def score_field(method: str, dx: np.ndarray, dy: np.ndarray, valid: np.ndarray,
                data: np.ndarray, cloud: np.ndarray, seconds: float, points: str
                ) -> RealScore:
    """Score one field (any shape, e.g. ``(H, W)`` or the correlator's grid) of px values.

    ``valid``: marked measured; ``data``: not nodata; ``cloud``: the scoring cloud mask.
    """
    v = valid & data & np.isfinite(dx) & np.isfinite(dy)
    (mx, sx), (my, sy) = _robust(dx[v]), _robust(dy[v])
    own = np.hypot(dx[v] - mx, dy[v] - my)
    readme = np.hypot(dx[v] - README_OFFSET[0], dy[v] - README_OFFSET[1])
    clear = data & ~cloud
    return RealScore(
        method=method, off05_own=float((own > 0.5).mean()), off1_own=float((own > 1).mean()),
        off05_readme=float((readme > 0.5).mean()), off1_readme=float((readme > 1).mean()),
        median=(mx, my), spread=(sx, sy), coverage=float(v[clear].mean()),
        cloud_valid=float(v[data & cloud].mean()) if (data & cloud).any() else float("nan"),
        seconds=seconds, points=points)


def _estimate_with_sigma(pre: np.ndarray, post: np.ndarray, weights: str | None
                         ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """MicroFlow raw field, its σ (None if the API has none yet) and its validity."""
    from model.inference import estimate_displacement

    kwargs = {"denoise": False, "weights": weights}
    if "return_sigma" in inspect.signature(estimate_displacement).parameters:
        flow, sigma = estimate_displacement(pre, post, return_sigma=True, **kwargs)
        valid = np.isfinite(flow).all(0)
        try:
            from model.uncertainty import low_confidence
        except ImportError:
            return flow, sigma, valid
        valid &= ~low_confidence(sigma)  # σ and its neighbourhood, as the pipeline flags
        return flow, sigma, valid
    flow = estimate_displacement(pre, post, **kwargs)
    return flow, None, np.isfinite(flow).all(0)


def real_benchmark(out: Path, weights: str | None = None, folder: Path = REAL_DIR,
                   figures: bool = True) -> tuple[str, list[RealScore]]:
    """Score the three methods on the real pair; returns (Markdown section, scores)."""
    from model.correlator import CorrelatorConfig, frequency_correlate
    from model.denoise import LogTVConfig, logtv_denoise, weights_from_sigma

    pre, post = load_real_pair(folder)
    data = np.isfinite(pre) & np.isfinite(post)
    cloud = cloud_mask(pre)
    t0 = time.perf_counter()
    raw, sigma, valid = _estimate_with_sigma(pre, post, weights)
    t_raw = time.perf_counter() - t0
    t0 = time.perf_counter()
    w = weights_from_sigma(sigma) if sigma is not None else None
    tv = logtv_denoise(np.where(data, raw, np.nan), LogTVConfig(), weights=w,
                       weights_reference=1.0)
    t_tv = t_raw + time.perf_counter() - t0
    t0 = time.perf_counter()
    corr = frequency_correlate(pre, post, CorrelatorConfig(window=CORR_WINDOW, step=CORR_STEP))
    t_corr = time.perf_counter() - t0
    grid = np.ix_(corr.rows, corr.cols)
    dense = "every pixel"
    scores = [
        score_field("microflow", raw[0], raw[1], valid, data, cloud, t_raw, dense),
        score_field("microflow+logtv" + ("(weighted)" if w is not None else ""), tv[0], tv[1],
                    valid, data, cloud, t_tv, dense),
        score_field("correlator", corr.dx, corr.dy, np.isfinite(corr.dx), data[grid],
                    cloud[grid], t_corr, f"window centres every {CORR_STEP} px"),
    ]
    if figures:
        _figure(pre, post, {"microflow": raw, "microflow+logtv": tv,
                            "correlator": corr.to_dense(pre.shape)}, sigma, cloud,
                out / "real_pair.png")
    h, wd = pre.shape
    lines = [
        "## Real imagery: Sentinel-2 pair with no earthquake",
        "",
        f"`data/real-s2-t33uuu-north/` (whole strip, {wd}x{h} px, 10 m, one band; contains "
        "modified Copernicus Sentinel-2 data, ESA 2016). Truth: a near-uniform "
        f"co-registration offset, README (AROSICS) dx = {README_OFFSET[0]}, "
        f"dy = +{README_OFFSET[1]} px, varying by ~0.1 px.",
        "",
        "- **Headline: off by > 0.5 px / > 1 px from the method's own offset** (per-component "
        "median of its valid pixels), as a share of its valid pixels; also against the "
        "README's offset. Spread: 1.4826 x MAD per component around the median.",
        f"- Cloud mask for scoring: pre (2016-05-29, cloudy) DN > {CLOUD_DN} (TOA reflectance "
        f"0.20), dilated by {CLOUD_DILATE_PX} px: {cloud[data].mean():.1%} of the data "
        "pixels. Shadows are not in it. Nodata (DN 0) is excluded everywhere.",
        "- Coverage: share of cloud-free data pixels marked valid. "
        + ("MicroFlow valid = finite and not `model.uncertainty.low_confidence` (σ of "
           "both components ≤ `DEFAULT_MAX_SIGMA_PX`, and not among too many pixels "
           "above it); log-TV weighted by 1/σ² "
           "(`weights_from_sigma`)." if sigma is not None else
           "MicroFlow has no σ yet (`estimate_displacement(..., return_sigma=True)` not "
           "available): every finite pixel counts as valid, log-TV is unweighted."),
        f"- Correlator: window {CORR_WINDOW} px, step {CORR_STEP} px, scored at its window "
        "centres (valid = finite). Times are wall-clock on this machine; log-TV includes "
        "the raw estimate.",
        "",
        "| method | off > 0.5 px (own) | off > 1 px (own) | off > 0.5 px (README) | "
        "off > 1 px (README) | median dx, dy (px) | spread dx, dy (px) | coverage | "
        "cloud valid | time (s) | points |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in scores:
        lines.append(
            f"| {s.method} | {s.off05_own:.1%} | {s.off1_own:.1%} | {s.off05_readme:.1%} | "
            f"{s.off1_readme:.1%} | {s.median[0]:+.3f}, {s.median[1]:+.3f} | "
            f"{s.spread[0]:.3f}, {s.spread[1]:.3f} | {s.coverage:.1%} | "
            f"{s.cloud_valid:.1%} | {s.seconds:.1f} | {s.points} |")
    lines.append("")
    if figures:
        lines += ["![real pair](real_pair.png)", ""]
    return "\n".join(lines), scores


def _figure(pre: np.ndarray, post: np.ndarray, flows: dict[str, np.ndarray],
            sigma: np.ndarray | None, cloud: np.ndarray, path: Path) -> None:
    """Images, each method's dx and dy minus its median (±1.5 px), σ if any."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ncol = 3 if sigma is None else 4
    fig, axes = plt.subplots(1 + len(flows), ncol, figsize=(4.2 * ncol, 2.9 * (1 + len(flows))),
                             constrained_layout=True)
    lo, hi = np.nanpercentile(post, [1, 99])
    for ax, img, title in ((axes[0, 0], pre, "pre 2016-05-29 (cloudy)"),
                           (axes[0, 1], post, "post 2016-06-08")):
        ax.imshow(img, cmap="gray", vmin=lo, vmax=hi)
        ax.set_title(title)
    axes[0, 2].imshow(cloud, cmap="gray")
    axes[0, 2].set_title("cloud mask for scoring")
    if sigma is not None:
        im = axes[0, 3].imshow(np.fmax(sigma[0], sigma[1]), cmap="magma", vmin=0, vmax=1)
        axes[0, 3].set_title("MicroFlow σ (max of dx, dy), px")
        fig.colorbar(im, ax=axes[0, 3], shrink=0.8)
    for i, (name, f) in enumerate(flows.items(), start=1):
        for k, comp in enumerate(("dx", "dy")):
            med = float(np.nanmedian(f[k]))
            im = axes[i, k].imshow(f[k] - med, cmap="RdBu_r", vmin=-1.5, vmax=1.5)
            axes[i, k].set_title(f"{name} {comp} − {med:+.2f} px")
        fig.colorbar(im, ax=axes[i, 1], shrink=0.8)
        err = np.hypot(f[0] - np.nanmedian(f[0]), f[1] - np.nanmedian(f[1]))
        axes[i, 2].imshow(err > 0.5, cmap="gray")
        axes[i, 2].set_title(f"{name}: off > 0.5 px")
        if ncol == 4:
            axes[i, 3].axis("off")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.savefig(path, dpi=80)
    plt.close(fig)


def band_benchmark(weights: str | None = None, n_per_group: int = 2, size: int = 256,
                   seed: int = 7) -> str:
    """Single band vs several bands combined, EPE (px) on Landsat B2/B3/B4 pairs."""
    from model.bands import combine_bands
    from model.inference import estimate_displacement
    from model.metrics import epe
    from model.synthetic import RANGES, make_pair
    from pipeline.textures import load_split

    textures = [t for t in load_split("test") if "224077" in t.name]  # B2, B3, B4
    if len(textures) != 3:
        raise RuntimeError(f"expected B2, B3, B4 of one scene, got {[t.name for t in textures]}")
    rng = np.random.default_rng(seed)
    h, w = textures[0].image.shape
    side = size + 32
    rows: list[tuple[str, float, list[float], float, float]] = []
    use_sigma = "return_sigma" in inspect.signature(estimate_displacement).parameters
    for range_name in RANGES:
        for change in (False, True):
            for _ in range(n_per_group):
                for _ in range(1000):
                    r, c = int(rng.integers(0, h - side)), int(rng.integers(0, w - side))
                    crops = [t.image[r:r + side, c:c + side] for t in textures]
                    if all(np.isfinite(x).all() and x.std() > 0 for x in crops):
                        break
                crops = [(x - x.mean()) / x.std() for x in crops]
                pair_seed = int(rng.integers(2**31))
                pairs = [make_pair(x, np.random.default_rng(pair_seed), (size, size),
                                   range_name, change) for x in crops]
                flows, sigmas = [], []
                for p in pairs:
                    if use_sigma:
                        f, s = estimate_displacement(p.pre, p.post, denoise=False,
                                                     weights=weights, return_sigma=True)
                    else:
                        f = estimate_displacement(p.pre, p.post, denoise=False,
                                                  weights=weights)
                        s = np.full_like(f, 0.1)
                    flows.append(f)
                    sigmas.append(s)
                truth, valid = pairs[0].flow, pairs[0].valid.copy()
                valid[:8] = valid[-8:] = False
                valid[:, :8] = valid[:, -8:] = False
                single = [epe(f, truth, valid) for f in flows]
                comb, _ = combine_bands(np.stack(flows), np.stack(sigmas))
                mean = np.stack(flows).mean(0)
                rows.append((range_name, change, single, epe(comb, truth, valid),
                             epe(mean, truth, valid)))
    lines = [
        "## Several bands (semi-synthetic, Landsat 8 B2/B3/B4)",
        "",
        f"Same {size}x{size} crop of B2, B3 and B4 (scene 224077, held-out test split), "
        "warped by the same field with the same temporal change (same seed per band), "
        f"{n_per_group} pairs per (range, change) group, seed {seed}. EPE (px) over valid "
        "pixels more than 8 px from the border. Combined = `model.bands.combine_bands` "
        + ("with MicroFlow's σ." if use_sigma else
           "with equal σ (0.1 px; MicroFlow has no σ yet), i.e. a median-guarded mean."),
        "",
        "| range | change | B2 | B3 | B4 | best single | combined | plain mean |",
        "|---|---|---|---|---|---|---|---|",
    ]
    groups: dict[tuple[str, bool], list] = {}
    for rn, ch, single, comb, mean in rows:
        groups.setdefault((rn, ch), []).append((single, comb, mean))
    allv = []
    for (rn, ch), vals in groups.items():
        single = np.mean([v[0] for v in vals], axis=0)
        comb = float(np.mean([v[1] for v in vals]))
        mean = float(np.mean([v[2] for v in vals]))
        allv.append((single, comb, mean))
        lines.append(f"| {rn} | {'yes' if ch else 'no'} | " + " | ".join(
            f"{x:.3f}" for x in single) + f" | {single.min():.3f} | {comb:.3f} | {mean:.3f} |")
    single = np.mean([v[0] for v in allv], axis=0)
    lines.append("| **all** | | " + " | ".join(f"{x:.3f}" for x in single)
                 + f" | {single.min():.3f} | {np.mean([v[1] for v in allv]):.3f} | "
                 f"{np.mean([v[2] for v in allv]):.3f} |")
    lines.append("")
    return "\n".join(lines)
