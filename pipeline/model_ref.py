"""The model, resolved once: one file and its sha256, which workers load and provenance records.

The driver calls :func:`resolve_model` once per run, after it knows whether the workers
have GPUs (the default model depends on the device). Workers call :func:`worker_model`
with the same :class:`ModelRef`: they load that file (or, where the path does not exist
on the worker, the shipped model of the same name) and refuse to run if its sha256 is
not the one the driver recorded.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path

_CACHE: dict[tuple[str, str], object] = {}
_LOCK = threading.Lock()
SHIPPED = Path(__file__).resolve().parent.parent / "model" / "weights"
"""Where ``model.registry`` keeps the shipped weights (found here without importing torch)."""


@dataclass(frozen=True)
class ModelRef:
    """``name``: as the user gave it (or the default's); ``path``: the weights file (None
    for ``untrained:<config>``); ``sha256``: its hash (``"untrained"``); ``config``: the
    model config from the file's metadata."""

    name: str
    path: str | None
    sha256: str
    config: dict = field(hash=False, compare=False)

    def as_attrs(self) -> dict:
        return {"model_name": self.name, "model_weights_sha256": self.sha256,
                "model_weights_file": self.path or "",
                "model_iterations": self.config.get("iterations"),
                "model_pyramid_levels": self.config.get("pyramid_levels", 0)}


def check_weights(weights: str | None) -> None:
    """Raise ValueError (one line) for a weights name or path that cannot resolve.
    Reads a file's header only, and imports no torch: this runs before any cluster starts."""
    from model.config import get_config

    if weights is None:
        return
    if str(weights).startswith("untrained:"):
        try:
            get_config(str(weights).split(":", 1)[1])
        except (KeyError, ValueError) as e:
            raise ValueError(f"weights {weights!r}: {e}") from None
        return
    path = Path(weights)
    if path.suffix != ".safetensors":
        path = SHIPPED / f"{weights}.safetensors"
        if not path.is_file():
            shipped = ", ".join(sorted(p.stem for p in SHIPPED.glob("*.safetensors")))
            raise ValueError(f"unknown model {weights!r}: not a .safetensors path nor a "
                             f"shipped model ({shipped or 'none shipped'}); use "
                             "'untrained:<config>' for a randomly initialised model")
    if not path.is_file():
        raise ValueError(f"weights file not found: {path}")
    _config_of(path)


def resolve_model(weights: str | None, device_type: str) -> ModelRef:
    """The weights a run uses: ``weights`` or the best shipped model for ``device_type``
    (``"cpu"``/``"cuda"``), as a file with its sha256 and config (not loaded)."""
    from model.config import get_config
    from model.registry import default_model_name, resolve_weights, sha256

    name = weights or default_model_name(device_type) or "untrained:small"
    if name.startswith("untrained:"):
        return ModelRef(name, None, "untrained", get_config(name.split(":", 1)[1]).to_dict())
    path = resolve_weights(name).resolve()
    return ModelRef(name, str(path), sha256(path), _config_of(path))


def _config_of(path: Path) -> dict:
    """The model config in a weights file's metadata (reads the header only, no torch)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = dict(f.metadata() or {})
    except Exception as e:  # safetensors raises its own error type
        raise ValueError(f"cannot read weights {path}: {e}") from None
    if "config" not in meta:
        raise ValueError(f"{path} has no MicroFlow config in its metadata")
    return json.loads(meta["config"])


def worker_model(ref: ModelRef, device):
    """The model of ``ref`` on ``device``, loaded once per process; the file's sha256 is
    checked against ``ref`` (RuntimeError if it differs)."""
    key = (ref.sha256 if ref.path else ref.name, str(device))
    with _LOCK:  # worker threads of one process load it once
        return _load_once(key, ref, device)


def _load_once(key: tuple[str, str], ref: ModelRef, device):
    from model.registry import load_model, resolve_weights

    if key not in _CACHE:
        if ref.path is None:
            model = load_model(ref.name, device=device)
        else:
            path = Path(ref.path) if Path(ref.path).is_file() else resolve_weights(ref.name)
            model = load_model(path, device=device)
            if model.weights_sha256 != ref.sha256:
                raise RuntimeError(f"weights {path} on this worker have sha256 "
                                   f"{model.weights_sha256[:12]}…, not the "
                                   f"{ref.sha256[:12]}… the run resolved")
        _CACHE[key] = model
    return _CACHE[key]
