"""A pair's identity in the cube: what went in and the settings that change the numbers.

``pair_key`` is the sha256 of a JSON document holding the fingerprints of the two inputs,
the weights' sha256 and ``RunConfig.numbers_key()`` (tile, halo, bands, nodata, log-TV,
confidence and ramp settings). A rerun with the same key resumes; another key for the
same scene ids must be appended or overwrite the old pair (``pipeline.writer``).

- A local file (``microflow pair``): its size and the sha256 of its bytes, so that two
  files with the same name but other pixels never match.
- A STAC item: its id, and per asset used its href plus ``file:checksum`` and
  ``file:size`` where the catalogue gives them (a catalogue that republishes an item
  under the same id with other pixels and no checksum cannot be told apart).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def file_fingerprint(path: str | Path) -> str:
    """``sha256:<hex>:<size>`` of a local file's bytes."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
            size += len(block)
    return f"sha256:{h.hexdigest()}:{size}"


def item_fingerprint(item: dict, assets: Iterable[str]) -> str:
    """The item id and, per asset, href, ``file:checksum`` and ``file:size`` (JSON)."""
    parts: dict[str, Any] = {"id": item.get("id")}
    for name in assets:
        a = item.get("assets", {}).get(name, {})
        parts[name] = [a.get("href"), a.get("file:checksum"), a.get("file:size")]
    return json.dumps(parts, sort_keys=True)


def pair_key(pre: str, post: str, weights_sha256: str, settings: dict) -> str:
    """Hex sha256 identity of a pair (see the module docstring)."""
    doc = json.dumps({"pre": pre, "post": post, "weights": weights_sha256,
                      "settings": settings}, sort_keys=True, default=str)
    return hashlib.sha256(doc.encode()).hexdigest()
