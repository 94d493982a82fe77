"""The correlator's field as MicroFlow's starting field."""

import numpy as np
from scipy import ndimage

from model.correlator_start import correlator_start


def test_start_recovers_a_shift_and_is_finite_everywhere(texture):
    pre = texture[:160, :160].astype(np.float32)
    dx, dy = 1.3, -2.4  # post(row + dy, col + dx) = pre(row, col)
    post = ndimage.shift(texture, (dy, dx), order=3, mode="reflect")[:160, :160]
    post = post.astype(np.float32)
    post[:40, :40] = np.nan  # a nodata corner: its windows are filled from neighbours
    d = correlator_start(pre, post)
    assert d.shape == (2, 160, 160) and np.isfinite(d).all()
    assert abs(np.median(d[0]) - dx) < 0.05 and abs(np.median(d[1]) - dy) < 0.05


def test_start_of_pure_noise_pair_is_finite(rng):
    a = rng.standard_normal((96, 96)).astype(np.float32)
    b = rng.standard_normal((96, 96)).astype(np.float32)
    assert np.isfinite(correlator_start(a, b)).all()
