"""The Dask client a run uses: an existing scheduler, or a local cluster: threads in this
process for a small scene, worker processes for a large one."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from .config import ClusterConfig

log = logging.getLogger(__name__)

IN_PROCESS_MAX_PX = 2048 * 2048
"""Scenes up to this many pixels run on ``workers`` threads in the driver's process: no
worker processes to start, torch imported and the model loaded once. Larger ones get
worker processes, which keep a crashed block from taking the driver down."""


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
        cluster = LocalCluster(n_workers=1, threads_per_worker=cfg.workers, processes=False,
                               dashboard_address=":0", silence_logs=quiet)
        with cluster, Client(cluster) as c, _logger_level("distributed.worker", quiet):
            yield c
        return
    with _ignoring_sigint():  # worker processes inherit it: Ctrl-C is the driver's to handle
        cluster = LocalCluster(n_workers=cfg.workers, threads_per_worker=1, processes=True,
                               dashboard_address=":0", silence_logs=quiet)
    with cluster, Client(cluster) as c:
        yield c


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
