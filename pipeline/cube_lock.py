"""One writer at a time for a cube's metadata: creating it, adding or resetting a pair,
marking it complete, updating its provenance (block writes need no lock: each pair's
blocks are their own chunks).

The lock is ``<cube>/.microflow.lock``, a file or object that readers ignore.

- **Local folder**: ``fcntl.flock`` on the lock file. The kernel drops the lock when its
  process ends, killed or not, so a crashed writer never holds up the next run. The file
  stays (deleting a lock file races with the next ``open``); it holds the last holder's
  host, pid and time, for the message of a run that waits too long.
- **S3** (``s3://``): the lock object is created with a conditional PUT
  (``If-None-Match: *``: of several writers, exactly one creates it) and holds a lease
  (``ttl_s``) that a thread of the holder renews every ``ttl_s / 3`` (``If-Match`` its
  ETag). A lock whose lease is over by the server's clock (the response's ``Date`` minus
  the object's ``LastModified``) was left by a writer that died: the next writer deletes
  it with ``If-Match`` on its ETag, so of several that find it stale only one removes it,
  and none removes a newer lock. Released by a conditional delete.

A writer that cannot take the lock within ``wait_s`` raises :class:`CubeLockedError` with
one line naming the holder.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

from . import store as stores

log = logging.getLogger(__name__)

LOCK_NAME = ".microflow.lock"
"""The lock's name inside the cube (a file, or an S3 object)."""
LOCK_WAIT_S = 300.0
"""How long a writer waits for the lock before giving up (s); holders keep it seconds."""
LOCK_TTL_S = 60.0
"""S3 lease (s): a lock not renewed for this long is taken to be left by a dead writer."""
_POLL_S = (0.02, 1.0)  # first and longest pause between tries (s)
_held = threading.local()  # the cubes whose lock this thread holds


class CubeLockedError(RuntimeError):
    """Another writer held the cube's lock for longer than the wait allowed."""


def lock_path(path: str | Path) -> str | Path:
    """Where the lock of the cube at ``path`` lives."""
    return stores.join(path, LOCK_NAME)


def _holder() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(),
            "since": datetime.now(UTC).isoformat(timespec="seconds")}


def _describe(text: str) -> str:
    try:
        info = json.loads(text)
        return f"pid {info['pid']} on {info['host']} since {info['since']}"
    except (ValueError, KeyError, TypeError):
        return "another writer"


def _pauses(wait_s: float) -> Iterator[float]:
    """Pauses between tries, growing to ``_POLL_S[1]``, until ``wait_s`` has passed."""
    end = time.monotonic() + wait_s
    pause = _POLL_S[0]
    while time.monotonic() < end:
        yield pause
        time.sleep(min(pause, max(end - time.monotonic(), 0.0)))
        pause = min(pause * 1.5, _POLL_S[1])


@contextlib.contextmanager
def cube_lock(path: str | Path, *, wait_s: float = LOCK_WAIT_S,
              ttl_s: float = LOCK_TTL_S) -> Iterator[None]:
    """Hold the lock of the cube at ``path`` (a folder, created if missing, or an ``s3://``
    URL) for the ``with`` block. Raises :class:`CubeLockedError` after ``wait_s`` s.

    Re-entrant within a thread: a function holding the lock may call others that take it.
    """
    name = str(stores.normalize(path))
    held = _held.__dict__.setdefault("names", set())
    if name in held:
        yield
        return
    held.add(name)
    try:
        if stores.is_remote(path):
            with _s3_lock(path, wait_s, ttl_s):
                yield
        else:
            with _local_lock(Path(stores.normalize(path)), wait_s):
                yield
    finally:
        held.discard(name)


@contextlib.contextmanager
def _local_lock(folder: Path, wait_s: float) -> Iterator[None]:
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        for _ in _pauses(wait_s):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
        else:
            holder = _describe(os.pread(fd, 4096, 0).decode(errors="replace"))
            raise CubeLockedError(f"{folder} is locked by {holder}: waited {wait_s:.0f} s "
                                  "for it; try again when that run has ended")
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(_holder()).encode(), 0)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _s3(path: str | Path) -> tuple[Any, str, str]:
    """(s3fs filesystem, bucket, key) of the lock of the cube at ``path``."""
    fs, root = stores.filesystem(lock_path(path))
    bucket, _, key = root.partition("/")
    return fs, bucket, key


def _stale(fs: Any, bucket: str, key: str) -> tuple[str | None, str, float]:
    """``(etag or None if gone, holder text, age past its lease in s)`` of the lock object,
    by the server's clock."""
    try:
        head = fs.call_s3("head_object", Bucket=bucket, Key=key)
        text = fs.cat_file(f"{bucket}/{key}").decode(errors="replace")
    except FileNotFoundError:  # released meanwhile: try again
        return None, "", 0.0
    now = parsedate_to_datetime(head["ResponseMetadata"]["HTTPHeaders"]["date"])
    age = (now - head["LastModified"]).total_seconds()
    try:
        ttl = float(json.loads(text).get("ttl_s", LOCK_TTL_S))
    except (ValueError, AttributeError):
        ttl = LOCK_TTL_S
    return head["ETag"], text, age - ttl


class _Lease(threading.Thread):
    """Renews the S3 lock every ``ttl_s / 3`` s while it is held."""

    def __init__(self, fs: Any, bucket: str, key: str, etag: str, body: bytes, ttl_s: float):
        super().__init__(daemon=True, name="microflow-cube-lock-lease")
        self.fs, self.bucket, self.key, self.etag, self.body = fs, bucket, key, etag, body
        self.ttl_s = ttl_s
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.ttl_s / 3):
            try:
                out = self.fs.call_s3("put_object", Bucket=self.bucket, Key=self.key,
                                      Body=self.body, IfMatch=self.etag)
                self.etag = out["ETag"]
            except Exception as e:  # lost or unreachable: say so, the holder finishes
                log.warning("could not renew the lock %s/%s: %s", self.bucket, self.key, e)
                return


@contextlib.contextmanager
def _s3_lock(path: str | Path, wait_s: float, ttl_s: float) -> Iterator[None]:
    fs, bucket, key = _s3(path)
    body = json.dumps({**_holder(), "ttl_s": ttl_s, "owner": uuid.uuid4().hex}).encode()
    holder = ""
    for _ in _pauses(wait_s):
        try:
            out = fs.call_s3("put_object", Bucket=bucket, Key=key, Body=body, IfNoneMatch="*")
            break
        except FileExistsError:
            pass
        except OSError as e:  # some servers answer 409 to concurrent conditional PUTs
            if "conflict" not in str(e).lower():
                raise
        etag, holder, over = _stale(fs, bucket, key)
        if etag is not None and over > 0:
            log.warning("s3://%s/%s: breaking a lock left by %s (lease over by %.0f s)",
                        bucket, key, _describe(holder), over)
            with contextlib.suppress(OSError):
                fs.call_s3("delete_object", Bucket=bucket, Key=key, IfMatch=etag)
    else:
        raise CubeLockedError(f"{path} is locked by {_describe(holder)}: waited "
                              f"{wait_s:.0f} s for it; try again when that run has ended")
    lease = _Lease(fs, bucket, key, out["ETag"], body, ttl_s)
    lease.start()
    try:
        yield
    finally:
        lease.done.set()
        lease.join()
        with contextlib.suppress(OSError):
            fs.call_s3("delete_object", Bucket=bucket, Key=key, IfMatch=lease.etag)
