"""The prepared GPU script stays runnable (its CPU dry-run) and computes what the pipeline
computes: its torch correlator start, its per-tile prediction and its weights reader
match the project's own on CPU."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
ABSENT_ON_DEVICE = ("scipy", "safetensors", "rasterio", "rioxarray", "xarray", "zarr", "dask",
                    "distributed", "stackstac", "prefect")


def _pair(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A textured ``n``² pair moved by a known smooth step (``post(p + d) = pre(p)``)."""
    from scipy import ndimage

    from model.synthetic import resample_post

    tex = ndimage.gaussian_filter(rng.standard_normal((n + 64, n + 64)), 1.2) * 300 + 1000

    def field(cols, rows):
        return 0.3 + 0.8 * np.tanh((cols - n / 2) / 10.0), -0.4 + 0 * rows

    post, _ = resample_post(tex, field, (n, n), origin=(32, 32))
    pre = tex[32:32 + n, 32:32 + n].astype(np.float32)
    cols = np.arange(n)[None, :] + np.zeros((n, 1))
    truth = np.stack([0.3 + 0.8 * np.tanh((cols - n / 2) / 10.0), -0.4 + 0 * cols])
    return pre, post.astype(np.float32), truth.astype(np.float32)


def test_dry_run_needs_only_torch_and_numpy_and_writes_figures_and_a_checkpoint(tmp_path):
    blocker = ("import sys\n"
               f"for m in {ABSENT_ON_DEVICE!r}: sys.modules[m] = None  # import raises\n"
               "from bench.gpu_run import main\n"
               f"sys.exit(main(['--dry-run', '--out', {str(tmp_path)!r}]))\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-c", blocker], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_run.json").read_text())
    thr = report["throughput"]
    assert thr["size"] == 256 and thr["end_to_end_s"] > 0
    assert {"correlator start", "network", "sharpening", "sigma", "log-TV"} <= set(
        thr["stage_s"])
    # the untrained network adds little to the correlator start, which finds the ±0.5 px
    # step: a broken tiling, start or stitching gives errors of a good fraction of a pixel
    assert thr["measured_fraction"] > 0.5
    assert thr["epe_px_mean"] < 0.15
    train = report["training"]
    assert train["steps"] == 3 and train["total_steps"] == 3
    state = torch.load(tmp_path / "paper-train.pt", weights_only=True)
    assert state["step"] == 3 and state["model"]


def test_torch_correlator_start_matches_the_numpy_one_with_a_hole():
    from bench.gpu_start import correlator_start
    from model.correlator_start import correlator_start as reference

    pre, post, _ = _pair(160, np.random.default_rng(3))
    pre[20:50, 60:100] = np.nan
    want = reference(pre, post)
    got = correlator_start(torch.from_numpy(pre)[None, None],
                           torch.from_numpy(post)[None, None])[0].numpy()
    assert got.shape == want.shape == (2, 160, 160)
    assert np.abs(got - want).max() < 1e-3


def test_gpu_prediction_of_a_tile_batch_matches_predict_tiles():
    from bench.gpu_run import SHIPPED, Clock, load, predict
    from model.inference import predict_tiles, scene_stats
    from model.precision import use_bf16

    rng = np.random.default_rng(4)
    pairs = [_pair(128, rng) for _ in range(2)]
    pre = np.stack([p[0] for p in pairs])
    post = np.stack([p[1] for p in pairs])
    stats = (scene_stats(pre), scene_stats(post))
    cpu = torch.device("cpu")
    model = load(str(SHIPPED), cpu)
    want = predict_tiles(model, pre, post, stats, sigma=True)
    st = tuple((torch.tensor(m).view(1, 1, 1, 1), torch.tensor(s).view(1, 1, 1, 1))
               for m, s in stats)
    got = predict(model, torch.from_numpy(pre)[:, None], torch.from_numpy(post)[:, None], st,
                  use_bf16(cpu), Clock(cpu)).numpy()
    assert got.shape == want.shape == (2, 4, 128, 128)
    # the starts differ by ~1e-5 px, which the bf16 network may round either way
    diff = np.abs(got[:, :2] - want[:, :2])
    assert diff.max() < 0.005 and diff.mean() < 2e-4
    rel = np.abs(got[:, 2:] / want[:, 2:] - 1)
    assert np.median(rel) < 0.01 and np.abs(got[:, 2:] - want[:, 2:]).max() < 0.01


def test_weights_reader_matches_safetensors():
    from safetensors.torch import load_file

    from bench.gpu_run import SHIPPED, read_safetensors

    state, meta = read_safetensors(SHIPPED)
    want = load_file(str(SHIPPED))
    assert set(state) == set(want) and "config" in meta
    for k, v in want.items():
        assert state[k].dtype == v.dtype and torch.equal(state[k], v), k
