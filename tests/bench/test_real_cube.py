"""`microflow pair` on the committed real Sentinel-2 pair: the offset found and removed,
the clouds mostly flagged, and the cube scored by `bench.real_cube`."""

from pathlib import Path

from bench.real import README_OFFSET, REAL_DIR
from bench.real_cube import score_cube
from flows.cli import main


def test_the_real_pair_through_the_public_command_comes_out_flat_with_clouds_flagged(
        tmp_path):
    pre = next(Path(REAL_DIR).glob("pre_*.tif"))
    post = next(Path(REAL_DIR).glob("post_*.tif"))
    out = tmp_path / "real.zarr"
    assert main(["pair", str(pre), str(post), "--out", str(out), "--no-quicklooks"]) == 0
    s = score_cube(str(out))
    assert s["off_median"] < 0.1 and s["off_zero"] < 0.1  # of the valid pixels, > 0.5 px off
    assert s["clear_valid"] > 0.75 and s["cloud_valid"] < 0.25
    # AROSICS's (dx, dy) offset, found by the co-registration fit and removed
    assert abs(s["offset_dx"] - README_OFFSET[0]) < 0.15
    assert abs(s["offset_dy"] - README_OFFSET[1]) < 0.15
