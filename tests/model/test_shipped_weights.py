"""The shipped weights are trained: they beat an untrained model on unseen pairs."""

import numpy as np
import rasterio

from model import estimate_displacement
from model.correlator import CorrelatorConfig, frequency_correlate
from model.metrics import epe, near_fault
from model.registry import read_metadata, resolve_weights, shipped_models
from model.synthetic import make_pair
from pipeline.demo import TEXTURE


def test_a_cpu_model_is_shipped_with_its_card():
    assert "microflow-small" in shipped_models()
    path = resolve_weights("microflow-small")
    assert path.with_suffix(".md").is_file()
    meta = read_metadata(path)
    assert "config" in meta and int(meta["step"]) > 0


def test_shipped_weights_beat_an_untrained_model_on_held_out_texture():
    with rasterio.open(TEXTURE) as src:  # test-split area, never used in training
        tex = src.read(1).astype(np.float64)
    tex = (tex - tex.mean()) / tex.std()
    rng = np.random.default_rng(77)
    trained, untrained = [], []
    for name in ("translation", "very_small", "small", "large"):
        pair = make_pair(tex, rng, (128, 128), name, temporal_change=True)
        for weights, out in (("microflow-small", trained), ("untrained:small", untrained)):
            flow = estimate_displacement(pair.pre, pair.post, weights=weights, denoise=False,
                                         device="cpu")
            out.append(epe(flow, pair.flow, pair.valid))
    assert np.mean(trained) < 0.7 * np.mean(untrained), (trained, untrained)


def test_shipped_weights_beat_the_correlator_next_to_a_surface_rupture():
    """MicroFlow's reason to exist: a sharp field at the fault, where a window smears it."""
    with rasterio.open(TEXTURE) as src:
        tex = src.read(1).astype(np.float64)
    tex = (tex - tex.mean()) / tex.std()
    rng = np.random.default_rng(5)
    ours, corr = [], []
    while len(ours) < 3:
        pair = make_pair(tex, rng, (192, 192), "small", temporal_change=False)
        near = near_fault(pair.fault_mask, 3.0) & pair.valid
        if near.sum() < 200:  # blind fault or a trace that barely enters the image
            continue
        flow = estimate_displacement(pair.pre, pair.post, weights="microflow-small",
                                     denoise=True, device="cpu")
        ours.append(epe(flow, pair.flow, near))
        dense = frequency_correlate(pair.pre, pair.post, CorrelatorConfig()).to_dense(
            pair.pre.shape)
        corr.append(epe(dense, pair.flow, near))
    assert np.mean(ours) < np.mean(corr), (ours, corr)
