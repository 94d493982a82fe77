"""Training loop of MicroFlow on pre-generated semi-synthetic samples (resumable).

Checkpoints are safetensors weights plus a JSON state and a Markdown model card, all
written atomically to one folder, so a later run continues from the last one. Device
agnostic: CUDA with bf16 autocast when present; on CPU bf16 autocast + channels_last.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from .config import get_config
from .correlator_start import correlator_starts, model_start
from .dataset import RANGE_NAMES, SampleSet, augment_batch, loss_weights
from .losses import sequence_loss
from .metrics import FAULT_NEIGHBOURHOOD_PX, epe, near_fault
from .microflow import MicroFlow
from .precision import device_or_default, use_bf16
from .registry import load_model, save_weights

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Hyper-parameters of a training run (lengths in pixels, time in minutes)."""

    config: str = "small"
    name: str = "microflow-small"
    batch: int = 8
    crop: int = 128
    lr: float = 1e-4
    gamma: float = 0.8
    steps: int = 100000  # total step budget (the LR schedule spans it)
    minutes: float = 60.0  # wall-time budget of this run
    curriculum_steps: int = 2000  # large displacements are phased in over these steps
    val_every: int = 200
    seed: int = 0
    range_balanced: bool = True  # weight each pair's L1 by 1/clip(peak, 0.5, 10)
    pyramid_levels: int | None = None  # set the model's coarse-to-fine levels (None: keep)
    pyramid_fraction: float = 0.5  # share of batches trained from the coarse-to-fine df_0
    correlator_fraction: float = 0.0  # share trained from the correlator's field as df_0
    fault_weight: float = 0.0  # extra L1 weight within 3 px of the fault trace (0: none)
    extra: dict = field(default_factory=dict)


def _range_probabilities(step: int, cfg: TrainConfig, present: np.ndarray) -> np.ndarray:
    """Sampling probability per range: large displacements grow in over the curriculum."""
    t = min(1.0, step / max(cfg.curriculum_steps, 1))
    weights = np.array([1.0, 1.0, 1.0, 0.15 + 0.85 * t])[: len(RANGE_NAMES)]
    weights = weights * present
    return weights / weights.sum()


def started_prediction(model: MicroFlow, pre: torch.Tensor, post: torch.Tensor
                       ) -> torch.Tensor:
    """The last iterate ``(B, 2, H, W)`` px from the model's own start, as at inference:
    the correlator's field if ``model.config.correlator_start``, else coarse-to-fine."""
    return model(pre, post, init=model_start(model, pre, post))[-1]


def evaluate(model: MicroFlow, val: SampleSet, device: torch.device, bf16: bool,
             batch: int = 8, predict: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
             | None = None, border: int = 0, indices: np.ndarray | None = None
             ) -> dict[str, float]:
    """Mean EPE (px) per displacement range, overall (``all``) and within
    ``FAULT_NEIGHBOURHOOD_PX`` of the fault trace (``fault``, pairs with a trace only).

    ``predict(pre, post)`` gives the ``(B, 2, H, W)`` field (default: the model's last
    iterate from its own start, :func:`started_prediction`); pixels within ``border`` px of
    the edge are left out; ``indices`` picks a subset of ``val``.
    """
    predict = predict or (lambda a, b: started_prediction(model, a, b))
    idx_all = np.arange(len(val)) if indices is None else np.asarray(indices)
    model.eval()
    errs: dict[str, list[float]] = {n: [] for n in RANGE_NAMES}
    fault: list[float] = []
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        for i in range(0, len(idx_all), batch):
            idx = idx_all[i:i + batch]
            a = torch.from_numpy(val.pre[idx][:, None]).to(device)
            b = torch.from_numpy(val.post[idx][:, None]).to(device)
            pred = predict(a, b).float().cpu().numpy()
            for f, k in zip(pred, idx, strict=True):
                valid = val.valid[k].copy()
                if border:
                    valid[:border] = valid[-border:] = False
                    valid[:, :border] = valid[:, -border:] = False
                errs[RANGE_NAMES[val.range_idx[k]]].append(epe(f, val.flow[k], valid))
                near = near_fault(val.fault[k], FAULT_NEIGHBOURHOOD_PX) & valid
                if near.any():
                    fault.append(epe(f, val.flow[k], near))
    model.train()
    out = {n: float(np.mean(v)) for n, v in errs.items() if v}
    out["all"] = float(np.mean([x for v in errs.values() for x in v]))
    if fault:
        out["fault"] = float(np.mean(fault))
    return out


def train(cfg: TrainConfig, train_set: SampleSet, val_set: SampleSet, out_dir: str | Path,
          device: str | None = None, data_info: dict | None = None) -> dict:
    """Train (or resume) and write ``<out>/<name>.safetensors``, ``.json`` and ``.md``.

    Returns the final state dict (step, wall time, best validation EPE per range).
    """
    size = min(train_set.pre.shape[-2:])
    if cfg.crop > size:
        raise ValueError(f"crop {cfg.crop} px is larger than the training samples "
                         f"({size} px): make samples with `microflow data --size "
                         f"{cfg.crop + 32}` or train with --crop {size} or less")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    weights_path = out / f"{cfg.name}.safetensors"
    state_path = out / f"{cfg.name}.json"
    dev = device_or_default(device)
    bf16 = use_bf16(dev)
    state: dict = {"step": 0, "wall_minutes": 0.0, "best": None, "history": []}
    if weights_path.is_file() and state_path.is_file():
        model = load_model(weights_path, device=dev).train()
        state = json.loads(state_path.read_text())
        log.info("resuming %s from step %d", cfg.name, state["step"])
    else:
        torch.manual_seed(cfg.seed)
        model = MicroFlow(get_config(cfg.config)).to(dev).train()
    if cfg.pyramid_levels is not None and cfg.pyramid_levels != model.config.pyramid_levels:
        log.info("coarse-to-fine levels %d -> %d", model.config.pyramid_levels,
                 cfg.pyramid_levels)
        model.config = replace(model.config, pyramid_levels=cfg.pyramid_levels)
    model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    rng = np.random.default_rng(cfg.seed + state["step"])
    present = np.array([(train_set.range_idx == i).any() for i in range(len(RANGE_NAMES))],
                       dtype=float)
    by_range = [np.flatnonzero(train_set.range_idx == i) for i in range(len(RANGE_NAMES))]
    if not 0 <= cfg.pyramid_fraction + cfg.correlator_fraction <= 1:
        raise ValueError("pyramid_fraction + correlator_fraction must be in [0, 1]")
    starts = None
    if cfg.correlator_fraction > 0:  # once per run: ~10 ms per 160² pair
        log.info("correlator starts for %d training pairs", len(train_set))
        starts = correlator_starts(train_set.pre, train_set.post)
    pixel_weights = loss_weights(train_set, cfg.fault_weight)
    t0 = time.monotonic()
    start_step = state["step"]
    step = start_step

    def lr_at(s: int) -> float:  # short warm-up (also after a resume), cosine decay
        warm = min(1.0, (s - start_step + 1) / 100)
        return cfg.lr * warm * 0.5 * (1 + math.cos(math.pi * min(s / cfg.steps, 1.0)))

    def checkpoint(val: dict[str, float]) -> None:
        state["step"] = step
        state["wall_minutes"] = round(state.get("wall_minutes_before", state["wall_minutes"])
                                      + (time.monotonic() - t0) / 60, 2)
        state["history"].append({"step": step, **{k: round(v, 4) for k, v in val.items()}})
        state["last"] = val
        state["train_config"] = asdict(cfg)
        runs = state.setdefault("runs", [])  # one entry per (resumed) run
        if not runs or runs[-1]["from_step"] != start_step:
            runs.append({"from_step": start_step})
        runs[-1].update(to_step=step, minutes=round((time.monotonic() - t0) / 60, 2),
                        **{k: v for k, v in asdict(cfg).items()
                           if k not in ("name", "steps", "minutes", "val_every", "extra")},
                        schedule_steps=cfg.steps,
                        **{k: v for k, v in (data_info or {}).items()
                           if k in ("train_samples", "val_samples")})
        state["data"] = data_info or state.get("data", {})
        if state["best"] is None or val["all"] <= state["best"]["all"]:
            state["best"] = {"step": step, **val}
        save_weights(model, weights_path, {"name": cfg.name, "step": step,
                                           "val_epe": val, "seed": cfg.seed})
        tmp = state_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(state, indent=1))
        tmp.replace(state_path)
        write_card(out / f"{cfg.name}.md", cfg, state, model)

    state["wall_minutes_before"] = state["wall_minutes"]
    last_log = time.monotonic()
    losses: list[float] = []
    while step < cfg.steps and (time.monotonic() - t0) / 60 < cfg.minutes:
        probs = _range_probabilities(step, cfg, present)
        ranges = rng.choice(len(RANGE_NAMES), size=cfg.batch, p=probs)
        idx = np.array([rng.choice(by_range[r]) for r in ranges])
        # A share of batches starts from the coarse-to-fine df_0 (as at inference), one
        # from the correlator's field, the rest from 0, so the network learns both the
        # full search and the refinement of a start.
        u = rng.random()
        use_corr = starts is not None and u >= 1 - cfg.correlator_fraction
        levels = model.config.pyramid_levels if u < cfg.pyramid_fraction else 0
        fields = train_set.flow[idx]
        if use_corr:
            fields = np.concatenate([fields, starts[idx]], axis=1)
        a, b, f, v = augment_batch(train_set.pre[idx], train_set.post[idx], fields,
                                   pixel_weights[idx], cfg.crop, rng)
        init = torch.from_numpy(f[:, 2:]).to(dev) if use_corr else None
        f = f[:, :2]
        a_t = torch.from_numpy(a[:, None]).to(dev).contiguous(memory_format=torch.channels_last)
        b_t = torch.from_numpy(b[:, None]).to(dev).contiguous(memory_format=torch.channels_last)
        f_t = torch.from_numpy(f).to(dev)
        v_t = torch.from_numpy(v[:, None]).to(dev)
        sw = None
        if cfg.range_balanced:
            sw = torch.from_numpy(1.0 / np.clip(train_set.peak[idx], 0.5, 10.0)).to(dev)
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            flows = model(a_t, b_t, levels=levels, init=init)
        loss = sequence_loss([x.float() for x in flows], f_t, cfg.gamma, v_t, sw)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        step += 1
        if time.monotonic() - last_log > 60:
            rate = (step - start_step) / (time.monotonic() - t0)
            log.info("step %d loss %.4f (%.2f steps/s)", step, np.mean(losses[-50:]), rate)
            last_log = time.monotonic()
        if step % cfg.val_every == 0:
            val = evaluate(model, val_set, dev, bf16)
            log.info("step %d val EPE %s", step, {k: round(x, 4) for k, x in val.items()})
            checkpoint(val)
    if step != state["step"]:
        val = evaluate(model, val_set, dev, bf16)
        log.info("final step %d val EPE %s", step, {k: round(x, 4) for k, x in val.items()})
        checkpoint(val)
    return state


def write_card(path: Path, cfg: TrainConfig, state: dict, model: MicroFlow) -> None:
    """Markdown model card: data, config, seed, steps, wall time, validation EPE."""
    n_params = sum(p.numel() for p in model.parameters())
    last = state.get("last", {})
    rows = "\n".join(f"| {k} | {v:.4f} |" for k, v in last.items())
    runs = "\n".join(f"- steps {r['from_step']}–{r['to_step']}, {r['minutes']} min: "
                     + ", ".join(f"{k} {v}" for k, v in r.items()
                                 if k not in ("from_step", "to_step", "minutes"))
                     for r in state.get("runs", [])) or "- (not recorded)"
    text = f"""# {cfg.name}

MicroFlow (Bertrand et al. 2025): correlation-free U-Net with {model.config.iterations}
refinement iterations ({'shared' if model.config.shared_weights else 'separate'} weights),
{n_params / 1e6:.2f} M parameters, trained by `microflow train` in this repository.

- **Architecture config**: `{cfg.config}`: `{json.dumps(model.config.to_dict())}`
- **Training data**: {json.dumps(state.get('data', {}))}
- **Training**: Adam, lr {cfg.lr} (cosine), batch {cfg.batch}, crops of {cfg.crop} px with
  flips/transposes, γ = {cfg.gamma}, range-balanced L1: {cfg.range_balanced},
  curriculum over {cfg.curriculum_steps} steps, seed {cfg.seed}; coarse-to-fine levels
  {model.config.pyramid_levels} (share of batches trained from the coarse df_0:
  {cfg.pyramid_fraction}).
- **Steps**: {state['step']}; **wall time**: {state['wall_minutes']:.1f} min
  (accumulated over resumed runs).
- **Validation** (held-out northing band, EPE in px of the last iterate, no denoising):

| range | EPE (px) |
|---|---|
{rows}

Runs (each resumed from the previous one's weights):

{runs}

Best validation EPE so far: {json.dumps(state.get('best'))}. The curve of validation EPE
against CPU-minutes over all runs: `python -m bench.curve --state {cfg.name}.json`
(`docs/benchmark/training_curve.png` for the shipped model).
Weights are safetensors (no pickle); load with `model.load_model("{cfg.name}")`.
"""
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(text)
    tmp.replace(path)
