import numpy as np
import pytest
import torch

from model.synthetic import resample_post
from model.warp import warp


def _shifted_pair(texture, dx, dy, size=(128, 160)):
    origin = (40, 40)
    pre = texture[origin[0]:origin[0] + size[0], origin[1]:origin[1] + size[1]]

    def fn(cols, rows):
        return np.full_like(cols, dx), np.full_like(rows, dy)

    post, _ = resample_post(texture, fn, size, origin=origin)
    return pre.astype(np.float32), post


@pytest.mark.parametrize("mode", ["bicubic", "bilinear"])
@pytest.mark.parametrize("shift", [(0.37, -0.81), (-2.25, 1.6), (3.0, 0.0)])
def test_warp_of_post_by_true_field_matches_pre_in_interior(texture, shift, mode):
    dx, dy = shift
    pre, post = _shifted_pair(texture, dx, dy)
    d = torch.tensor([dx, dy], dtype=torch.float32).view(1, 2, 1, 1).expand(1, 2, *pre.shape)
    warped = warp(torch.from_numpy(post)[None, None], d.contiguous(), mode=mode)[0, 0].numpy()
    inner = (slice(8, -8), slice(8, -8))
    err = np.abs(warped[inner] - pre[inner])
    tol = 0.04 if mode == "bicubic" else 0.12  # texture std is 1; interpolation error
    assert err.mean() < tol
    # the opposite sign is badly wrong: the convention is pinned, not symmetric
    wrong = warp(torch.from_numpy(post)[None, None], -d.contiguous(), mode=mode)[0, 0].numpy()
    assert np.abs(wrong[inner] - pre[inner]).mean() > 5 * err.mean()


def test_post_is_pre_moved_by_d_at_integer_shift(texture):
    pre, post = _shifted_pair(texture, 2.0, -3.0)
    # post(row + dy, col + dx) == pre(row, col)
    np.testing.assert_allclose(post[10 - 3, 20 + 2], pre[10, 20], atol=1e-5)


def test_warp_rejects_mismatched_shapes():
    with pytest.raises(ValueError):
        warp(torch.zeros(1, 1, 8, 8), torch.zeros(1, 2, 8, 9))
    with pytest.raises(ValueError):
        warp(torch.zeros(1, 1, 8, 8), torch.zeros(1, 3, 8, 8))
