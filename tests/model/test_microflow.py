import numpy as np
import pytest
import torch

from model.config import get_config
from model.losses import sequence_loss, sequence_weights
from model.microflow import MicroFlow
from model.network import UNet, count_parameters


@pytest.mark.parametrize("shape", [(64, 64), (96, 80), (70, 131)])
def test_output_is_one_field_per_iteration_of_input_shape(shape):
    torch.manual_seed(0)
    model = MicroFlow(get_config("tiny"))
    pre, post = torch.randn(2, 1, *shape), torch.randn(2, 1, *shape)
    flows = model(pre, post)
    assert len(flows) == 3
    assert all(f.shape == (2, 2, *shape) and f.dtype == torch.float32 for f in flows)


def test_nan_input_gives_finite_output():
    model = MicroFlow(get_config("tiny"))
    pre = torch.randn(1, 1, 64, 64)
    pre[..., :10, :10] = float("nan")
    assert torch.isfinite(model(pre, torch.randn(1, 1, 64, 64))[-1]).all()


@pytest.mark.parametrize("shared", [True, False])
def test_gradients_reach_every_iterations_weights(shared):
    torch.manual_seed(0)
    cfg = get_config("tiny")
    cfg = type(cfg)(**{**cfg.to_dict(), "shared_weights": shared})
    model = MicroFlow(cfg)
    assert len(model.backbones) == (1 if shared else 3)
    pre, post = torch.randn(1, 1, 64, 64), torch.randn(1, 1, 64, 64)
    loss = sequence_loss(model(pre, post), torch.randn(1, 2, 64, 64))
    loss.backward()
    for net in model.backbones:
        for name, p in net.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_loss_weighting_follows_gamma_formula():
    target = torch.zeros(1, 2, 4, 4)
    # iteration i has a constant error of (i+1) px in both components
    flows = [torch.full((1, 2, 4, 4), float(i + 1)) for i in range(3)]
    gamma = 0.5
    expected = gamma**2 * 1 + gamma**1 * 2 + gamma**0 * 3
    assert sequence_loss(flows, target, gamma=gamma).item() == pytest.approx(expected)
    assert sequence_weights(3, 0.8) == pytest.approx([0.64, 0.8, 1.0])


def test_loss_sample_weights_balance_ranges():
    target = torch.zeros(2, 2, 4, 4)
    flow = torch.cat([torch.full((1, 2, 4, 4), 1.0), torch.full((1, 2, 4, 4), 10.0)])
    plain = sequence_loss([flow], target).item()
    balanced = sequence_loss([flow], target, sample_weight=torch.tensor([1.0, 0.1])).item()
    assert plain == pytest.approx(5.5)
    assert balanced == pytest.approx((1 * 1 + 0.1 * 10) / 1.1)


def test_named_configs_have_the_documented_sizes():
    assert 1e6 <= count_parameters(UNet(get_config("small"))) <= 3e6
    assert 36e6 <= count_parameters(UNet(get_config("paper"))) <= 40e6
    with pytest.raises(ValueError, match="unknown config"):
        get_config("huge")


def test_tiny_model_learns_a_constant_shift(texture):
    """End-to-end sanity: a few dozen steps on one shift move the estimate toward it."""
    from model.synthetic import resample_post

    torch.manual_seed(0)
    size = (64, 64)
    pre = texture[40:104, 40:104].astype(np.float32)

    def fn(cols, rows):
        return np.full_like(cols, 0.8), np.full_like(rows, -0.5)

    post, _ = resample_post(texture, fn, size, origin=(40, 40))
    model = MicroFlow(get_config("tiny"))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    a, b = torch.from_numpy(pre)[None, None], torch.from_numpy(post)[None, None]
    target = torch.tensor([0.8, -0.5]).view(1, 2, 1, 1).expand(1, 2, *size)
    first = None
    for _ in range(40):
        loss = sequence_loss(model(a, b), target)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first


def _constant_increment_model(c: tuple[float, float], levels: int) -> MicroFlow:
    """A tiny model whose every iteration adds exactly ``c`` px (head weights 0)."""
    cfg = get_config("tiny")
    model = MicroFlow(type(cfg)(**{**cfg.to_dict(), "pyramid_levels": levels})).eval()
    head = model.backbones[0].head
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(torch.tensor(c))
    return model


def test_coarse_to_fine_start_is_the_doubled_coarse_field():
    c = (0.25, -0.5)
    pre, post = torch.randn(1, 1, 64, 96), torch.randn(1, 1, 64, 96)
    single = _constant_increment_model(c, levels=0)(pre, post)[-1]
    assert torch.allclose(single, torch.tensor(c).view(1, 2, 1, 1).expand_as(single) * 3)
    # one level: 3c at half resolution -> 6c full-resolution px, then 3c more
    two = _constant_increment_model(c, levels=1)(pre, post)
    assert torch.allclose(two[0], torch.tensor(c).view(1, 2, 1, 1) * 7)
    assert torch.allclose(two[-1], torch.tensor(c).view(1, 2, 1, 1) * 9)
    # levels=0 overrides the config; odd sizes pool and crop back
    odd = _constant_increment_model(c, levels=1)
    assert torch.allclose(odd(pre, post, levels=0)[-1], single)
    assert odd(torch.randn(2, 1, 67, 99), torch.randn(2, 1, 67, 99))[-1].shape == (2, 2, 67, 99)


def test_an_explicit_start_field_is_refined_from_and_checked():
    c = (0.1, 0.2)
    model = _constant_increment_model(c, levels=1)
    pre, post = torch.randn(1, 1, 70, 80), torch.randn(1, 1, 70, 80)
    init = torch.full((1, 2, 70, 80), 1.5)
    out = model(pre, post, init=init)[-1]  # an explicit df_0 replaces the coarse one
    assert torch.allclose(out, init + 3 * torch.tensor(c).view(1, 2, 1, 1))
    with pytest.raises(ValueError, match="init must be"):
        model(pre, post, init=torch.zeros(1, 2, 64, 64))


def test_negative_pyramid_levels_are_rejected():
    with pytest.raises(ValueError, match="pyramid_levels"):
        type(get_config("tiny"))(pyramid_levels=-1)


def test_loss_pixel_weights_give_a_weighted_mean_per_pair():
    target = torch.zeros(1, 2, 1, 2)
    flow = torch.tensor([[[[1.0, 3.0]], [[1.0, 3.0]]]])  # error 1 px, then 3 px
    weights = torch.tensor([[[[1.0, 3.0]]]])
    assert sequence_loss([flow], target).item() == pytest.approx(2.0)
    assert sequence_loss([flow], target, valid=weights).item() == pytest.approx(
        (1 * 1 + 3 * 3) / 4)


def test_bf16_is_used_on_a_cpu_only_where_the_cpu_does_bf16_in_hardware(tmp_path):
    from model.precision import cpu_flags, cpu_has_bf16

    plain = tmp_path / "cpuinfo"
    plain.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw\n")
    native = tmp_path / "cpuinfo_bf16"
    native.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16 amx_tile\n")
    assert cpu_flags(plain) == {"fpu", "sse2", "avx2", "avx512f", "avx512bw"}
    assert not cpu_has_bf16(cpu_flags(plain))  # AVX-512 alone: bf16 is emulated, slow
    assert cpu_has_bf16(cpu_flags(native))
    assert cpu_flags(tmp_path / "missing") is None and cpu_has_bf16(None)
