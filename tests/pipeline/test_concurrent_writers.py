"""Several writers on one cube at once, in separate processes, on a local folder and on a
loopback S3 server: cube creation and pair slots are atomic, each writer's pair is whole,
and a writer killed while it holds the cube's lock does not hold up the next one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from scipy import ndimage

from pipeline import cube
from pipeline.cube_lock import CubeLockedError, cube_lock, lock_path
from pipeline.demo import TEXTURE

H, W, C, RES = 70, 90, 32, 10.0  # 3x3 blocks, the last row/column partial
X = 500_000.0 + RES * (np.arange(W) + 0.5)
Y = 4_000_000.0 - RES * (np.arange(H) + 0.5)
WRITERS, ROUNDS = 4, 3
MICROFLOW = str(Path(sys.executable).with_name("microflow"))

# One writer: waits for a common start time, then does what a run does to the cube
# (create it if missing, add its pair, write every block, mark it complete) with values
# that say which writer it is. Prints its pair index.
WRITER = textwrap.dedent("""
    import sys, time
    import numpy as np
    from pipeline import cube
    path, k, start = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    H, W, C, RES = 70, 90, 32, 10.0
    x = 500_000.0 + RES * (np.arange(W) + 0.5)
    y = 4_000_000.0 - RES * (np.arange(H) + 0.5)
    time.sleep(max(0.0, start - time.time()))
    cube.create_cube(path, x=x, y=y, crs="EPSG:32611", chunk=C, attrs={"writer": k})
    i = cube.add_pair(path, pre_time="2020-01-01", post_time=f"2020-01-{2 + k:02d}",
                      pre_id="pre", post_id=f"post{k}", attrs={"writer": k}, key=f"key{k}")
    for r0 in range(0, H, C):
        for c0 in range(0, W, C):
            h, w = min(C, H - r0), min(C, W - c0)
            data = {n: np.full((h, w), k + j / 10, np.float32)
                    for j, n in enumerate(cube.DATA_VARS)}
            data["valid"] = np.full((h, w), 1, np.uint8)
            cube.write_block(path, i, r0, c0, data)
    cube.update_provenance(path, i, {"ramp_fit": {"mode": "keep", "writer": k}})
    cube.set_complete(path, i)
    print(i)
""")

# Takes the cube's lock, says so, and sleeps until it is killed.
HOLDER = textwrap.dedent("""
    import sys, time
    from pipeline.cube_lock import cube_lock
    with cube_lock(sys.argv[1], ttl_s=float(sys.argv[2])):
        print("held", flush=True)
        time.sleep(600)
""")


def _env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1",
                PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[2]),
                                            os.environ.get("PYTHONPATH", "")]))


def _start_together(script: str, args: list[list[str]]) -> list[subprocess.Popen]:
    """Start one process per argument list; each waits for the same start time, set late
    enough that all of them have imported everything before it."""
    start = time.time() + 8.0
    return [subprocess.Popen([sys.executable, "-c", script, *a, str(start)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=_env()) for a in args]


def _check_whole_pairs(path: str | Path, n: int) -> None:
    """``n`` complete pairs, each entirely from one writer, and no writer twice."""
    ds = cube.open_cube(path).load()
    assert ds.sizes["pair"] == n
    writers = []
    for i in range(n):
        k = int(str(ds.post_id.values[i]).removeprefix("post"))
        writers.append(k)
        for j, name in enumerate(cube.DATA_VARS):
            np.testing.assert_array_equal(ds[name].values[i], np.float32(k + j / 10),
                                          err_msg=f"pair {i} {name}")
        assert (ds.valid.values[i] == 1).all()
        prov = cube.pair_provenance(ds, i)
        assert prov["writer"] == k and prov["ramp_fit"]["writer"] == k
        assert str(ds.pair_key.values[i]) == f"key{k}"
        assert ds.post_time.values[i] == np.datetime64(f"2020-01-{2 + k:02d}", "ns")
    assert sorted(writers) == list(range(n))
    assert ds.complete.values.tolist() == [1] * n
    assert all(cube.done_blocks(path, i) == {(a, b) for a in range(3) for b in range(3)}
               for i in range(n))


def _run_writers(path: str | Path) -> None:
    procs = _start_together(WRITER, [[str(path), str(k)] for k in range(WRITERS)])
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    assert sorted(int(o) for o, _ in outs) == list(range(WRITERS))  # one slot each


@pytest.mark.parametrize("attempt", range(ROUNDS))
def test_writers_started_together_on_a_new_local_cube_each_get_a_whole_pair(
        tmp_path, attempt):
    path = tmp_path / "same.zarr"
    _run_writers(path)
    _check_whole_pairs(path, WRITERS)


@pytest.mark.parametrize("attempt", range(ROUNDS))
def test_writers_started_together_on_a_new_s3_cube_each_get_a_whole_pair(s3, attempt):
    url = f"s3://{s3.bucket()}/events/same.zarr"
    _run_writers(url)
    _check_whole_pairs(url, WRITERS)


def _holder(path: str | Path, ttl_s: float) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path), str(ttl_s)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env())
    line = proc.stdout.readline()
    assert line.strip() == "held", proc.stderr.read()[-3000:]
    return proc


def _kill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def test_a_writer_killed_holding_the_local_lock_does_not_hold_up_the_next(tmp_path):
    path = tmp_path / "c.zarr"
    holder = _holder(path, ttl_s=60)
    try:
        with pytest.raises(CubeLockedError) as err:  # alive: the next one waits, then says so
            with cube_lock(path, wait_s=1.0):
                pass
        message = str(err.value)
        assert "\n" not in message and f"pid {holder.pid}" in message, message
    finally:
        _kill(holder)
    t0 = time.monotonic()
    cube.create_cube(path, x=X, y=Y, crs="EPSG:32611", chunk=C, attrs={})
    assert cube.add_pair(path, pre_time=None, post_time=None, pre_id="a", post_id="b") == 0
    assert time.monotonic() - t0 < 10  # no wait for the dead holder
    assert cube.cube_exists(path)


def test_a_writer_killed_holding_the_s3_lock_does_not_hold_up_the_next(s3):
    url = f"s3://{s3.bucket()}/c.zarr"
    holder = _holder(url, ttl_s=3)  # a short lease: the test need not wait a minute
    try:
        time.sleep(4)  # past the lease, but alive and renewing it
        with pytest.raises(CubeLockedError, match=f"pid {holder.pid}"):
            with cube_lock(url, wait_s=2.0):
                pass
    finally:
        _kill(holder)
    from pipeline import store

    assert store.exists(lock_path(url))  # the dead writer's lock is still there
    t0 = time.monotonic()
    cube.create_cube(url, x=X, y=Y, crs="EPSG:32611", chunk=C, attrs={})
    assert cube.add_pair(url, pre_time=None, post_time=None, pre_id="a", post_id="b") == 0
    assert time.monotonic() - t0 < 30  # the lease ran out, the lock was broken
    assert not store.exists(lock_path(url))  # released after use


def test_a_creation_that_died_half_way_is_redone_by_the_next_writer(tmp_path):
    import shutil

    path = tmp_path / "c.zarr"
    cube.create_cube(path, x=X, y=Y, crs="EPSG:32611", chunk=C, attrs={})
    for name in (".zgroup", ".zmetadata", ".zattrs"):  # died before the root metadata
        (path / name).unlink()
    shutil.rmtree(path / "valid")
    assert not cube.cube_exists(path)
    assert not cube.check_target(path, x=X, y=Y, crs="EPSG:32611", chunk=C)  # free, not
    cube.create_cube(path, x=X, y=Y, crs="EPSG:32611", chunk=C, attrs={})  # "not a cube"
    assert cube.cube_exists(path) and cube.open_cube(path).sizes["pair"] == 0


def test_a_folder_with_other_files_is_still_refused_and_left_as_it_is(tmp_path):
    path = tmp_path / "c.zarr"
    path.mkdir()
    (path / ".microflow.lock").write_text("")
    (path / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not a displacement cube"):
        cube.create_cube(path, x=X, y=Y, crs="EPSG:32611", chunk=C, attrs={})
    assert sorted(p.name for p in path.iterdir()) == [".microflow.lock", "notes.txt"]


# ---------------------------------------------------------------------------------------
# the command itself: `microflow pair pre.tif postX.tif --out same.zarr [--append]`

PX = 128
SHIFTS = {"postA": (2.0, -1.5), "postB": (-1.0, 2.5)}  # (dx, dy) px of each post


def _write_tif(path: Path, array: np.ndarray) -> Path:
    with rasterio.open(path, "w", driver="GTiff", width=PX, height=PX, count=1,
                       dtype="uint16", crs="EPSG:32611", nodata=0,
                       transform=from_origin(600000.0, 4200000.0, RES, RES)) as dst:
        dst.write(np.clip(np.rint(array), 1, 65535).astype(np.uint16), 1)
    return path


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> dict[str, Path]:
    with rasterio.open(TEXTURE) as src:
        tex = src.read(1).astype(np.float64)
    d = tmp_path_factory.mktemp("scenes")
    rows, cols = np.mgrid[0:PX, 0:PX].astype(np.float64)
    out = {"pre": _write_tif(d / "pre.tif", tex[16:16 + PX, 16:16 + PX])}
    for name, (dx, dy) in SHIFTS.items():
        post = ndimage.map_coordinates(tex, [rows + 16 - dy, cols + 16 - dx], order=3,
                                       mode="reflect")
        out[name] = _write_tif(d / f"{name}.tif", post)
    return out


def _pair_commands(scenes: dict[str, Path], out: str | Path, *extra: str
                   ) -> list[subprocess.Popen]:
    """Both commands at once: they import, load and start their clusters side by side, so
    they reach the cube within a fraction of a second of each other."""
    return [subprocess.Popen(
        [MICROFLOW, "pair", str(scenes["pre"]), str(scenes[post]), "--out", str(out),
         "--tile", "64", "--halo", "16", "--ramp", "keep", "--workers", "1",
         "--no-quicklooks", "-q", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
        for post in SHIFTS]


def _check_cli_pairs(out: str | Path, procs: list[subprocess.Popen]) -> None:
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
    ds = cube.open_cube(out).load()
    assert sorted(str(v) for v in ds.post_id.values) == sorted(SHIFTS)
    assert ds.complete.values.tolist() == [1, 1]
    for i in range(2):
        post = str(ds.post_id.values[i])
        dx, dy = SHIFTS[post]
        prov = cube.pair_provenance(ds, i)
        assert Path(prov["post_file"]).name == f"{post}.tif"  # its own provenance...
        ok = ds.valid.values[i] == 1
        assert ok.mean() > 0.5
        for name, expected in (("east_raw", dx * RES), ("north_raw", -dy * RES)):
            values = ds[name].values[i]
            assert np.isfinite(values[ok]).all() and np.isnan(values[~ok]).all()
            # ...and its own field, in both components (a mixed pair fails one)
            assert abs(np.median(values[ok]) - expected) < 0.2 * RES, (post, name)


@pytest.mark.parametrize("append", [True, False], ids=["append", "no-append"])
def test_pair_commands_started_together_on_a_new_local_cube_both_succeed(
        scenes, tmp_path, append):
    out = tmp_path / "same.zarr"
    _check_cli_pairs(out, _pair_commands(scenes, out, *(["--append"] if append else [])))


@pytest.mark.slow  # about 2 min on 2 busy cores; the S3 writers above run by default
def test_pair_commands_started_together_on_a_new_s3_cube_both_succeed(s3, scenes, tmp_path):
    url = f"s3://{s3.bucket()}/same.zarr"
    _check_cli_pairs(url, _pair_commands(scenes, url, "--append"))
