"""Shared fixtures for the pipeline tests: local STAC APIs, unreachable URLs, and a loopback
S3 API server (moto) with credentials and endpoint in the ``AWS_*`` environment."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

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


@dataclass
class S3Server:
    """A moto S3 server on 127.0.0.1:``port``; its buckets live in this process, so they
    survive :meth:`stop` and :meth:`start` (a server outage, not a data loss)."""

    port: int
    env: dict
    server: object = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        from moto.server import ThreadedMotoServer

        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()

    def stop(self) -> None:
        self.server.stop()

    def bucket(self) -> str:
        """A new, empty bucket."""
        import boto3

        name = f"cubes-{uuid.uuid4().hex[:12]}"
        boto3.client("s3", endpoint_url=self.endpoint).create_bucket(Bucket=name)
        return name

    def options(self) -> dict:
        """What a reader outside this project passes to ``xr.open_zarr``."""
        return {"key": self.env["AWS_ACCESS_KEY_ID"],
                "secret": self.env["AWS_SECRET_ACCESS_KEY"],
                "endpoint_url": self.endpoint,
                "client_kwargs": {"region_name": self.env["AWS_REGION"]}}


@pytest.fixture(scope="module")
def s3():
    port = free_port()
    env = {"AWS_ACCESS_KEY_ID": "microflow-test", "AWS_SECRET_ACCESS_KEY": "not-a-secret",
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_REGION": "us-east-1"}
    server = S3Server(port, env)
    server.start()
    with pytest.MonkeyPatch.context() as mp:
        for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN",
                     "AWS_DEFAULT_REGION"):
            mp.delenv(name, raising=False)
        for name, value in env.items():
            mp.setenv(name, value)
        yield server
    server.stop()
