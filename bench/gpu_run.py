"""The prepared GPU run: full-tile throughput on one GPU, then training of the ``paper``
width for the rest of the time, checkpointed. Needs torch and numpy only (the device
image has no rasterio, zarr, dask, stackstac, prefect; scipy and safetensors are used
when present, never needed).

Run from the repository root on the device::

    python -m bench.gpu_run --out "$OUT" --minutes 12

1. **Throughput.** A generated ``--size``² pair (default 10980², one Sentinel-2 band)
   moved by a known fault-like field (±0.5 px, tanh step) is processed as the pipeline
   processes it, on the GPU: scene statistics (median, 1.4826·MAD of a decimated read),
   tiles of ``--tile`` px with ``--halo`` px of context (none along the border), batched
   ``--batch`` at a time: correlator start in torch (``bench.gpu_start``), MicroFlow
   (bf16 where the GPU has it), fault sharpening, σ; then σ-weighted log-TV by blocks
   with their halo, and the flags (not measured, σ above the run's maximum). Each stage
   is timed with the device synchronised; the end-to-end time excludes generating the
   scene. The error against the known field is printed as a sanity check.
2. **Training.** ``MicroFlow(get_config("paper"))`` trained with the project's loss
   (``model.losses.sequence_loss``, γ 0.8, Adam 1e-4, bf16) on generated pairs (a
   ``microflow data`` file with ``--train-samples`` if carried, else pairs generated here
   in torch), 60 % of batches from the correlator start, until ``--minutes`` is spent;
   checkpointed every ``--checkpoint-minutes`` to ``OUT/paper-train.pt`` (model,
   optimiser, step; ``--resume`` continues from it).

``--dry-run``: the same code on CPU at a tiny size (a 256² scene, 128 px tiles, the
untrained ``tiny`` width for both stages, 3 training steps):
``tests/bench/test_gpu_run.py`` runs it so it stays runnable. Results go to ``OUT/gpu_run.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import struct
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from model.config import MicroFlowConfig, get_config
from model.denoise import LogTVConfig, logtv_denoise, weights_from_sigma
from model.losses import sequence_loss
from model.microflow import MicroFlow
from model.normalize import MAD_TO_STD, normalize
from model.precision import use_bf16
from model.sharpen import sharpen_field
from model.uncertainty import load_sigma_model, sigma_features
from model.warp import warp

from .gpu_start import correlator_start

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "model" / "weights" / "microflow-small.safetensors"
MAX_SIGMA_PX = 0.5  # σ above which a pixel is not measured (pipeline.config default)

_DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I64": np.int64,
           "I32": np.int32}


def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and string metadata of a safetensors file (format: u64 header length, JSON
    header, raw little-endian data), read with numpy, for images without ``safetensors``."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    meta = header.pop("__metadata__", {}) or {}
    base = 8 + n
    out = {}
    for name, spec in header.items():
        a, b = spec["data_offsets"]
        buf = raw[base + a:base + b]
        if spec["dtype"] == "BF16":
            u = np.frombuffer(buf, np.uint16).astype(np.uint32) << 16
            arr = u.view(np.float32)
        else:
            arr = np.frombuffer(buf, _DTYPES[spec["dtype"]])
        out[name] = torch.from_numpy(arr.reshape(spec["shape"]).copy())
    return out, meta


def load(weights: str, device: torch.device) -> MicroFlow:
    """A MicroFlow model in eval mode with its σ calibration: ``untrained:<config>`` (with
    the correlator start and the sharpening on) or a ``.safetensors`` path (read without
    the safetensors package)."""
    if weights.startswith("untrained:"):
        from dataclasses import replace

        torch.manual_seed(0)
        # every inference stage on: the correlator start and the sharpening too
        model = MicroFlow(replace(get_config(weights.split(":", 1)[1]),
                                  correlator_start=True, sharpen=True))
        model.sigma_model = load_sigma_model(None)
    else:
        state, meta = read_safetensors(Path(weights))
        model = MicroFlow(MicroFlowConfig.from_dict(json.loads(meta["config"])))
        model.load_state_dict(state)
        model.sigma_model = load_sigma_model(weights)
    return model.to(device, memory_format=torch.channels_last).eval()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Clock:
    """Seconds per named stage, with the device synchronised around each."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.seconds = device, {}

    def __call__(self, name: str, fn):
        sync(self.device)
        t0 = time.perf_counter()
        out = fn()
        sync(self.device)
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0
        return out


# --------------------------------------------------------------------------- the scene
def texture(n: int, seed: int, device: torch.device) -> torch.Tensor:
    """``(n, n)`` float32 band-limited texture in DN-like units (~1000 ± 300), generated on
    ``device``: octaves of bilinearly upsampled noise, each ~0.6× the previous."""
    g = torch.Generator(device=device).manual_seed(seed)
    out = torch.zeros((1, 1, n, n), device=device)
    amp, cells = 1.0, 4
    while cells <= n:
        noise = torch.randn((1, 1, cells, cells), generator=g, device=device)
        out += amp * F.interpolate(noise, size=(n, n), mode="bilinear", align_corners=False)
        amp *= 0.75
        cells *= 2
    out = (out - out.mean()) / out.std()
    return (1000.0 + 300.0 * out)[0, 0]


def fault_field(n: int, device: torch.device, rows: slice | None = None) -> torch.Tensor:
    """``(2, h, n)`` true ``(dx, dy)`` px: ±0.5 px parallel to a line through the centre at
    30°, smooth over 20 px (as ``pipeline.benchmark_scale``), for the ``rows`` of an
    ``n``² scene."""
    rows = rows or slice(0, n)
    r = torch.arange(rows.start, rows.stop, device=device, dtype=torch.float32)[:, None]
    c = torch.arange(n, device=device, dtype=torch.float32)[None, :]
    a = math.radians(30.0)
    s = 0.5 * torch.tanh(((c - n / 2) * math.cos(a) - (r - n / 2) * math.sin(a)) / 20.0)
    return torch.stack([s * math.sin(a), s * math.cos(a)])


def make_pair(n: int, device: torch.device, band: int = 1024
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """``pre``, ``post`` ``(n, n)`` float32 on ``device``: ``post(row + dy, col + dx) =
    pre(row, col)`` for the :func:`fault_field` (bicubic resampling, by row bands)."""
    pre = texture(n, 0, device)
    post = torch.empty_like(pre)
    for r0 in range(0, n, band):
        r1 = min(n, r0 + band)
        d = fault_field(n, device, slice(r0, r1))
        # post sampled where pre moved to: post(p) = pre(p - d(p)) (d is smooth, < 1 px)
        lo, hi = max(0, r0 - 8), min(n, r1 + 8)
        strip = pre[lo:hi][None, None]
        pad_d = F.pad(-d[None], (0, 0, r0 - lo, hi - r1), mode="replicate")
        post[r0:r1] = warp(strip, pad_d, mode="bicubic")[0, 0, r0 - lo:r0 - lo + r1 - r0]
    return pre, post


# ----------------------------------------------------------------------- the pipeline
def blocks(n_rows: int, n_cols: int, tile: int, halo: int) -> list[tuple]:
    """Per block ``(core rows, core cols, grown rows, grown cols)`` slices: the core of
    ``tile``² and ``halo`` px of context inside the image (as ``pipeline.overlap``)."""
    out = []
    for r0 in range(0, n_rows, tile):
        for c0 in range(0, n_cols, tile):
            r1, c1 = min(n_rows, r0 + tile), min(n_cols, c0 + tile)
            g = (slice(max(0, r0 - halo), min(n_rows, r1 + halo)),
                 slice(max(0, c0 - halo), min(n_cols, c1 + halo)))
            out.append((slice(r0, r1), slice(c0, c1), *g))
    return out


def by_shape(items: list[tuple], batch: int) -> list[list[tuple]]:
    """Batches of at most ``batch`` blocks of equal grown shape."""
    groups: dict[tuple[int, int], list] = {}
    for b in items:
        groups.setdefault((b[2].stop - b[2].start, b[3].stop - b[3].start), []).append(b)
    return [g[i:i + batch] for g in groups.values() for i in range(0, len(g), batch)]


def scene_stats(img: torch.Tensor, step: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Median and 1.4826·MAD of the finite pixels of a ``step``-decimated read."""
    v = img[::step, ::step].reshape(-1)
    v = v[torch.isfinite(v)]
    med = v.median()
    return med, (v - med).abs().median() * MAD_TO_STD


@torch.no_grad()
def predict(model: MicroFlow, pre: torch.Tensor, post: torch.Tensor, stats, bf16: bool,
            clock: Clock) -> torch.Tensor:
    """``(B, 4, H, W)`` ``(dx, dy, σx, σy)`` px of ``(B, 1, H, W)`` tiles, as
    ``model.inference.predict_tiles(..., sigma=True)`` with the torch correlator start."""
    init = clock("correlator start", lambda: correlator_start(pre, post)) \
        if model.config.correlator_start else None

    def net():
        with torch.autocast(device_type=pre.device.type, dtype=torch.bfloat16, enabled=bf16):
            return model(pre, post, stats=stats, init=init)

    flows = clock("network", net)
    flow = flows[-1].float()
    previous = flows[-2].float() if len(flows) > 1 else torch.zeros_like(flow)
    pre_n, post_n = normalize(pre, stats[0]), normalize(post, stats[1])
    if model.config.sharpen:
        sharp = clock("sharpening", lambda: sharpen_field(pre_n, post_n, flow))
        flow, previous = sharp, previous + (sharp - flow)
    start = init.float() if init is not None else torch.zeros_like(flow)
    s = clock("sigma", lambda: model.sigma_model.predict(
        sigma_features(pre_n, post_n, flow, previous, start, model.config.warp_mode)))
    return torch.cat([flow, s], 1)  # σ per component: (σx, σy)


def process_scene(model: MicroFlow, pre: torch.Tensor, post: torch.Tensor, *, tile: int,
                  halo: int, batch: int, logtv: LogTVConfig, logtv_halo: int,
                  clock: Clock) -> tuple[torch.Tensor, torch.Tensor]:
    """The pipeline's ``measure`` and ``finish`` stages on one GPU: ``(2, H, W)`` denoised
    field (NaN where not measured) and ``(2, H, W)`` σ, px."""
    dev = pre.device
    bf16 = use_bf16(dev)
    st = clock("scene stats", lambda: (scene_stats(pre), scene_stats(post)))
    stats = tuple((m.view(1, 1, 1, 1), s.view(1, 1, 1, 1)) for m, s in st)
    h, w = pre.shape
    raw = torch.empty((4, h, w), device=dev)
    for group in by_shape(blocks(h, w, tile, halo), batch):
        a = torch.stack([pre[g[2], g[3]] for g in group])[:, None]
        b = torch.stack([post[g[2], g[3]] for g in group])[:, None]
        out = predict(model, a, b, stats, bf16, clock)
        for (cr, cc, gr, gc), o in zip(group, out, strict=True):
            raw[:, cr, cc] = o[:, cr.start - gr.start:cr.stop - gr.start,
                               cc.start - gc.start:cc.stop - gc.start]
    missing = ~(torch.isfinite(pre) & torch.isfinite(post))
    measured = ~missing & (raw[2:].amax(0) <= MAX_SIGMA_PX)
    field = torch.where(measured, raw[:2], torch.full_like(raw[:2], math.nan))
    den = torch.empty_like(field)

    def finish() -> None:
        for group in by_shape(blocks(h, w, tile, logtv_halo), batch):
            f = torch.stack([field[:, g[2], g[3]] for g in group])
            s = torch.stack([raw[2:, g[2], g[3]] for g in group])
            out = logtv_denoise(f, logtv, weights=weights_from_sigma(s), weights_reference=1.0)
            for (cr, cc, gr, gc), o in zip(group, out, strict=True):
                den[:, cr, cc] = o[:, cr.start - gr.start:cr.stop - gr.start,
                                   cc.start - gc.start:cc.stop - gc.start]

    clock("log-TV", finish)
    den = clock("flags", lambda: torch.where(measured, den, torch.full_like(den, math.nan)))
    return den, raw[2:]


def throughput(args, device: torch.device) -> dict:
    """Stage 1 (see the module docstring); returns the figures."""
    t0 = time.perf_counter()
    pre, post = make_pair(args.size, device)
    sync(device)
    gen = time.perf_counter() - t0
    model = load(args.weights, device)
    clock = Clock(device)
    # warm-up on one small crop: kernels, cuDNN autotune, bf16 casts
    crop = slice(0, min(args.size, 2 * args.tile))
    process_scene(model, pre[crop, crop], post[crop, crop], tile=args.tile, halo=args.halo,
                  batch=args.batch, logtv=LogTVConfig(), logtv_halo=args.logtv_halo,
                  clock=Clock(device))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sync(device)
    t0 = time.perf_counter()
    den, sigma = process_scene(model, pre, post, tile=args.tile, halo=args.halo,
                               batch=args.batch, logtv=LogTVConfig(),
                               logtv_halo=args.logtv_halo, clock=clock)
    sync(device)
    wall = time.perf_counter() - t0
    truth = fault_field(args.size, device)
    m = args.halo  # the scene's border rows/columns see no context: left out of the check
    err = (den - truth)[:, m:-m, m:-m]
    ok = torch.isfinite(err[0])
    epe = err[:, ok].square().sum(0).sqrt()
    out = {"size": args.size, "tile": args.tile, "halo": args.halo, "batch": args.batch,
           "weights": Path(args.weights).name, "device": str(device),
           "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
           else "cpu", "bf16": use_bf16(device), "scene_generation_s": round(gen, 2),
           "end_to_end_s": round(wall, 2),
           "mpx_per_s": round(args.size ** 2 / 1e6 / wall, 3),
           "stage_s": {k: round(v, 3) for k, v in clock.seconds.items()},
           "measured_fraction": round(float(ok.float().mean()), 4),
           "epe_px_mean": round(float(epe.mean()), 4) if ok.any() else None,
           "sigma_px_median": round(float(sigma[0][torch.isfinite(sigma[0])].median()), 4)}
    if device.type == "cuda":
        out["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated(device) / 2 ** 20)
    return out


# ------------------------------------------------------------------------- training
def random_fields(b: int, n: int, g: torch.Generator, device: torch.device) -> torch.Tensor:
    """``(b, 2, n, n)`` true fields px: a smooth background (up to ±2 px) plus a fault step
    of 0–3 px across a random line, smooth over 0.5–5 px; a quarter are pure shifts."""
    coarse = torch.randn((b, 2, 4, 4), generator=g, device=device)
    amp = torch.rand((b, 1, 1, 1), generator=g, device=device) ** 2 * 2.0
    field = amp * F.interpolate(coarse, size=(n, n), mode="bicubic", align_corners=False)
    ang = torch.rand((b, 1, 1), generator=g, device=device) * math.pi
    off = (torch.rand((b, 1, 1), generator=g, device=device) - 0.5) * n * 0.6
    width = 0.5 + 4.5 * torch.rand((b, 1, 1), generator=g, device=device)
    slip = (torch.rand((b, 1, 1), generator=g, device=device) ** 2) * 3.0
    r = torch.arange(n, device=device, dtype=torch.float32).view(1, -1, 1) - n / 2
    c = torch.arange(n, device=device, dtype=torch.float32).view(1, 1, -1) - n / 2
    s = 0.5 * slip * torch.tanh((c * torch.cos(ang) - r * torch.sin(ang) - off) / width)
    field = field + torch.stack([s * torch.cos(ang), s * torch.sin(ang)], 1)
    shift = torch.rand((b,), generator=g, device=device) < 0.25
    field[shift] = (torch.rand((int(shift.sum()), 2, 1, 1), generator=g, device=device)
                    - 0.5) * 4.0
    return field


def random_batch(b: int, n: int, g: torch.Generator, device: torch.device):
    """``pre``, ``post`` ``(b, 1, n, n)`` and the true field ``(b, 2, n, n)``: generated
    texture, ``post`` resampled by the field, gain/offset change and noise."""
    big = n + 16
    tex = torch.stack([texture(big, int(torch.randint(1 << 30, (1,), generator=g,
                                                      device=device)), device)
                       for _ in range(b)])[:, None]
    field = random_fields(b, n, g, device)
    pre = tex[..., 8:8 + n, 8:8 + n]
    full = F.pad(-field, (8, 8, 8, 8), mode="replicate")
    post = warp(tex, full, mode="bicubic")[..., 8:8 + n, 8:8 + n]
    gain = 1.0 + 0.1 * torch.randn((b, 1, 1, 1), generator=g, device=device)
    post = gain * post + 20.0 * torch.randn((b, 1, 1, 1), generator=g, device=device)
    post = post + 10.0 * torch.randn(post.shape, generator=g, device=device)
    return pre.contiguous(), post.contiguous(), field


def sample_batches(path: Path, batch: int, crop: int, device: torch.device):
    """Endless random batches from a ``microflow data`` ``.npz`` (pre, post, flow)."""
    with np.load(path) as z:
        pre, post, flow = z["pre"], z["post"], z["flow"]
    rng = np.random.default_rng(0)
    while True:
        i = rng.integers(0, len(pre), batch)
        r = rng.integers(0, pre.shape[1] - crop + 1)
        c = rng.integers(0, pre.shape[2] - crop + 1)
        sl = (slice(r, r + crop), slice(c, c + crop))
        yield (torch.from_numpy(pre[i][:, None][..., sl[0], sl[1]]).to(device),
               torch.from_numpy(post[i][:, None][..., sl[0], sl[1]]).to(device),
               torch.from_numpy(flow[i][..., sl[0], sl[1]]).to(device))


def train(args, device: torch.device, seconds: float) -> dict:
    """Stage 2 (see the module docstring); returns the figures."""
    ckpt = Path(args.out) / "paper-train.pt"
    cfg = get_config(args.train_config)
    torch.manual_seed(0)
    model = MicroFlow(cfg).to(device, memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    step = 0
    if args.resume and ckpt.exists():
        state = torch.load(ckpt, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step = int(state["step"])
    bf16 = use_bf16(device)
    g = torch.Generator(device=device).manual_seed(1)
    gv = torch.Generator(device=device).manual_seed(12345)
    val = [random_batch(args.train_batch, args.crop, gv, device) for _ in range(2)]
    data = sample_batches(Path(args.train_samples), args.train_batch, args.crop, device) \
        if args.train_samples else None
    params = sum(p.numel() for p in model.parameters())

    def validate() -> float:
        model.eval()
        errs = []
        with torch.no_grad(), torch.autocast(device_type=device.type, dtype=torch.bfloat16,
                                             enabled=bf16):
            for pre, post, flow in val:
                est = model(pre, post, init=correlator_start(pre, post))[-1].float()
                errs.append((est - flow).square().sum(1).sqrt().mean().item())
        model.train()
        return float(np.mean(errs))

    history = [{"step": step, "val_epe_px": round(validate(), 4)}]
    t_start = last_ckpt = time.perf_counter()
    steps0, losses = step, []
    model.train()

    def save() -> None:
        tmp = ckpt.with_suffix(".tmp")
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                    "step": step, "config": cfg.to_dict()}, tmp)
        tmp.replace(ckpt)  # atomic: a cut-off run leaves the previous checkpoint

    while time.perf_counter() - t_start < seconds and (args.max_steps is None or
                                                       step - steps0 < args.max_steps):
        pre, post, flow = next(data) if data else random_batch(args.train_batch, args.crop,
                                                               g, device)
        init = correlator_start(pre, post) if torch.rand(
            (), generator=g, device=device) < 0.6 else None
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
            flows = model(pre, post, init=init, levels=0)
        loss = sequence_loss([f.float() for f in flows], flow, gamma=0.8)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        losses.append(loss.item())
        if time.perf_counter() - last_ckpt > args.checkpoint_minutes * 60:
            save()
            last_ckpt = time.perf_counter()
            history.append({"step": step, "val_epe_px": round(validate(), 4),
                            "loss": round(float(np.mean(losses[-100:])), 4)})
            print(json.dumps(history[-1]), flush=True)
    save()
    history.append({"step": step, "val_epe_px": round(validate(), 4),
                    "loss": round(float(np.mean(losses[-100:])), 4) if losses else None})
    elapsed = time.perf_counter() - t_start
    return {"config": args.train_config, "parameters": params, "steps": step - steps0,
            "total_steps": step, "seconds": round(elapsed, 1),
            "steps_per_s": round((step - steps0) / max(elapsed, 1e-9), 3),
            "batch": args.train_batch, "crop": args.crop, "checkpoint": str(ckpt),
            "data": str(args.train_samples) if args.train_samples else "generated here",
            "history": history}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=os.environ.get("OUT", "gpu-run"),
                   help="folder for gpu_run.json and the checkpoint (default $OUT)")
    p.add_argument("--minutes", type=float, default=12.0,
                   help="whole run's budget, min (default 12); training gets what the "
                        "throughput stage leaves")
    p.add_argument("--size", type=int, default=10980, help="scene side, px (default 10980)")
    p.add_argument("--tile", type=int, default=512, help="tile core, px (default 512)")
    p.add_argument("--halo", type=int, default=32, help="tile context, px (default 32)")
    p.add_argument("--logtv-halo", type=int, default=32,
                   help="log-TV block context, px (default 32)")
    p.add_argument("--batch", type=int, default=16, help="tiles per forward pass (default 16)")
    p.add_argument("--weights", default=str(SHIPPED),
                   help="a .safetensors file or untrained:<config> (default the shipped "
                        "microflow-small)")
    p.add_argument("--train-config", default="paper", help="width to train (default paper)")
    p.add_argument("--train-batch", type=int, default=8, help="training pairs per step "
                   "(default 8)")
    p.add_argument("--crop", type=int, default=256, help="training crop, px (default 256)")
    p.add_argument("--train-samples", help="a `microflow data` .npz to train on (default: "
                   "pairs generated here)")
    p.add_argument("--checkpoint-minutes", type=float, default=2.0,
                   help="minutes between checkpoints (default 2)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/paper-train.pt")
    p.add_argument("--max-steps", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--skip-throughput", action="store_true", help="training only")
    p.add_argument("--dry-run", action="store_true",
                   help="on CPU at a tiny size (256² scene, 128 px tiles, the untrained "
                        "tiny width, 3 training steps): checks that the script runs")
    args = p.parse_args(argv)
    if args.dry_run:
        args.size, args.tile, args.halo, args.logtv_halo, args.batch = 256, 128, 16, 16, 4
        args.weights = "untrained:tiny"
        args.train_config, args.train_batch, args.crop, args.max_steps = "tiny", 2, 64, 3
        device = torch.device("cpu")
    else:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    report = {"argv": sys.argv[1:] if argv is None else argv, "torch": torch.__version__}
    if not args.skip_throughput:
        report["throughput"] = throughput(args, device)
        print(json.dumps(report["throughput"]), flush=True)
        (out / "gpu_run.json").write_text(json.dumps(report, indent=1))
        if device.type == "cuda":
            torch.cuda.empty_cache()
    left = args.minutes * 60 - (time.perf_counter() - t0) - 30  # 30 s to save and write
    report["training"] = train(args, device, max(left, 0.0))
    print(json.dumps({k: v for k, v in report["training"].items() if k != "history"}),
          flush=True)
    (out / "gpu_run.json").write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
