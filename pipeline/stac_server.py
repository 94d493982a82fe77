"""A real STAC API on loopback: ``rustac serve`` with its in-memory backend.

For the demo and the tests: the same pystac-client calls that query Earth Search query
this server. What rustac 0.2 implements (checked against its answers):

- core, collections, features and item search (GET and POST ``/search``, paged with
  ``next`` links): ``collections``, ``bbox``, ``datetime``, ``ids``, ``limit``;
- neither the *query* extension nor *filter* (CQL2) is advertised in ``conformsTo``, and
  a search that sends ``query`` or ``filter`` anyway answers 200 with **no** features,
  so a client must check conformance before using them.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from pathlib import Path
from types import TracebackType

from .stac_items import make_collection

READY_POLL_S = 0.05


def rustac_executable() -> str:
    """Path of the ``rustac`` command: beside the running Python first, then on PATH."""
    local = Path(sys.executable).with_name("rustac")
    if local.is_file():
        return str(local)
    found = shutil.which("rustac")
    if found is None:
        raise FileNotFoundError(
            f"the `rustac` command was found neither beside {sys.executable} nor on PATH; "
            "install it with `pip install rustac`")
    return found


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _terminate(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class LocalStacServer:
    """Serve ``items`` and ``collections`` (dicts) as a STAC API at ``self.url``.

    Use it as a context manager, or call ``start()`` and ``stop()``. The server is a
    child process (``rustac serve --addr 127.0.0.1:<port> <files>``) that keeps
    everything in memory; ``stop()`` (also on leaving the ``with`` block, when the body
    raises, and at interpreter exit) terminates it and deletes its files.

    Args:
        items: STAC item dicts, e.g. from ``stac_items.make_item``.
        collections: collection dicts. Collections that items refer to but that are not
            given are made from those items (``stac_items.make_collection``). Every item
            needs a ``collection`` (ValueError otherwise).
        port: TCP port on 127.0.0.1; by default a free one (chosen again if another
            process takes it first).
        timeout: seconds to wait for the API to answer after launching it.
    """

    def __init__(self, items: list[dict], collections: list[dict] | None = None,
                 port: int | None = None, timeout: float = 30.0) -> None:
        for item in items:
            if item.get("type") != "Feature" or not item.get("id") or not item.get("collection"):
                # rustac would serve it, but no collection search could ever find it
                raise ValueError(f"not a STAC item with an id and a collection: "
                                 f"{str(item)[:200]}")
        self.items = list(items)
        self.collections = list(collections or [])
        given = {c["id"] for c in self.collections}
        for cid in sorted({i["collection"] for i in self.items if i.get("collection")} - given):
            self.collections.append(
                make_collection(cid, [i for i in self.items if i.get("collection") == cid]))
        self._fixed_port = port
        self.port = port or 0
        self.timeout = timeout
        self._proc: subprocess.Popen | None = None
        self._dir: tempfile.TemporaryDirectory | None = None
        self._finalizer: weakref.finalize | None = None

    @property
    def url(self) -> str:
        """Root of the API, ``http://127.0.0.1:<port>`` (no trailing slash)."""
        if not self.port:
            raise RuntimeError("the server has not been started")
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _write_files(self, folder: Path) -> list[Path]:
        files = []
        for k, collection in enumerate(self.collections):
            path = folder / f"collection-{k}.json"
            path.write_text(json.dumps(collection))
            files.append(path)
        if self.items:
            path = folder / "items.json"
            path.write_text(json.dumps({"type": "FeatureCollection", "features": self.items}))
            files.append(path)
        return files

    def start(self) -> LocalStacServer:
        """Launch the server and wait until ``GET /`` answers 200."""
        if self.running:
            return self
        self._dir = tempfile.TemporaryDirectory(prefix="microflow-stac-")
        folder = Path(self._dir.name)
        files = self._write_files(folder)
        exe = rustac_executable()
        attempts = 1 if self._fixed_port else 3
        for attempt in range(attempts):
            self.port = self._fixed_port or free_port()
            if self._fixed_port and not _port_is_free(self.port):
                # else the readiness poll could take another server's answer for ours
                self.stop()
                raise RuntimeError(f"cannot serve on 127.0.0.1:{self.port}: the port is "
                                   "already in use")
            log_path = folder / f"server-{attempt}.log"
            with open(log_path, "wb") as log_file:
                self._proc = subprocess.Popen(
                    [exe, "serve", "--addr", f"127.0.0.1:{self.port}", *map(str, files)],
                    stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT)
            self._finalizer = weakref.finalize(self, _terminate, self._proc)
            exited = self._wait_until_ready()
            if not exited:
                return self
            self._finalizer()  # reap the exited process
            text = log_path.read_text(errors="replace").strip()
            if "in use" not in text.lower() or attempt == attempts - 1:
                code = self._proc.returncode
                self.stop()
                raise RuntimeError(f"`rustac serve` on 127.0.0.1:{self.port} exited with code "
                                   f"{code}:\n{text or '(no output)'}")
        raise AssertionError("unreachable")

    def _wait_until_ready(self) -> bool:
        """Poll the API; True if the process exited, False once it answers."""
        assert self._proc is not None
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                return True
            try:
                with urllib.request.urlopen(f"{self.url}/", timeout=1.0) as response:
                    if response.status == 200 and self._proc.poll() is None:
                        return False
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(READY_POLL_S)
        self.stop()
        raise TimeoutError(f"the STAC API at {self.url} did not answer within "
                           f"{self.timeout} s")

    def stop(self) -> None:
        """Terminate the server (kill it if it does not exit within 5 s); idempotent."""
        if self._finalizer is not None:
            self._finalizer()  # terminates the process, once
            self._finalizer = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def __enter__(self) -> LocalStacServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"LocalStacServer({len(self.items)} items, {self.port or 'no port'}, {state})"
