"""The valid flag of each pixel: measured, or why not (pipeline.flags)."""

import numpy as np

from pipeline.cube import CLOUD, EDGE, LOW_CONFIDENCE, MEASURED, NO_DATA
from pipeline.flags import final_codes, input_codes


def test_input_codes_mark_no_data_cloud_and_an_edge_margin_around_them():
    h, w = 12, 16
    pre, post = np.ones((h, w), np.float32), np.ones((h, w), np.float32)
    cloud = np.zeros((h, w), np.float32)
    post[:, :3] = np.nan  # no data on the left
    cloud[8:, 12:] = 1  # a cloud in the bottom-right corner (also NaN in the images)
    post[8:, 12:] = np.nan
    code = input_codes(np.stack([pre, post, cloud]), n_images=2, margin=2)[0]
    assert (code[:, :3] == NO_DATA).all()
    assert (code[:, 3:5] == EDGE).all() and (code[:5, 5:10] == MEASURED).all()
    assert (code[8:, 12:] == CLOUD).all() and (code[6:8, 12:] == EDGE).all()


def test_final_codes_flag_low_confidence_and_matches_outside_the_image():
    ny, nx = 6, 8
    inputs = np.full((ny, nx), MEASURED, np.float32)
    inputs[0, 0] = NO_DATA
    raw = np.zeros((2, ny, nx), np.float32)
    raw[0] = 1.5  # dx: the last two columns match outside the image
    raw[1, 5, :] = 0.6  # dy: the last row matches below it
    sigma = np.full((2, ny, nx), 0.1, np.float32)
    sigma[1, 2, 2] = 0.9  # one uncertain pixel
    code = final_codes(inputs, raw, sigma, row0=0, col0=0, shape=(ny, nx), max_sigma=0.5)
    assert code.dtype == np.uint8
    expected = np.full((ny, nx), MEASURED, np.uint8)
    expected[:, -2:] = EDGE
    expected[5] = EDGE
    expected[2, 2] = LOW_CONFIDENCE
    expected[0, 0] = NO_DATA
    np.testing.assert_array_equal(code, expected)
    # the same block seen at its place inside a larger image: nothing falls outside
    code = final_codes(inputs, raw, sigma, row0=0, col0=0, shape=(100, 100), max_sigma=0.5)
    assert (code[:, -2:] == MEASURED).all()


def test_a_pixel_among_many_low_confidence_ones_is_flagged_too():
    """Issue 20: a false blob whose own σ is small, among pixels whose σ is large, is not
    measured; an isolated uncertain pixel does not spread."""
    from model.uncertainty import low_confidence

    sigma = np.full((2, 60, 60), 0.05, np.float32)
    sigma[0, 10:30, 10:30] = 0.5  # a patch that σ flags (dx only) ...
    sigma[:, 20, 20] = 0.05  # ... with a confident-looking pixel inside it
    sigma[1, 45, 45] = 0.5  # and one isolated uncertain pixel
    sigma[:, 0, 59] = np.nan  # no data: not low confidence
    low = low_confidence(sigma, max_sigma=0.15, radius=4, share=0.2)
    assert low[20, 20] and low[10:30, 10:30].all()
    assert low[45, 45] and low[40:50, 40:50].sum() == 1
    assert not low[0, 59]
    np.testing.assert_array_equal(low_confidence(sigma, 0.15, radius=0),
                                  (sigma > 0.15).any(0))


def test_low_confidence_blocks_with_their_halo_agree_with_the_whole():
    import dask.array as da

    from model.uncertainty import low_confidence
    from pipeline.flags import low_confidence_block
    from pipeline.overlap import with_halo

    rng = np.random.default_rng(0)
    sigma = np.exp(rng.normal(-2.5, 1.0, (2, 96, 96))).astype(np.float32)
    whole = low_confidence(sigma, 0.15, radius=6)
    tiled = with_halo(low_confidence_block, da.from_array(sigma, chunks=(2, 32, 32)), 6,
                      out_channels=1, name="lc", max_sigma=0.15, radius=6).compute()[0]
    np.testing.assert_array_equal(tiled > 0.5, whole)
