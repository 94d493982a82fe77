import os

from pipeline.cluster import IN_PROCESS_MAX_PX, dask_client
from pipeline.config import ClusterConfig


def _worker_pids(client) -> set[int]:
    return set(client.run(os.getpid).values())


def test_a_small_scene_runs_on_threads_in_this_process():
    with dask_client(ClusterConfig(workers=2), pixels=1024 * 1024) as c:
        assert _worker_pids(c) == {os.getpid()}
        assert sum(w["nthreads"] for w in c.scheduler_info()["workers"].values()) == 2


def test_a_large_scene_gets_worker_processes():
    with dask_client(ClusterConfig(workers=2), pixels=IN_PROCESS_MAX_PX + 1) as c:
        pids = _worker_pids(c)
        assert len(pids) == 2 and os.getpid() not in pids
