"""Where a cube lives: a local folder or an S3 URL (``s3://bucket/prefix/cube.zarr``).

The one place that turns a cube location into what zarr, xarray and fsspec take. Local
paths stay plain paths (zarr's ``LocalStore``, exactly as before). ``s3://`` URLs go
through zarr's ``FsspecStore`` over s3fs; every access builds its options from the
standard environment, so Dask workers in other processes reach the same bucket:

- ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY`` (and ``AWS_SESSION_TOKEN``), or any
  other source of botocore's credential chain (profile, instance role);
- ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``: an S3-compatible server (MinIO, Ceph,
  a loopback test server); unset means AWS;
- ``AWS_REGION`` or ``AWS_DEFAULT_REGION``.

Nothing is hard-coded and nothing is cached across calls but s3fs's own client, so a
rerun or another process sees the bucket as it is now (``use_listings_cache=False``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

REMOTE_SCHEMES = ("s3",)
"""URL schemes a cube may be written to (besides local paths and ``file://``)."""


def scheme(path: str | Path) -> str:
    """The URL scheme of ``path`` in lower case, ``""`` for a plain path."""
    text = str(path)
    return text.split("://", 1)[0].lower() if "://" in text else ""


def is_remote(path: str | Path) -> bool:
    """Whether ``path`` is an object-store URL rather than a local path."""
    return scheme(path) not in ("", "file")


def check_location(path: str | Path) -> None:
    """Raise ValueError (one line) for a cube location that cannot work.

    Catches what would otherwise write somewhere unexpected: an unsupported scheme, an
    ``s3://`` URL without a bucket or key, and ``s3:/...`` or ``s3:bucket/...`` (a local
    folder named ``s3:``: a typo of ``s3://``).
    """
    text = str(path).strip()
    kind = scheme(text)
    if not kind:
        for head in REMOTE_SCHEMES:
            if text.lower().startswith(f"{head}:"):
                raise ValueError(f"{text!r} is not a URL (it would be a local path starting "
                                 f"{text[:len(head) + 1]}); write "
                                 f"{head}://bucket/prefix/cube.zarr")
        return
    if kind == "file":
        return
    if kind not in REMOTE_SCHEMES:
        raise ValueError(f"{text!r}: unsupported URL scheme {kind}://; use a local path or "
                         f"{' or '.join(s + '://' for s in REMOTE_SCHEMES)}")
    bucket, _, key = text.split("://", 1)[1].partition("/")
    if not bucket or not key.strip("/"):
        raise ValueError(f"{text!r} needs a bucket and a key: {kind}://bucket/prefix/cube.zarr")


def normalize(path: str | Path) -> str | Path:
    """A URL as a string without trailing ``/``; ``file://`` and plain paths as an
    absolute Path, ``..`` resolved (Dask workers may run in another directory than the
    caller)."""
    text = str(path)
    if is_remote(text):
        return text.rstrip("/")
    if scheme(text) == "file":
        return Path(os.path.abspath(text.split("://", 1)[1]))
    return Path(os.path.abspath(path))


def storage_options(path: str | Path) -> dict[str, Any]:
    """fsspec options for ``path`` from the environment (empty for a local path)."""
    if scheme(path) != "s3":
        return {}
    opts: dict[str, Any] = {"use_listings_cache": False}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        opts["endpoint_url"] = endpoint
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        opts["client_kwargs"] = {"region_name": region}
    return opts


def zarr_store(path: str | Path, *, read_only: bool = False) -> Any:
    """What ``zarr.open_*`` and ``xarray`` take for the cube: the local path as a string,
    or a ``zarr.storage.FsspecStore`` on the URL."""
    if not is_remote(path):
        return str(normalize(path))
    from zarr.storage import FsspecStore

    url = str(normalize(path))
    return FsspecStore.from_url(url, storage_options=storage_options(url), read_only=read_only)


def filesystem(path: str | Path) -> tuple[Any, str]:
    """``(fsspec filesystem, path inside it)`` for ``path`` (synchronous API)."""
    from fsspec.core import url_to_fs

    target = normalize(path)
    return url_to_fs(str(target), **storage_options(target))


def holds_anything(path: str | Path) -> bool:
    """Whether any object is stored under the URL's prefix (``path`` itself included)."""
    fs, root = filesystem(path)
    try:
        return bool(fs.find(root, maxdepth=None)) or fs.isfile(root)
    except FileNotFoundError:
        return False


def check_bucket(path: str | Path) -> None:
    """Raise ValueError (one line) when the URL's bucket does not exist or cannot be
    listed with these credentials and endpoint; a plain path passes."""
    if not is_remote(path):
        return
    fs, root = filesystem(path)
    bucket = root.split("/", 1)[0]
    where = storage_options(path).get("endpoint_url", "the default S3 endpoint")
    try:
        fs.ls(bucket, detail=False)
    except FileNotFoundError:
        raise ValueError(f"bucket {bucket!r} of {path} does not exist at {where}") from None
    except PermissionError as e:
        raise ValueError(f"bucket {bucket!r} of {path}: access denied at {where} ({e}); "
                         "check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY") from None


def join(base: str | Path, name: str) -> str | Path:
    """``base/name`` for a folder or a URL prefix."""
    base = normalize(base)
    return f"{base}/{name}" if isinstance(base, str) else base / name


def name(path: str | Path) -> str:
    """The last component of a path or URL (``cube.zarr``)."""
    target = normalize(path)
    return target.rsplit("/", 1)[-1] if isinstance(target, str) else target.name


def with_name(path: str | Path, new: str) -> str | Path:
    """``path`` with its last component replaced by ``new``."""
    target = normalize(path)
    if isinstance(target, str):
        return f"{target.rsplit('/', 1)[0]}/{new}"
    return target.with_name(new)


def exists(path: str | Path) -> bool:
    """Whether a file (or object) is at ``path``."""
    if not is_remote(path):
        return Path(normalize(path)).is_file()
    fs, root = filesystem(path)
    return fs.isfile(root)


def read_text(path: str | Path) -> str:
    """The text of a small file or object."""
    if not is_remote(path):
        return Path(normalize(path)).read_text()
    fs, root = filesystem(path)
    return fs.cat_file(root).decode()


def write_text(path: str | Path, text: str) -> None:
    """Write a small file or object (one PUT on S3)."""
    if not is_remote(path):
        Path(normalize(path)).write_text(text)
        return
    fs, root = filesystem(path)
    fs.pipe_file(root, text.encode())
