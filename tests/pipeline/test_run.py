"""Pixels whose match falls outside the processed area are not marked measured."""

import dask.array as da
import numpy as np
import xarray as xr

from pipeline.run import lands_inside


def test_pixels_displaced_out_of_the_image_are_flagged():
    ny, nx = 6, 8
    flow = np.zeros((2, ny, nx), np.float32)
    flow[0] = 1.5  # dx: every pixel matches 1.5 columns to the right
    flow[1, 0, :] = -0.5  # dy: the first row matches half a row above the image
    raw = xr.DataArray(da.from_array(flow, chunks=(2, 3, 4)), dims=("component", "y", "x"),
                       coords={"component": ["dx", "dy"], "y": np.arange(ny) * -30.0,
                               "x": np.arange(nx) * 30.0})
    inside = lands_inside(raw).compute()
    assert inside.dims == ("y", "x") and inside.dtype == bool
    expected = np.ones((ny, nx), bool)
    expected[:, -2:] = False  # col + 1.5 > nx - 1 for the last two columns
    expected[0] = False
    np.testing.assert_array_equal(inside.values, expected)
