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


def _allocator_env() -> dict:
    from pipeline.cluster import ALLOCATOR_ENV

    return {k: os.environ.get(k) for k in (*ALLOCATOR_ENV, "OMP_NUM_THREADS")}


def test_worker_processes_keep_freed_memory_instead_of_dasks_64_kib_trim(monkeypatch):
    from pipeline.cluster import ALLOCATOR_ENV

    monkeypatch.delenv("MICROFLOW_ALLOCATOR", raising=False)
    with dask_client(ClusterConfig(workers=1), pixels=IN_PROCESS_MAX_PX + 1) as c:
        (env,) = c.run(_allocator_env).values()
    assert env == {**ALLOCATOR_ENV, "OMP_NUM_THREADS": "1"}  # Dask's thread caps kept


def test_microflow_allocator_dask_keeps_dasks_worker_defaults(monkeypatch):
    monkeypatch.setenv("MICROFLOW_ALLOCATOR", "dask")
    with dask_client(ClusterConfig(workers=1), pixels=IN_PROCESS_MAX_PX + 1) as c:
        (env,) = c.run(_allocator_env).values()
    assert env["MALLOC_TRIM_THRESHOLD_"] == "65536"
    assert env["MALLOC_MMAP_THRESHOLD_"] is None and env["THP_MEM_ALLOC_ENABLE"] is None


def test_this_process_thresholds_are_set_on_glibc():
    import platform

    from pipeline.cluster import tune_this_process

    assert tune_this_process() == (platform.system() == "Linux"
                                   and platform.libc_ver()[0] == "glibc")
