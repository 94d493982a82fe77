import json

import numpy as np
import pytest

from model.dataset import SampleSet, augment_batch, generate_samples, loss_weights
from model.registry import read_metadata
from model.train import TrainConfig, train
from model.warp import warp


def test_augmentation_flips_negate_the_matching_component(texture):
    import torch

    rng = np.random.default_rng(0)
    s = generate_samples([texture.astype(np.float32)], 4, 96, rng, ranges=["translation"],
                         change_fraction=0.0)
    for seed in range(6):
        a, b, f, _v = augment_batch(s.pre, s.post, s.flow, s.valid, 64, np.random.default_rng(seed))
        assert a.shape == (4, 64, 64) and f.shape == (4, 2, 64, 64)
        warped = warp(torch.from_numpy(b[:, None]), torch.from_numpy(f))[:, 0].numpy()
        assert np.abs(warped - a)[:, 8:-8, 8:-8].mean() < 0.05  # still pre = post moved by d


def test_training_writes_weights_card_and_resumes(tmp_path, texture):
    rng = np.random.default_rng(0)
    tex = [texture.astype(np.float32)]
    tr = generate_samples(tex, 8, 96, rng, change_fraction=0.5)
    va = generate_samples(tex, 4, 96, rng)
    cfg = TrainConfig(config="tiny", name="t", batch=2, crop=64, steps=4, minutes=5,
                      val_every=2)
    state = train(cfg, tr, va, tmp_path, device="cpu")
    assert state["step"] == 4
    assert (tmp_path / "t.safetensors").is_file() and (tmp_path / "t.md").is_file()
    assert "Validation" in (tmp_path / "t.md").read_text()
    cfg2 = TrainConfig(**{**cfg.__dict__, "steps": 6})
    state2 = train(cfg2, tr, va, tmp_path, device="cpu")
    assert state2["step"] == 6
    hist = json.loads((tmp_path / "t.json").read_text())["history"]
    assert [h["step"] for h in hist] == [2, 4, 6]
    assert json.loads(read_metadata(tmp_path / "t.safetensors")["config"])["pyramid_levels"] == 0
    cfg3 = TrainConfig(**{**cfg.__dict__, "steps": 8, "pyramid_levels": 1,
                          "pyramid_fraction": 1.0})
    assert train(cfg3, tr, va, tmp_path, device="cpu")["step"] == 8  # resumed, coarse-to-fine
    assert json.loads(read_metadata(tmp_path / "t.safetensors")["config"])["pyramid_levels"] == 1
    assert "coarse-to-fine levels\n  1" in (tmp_path / "t.md").read_text()
    runs = json.loads((tmp_path / "t.json").read_text())["runs"]  # one entry per run
    assert [(r["from_step"], r["to_step"]) for r in runs] == [(0, 4), (4, 6), (6, 8)]
    assert [r["pyramid_levels"] for r in runs] == [None, None, 1]
    assert "steps 6–8" in (tmp_path / "t.md").read_text()
    assert isinstance(SampleSet.from_dict(tr.to_dict()), SampleSet)


def test_a_crop_larger_than_the_samples_is_refused_with_a_hint(tmp_path, texture):
    s = generate_samples([texture.astype(np.float32)], 2, 96, np.random.default_rng(0))
    with pytest.raises(ValueError, match="microflow data --size 160"):
        train(TrainConfig(config="tiny", crop=128, steps=1), s, s, tmp_path, device="cpu")
    assert not any(tmp_path.iterdir())  # nothing written


def test_augmentation_transforms_a_stacked_start_like_the_truth(texture):
    rng = np.random.default_rng(0)
    s = generate_samples([texture.astype(np.float32)], 4, 96, rng, ranges=["small"],
                         change_fraction=0.0)
    stacked = np.concatenate([s.flow, s.flow], axis=1)
    for seed in range(8):
        _a, _b, f, _v = augment_batch(s.pre, s.post, stacked, s.valid, 64,
                                      np.random.default_rng(seed))
        assert f.shape == (4, 4, 64, 64)
        np.testing.assert_array_equal(f[:, :2], f[:, 2:])
        ref = augment_batch(s.pre, s.post, s.flow, s.valid, 64, np.random.default_rng(seed))[2]
        np.testing.assert_array_equal(f[:, :2], ref)


def test_training_from_correlator_starts_runs_and_is_recorded(tmp_path, texture):
    rng = np.random.default_rng(0)
    tr = generate_samples([texture.astype(np.float32)], 4, 96, rng, change_fraction=0.0)
    cfg = TrainConfig(config="tiny", name="c", batch=2, crop=64, steps=2, minutes=5,
                      val_every=2, pyramid_fraction=0.0, correlator_fraction=1.0)
    assert train(cfg, tr, tr, tmp_path, device="cpu")["step"] == 2
    runs = json.loads((tmp_path / "c.json").read_text())["runs"]
    assert runs[-1]["correlator_fraction"] == 1.0
    with pytest.raises(ValueError, match="correlator_fraction"):
        train(TrainConfig(**{**cfg.__dict__, "pyramid_fraction": 0.5, "steps": 3}), tr, tr,
              tmp_path, device="cpu")


def test_fault_weight_raises_the_loss_weight_near_the_trace_only(texture):
    from model.metrics import near_fault

    rng = np.random.default_rng(3)
    s = generate_samples([texture.astype(np.float32)], 8, 96, rng, ranges=["small"],
                         change_fraction=0.0)
    faulted = np.flatnonzero(s.fault.any(axis=(1, 2)))
    assert faulted.size  # surface ruptures are common in the small range
    np.testing.assert_array_equal(loss_weights(s), s.valid.astype(np.float32))
    w = loss_weights(s, fault_weight=3.0)
    i = faulted[0]
    near = near_fault(s.fault[i], 3.0) & s.valid[i]
    far = ~near_fault(s.fault[i], 3.0) & s.valid[i]
    assert np.all(w[i][near] == 4.0) and np.all(w[i][far] == 1.0)
    assert np.all(w[~s.valid] == 0.0)


def test_training_with_a_fault_weight_runs_and_is_recorded(tmp_path, texture):
    rng = np.random.default_rng(0)
    tr = generate_samples([texture.astype(np.float32)], 4, 96, rng, ranges=["small"],
                          change_fraction=0.0)
    cfg = TrainConfig(config="tiny", name="f", batch=2, crop=64, steps=2, minutes=5,
                      val_every=2, fault_weight=3.0)
    assert train(cfg, tr, tr, tmp_path, device="cpu")["step"] == 2
    assert json.loads((tmp_path / "f.json").read_text())["runs"][-1]["fault_weight"] == 3.0
