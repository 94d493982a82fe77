"""``microflow benchmark``: MicroFlow (raw, + log-TV) against the frequency correlator."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


SINGLE_SCALE = "microflow-1scale"  # ablation row: the same weights without coarse-to-fine
FLIPS = "microflow-4flips"  # the same weights averaged over the four flips (--flip-average)


def make_pairs(kind: str, n_per_group: int, size: int, seed: int) -> list:
    """Pairs on the held-out test split (``landsat-test``) or unseen fractal textures."""
    from model.synthetic import RANGES, fractal_texture, make_pair

    rng = np.random.default_rng(seed)
    if kind == "landsat-test":
        from pipeline.textures import load_split, random_crops

        textures = random_crops(load_split("test"), 4 * n_per_group * len(RANGES), size + 32,
                                rng)
    else:
        textures = [fractal_texture((size + 32, size + 32), rng, beta=rng.uniform(1.5, 2.2))
                    for _ in range(4 * n_per_group * len(RANGES))]
    pairs = []
    k = 0
    for rng_name in RANGES:
        for change in (False, True):
            for _ in range(n_per_group):
                pairs.append(make_pair(textures[k], rng, (size, size), rng_name, change))
                k += 1
    return pairs


def throughput(weights: str | None, corr_cfg, size: int = 1024, seed: int = 0) -> dict:
    """Mpx/s of MicroFlow (dense, raw) and of the correlator on a ``size``² pair."""
    from model.correlator import frequency_correlate
    from model.inference import estimate_displacement
    from model.synthetic import fractal_texture

    rng = np.random.default_rng(seed)
    a = fractal_texture((size, size), rng)
    b = np.roll(a, 1, axis=1)
    estimate_displacement(a[:256, :256], b[:256, :256], denoise=False, weights=weights)
    t0 = time.perf_counter()
    estimate_displacement(a, b, denoise=False, weights=weights)
    t_mf = time.perf_counter() - t0
    t0 = time.perf_counter()
    estimate_displacement(a, b, denoise=True, weights=weights)
    t_mf_tv = time.perf_counter() - t0
    t0 = time.perf_counter()
    frequency_correlate(a, b, corr_cfg)
    t_c = time.perf_counter() - t0
    mpx = size * size / 1e6
    return {"image": f"{size}x{size}", "microflow_raw_mpx_s": mpx / t_mf,
            "microflow_logtv_mpx_s": mpx / t_mf_tv, "correlator_mpx_s": mpx / t_c,
            "correlator_density": f"1 vector per {corr_cfg.step}x{corr_cfg.step} px",
            "microflow_density": "1 vector per pixel"}


def run_benchmark(out: str | Path, weights: str | None = None, n_per_group: int = 4,
                  size: int = 256, seed: int = 2026, figures: bool = True,
                  textures: tuple[str, ...] = ("landsat-test", "fractal-unseen"),
                  real: bool = True, bands: bool = True) -> Path:
    """Evaluate, then write ``benchmark.md``, ``benchmark.json`` and figures to ``out``.

    ``real``: append the real-imagery section (``bench.real.real_benchmark``, the
    committed Sentinel-2 pair, figure ``real_pair.png``); ``bands``: append single band
    vs several bands on Landsat B2/B3/B4 pairs (``bench.real.band_benchmark``).
    """
    import torch

    from model.correlator import CorrelatorConfig, frequency_correlate
    from model.denoise import LogTVConfig, logtv_denoise, weights_from_sigma
    from model.evaluate import run_methods, summarise
    from model.inference import estimate_displacement, get_model
    from pipeline.report import figure_pair, markdown_tables

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    corr_cfg = CorrelatorConfig()
    logtv = LogTVConfig()
    model = get_model(weights, torch.device("cpu"))
    sigma: dict[str, np.ndarray] = {}  # σ of the pair just measured, per method

    def microflow(name: str, flips: bool) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
        def run(a: np.ndarray, b: np.ndarray) -> np.ndarray:
            flow, sigma[name] = estimate_displacement(a, b, denoise=False, weights=weights,
                                                      return_sigma=True, flip_average=flips)
            return flow
        return run

    def weighted_logtv(name: str) -> Callable[[np.ndarray], np.ndarray]:  # as the pipeline
        return lambda flow: logtv_denoise(flow, logtv, weights=weights_from_sigma(sigma[name]),
                                          weights_reference=1.0)

    methods = {
        "microflow": microflow("microflow", False),
        FLIPS: microflow(FLIPS, True),
        "correlator": lambda a, b: frequency_correlate(a, b, corr_cfg).to_dense(a.shape),
    }
    derived = {"microflow+logtv": ("microflow", weighted_logtv("microflow")),
               f"{FLIPS}+logtv": (FLIPS, weighted_logtv(FLIPS))}
    names = ["microflow", "microflow+logtv", FLIPS, f"{FLIPS}+logtv", "correlator"]
    if model.config.pyramid_levels:  # ablation: the same weights without coarse-to-fine
        methods[SINGLE_SCALE] = lambda a, b: estimate_displacement(
            a, b, denoise=False, weights=weights, levels=0)
        names.insert(1, SINGLE_SCALE)
    scores = []
    for kind in textures:
        log.info("generating %s pairs", kind)
        pairs = make_pairs(kind, n_per_group, size, seed)
        log.info("evaluating %d %s pairs", len(pairs), kind)
        s = run_methods(pairs, methods, kind, derived, keep_flows=figures)
        if figures:
            per_pair = len(methods) + len(derived)  # run_methods scores pair by pair
            for i, pair in enumerate(pairs):
                if i % (2 * n_per_group) == n_per_group:  # one with change per range
                    mine = s[i * per_pair:(i + 1) * per_pair]
                    flows = {x.method: x.flow for x in mine}
                    flows = {k: flows[k] for k in names
                             if k in flows and k != SINGLE_SCALE}
                    figure_pair(pair, flows, out / f"{kind}_{pair.params['range']}.png",
                                f"{kind}, {pair.params['range']}, with temporal change")
        for x in s:
            x.flow = None
        scores.extend(s)
    tp = throughput(weights, corr_cfg)
    notes = {
        "model": f"{model.weights_name} (sha256 {model.weights_sha256[:12]}…)",
        "correlator": f"window {corr_cfg.window} px, step {corr_cfg.step} px, densified "
                      "bilinearly to every pixel",
        "log-TV": f"λ = {logtv.lam}, ε = {logtv.eps}, data term weighted by MicroFlow's σ",
        "start": "MicroFlow starts from the correlator's field" if model.config.correlator_start
                 else "MicroFlow starts coarse-to-fine",
        "pairs": f"{size}x{size} px, {n_per_group} per (range, change) group, seed {seed}; "
                 "EPE over valid pixels more than 8 px from the border",
        "throughput (this machine)": json.dumps({k: round(v, 3) if isinstance(v, float) else v
                                                 for k, v in tp.items()}),
    }
    md = markdown_tables(scores, names, notes)
    extra: dict = {}
    if real:
        from .real import real_benchmark

        log.info("real-imagery section")
        real_md, real_scores = real_benchmark(out, weights=weights, figures=figures)
        md += "\n" + real_md
        extra["real"] = [vars(x) for x in real_scores]
    if bands:
        from .real import band_benchmark

        log.info("several-bands section")
        md += "\n" + band_benchmark(weights=weights, seed=seed)
    from .source_detection import section as source_section  # offset recovery, detection

    md += "\n" + source_section(seed=seed)
    from .rupture_eval import rupture_section  # trace and slip errors of the rupture map

    md += "\n" + rupture_section()
    (out / "benchmark.md").write_text("# MicroFlow benchmark\n\n" + md)
    summary = {"|".join(map(str, k)): v for k, v in summarise(scores).items()}
    (out / "benchmark.json").write_text(json.dumps({"summary": summary, "throughput": tp,
                                                    "notes": notes, **extra}, indent=1))
    print(md)
    return out / "benchmark.md"
