import numpy as np
import pytest

from model import estimate_displacement, load_model
from model.registry import read_metadata, save_weights, sha256


def test_weights_round_trip_through_safetensors(tmp_path):
    model = load_model("untrained:tiny", device="cpu")
    path = tmp_path / "m.safetensors"
    digest = save_weights(model, path, {"name": "m", "step": 3})
    assert digest == sha256(path)
    again = load_model(path, device="cpu")
    assert again.config == model.config and again.weights_sha256 == digest
    for (k, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items(),
                              strict=True):
        assert np.array_equal(a.numpy(), b.numpy()), k
    assert read_metadata(path)["step"] == "3"


def test_unknown_models_give_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown model"):
        load_model("no-such-model")
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "missing.safetensors")


@pytest.mark.parametrize("shape", [(64, 64), (96, 150)])
def test_estimate_displacement_returns_dx_dy_per_pixel(shape, rng):
    pre = rng.integers(1000, 5000, size=shape).astype(np.uint16)
    post = rng.integers(1000, 5000, size=shape).astype(np.uint16)
    out = estimate_displacement(pre, post, weights="untrained:tiny", device="cpu")
    assert out.shape == (2, *shape) and out.dtype == np.float32
    assert np.isfinite(out).all()


def test_nodata_becomes_nan_in_the_output(rng):
    pre = rng.standard_normal((80, 80)).astype(np.float32)
    post = pre.copy()
    pre[:5, :5] = np.nan
    out = estimate_displacement(pre, post, weights="untrained:tiny", device="cpu", denoise=False)
    assert np.isnan(out[:, :5, :5]).all() and np.isfinite(out[:, 10:, 10:]).all()


def test_large_inputs_are_tiled_with_the_same_result_shape(rng):
    pre = rng.standard_normal((300, 260)).astype(np.float32)
    out = estimate_displacement(pre, pre, weights="untrained:tiny", device="cpu", tile=128,
                                halo=16, denoise=False)
    assert out.shape == (2, 300, 260)


def test_bad_inputs_raise_clear_errors(rng):
    a = rng.standard_normal((64, 64))
    with pytest.raises(ValueError, match="same shape"):
        estimate_displacement(a, a[:, :63], weights="untrained:tiny")
    with pytest.raises(ValueError, match="at least 64"):
        estimate_displacement(a[:32], a[:32], weights="untrained:tiny")
    with pytest.raises(ValueError, match="2-D"):
        estimate_displacement(a[None], a[None], weights="untrained:tiny")
    with pytest.raises(TypeError, match="real numeric"):
        estimate_displacement(a.astype(complex), a, weights="untrained:tiny")


def test_the_flip_average_is_equivariant_to_flips_and_closer_than_one_pass(texture):
    from model.metrics import epe
    from model.synthetic import make_pair

    kw = dict(denoise=False, device="cpu")
    errs = {"one": [], "avg": []}
    for seed, rng_name in enumerate(["small", "large", "small", "very_small"]):
        p = make_pair(texture.astype(np.float32), np.random.default_rng(seed), (128, 128),
                      rng_name, temporal_change=True)
        avg = estimate_displacement(p.pre, p.post, flip_average=True, **kw)
        one = estimate_displacement(p.pre, p.post, **kw)
        errs["avg"].append(epe(avg, p.flow, p.valid))
        errs["one"].append(epe(one, p.flow, p.valid))
        if seed == 0:
            mirrored = estimate_displacement(p.pre[:, ::-1], p.post[:, ::-1],
                                             flip_average=True, **kw)
            back = mirrored[:, :, ::-1] * np.array([-1, 1], np.float32)[:, None, None]
            np.testing.assert_allclose(back, avg, atol=1e-5)  # the same four runs
            assert not np.allclose(one, avg, atol=1e-3)
    assert np.mean(errs["avg"]) < np.mean(errs["one"])


def test_flip_average_keeps_what_flips_with_the_image_and_drops_what_does_not():
    import torch

    from model.inference import flip_average

    class Gradient(torch.nn.Module):
        """dx, dy = central differences of pre (circular): they flip sign with the image,
        like a displacement does; plus a constant offset, which does not."""

        def forward(self, a, b, **kw):
            gx = (torch.roll(a, -1, 3) - torch.roll(a, 1, 3)) / 2
            gy = (torch.roll(a, -1, 2) - torch.roll(a, 1, 2)) / 2
            return [torch.cat([gx, gy], 1), torch.cat([gx + 0.3, gy - 0.2], 1)]

    torch.manual_seed(0)
    pre, post = torch.randn(2, 1, 32, 48), torch.randn(2, 1, 32, 48)
    avg = flip_average(lambda a, b: Gradient()(a, b)[-1], pre, post)  # with the offset
    assert torch.allclose(avg, Gradient()(pre, post)[0], atol=1e-6)
