"""Prefect flows on real Dask processes on loopback, with faults injected."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from pipeline import cube as cubes
from pipeline.demo import EVENT_TIME, build_demo_event
from pipeline.stac_items import make_collection
from pipeline.stac_server import LocalStacServer

SIZE = (256, 256)
PROC = dict(tile=128, halo=32)  # 2 x 2 blocks


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    event = build_demo_event(tmp_path_factory.mktemp("demo"), size=SIZE)
    with LocalStacServer(event.items, [make_collection("sentinel-2-l2a", event.items)]) as s:
        yield {"stac_url": s.url, "bbox": list(event.bbox), "event_time": EVENT_TIME.isoformat(),
               "days_before": 30, "days_after": 30}


def _flow_kwargs(demo, out, **kw):
    return {**demo, **PROC, "out": str(out), "quicklooks": False, **kw}


def _data(path):
    """Variables, coordinates and their attributes (not the run's `created` time)."""
    ds = xr.open_zarr(path, decode_coords="all")[[*cubes.DATA_VARS, "valid"]].load()
    ds.attrs = {}
    return ds.drop_vars("provenance")  # holds the run's `created` time too


@pytest.fixture(scope="module")
def reference(demo, tmp_path_factory, prefect_api):
    from flows.earthquake_response import earthquake_response

    out = tmp_path_factory.mktemp("ref") / "ref.zarr"
    summary = earthquake_response(**_flow_kwargs(demo, out, workers=1))
    assert summary["cubes"] == [str(out)]
    return out


def test_flow_writes_a_cube_with_provenance(reference):
    ds = xr.open_zarr(reference, decode_coords="all")
    assert ds.rio.crs.to_epsg() == 32621
    for key in ("software_version", "model_name", "model_weights_sha256", "model_iterations",
                "tile_core_px", "halo_px", "logtv_lambda", "logtv_epsilon", "band",
                "search_stac_url", "search_event_time", "created"):
        assert key in ds.attrs, key
    assert str(ds.pre_id.values[0]) == "DEMO_PRE_20200518"
    assert int(ds.valid.sum()) > 0.9 * ds.valid.size


class Cluster:
    """A real `dask scheduler` and `dask worker` processes on 127.0.0.1."""

    def __init__(self, tmp: Path, workers: list[list[str]]):
        from pipeline.stac_server import free_port

        port = free_port()
        self.address = f"tcp://127.0.0.1:{port}"
        dask = str(Path(sys.executable).with_name("dask"))
        env = dict(os.environ, OMP_NUM_THREADS="1")
        self.procs = [subprocess.Popen(
            [dask, "scheduler", "--host", "127.0.0.1", "--port", str(port),
             "--no-dashboard"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)]
        for k, extra in enumerate(workers):
            self.procs.append(subprocess.Popen(
                [dask, "worker", self.address, "--nthreads", "1", "--name", f"w{k}",
                 "--no-dashboard", "--local-directory", str(tmp / f"w{k}"), *extra],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env))
        from distributed import Client

        self.client = Client(self.address, timeout="30s")
        self.client.wait_for_workers(len(workers), timeout=60)

    def close(self):
        self.client.close()
        for p in reversed(self.procs):
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


def test_external_scheduler_runs_inference_and_log_tv_on_the_gpu_worker(
        demo, reference, tmp_path, prefect_api):
    from distributed import get_task_stream

    from flows.earthquake_response import earthquake_response

    cluster = Cluster(tmp_path, [["--resources", "GPU=1"], []])
    try:
        names = {w["name"]: a for a, w in cluster.client.scheduler_info()["workers"].items()}
        out = tmp_path / "ext.zarr"
        with get_task_stream(cluster.client) as ts:
            earthquake_response(**_flow_kwargs(demo, out, dask_address=cluster.address))
        for stage in ("microflow-infer", "logtv-denoise"):  # the model and log-TV
            tasks = [t for t in ts.data if stage in str(t["key"])]
            assert tasks, f"no {stage} task seen"
            assert {t["worker"] for t in tasks} == {names["w0"]}, stage
    finally:
        cluster.close()
    xr.testing.assert_identical(_data(out), _data(reference))


def test_killing_a_worker_mid_inference_still_gives_the_same_cube(demo, reference, tmp_path,
                                                                  prefect_api):
    import threading

    from distributed import get_task_stream

    from flows.earthquake_response import earthquake_response

    cluster = Cluster(tmp_path, [[], []])
    out = tmp_path / "killed.zarr"
    result: dict = {}

    def run():
        try:
            result["summary"] = earthquake_response(
                **_flow_kwargs(demo, out, dask_address=cluster.address))
        except Exception as e:  # surfaced below
            result["error"] = e

    try:
        pids = cluster.client.run(os.getpid)
        with get_task_stream(cluster.client) as ts:
            t = threading.Thread(target=run)
            t.start()
            victim = None
            deadline = time.monotonic() + 120
            while victim is None and time.monotonic() < deadline:
                busy = cluster.client.run_on_scheduler(
                    lambda dask_scheduler: [(ts_.processing_on.address, ts_.key) for ts_ in
                                            dask_scheduler.tasks.values()
                                            if ts_.state == "processing"
                                            and "microflow-infer" in str(ts_.key)])
                if busy:
                    victim = busy[0][0]
                time.sleep(0.2)
            assert victim, "inference never started"
            os.kill(pids[victim], signal.SIGKILL)
            t.join(timeout=300)
        assert "error" not in result, result.get("error")
        keys = [str(x["key"]) for x in ts.data if "microflow-infer" in str(x["key"])]
        print(f"inference tasks run: {len(keys)}, distinct: {len(set(keys))}")
    finally:
        cluster.close()
    xr.testing.assert_identical(_data(out), _data(reference))


def test_killing_the_flow_mid_write_then_rerunning_completes_the_same_cube(
        demo, reference, tmp_path, prefect_api):
    out = tmp_path / "resumed.zarr"
    args = [str(Path(sys.executable).with_name("microflow")), "event",
            "--stac-url", demo["stac_url"], "--collection", "sentinel-2-l2a", "--asset", "red",
            "--bbox", *map(str, demo["bbox"]), "--event-time", demo["event_time"],
            "--days-before", "30", "--days-after", "30", "--out", str(out), "--workers", "1",
            "--tile", "128", "--halo", "32", "--quiet"]
    env = dict(os.environ, PREFECT_API_URL=prefect_api)
    proc = subprocess.Popen(args, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    done = set()
    while time.monotonic() < deadline and proc.poll() is None:
        try:  # the first stage: inference, the slow one
            done = cubes.done_blocks(out, 0, "measure") if cubes.cube_exists(out) else set()
        except (FileNotFoundError, KeyError, ValueError):  # the cube is being created
            done = set()
        if done:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the flow and its local Dask workers
    proc.wait()
    assert 0 < len(done) < 4, f"kill came too late or too early: {len(done)} blocks"
    res = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    resumed = [line for line in res.stderr.splitlines()
               if "measure" in line and "already in the cube" in line]
    import re

    assert resumed, res.stderr[-2000:]
    skipped = int(re.search(r"\((\d+) already in the cube\)", resumed[0]).group(1))
    assert len(done) <= skipped < 4  # blocks finished before the kill are not recomputed
    print(f"killed after {len(done)} of 4 blocks; rerun: {resumed[0].split(': ', 1)[-1]}")
    xr.testing.assert_identical(_data(out), _data(reference))


@pytest.mark.parametrize("bad, message", [
    (dict(bbox=[10, 0, 5, 1]), "W < E"),
    (dict(bbox=None), "exactly one of bbox"),
    (dict(event_time="not-a-date"), "ISO 8601"),
    (dict(max_cloud=150), "percentage"),
    (dict(halo=500), "halo"),
    (dict(stac_url="ftp://x"), "http"),
])
def test_bad_parameters_fail_before_any_work(demo, tmp_path, prefect_api, bad, message):
    from flows.earthquake_response import earthquake_response

    out = tmp_path / "never.zarr"
    with pytest.raises(ValueError, match=message):
        earthquake_response(**_flow_kwargs(demo, out, **bad))
    assert not out.exists()


def test_region_processes_each_event_and_skips_finished_ones(demo, tmp_path, prefect_api):
    from flows.region import region

    events = [{"name": "a", "event_time": demo["event_time"], "bbox": demo["bbox"]},
              {"name": "b", "event_time": demo["event_time"], "bbox": demo["bbox"]}]
    common = dict(stac_url=demo["stac_url"], days_before=30, days_after=30, **PROC,
                  workers=1)
    first = region(events=events, out_dir=str(tmp_path), **common)
    assert first["done"] == ["a", "b"] and (tmp_path / "a.zarr").exists()
    again = region(events=events, out_dir=str(tmp_path), **common)
    assert again["skipped"] == ["a", "b"] and again["done"] == []
    np.testing.assert_array_equal(_data(tmp_path / "a.zarr").east.values,
                                  _data(tmp_path / "b.zarr").east.values)


def test_event_command_with_nothing_to_find_fails_in_one_line(demo, tmp_path, prefect_api):
    args = [str(Path(sys.executable).with_name("microflow")), "event",
            "--stac-url", demo["stac_url"], "--bbox", "10", "45", "10.1", "45.1",
            "--event-time", demo["event_time"], "--out", str(tmp_path / "x.zarr")]
    env = dict(os.environ, PREFECT_API_URL=prefect_api)
    res = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 1
    assert "Traceback" not in res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "no scene found" in lines[0], lines
    assert not (tmp_path / "x.zarr").exists()
