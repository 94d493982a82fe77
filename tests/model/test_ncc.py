"""Windowed 1 − NCC: blind to gain and offset, 2 for an inverted image, and the valid
form is the padded form's interior."""

import torch

from model.ncc import box_mean, one_minus_ncc


def test_one_minus_ncc_ignores_gain_and_offset_and_sees_inversion():
    a = torch.randn(1, 1, 40, 40, generator=torch.Generator().manual_seed(0))
    assert one_minus_ncc(a, 3.0 * a + 2.0, 7).abs().max() < 1e-4
    assert (one_minus_ncc(a, -a, 7) - 2.0).abs().max() < 1e-4
    b = torch.randn(1, 1, 40, 40, generator=torch.Generator().manual_seed(1))
    assert 0.5 < float(one_minus_ncc(a, b, 7).mean()) < 1.5  # unrelated images: NCC ~ 0


def test_the_valid_form_is_the_padded_forms_interior():
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(2, 1, 1, 30, 33, generator=g)
    same = one_minus_ncc(a, b, 5)
    valid = one_minus_ncc(a, b, 5, pad=False)
    assert valid.shape[-2:] == (26, 29)
    assert torch.allclose(valid, same[..., 2:-2, 2:-2], atol=1e-5)
    assert box_mean(a, 5).shape == a.shape
