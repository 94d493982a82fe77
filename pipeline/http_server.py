"""A range-capable HTTP file server on loopback, so that COGs are read as from a cloud bucket.

Real catalogues (Earth Search) give ``https://…/B04.tif`` hrefs that GDAL reads with HTTP
range requests. :class:`RangeFileServer` serves a local folder the same way, so that the
tests, the benchmark and the demo exercise that path with nothing off the machine:

- ``GET`` and ``HEAD``, HTTP/1.1 with keep-alive (as GDAL's curl expects);
- ``Range: bytes=a-b`` (also ``a-`` and ``-n``) answers 206 with ``Content-Range``;
  several ranges answer one ``multipart/byteranges`` body; an unsatisfiable range 416;
- a missing file 404, a path outside the folder 403;
- an access log (:attr:`RangeFileServer.log`) to count requests and bytes;
- injectable faults: :meth:`RangeFileServer.fail_range_request` answers the n-th range
  request, and as many repeats of it as asked, with an error status, as a flaky object
  store does.

The server is a child process (``python pipeline/http_server.py FOLDER``, standard
library only), not a thread: rasterio holds the GIL while GDAL opens a file, so a server
thread in the reading process would never answer. The child appends one JSON line per
request to a log file, which the parent reads; faults are armed through a control path
(``/__microflow__/fail``) that is neither logged nor counted.
"""

from __future__ import annotations

import argparse
import json
import mimetypes
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
import weakref
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import IO, ClassVar
from urllib.parse import parse_qs, quote, unquote, urlsplit

_RANGE_UNIT = re.compile(r"^\s*bytes\s*=\s*(.+)$", re.IGNORECASE)
_COPY_BLOCK = 1 << 16
CONTROL = "/__microflow__/"


@dataclass(frozen=True)
class AccessRecord:
    """One answered request: ``method``, URL ``path``, the ``Range`` header as sent (None
    without one), the ``status`` answered and the body ``nbytes`` sent."""

    method: str
    path: str
    range: str | None
    status: int
    nbytes: int


class RangeNotSatisfiable(ValueError):
    """A ``Range`` header with no range inside the file."""


def parse_ranges(header: str, size: int) -> list[tuple[int, int]] | None:
    """Byte ranges ``[(first, last), …]`` (inclusive) of a ``Range`` header for a file of
    ``size`` bytes, clipped to the file; None when the header is not a valid ``bytes``
    range set (the whole file is then sent, as RFC 9110 allows).

    Raises RangeNotSatisfiable when no range overlaps the file.
    """
    m = _RANGE_UNIT.match(header)
    if not m:
        return None
    ranges: list[tuple[int, int]] = []
    for spec in m.group(1).split(","):
        first_text, sep, last_text = spec.strip().partition("-")
        if not sep:
            return None
        try:
            if first_text == "":  # suffix: the last n bytes
                n = int(last_text)
                if n <= 0:
                    continue
                first, last = max(size - n, 0), size - 1
            else:
                first = int(first_text)
                last = int(last_text) if last_text else size - 1
        except ValueError:
            return None
        if first >= size:  # (an open-ended "a-" past the end included)
            continue
        if last < first:
            return None
        ranges.append((first, min(last, size - 1)))
    if not ranges:
        raise RangeNotSatisfiable(header)
    return ranges


# -- the server (runs in the child process) ---------------------------------------------
class _RangeHandler(BaseHTTPRequestHandler):
    """GET/HEAD of files under ``root`` with byte ranges; see the module docstring."""

    root: ClassVar[Path]
    log_file: ClassVar[IO[str]]
    lock: ClassVar[threading.Lock] = threading.Lock()
    range_count: ClassVar[int] = 0
    faults: ClassVar[dict[int, tuple[int, int]]] = {}  # ordinal -> (status, times)
    failing: ClassVar[dict[tuple[str, str], tuple[int, int]]] = {}  # (path, range) -> same
    delay_s: ClassVar[float] = 0.0

    protocol_version = "HTTP/1.1"
    server_version = "MicroFlowRangeFileServer/1"

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        if self.path.startswith(CONTROL):
            self._control()
        else:
            self._serve(body=True)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet on stderr: the access log is the JSON-lines file."""

    def _record(self, status: int, nbytes: int) -> None:
        """Log before the headers go out, so that a client holding the answer (or only
        its status) finds its request in the log."""
        line = json.dumps({"method": self.command, "path": self.path,
                           "range": self.headers.get("Range"), "status": int(status),
                           "nbytes": int(nbytes)})
        with self.lock:
            self.log_file.write(line + "\n")
            self.log_file.flush()

    def _plain(self, status: int, text: str, record: bool = True) -> None:
        body = f"{int(status)} {text}\n".encode()
        send = self.command != "HEAD"
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        if record:
            self._record(status, len(body) if send else 0)
        self.end_headers()
        if send:
            self.wfile.write(body)

    def _control(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        if url.path == CONTROL + "fail":
            n, status = int(query.get("n", 1)), int(query.get("status", 500))
            times = int(query.get("times", 1))
            with self.lock:
                type(self).faults[type(self).range_count + n] = (status, times)
            self._plain(HTTPStatus.OK, f"range request +{n} will answer {status} "
                                       f"{times} time(s)", False)
        else:
            self._plain(HTTPStatus.NOT_FOUND, "unknown control", False)

    def _next_range_fault(self, range_header: str) -> int | None:
        """The status to fail this range request with, or None to answer it."""
        cls = type(self)
        key = (urlsplit(self.path).path, range_header)
        with self.lock:
            cls.range_count += 1
            if key in cls.failing:  # a repeat of a failed request
                status, left = cls.failing.pop(key)
            elif cls.range_count in cls.faults:
                status, left = cls.faults.pop(cls.range_count)
            else:
                return None
            if left > 1:
                cls.failing[key] = (status, left - 1)
            return status

    def _resolve(self) -> Path | None:
        """The file the URL names; None when it would leave ``root``."""
        rel = unquote(urlsplit(self.path).path).lstrip("/")
        p = (self.root / rel).resolve()
        return p if p.is_relative_to(self.root) else None

    def _serve(self, body: bool) -> None:
        if self.delay_s > 0:
            time.sleep(self.delay_s)
        path = self._resolve()
        if path is None:
            self._plain(HTTPStatus.FORBIDDEN, "outside the served folder")
            return
        if not path.is_file():
            self._plain(HTTPStatus.NOT_FOUND, "not found")
            return
        range_header = self.headers.get("Range")
        if range_header is not None:
            fault = self._next_range_fault(range_header)
            if fault is not None:
                self._plain(fault, "injected fault")
                return
        stat = path.stat()
        size = stat.st_size
        try:
            ranges = parse_ranges(range_header, size) if range_header else None
        except RangeNotSatisfiable:
            self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self._record(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, 0)
            self.end_headers()
            return
        ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        mtime = self.date_time_string(int(stat.st_mtime))
        with open(path, "rb") as f:
            if ranges is not None and len(ranges) > 1:
                self._send_multipart(f, ctype, mtime, ranges, size, body)
            else:
                self._send_one(f, ctype, mtime, ranges[0] if ranges else None, size, body)

    def _headers(self, status: int, ctype: str, mtime: str, length: int, body: bool,
                 content_range: str | None = None) -> None:
        """Send the headers of a file answer, logging it first."""
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Last-Modified", mtime)
        if content_range:
            self.send_header("Content-Range", content_range)
        self._record(status, length if body else 0)
        self.end_headers()

    def _send_one(self, f: IO[bytes], ctype: str, mtime: str, rng: tuple[int, int] | None,
                  size: int, body: bool) -> None:
        if rng is None:
            status, (first, last), content_range = HTTPStatus.OK, (0, size - 1), None
        else:
            (first, last), status = rng, HTTPStatus.PARTIAL_CONTENT
            content_range = f"bytes {first}-{last}/{size}"
        length = last - first + 1
        self._headers(status, ctype, mtime, length, body, content_range)
        if body:
            self._copy(f, first, length)

    def _send_multipart(self, f: IO[bytes], ctype: str, mtime: str,
                        ranges: list[tuple[int, int]], size: int, body: bool) -> None:
        boundary = uuid.uuid4().hex
        heads = [(f"\r\n--{boundary}\r\nContent-Type: {ctype}\r\n"
                  f"Content-Range: bytes {a}-{b}/{size}\r\n\r\n").encode() for a, b in ranges]
        tail = f"\r\n--{boundary}--\r\n".encode()
        length = sum(len(h) for h in heads) + sum(b - a + 1 for a, b in ranges) + len(tail)
        self._headers(HTTPStatus.PARTIAL_CONTENT, f"multipart/byteranges; boundary={boundary}",
                      mtime, length, body)
        if body:
            for head, (a, b) in zip(heads, ranges, strict=True):
                self.wfile.write(head)
                self._copy(f, a, b - a + 1)
            self.wfile.write(tail)

    def _copy(self, f: IO[bytes], offset: int, length: int) -> None:
        f.seek(offset)
        while length > 0:
            block = f.read(min(length, _COPY_BLOCK))
            if not block:
                break
            self.wfile.write(block)
            length -= len(block)


def serve_forever(root: Path, port: int, log_path: Path, delay_s: float = 0.0) -> None:
    """Serve ``root`` on ``127.0.0.1:port`` (0: any free port), appending the access log
    to ``log_path`` and answering each file request after ``delay_s`` seconds (a cloud
    store's first-byte latency); print ``serving <url>`` once listening. Runs until
    killed."""
    with open(log_path, "a", encoding="utf-8") as log_file:
        handler = type("Handler", (_RangeHandler,), {
            "root": root.resolve(), "log_file": log_file, "faults": {}, "failing": {},
            "delay_s": float(delay_s)})
        with ThreadingHTTPServer(("127.0.0.1", port), handler) as httpd:
            httpd.daemon_threads = True
            print(f"serving http://127.0.0.1:{httpd.server_address[1]}", flush=True)
            httpd.serve_forever(poll_interval=0.2)


# -- the controller (in the calling process) --------------------------------------------
def _terminate(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


class RangeFileServer:
    """Serve the files under ``root`` at ``http://127.0.0.1:<port>/<relative path>``.

    Use it as a context manager, or call ``start()`` and ``stop()`` (also run at
    interpreter exit). Args: ``root`` the folder served (nothing outside it is reachable);
    ``port`` a TCP port on 127.0.0.1, 0 (default) for a free one; ``delay_s`` seconds
    each file request waits before it is answered (a cloud store's latency; default 0);
    ``timeout`` seconds to wait for the child to listen.
    """

    def __init__(self, root: str | Path, port: int = 0, delay_s: float = 0.0,
                 timeout: float = 30.0) -> None:
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise NotADirectoryError(f"cannot serve {self.root}: not a folder")
        self._port_wanted = port
        self.delay_s = float(delay_s)
        self.timeout = timeout
        self._url: str | None = None
        self._proc: subprocess.Popen | None = None
        self._finalizer: weakref.finalize | None = None
        self._dir: tempfile.TemporaryDirectory | None = None
        self._log_start = 0

    def start(self) -> RangeFileServer:
        """Launch the child and wait until it listens; idempotent."""
        if self._proc is not None:
            return self
        self._dir = tempfile.TemporaryDirectory(prefix="microflow-http-")
        log_path = Path(self._dir.name) / "access.jsonl"
        log_path.touch()
        self._proc = subprocess.Popen(
            [sys.executable, "-I", __file__, str(self.root), "--port", str(self._port_wanted),
             "--log", str(log_path), "--delay", str(self.delay_s)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True)
        self._finalizer = weakref.finalize(self, _terminate, self._proc)
        line = self._first_line()
        if not line.startswith("serving "):
            rest = self._proc.stdout.read() if self._proc.stdout else ""
            self.stop()
            raise RuntimeError(f"the HTTP file server for {self.root} did not start:\n"
                               f"{line}{rest}".strip())
        self._url = line.split()[1]
        return self

    def _first_line(self) -> str:
        """The child's first output line, within ``timeout`` seconds."""
        assert self._proc is not None and self._proc.stdout is not None
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.append(self._proc.stdout.readline()),
                                  daemon=True)
        reader.start()
        reader.join(self.timeout)
        if not lines:
            self.stop()
            raise TimeoutError(f"the HTTP file server for {self.root} did not listen "
                               f"within {self.timeout} s")
        return lines[0]

    def stop(self) -> None:
        """Terminate the child (kill it if it does not exit in 5 s); idempotent."""
        if self._finalizer is not None:
            self._finalizer()
            self._finalizer = None
        self._proc = None
        self._url = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def __enter__(self) -> RangeFileServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>`` (no trailing slash)."""
        if self._url is None:
            raise RuntimeError("the server has not been started")
        return self._url

    def href(self, path: str | Path) -> str:
        """The URL of ``path``, a file under ``root`` (absolute, or relative to ``root``)."""
        p = Path(path)
        rel = (p if p.is_absolute() else self.root / p).resolve().relative_to(self.root)
        return f"{self.url}/{quote(rel.as_posix())}"

    def items(self, items: list[dict]) -> list[dict]:
        """STAC ``items`` (dicts) with every asset href, a local file under ``root``
        (absolute, or relative to the current directory), replaced by its URL on this
        server."""
        return [{**item, "assets": {name: {**a, "href": self.href(Path(a["href"]).resolve())}
                                    for name, a in item["assets"].items()}}
                for item in items]

    # -- log and faults -----------------------------------------------------------------
    def _all_records(self) -> list[AccessRecord]:
        if self._dir is None:
            raise RuntimeError("the server has not been started")
        text = (Path(self._dir.name) / "access.jsonl").read_text(encoding="utf-8")
        return [AccessRecord(**json.loads(line)) for line in text.splitlines() if line]

    @property
    def log(self) -> list[AccessRecord]:
        """Every request answered since start (or the last :meth:`reset_log`), in order."""
        return self._all_records()[self._log_start:]

    def reset_log(self) -> None:
        """Start the log afresh (faults already armed stay armed)."""
        self._log_start = len(self._all_records())

    def range_requests(self) -> list[AccessRecord]:
        """The logged requests that carried a ``Range`` header."""
        return [r for r in self.log if r.range is not None]

    def fail_range_request(self, n: int = 1, status: int = 500, times: int = 1) -> None:
        """Answer the ``n``-th range request from now (1 = the next one) with ``status``
        and a short text body; with ``times`` > 1, also the next ``times - 1`` requests
        for the same file and range (a client that retries at once meets the fault
        again)."""
        if n < 1 or times < 1 or not 400 <= status <= 599:
            raise ValueError(f"need n >= 1, times >= 1 and an error status, got n={n}, "
                             f"times={times}, status={status}")
        url = f"{self.url}{CONTROL}fail?n={n}&status={status}&times={times}"
        with urllib.request.urlopen(url, timeout=10) as answer:
            answer.read()

    def __repr__(self) -> str:
        return f"RangeFileServer({str(self.root)!r}, {self._url or 'stopped'})"


def main(argv: list[str] | None = None) -> None:
    """``python pipeline/http_server.py FOLDER [--port N] [--log FILE]``."""
    ap = argparse.ArgumentParser(description="Serve FOLDER over HTTP with byte ranges on "
                                             "127.0.0.1 until interrupted.")
    ap.add_argument("folder", type=Path)
    ap.add_argument("--port", type=int, default=0, help="0 (default): a free port")
    ap.add_argument("--log", type=Path, default=Path("access.jsonl"),
                    help="access log, one JSON line per request (default: %(default)s)")
    ap.add_argument("--delay", type=float, default=0.0,
                    help="seconds before each file request is answered (default: 0)")
    args = ap.parse_args(argv)
    if not args.folder.is_dir():
        ap.exit(2, f"not a folder: {args.folder}\n")
    try:
        serve_forever(args.folder, args.port, args.log, args.delay)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
