"""A real STAC API server on loopback: ``rustac serve`` with its in-memory backend."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def _rustac() -> str:
    local = Path(sys.executable).with_name("rustac")
    if local.is_file():
        return str(local)
    found = shutil.which("rustac")
    if not found:
        raise RuntimeError("the `rustac` command is not installed (pip install rustac)")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalStacServer:
    """Serve ``collections`` and ``items`` (dicts) at ``self.url`` until stopped.

    Use as a context manager. The server is a child process (``rustac serve``); it is
    terminated on exit even when the body raises.
    """

    def __init__(self, items: list[dict], collections: list[dict] | None = None,
                 port: int | None = None, timeout: float = 30.0) -> None:
        self.items = items
        self.collections = collections or []
        self.port = port or _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.timeout = timeout
        self._proc: subprocess.Popen | None = None
        self._dir: tempfile.TemporaryDirectory | None = None

    def start(self) -> LocalStacServer:
        self._dir = tempfile.TemporaryDirectory(prefix="microflow-stac-")
        folder = Path(self._dir.name)
        files = []
        for k, c in enumerate(self.collections):
            files.append(folder / f"collection{k}.json")
            files[-1].write_text(json.dumps(c))
        if self.items:
            files.append(folder / "items.json")
            files[-1].write_text(json.dumps({"type": "FeatureCollection",
                                             "features": self.items}))
        log = open(folder / "server.log", "w")
        self._log = log
        cmd = [_rustac(), "serve", "--addr", f"127.0.0.1:{self.port}", *map(str, files)]
        if not self.collections:
            cmd.insert(2, "--create-collections")
        self._proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                text = (folder / "server.log").read_text()
                self.stop()
                raise RuntimeError(f"rustac serve exited with {self._proc.returncode}:\n{text}")
            try:
                with urllib.request.urlopen(f"{self.url}/collections", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"STAC server at {self.url} did not answer in {self.timeout} s")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if getattr(self, "_log", None) is not None:
            self._log.close()
            self._log = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def __enter__(self) -> LocalStacServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
