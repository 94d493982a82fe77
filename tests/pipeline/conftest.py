"""Shared fixtures for the pipeline tests: local STAC APIs and unreachable URLs."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from pipeline.stac_server import LocalStacServer, free_port


@pytest.fixture
def closed_port_url() -> str:
    """``http://127.0.0.1:<port>`` where nothing listens (connections are refused)."""
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture
def serve_stac() -> Iterator[Callable[..., LocalStacServer]]:
    """Factory: ``serve_stac(items, collections=None)`` starts a ``LocalStacServer`` that
    is stopped when the test ends, pass or fail."""
    servers: list[LocalStacServer] = []

    def serve(items: list[dict], collections: list[dict] | None = None) -> LocalStacServer:
        server = LocalStacServer(items, collections)
        servers.append(server)
        return server.start()

    yield serve
    for server in servers:
        server.stop()
