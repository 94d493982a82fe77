import numpy as np
import pytest

from model.tiling import Mosaic, blend_weights, tile_grid


@pytest.mark.parametrize("shape", [(100, 100), (1000, 700), (513, 1025)])
def test_tiles_cover_every_pixel_with_context(shape):
    core, halo = 256, 32
    tiles = tile_grid(shape, core, halo)
    covered = np.zeros(shape, dtype=int)
    deep = np.zeros(shape, dtype=bool)  # at least `halo` from a tile edge (or image border)
    for t in tiles:
        covered[t.slices] += 1
        assert t.shape[0] <= core + 2 * halo and t.shape[1] <= core + 2 * halo
        r0 = t.row0 + (halo if t.row0 > 0 else 0)
        r1 = t.row1 - (halo if t.row1 < shape[0] else 0)
        c0 = t.col0 + (halo if t.col0 > 0 else 0)
        c1 = t.col1 - (halo if t.col1 < shape[1] else 0)
        deep[r0:r1, c0:c1] = True
    assert (covered >= 1).all()
    assert deep.all()


def test_blending_a_smooth_field_reproduces_it_exactly():
    shape = (600, 500)
    rows, cols = np.mgrid[0:600, 0:500]
    field = np.stack([np.sin(rows / 50.0), np.cos(cols / 30.0)]).astype(np.float32)
    mosaic = Mosaic(2, shape, halo=32)
    for t in tile_grid(shape, 128, 32):
        mosaic.add(t, field[:, t.slices[0], t.slices[1]])
    np.testing.assert_allclose(mosaic.result(), field, atol=1e-6)


def test_blend_weights_are_one_in_the_core_and_fall_off_in_the_halo():
    shape = (1000, 1000)
    t = next(t for t in tile_grid(shape, 256, 32) if t.row0 > 0 and t.col0 > 0)
    w = blend_weights(t, shape, 32)
    assert w[32:-32, 32:-32].min() == 1.0
    assert w[0, 0] < 0.01 and w[0, 100] < w[16, 100] < w[40, 100]


def test_bad_tile_sizes_are_rejected():
    with pytest.raises(ValueError):
        tile_grid((100, 100), 0, 8)
