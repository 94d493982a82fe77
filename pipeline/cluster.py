"""The Dask client a run uses: an existing scheduler, or a local cluster: threads in this
process for a small scene, worker processes for a large one."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

from .config import ClusterConfig

log = logging.getLogger(__name__)

IN_PROCESS_MAX_PX = 2048 * 2048
"""Scenes up to this many pixels run on ``workers`` threads in the driver's process: no
worker processes to start, torch imported and the model loaded once. Larger ones get
worker processes, which keep a crashed block from taking the driver down."""

ALLOCATOR_ENV = {
    "MALLOC_TRIM_THRESHOLD_": str(256 << 20),
    "MALLOC_TOP_PAD_": str(64 << 20),
    "MALLOC_MMAP_THRESHOLD_": str(32 << 20),
    "MALLOC_ARENA_MAX": "1",
    "THP_MEM_ALLOC_ENABLE": "1",
}
"""glibc and torch allocator settings of the local worker processes. Dask's nanny sets
``MALLOC_TRIM_THRESHOLD_=64 KiB`` by default, so glibc hands freed memory back to the
kernel after every large temporary and the next block faults it in again, page by page
(about 2 s of system time per 512² block against 3 s of user time). Here freed memory up
to 256 MiB stays in the heap (the peak RSS is reached in the first blocks and stays flat),
buffers up to 32 MiB come from the heap, not from ``mmap``, the single task thread uses
the main arena, and torch's buffers above 2 MiB are on transparent huge pages. Setting
the environment variable ``MICROFLOW_ALLOCATOR=dask`` keeps Dask's default (for
before/after measurements, see ``docs/speed.md``)."""

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3  # glibc <malloc.h>


def allocator_env() -> dict[str, str]:
    """The environment the local worker processes start with: :data:`ALLOCATOR_ENV` (none
    with ``MICROFLOW_ALLOCATOR=dask``) on top of Dask's ``pre-spawn-environ``."""
    import dask

    env = {k: str(v) for k, v in dask.config.get("distributed.nanny.pre-spawn-environ",
                                                 {}).items()}
    if os.environ.get("MICROFLOW_ALLOCATOR", "") != "dask":
        env.update(ALLOCATOR_ENV)
    return env


def tune_this_process() -> bool:
    """Apply :data:`ALLOCATOR_ENV`'s glibc thresholds to this running process with
    ``mallopt`` (the in-process threads; torch's huge-page setting is read only at start).
    Returns whether it did: False off glibc or with ``MICROFLOW_ALLOCATOR=dask``."""
    import ctypes

    if os.environ.get("MICROFLOW_ALLOCATOR", "") == "dask":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (macOS, musl without mallopt)
        return False
    ok = True
    for opt, name in ((_M_TRIM_THRESHOLD, "MALLOC_TRIM_THRESHOLD_"),
                      (_M_TOP_PAD, "MALLOC_TOP_PAD_"),
                      (_M_MMAP_THRESHOLD, "MALLOC_MMAP_THRESHOLD_")):
        ok &= bool(mallopt(ctypes.c_int(opt), ctypes.c_int(int(ALLOCATOR_ENV[name]))))
    return ok


@contextmanager
def dask_client(cfg: ClusterConfig, client=None, pixels: int | None = None) -> Iterator:
    """``client`` if given; else a ``distributed.Client`` to ``cfg.dask_address``, or to a
    new ``LocalCluster`` (closed on exit): ``cfg.workers`` threads in this process when
    the scene has at most :data:`IN_PROCESS_MAX_PX` ``pixels``, else ``cfg.workers``
    single-threaded processes."""
    from distributed import Client, LocalCluster

    if client is not None:
        yield client
        return
    if cfg.dask_address:
        try:
            c = Client(cfg.dask_address, timeout="20s")
        except OSError as e:
            raise OSError(f"cannot reach the Dask scheduler at {cfg.dask_address}: {e}") from None
        try:
            yield c
        finally:
            c.close()
        return
    # a failing block is reported once, by the writer; the workers' own report of it
    # (with its traceback) only with debug logging (microflow -v)
    quiet = logging.CRITICAL if not logging.getLogger().isEnabledFor(logging.DEBUG) \
        else logging.WARNING
    # ":0": any free port for the scheduler's HTTP routes (no dashboard without bokeh),
    # instead of a warning whenever another cluster holds 8787
    if pixels is not None and pixels <= IN_PROCESS_MAX_PX:
        log.debug("%d px: %d threads in this process", pixels, cfg.workers)
        tune_this_process()
        cluster = LocalCluster(n_workers=1, threads_per_worker=cfg.workers, processes=False,
                               dashboard_address=":0", silence_logs=quiet)
        with cluster, Client(cluster) as c, _logger_level("distributed.worker", quiet):
            yield c
        return
    import dask

    # worker processes inherit SIGINT's handler: Ctrl-C is the driver's to handle
    with _ignoring_sigint(), _environ_restored(), dask.config.set(
            {"distributed.nanny.pre-spawn-environ": allocator_env()}):
        cluster = LocalCluster(n_workers=cfg.workers, threads_per_worker=1, processes=True,
                               dashboard_address=":0", silence_logs=quiet)
    with cluster, Client(cluster) as c:
        yield c


@contextmanager
def _environ_restored() -> Iterator[None]:
    """This process's environment as it was before the block: Dask's nanny writes the
    workers' ``pre-spawn-environ`` into it for good, and the driver's own later children
    should not inherit the workers' allocator settings."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@contextmanager
def _logger_level(name: str, level: int) -> Iterator[None]:
    """``name``'s logger at ``level`` at least, for the block (restored after)."""
    logger = logging.getLogger(name)
    old = logger.level
    logger.setLevel(max(level, logger.getEffectiveLevel()))
    try:
        yield
    finally:
        logger.setLevel(old)


@contextmanager
def _ignoring_sigint() -> Iterator[None]:
    """SIGINT ignored while worker processes start, so that a Ctrl-C (sent to the whole
    process group by a terminal) stops the driver cleanly instead of printing a
    traceback from every worker; the driver then closes the cluster."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def _peak_rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def log_worker_memory(client) -> None:
    """Log each Dask worker's peak RSS (memory is bounded by tiles, not scenes)."""
    try:
        peaks = client.run(_peak_rss_mib)
    except Exception:  # workers gone: nothing to report
        return
    for addr, mib in sorted(peaks.items()):
        log.info("worker peak RSS %.1f MiB (%s)", mib, addr)
