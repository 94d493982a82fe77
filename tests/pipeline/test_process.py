"""One pair end to end (``process_pair`` and ``microflow pair``): signs and units in metres,
provenance values, reruns that cannot lie, failures that fail, nodata and edges."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import xarray as xr
from rasterio.transform import from_origin
from scipy import ndimage

from pipeline import cube
from pipeline.config import RunConfig
from pipeline.demo import TEXTURE
from pipeline.process import geotiff_source, process_pair
from pipeline.writer import BlockFailedError, PairExistsError

H = W = 256
RES = 10.0
T = from_origin(600000.0, 4200000.0, RES, RES)  # north-up UTM grid
DX, DY = 2.0, -1.6  # px: post(row + dy, col + dx) = pre(row, col)
EAST, NORTH = DX * RES, -DY * RES  # 20 m east, 16 m north
MICROFLOW = str(Path(sys.executable).with_name("microflow"))
FAST = ["--tile", "128", "--halo", "32", "--workers", "1", "--no-quicklooks", "-q"]


def _texture() -> np.ndarray:
    with rasterio.open(TEXTURE) as src:
        return src.read(1).astype(np.float64)


def _shifted(dx: float, dy: float, gain: float = 1.0, size: tuple[int, int] = (H, W)
             ) -> tuple[np.ndarray, np.ndarray]:
    tex = _texture()
    h, w = size
    pre = tex[16:16 + h, 16:16 + w]
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float64)
    post = ndimage.map_coordinates(tex, [rows + 16 - dy, cols + 16 - dx], order=3,
                                   mode="reflect")
    return pre, post * gain


def _write(path: Path, array: np.ndarray, nodata=0) -> Path:
    h, w = array.shape
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=1, dtype="uint16",
                       crs="EPSG:32611", transform=T, nodata=nodata) as dst:
        dst.write(np.clip(np.rint(array), 0, 65535).astype(np.uint16), 1)
    return path


@pytest.fixture(scope="module")
def shifted_pair(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("shifted")
    pre, post = _shifted(DX, DY)
    return _write(d / "pre.tif", pre), _write(d / "post.tif", post)


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([MICROFLOW, *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=300)


@pytest.fixture(scope="module")
def pair_cube(shifted_pair, tmp_path_factory):
    d = tmp_path_factory.mktemp("cube")
    pre, post = shifted_pair
    res = _run("pair", str(pre), str(post), "--out", str(d / "c.zarr"), "--ramp", "keep",
               "--lambda", "0.05", "--denoise-halo", "24", *FAST, cwd=d)
    assert res.returncode == 0, res.stderr[-3000:]
    return d / "c.zarr", res


def test_pair_command_gives_a_planted_shift_in_metres_with_the_right_signs(pair_cube):
    ds = xr.open_zarr(pair_cube[0], decode_coords="all").isel(pair=0)
    valid = ds.valid.values == 1
    assert valid.mean() > 0.5, valid.mean()  # the rest: low confidence or edge
    for name, truth in (("east", EAST), ("east_raw", EAST), ("north", NORTH),
                        ("north_raw", NORTH)):
        mean = float(np.nanmean(ds[name].values[valid]))
        print(f"{name}: mean {mean:.3f} m, truth {truth} m")
        assert abs(mean - truth) <= 0.02 * abs(truth), (name, mean, truth)
    assert np.isnan(ds.east.values[~valid]).all() and np.isnan(ds.north_raw.values[~valid]).all()
    for name in ("east_sigma", "north_sigma"):
        assert ds[name].attrs["units"] == "m"
        assert (ds[name].values[valid] > 0).all()  # known, in metres, wherever measured
    low = ds.valid.values == cube.LOW_CONFIDENCE
    from model.uncertainty import low_confidence

    # σ above max σ, or among too many such pixels (the rule on the stored σ, in px)
    sigma_px = np.stack([ds.east_sigma.values, ds.north_sigma.values]) / RES
    assert low_confidence(sigma_px)[low].all()


def test_ctrl_c_stops_cleanly_and_the_rerun_resumes(tmp_path):
    import signal
    import time

    # 512 x 640 px in 64 px tiles: 80 blocks per stage, so the run is still going when the
    # first block is done, however fast or busy the machine
    a, b = _shifted(DX, DY, size=(512, 640))
    pre, post = _write(tmp_path / "pre.tif", a), _write(tmp_path / "post.tif", b)
    args = [MICROFLOW, "pair", str(pre), str(post), "--out", str(tmp_path / "c.zarr"),
            "--tile", "64", "--halo", "16", "--workers", "1", "--no-quicklooks"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    # a terminal's child has SIGINT at its default; pytest's may have inherited it ignored
    # from a fixture (an ignored SIGINT survives exec), so reset it in the child
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if cube.cube_exists(tmp_path / "c.zarr") and cube.pairs(tmp_path / "c.zarr") and \
                cube.done_blocks(tmp_path / "c.zarr", 0, "measure"):
            break
        time.sleep(0.1)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole group
    t0 = time.monotonic()
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 130 and time.monotonic() - t0 < 15
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-2000:]
    assert "rerun the same command to resume" in err.strip().splitlines()[-1]
    res = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0 and "already in the cube" in res.stderr


def test_provenance_records_the_values_actually_used(pair_cube):
    from model.registry import resolve_weights, sha256

    ds = xr.open_zarr(pair_cube[0], decode_coords="all")
    prov = cube.pair_provenance(ds, 0)
    used = resolve_weights("microflow-small").resolve()
    for attrs in (ds.attrs, prov):
        assert attrs["model_weights_sha256"] == sha256(used)
        assert attrs["model_weights_file"] == str(used)
        assert attrs["tile_core_px"] == 128 and attrs["halo_px"] == 32
        assert attrs["logtv_lambda"] == 0.05 and attrs["logtv_halo_px"] == 24
        assert attrs["ramp"] == "keep" and attrs["band"] == "band 1"
        assert attrs["flip_average"] is False
    assert prov["ramp_removed"] is False
    assert int(ds.complete.values[0]) == 1
    assert len(str(ds.pair_key.values[0])) == 64


def test_rerunning_the_same_pair_resumes_and_changed_inputs_are_refused(pair_cube, tmp_path,
                                                                       shifted_pair):
    path, _ = pair_cube
    before = xr.open_zarr(path)[["east", "valid"]].load()
    pre, post = shifted_pair
    same = _run("pair", str(pre), str(post), "--out", str(path), "--ramp", "keep",
                "--lambda", "0.05", "--denoise-halo", "24", *FAST, cwd=tmp_path)
    assert same.returncode == 0, same.stderr[-2000:]
    assert "finish: 0 of 4 blocks to compute (4 already in the cube)" in same.stderr
    xr.testing.assert_identical(xr.open_zarr(path)[["east", "valid"]].load(), before)
    # other pixels under the same file names (the first user report of issue 9)
    other = tmp_path / "b"
    other.mkdir()
    a, b = _shifted(-DX, DY)
    _write(other / "pre.tif", a), _write(other / "post.tif", b)
    res = _run("pair", str(other / "pre.tif"), str(other / "post.tif"), "--out", str(path),
               "--ramp", "keep", "--lambda", "0.05", "--denoise-halo", "24", *FAST,
               cwd=tmp_path)
    assert res.returncode == 1
    last = res.stderr.strip().splitlines()[-1]
    assert "--append" in last and "--overwrite" in last and "Traceback" not in res.stderr
    xr.testing.assert_identical(xr.open_zarr(path)[["east", "valid"]].load(), before)
    # other settings for the same files: refused too
    res = _run("pair", str(pre), str(post), "--out", str(path), *FAST, cwd=tmp_path)
    assert res.returncode == 1 and "--overwrite" in res.stderr.strip().splitlines()[-1]


def test_changed_inputs_are_refused_before_any_cluster_starts(pair_cube, tmp_path):
    """Other pixels under the cube's file names are refused without reaching for a Dask
    scheduler (here one that does not exist), so nothing starts only to be torn down."""
    path, _ = pair_cube
    other = tmp_path / "b"
    other.mkdir()
    a, b = _shifted(-DX, DY)
    cfg = _cfg(path, dask_address="tcp://127.0.0.1:9")
    src = geotiff_source(_write(other / "pre.tif", a), _write(other / "post.tif", b), cfg)
    with pytest.raises(PairExistsError, match=r"--append.*--overwrite"):
        process_pair(src, cfg, progress=False)


def _cfg(out: Path, **kw) -> RunConfig:
    settings = dict(out=str(out), tile=128, halo=32, quicklooks=False, ramp="keep")
    return RunConfig.from_flat(**{**settings, **kw})


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster, Client(cluster) as c:
        yield c


def test_the_flip_average_measures_the_shift_and_is_a_setting_of_its_own(shifted_pair,
                                                                          tmp_path, client):
    out = tmp_path / "c.zarr"
    pre, post = shifted_pair
    cfg = _cfg(out, flip_average=True)
    assert cfg.numbers_key() != _cfg(out).numbers_key()  # another pair identity
    process_pair(geotiff_source(pre, post, cfg), cfg, client=client, progress=False)
    ds = cube.open_cube(out).isel(pair=0)
    assert cube.pair_provenance(cube.open_cube(out), 0)["flip_average"] is True
    assert abs(float(np.nanmedian(ds.east.values)) - EAST) < 0.02 * EAST
    assert abs(float(np.nanmedian(ds.north.values)) - NORTH) < 0.02 * NORTH


def test_append_adds_a_pair_and_overwrite_replaces_it(shifted_pair, tmp_path, client):
    out = tmp_path / "c.zarr"
    pre, post = shifted_pair
    cfg = _cfg(out)
    first = process_pair(geotiff_source(pre, post, cfg), cfg, client=client, progress=False)
    east0 = float(np.nanmean(cube.open_cube(out).east.values[0]))
    from model.denoise import LogTVConfig
    from model.uncertainty import DEFAULT_MAX_SIGMA_PX

    prov = cube.pair_provenance(cube.open_cube(out), 0)  # the model's defaults, as numbers
    assert prov["logtv_lambda"] == LogTVConfig().lam and prov["logtv_epsilon"] == LogTVConfig().eps
    assert prov["max_sigma_px"] == DEFAULT_MAX_SIGMA_PX
    other = tmp_path / "b"
    other.mkdir()
    a, b = _shifted(-DX, DY)
    src = geotiff_source(_write(other / "pre.tif", a), _write(other / "post.tif", b), cfg)
    with pytest.raises(PairExistsError, match=r"--append.*--overwrite"):
        process_pair(src, cfg, client=client, progress=False)
    appended = process_pair(src, _cfg(out, if_exists="append"), client=client, progress=False)
    assert (first.index, appended.index) == (0, 1)
    ds = cube.open_cube(out)
    assert np.nanmean(ds.east.values[1]) < 0 < np.nanmean(ds.east.values[0])  # -DX vs DX
    # the appended pair's identity now resumes, whatever if_exists says
    again = process_pair(src, _cfg(out, if_exists="append"), client=client, progress=False)
    assert again.index == 1 and again.blocks_computed == 0
    # other settings for the same scene ids: overwrite replaces the latest such pair (1)
    cfg = _cfg(out, if_exists="overwrite", lam=0.1)
    replaced = process_pair(geotiff_source(pre, post, cfg), cfg, client=client,
                            progress=False)
    assert replaced.index == 1 and replaced.blocks_computed == 8
    ds = cube.open_cube(out)
    assert ds.sizes["pair"] == 2 and ds.complete.values.tolist() == [1, 1]
    assert cube.pair_provenance(ds, 1)["logtv_lambda"] == 0.1
    assert cube.pair_provenance(ds, 1)["pre_fingerprint"] == cube.pair_provenance(
        ds, 0)["pre_fingerprint"]
    assert abs(float(np.nanmean(ds.east.values[1])) - east0) < 0.5  # DX again, new λ


_FAULT: dict = {}


def _faulty(stack, **kw):
    """``infer_block`` with a fault injected in the ninth block it runs (one worker thread,
    so exactly one block of several fails). A block is written once it and its neighbours
    are inferred (the low-confidence neighbourhood rule needs their σ), so the fault comes
    after enough blocks for some to be written."""
    _FAULT["n"] += 1
    if _FAULT["n"] == 9:
        raise RuntimeError("injected fault")
    return _FAULT["real"](stack, **kw)


def test_a_failing_block_fails_the_run_and_stays_not_done(shifted_pair, tmp_path, client,
                                                         monkeypatch):
    import pipeline.graph

    out = tmp_path / "c.zarr"
    pre, post = shifted_pair
    cfg = _cfg(out, tile=64, halo=16)  # 4 x 4 blocks
    real = pipeline.graph.infer_block
    _FAULT.update(n=0, real=real)
    monkeypatch.setattr(pipeline.graph, "infer_block", _faulty)
    with pytest.raises(BlockFailedError) as err:
        process_pair(geotiff_source(pre, post, cfg), cfg, client=client, progress=False)
    message = str(err.value)
    assert "block (" in message and "rows" in message and "injected fault" in message
    assert "\n" not in message
    done = cube.done_blocks(out, 0, "measure")
    assert 0 < len(done) < 16, len(done)  # the failing block is not done
    assert cube.done_blocks(out, 0) == set()
    assert cube.pairs(out)[0].complete is False
    assert (cube.open_cube(out).valid.values == 0).all()  # nothing reads as measured
    monkeypatch.setattr(pipeline.graph, "infer_block", real)
    res = process_pair(geotiff_source(pre, post, cfg), cfg, client=client, progress=False)
    assert res.blocks_computed == (16 - len(done)) + 16  # the rest of measure, all of finish
    assert cube.pairs(out)[0].complete is True


def test_pair_command_with_failing_tiles_exits_1_with_one_line(shifted_pair, tmp_path):
    import torch
    from safetensors.torch import save_file

    from model.registry import read_metadata, resolve_weights

    bad = tmp_path / "broken.safetensors"  # a valid header, but no weights: fails on workers
    meta = read_metadata(resolve_weights("microflow-small"))
    save_file({"unrelated": torch.zeros(1)}, str(bad), metadata={"config": meta["config"]})
    pre, post = shifted_pair
    res = _run("pair", str(pre), str(post), "--out", str(tmp_path / "c.zarr"), "--weights",
               str(bad), *FAST, cwd=tmp_path)
    assert res.returncode == 1
    assert "Traceback" not in res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("microflow pair: error: block (") and "Missing key" in last, last


def test_nodata_is_nan_everywhere_and_its_surroundings_are_flagged_edge(tmp_path, client):
    pre, post = _shifted(DX, DY)
    post[:, :40] = 0  # uint16 DN 0: no data (no nodata tag needed)
    a = _write(tmp_path / "pre.tif", pre, nodata=None)
    b = _write(tmp_path / "post.tif", post, nodata=None)
    cfg = _cfg(tmp_path / "c.zarr", edge_margin=8, max_sigma=100.0)  # no low confidence
    process_pair(geotiff_source(a, b, cfg), cfg, client=client, progress=False)
    ds = cube.open_cube(tmp_path / "c.zarr").isel(pair=0)
    valid = ds.valid.values
    assert (valid[:, :40] == cube.NO_DATA).all()
    assert (valid[:, 40:48] == cube.EDGE).all()  # within 8 px of the gap
    assert (valid[20:-20, 60:-20] == cube.MEASURED).mean() > 0.95
    for name in ("east", "north", "east_raw", "north_raw"):
        values = ds[name].values
        assert np.isnan(values[valid != 1]).all(), name
        assert np.isfinite(values[valid == 1]).all(), name
    for name in ("east_sigma", "north_sigma"):  # issue 20: no data means NaN σ too
        assert np.isnan(ds[name].values[valid == cube.NO_DATA]).all(), name
        assert np.isfinite(ds[name].values[valid == 1]).all(), name


def test_several_bands_are_estimated_and_combined(tmp_path, client):
    pre, post = _shifted(DX, DY)
    pre2, post2 = 0.5 * pre + 400.0, 0.5 * post + 400.0  # another band, same motion
    for name, bands in (("pre", (pre, pre2)), ("post", (post, post2))):
        with rasterio.open(tmp_path / f"{name}.tif", "w", driver="GTiff", width=W, height=H,
                           count=2, dtype="uint16", crs="EPSG:32611", transform=T,
                           nodata=0) as dst:
            for k, band in enumerate(bands, 1):
                dst.write(np.clip(np.rint(band), 1, 65535).astype(np.uint16), k)
    cfg = _cfg(tmp_path / "c.zarr", bands=(1, 2))
    process_pair(geotiff_source(tmp_path / "pre.tif", tmp_path / "post.tif", cfg), cfg,
                 client=client, progress=False)
    ds = cube.open_cube(tmp_path / "c.zarr").isel(pair=0)
    assert ds.attrs["bands"] == ["1", "2"] and ds.attrs["band"] == "bands 1,2"
    valid = ds.valid.values == 1
    assert valid.mean() > 0.5
    assert abs(float(np.nanmean(ds.east_raw.values[valid])) - EAST) < 0.03 * EAST
    assert abs(float(np.nanmean(ds.north_raw.values[valid])) - NORTH) < 0.03 * NORTH
    assert np.isfinite(ds.east_sigma.values[valid]).all()


def test_only_transient_failures_are_retried():
    from pipeline.config import ConfigError
    from pipeline.errors import is_transient
    from pipeline.search import NoPairError, StacUnavailableError

    assert is_transient(TimeoutError("read timed out"))
    assert is_transient(StacUnavailableError("cannot open a STAC API at http://x: refused"))
    assert is_transient(OSError("HTTP response code: 503"))
    assert is_transient(RuntimeError("HTTP response code: 429 Too Many Requests"))
    assert not is_transient(OSError("HTTP response code: 404"))
    assert not is_transient(OSError("HTTP response code: 403 - Forbidden"))
    assert not is_transient(FileNotFoundError("no such file"))
    assert not is_transient(ConfigError("halo must be ..."))
    assert not is_transient(NoPairError("no grid has both"))
    assert not is_transient(ValueError("a bug"))
    try:
        raise BlockFailedError("block (0, 0) failed") from OSError("HTTP response code: 500")
    except BlockFailedError as e:
        assert is_transient(e)


@pytest.mark.parametrize("case", ["not a cube", "empty images"])
def test_unusable_output_or_inputs_fail_before_any_cluster_starts(tmp_path, case, monkeypatch):
    import pipeline.cluster

    def no_cluster(*args, **kwargs):
        raise AssertionError("a cluster was started")

    monkeypatch.setattr(pipeline.cluster, "dask_client", no_cluster)
    pre, post = _shifted(DX, DY)
    if case == "empty images":
        pre[:], post[:] = 0, 0
    a, b = _write(tmp_path / "pre.tif", pre), _write(tmp_path / "post.tif", post)
    out = tmp_path / "c.zarr"
    if case == "not a cube":
        out.mkdir()
        (out / "notes.txt").write_text("mine")
    cfg = _cfg(out)
    match = "not a displacement cube" if case == "not a cube" else "no valid pixel"
    with pytest.raises(ValueError, match=match):
        process_pair(geotiff_source(a, b, cfg), cfg)


def test_a_scene_whose_last_tile_is_narrower_than_the_halo(tmp_path, client):
    """300 px = 128 + 128 + 44, with a 64 px halo: Dask's overlap merges the last chunk into
    its neighbour, and the writer still gets whole cube chunks."""
    tex = _texture()
    rows, cols = np.mgrid[0:300, 0:300].astype(np.float64)
    pre = tex[16:316, 16:316]
    post = ndimage.map_coordinates(tex, [rows + 16 - DY, cols + 16 - DX], order=3,
                                   mode="reflect")
    paths = []
    for name, a in (("pre", pre), ("post", post)):
        with rasterio.open(tmp_path / f"{name}.tif", "w", driver="GTiff", width=300,
                           height=300, count=1, dtype="uint16", crs="EPSG:32611",
                           transform=T, nodata=0) as dst:
            dst.write(np.clip(np.rint(a), 1, 65535).astype(np.uint16), 1)
        paths.append(tmp_path / f"{name}.tif")
    cfg = _cfg(tmp_path / "c.zarr", halo=64)
    res = process_pair(geotiff_source(*paths, cfg), cfg, client=client, progress=False)
    assert res.blocks_computed == 18  # 3 x 3 blocks, two stages
    ds = cube.open_cube(tmp_path / "c.zarr").isel(pair=0)
    valid = ds.valid.values == 1
    assert valid[:, 256:].mean() > 0.5  # the narrow last column of blocks is measured
    assert abs(float(np.nanmean(ds.east_raw.values[valid])) - EAST) < 0.03 * EAST
