import numpy as np
import pytest

from model.metrics import endpoint_error, epe, epe_per_range, near_fault, smoothness


def test_epe_is_mean_euclidean_error():
    truth = np.zeros((2, 4, 4), np.float32)
    pred = truth.copy()
    pred[0] = 3.0
    pred[1] = 4.0
    assert epe(pred, truth) == pytest.approx(5.0)
    assert endpoint_error(pred, truth).shape == (4, 4)


def test_epe_per_range_splits_by_true_magnitude():
    truth = np.zeros((2, 2, 2), np.float32)
    truth[0, 0, :] = 0.2
    truth[0, 1, :] = 5.0
    pred = truth + np.array([0.1, 0.0], np.float32)[:, None, None]
    out = epe_per_range(pred, truth, {"very_small": (0, 0.5), "large": (2, 10), "none": (20, 30)})
    assert out["very_small"] == pytest.approx(0.1)
    assert out["large"] == pytest.approx(0.1)
    assert np.isnan(out["none"])


def test_smoothness_separates_near_and_far_from_fault():
    field = np.zeros((2, 32, 32), np.float32)
    field[1, :, 16:] = 2.0  # a 2 px jump across column 16
    mask = np.zeros((32, 32), bool)
    mask[:, 16] = True
    near, far = smoothness(field, mask, k=3)
    assert near > 0.2 and far == 0.0
    assert near_fault(mask, 3)[:, 13:20].all() and not near_fault(mask, 3)[:, :12].any()


def test_mismatched_fields_raise():
    with pytest.raises(ValueError):
        epe(np.zeros((2, 3, 3)), np.zeros((2, 3, 4)))
