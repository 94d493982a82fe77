"""The run configuration: every setting of a run, each default written once, validated once.

``RunConfig`` is composed of small frozen dataclasses, one per stage:

- ``TilingConfig``: the tile (= Dask chunk = cube chunk, px), its halo of context, batch.
- ``ModelConfig``: which weights, which device, torch threads per worker.
- ``InputConfig``: bands (GeoTIFF band numbers or STAC asset names) and nodata handling.
- ``DenoiseConfig``: log-TV λ, ε, iterations and the halo of the chunked solve.
- ``ConfidenceConfig``: the low-confidence threshold, the edge margin, the ramp removal.
- ``OutputConfig``: the cube path, what to do with an existing pair, quick-looks.
- ``ClusterConfig``: an existing Dask scheduler, or the size of a local cluster.
- ``SearchParams`` (``pipeline.plan``) for STAC events, built by ``pipeline.aoi``.

Each dataclass validates itself in ``__post_init__`` and raises :class:`ConfigError` (a
``ValueError``) with one readable line. The CLI, both Prefect flows, ``deploy/prefect.yaml``
and ``deploy/hpc/slurm_cluster.py`` build it with :func:`RunConfig.from_flat` from flat
keyword settings (the CLI's long option names with ``_``); nothing downstream re-defaults or
re-validates. Building one touches no network, cluster or file.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, ClassVar, Literal

from model.tiling import DEFAULT_HALO, DEFAULT_TILE

from .plan import SearchParams
from .store import check_location, is_remote

RAMP_MODES = ("keep", "offset", "plane")
IfExists = Literal["resume", "append", "overwrite"]


class ConfigError(ValueError):
    """A setting that cannot be used; the message is one line naming it."""


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _int(name: str, value: Any) -> int:
    _check((isinstance(value, int) and not isinstance(value, bool))
           or (isinstance(value, float) and value.is_integer()),
           f"{name} must be a whole number, got {value!r}")
    return int(value)


def _finite(name: str, value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number, got {value!r}") from None
    _check(math.isfinite(v), f"{name} must be finite, got {value!r}")
    return v


@dataclass(frozen=True)
class TilingConfig:
    """How the scene is cut for the model (pixels).

    ``tile`` is the model tile core, the Dask chunk and the cube chunk at once (C): one
    Dask task runs the model once on its tile plus ``halo`` px of context from the
    neighbouring tiles (none along the image border), and keeps the core. ``batch_size``
    tiles per forward pass (tiles of a task).
    """

    tile: int = DEFAULT_TILE
    halo: int = DEFAULT_HALO
    batch_size: int = 1

    def __post_init__(self) -> None:
        _int("tile", self.tile), _int("halo", self.halo), _int("batch_size", self.batch_size)
        _check(self.tile >= 64, f"tile must be >= 64 px, got {self.tile}")
        _check(0 <= self.halo <= self.tile // 2,
               f"halo must be in [0, tile/2] = [0, {self.tile // 2}] px, got {self.halo}")
        _check(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")


@dataclass(frozen=True)
class ModelConfig:
    """Which model, where. ``weights``: a shipped name, a ``.safetensors`` path, or
    ``untrained:<config>``; None = the best shipped model for the workers' device.
    ``device``: ``cpu``, ``cuda`` or ``cuda:N``; None = CUDA where a worker has it.
    ``flip_average``: average the model over the four flips of each tile (4x the time;
    ``model.inference.predict_tiles``)."""

    weights: str | None = None
    device: str | None = None
    torch_threads: int = 1
    flip_average: bool = False

    def __post_init__(self) -> None:
        if self.device is not None:
            d = str(self.device)
            _check(d == "cpu" or d == "cuda" or (d.startswith("cuda:") and d[5:].isdigit()),
                   f"device must be cpu, cuda or cuda:N, got {self.device!r}")
        _check(_int("torch_threads", self.torch_threads) >= 1,
               f"torch_threads must be >= 1, got {self.torch_threads}")
        if self.weights is not None:
            _check(bool(str(self.weights).strip()), "weights must not be empty")


@dataclass(frozen=True)
class InputConfig:
    """What is read. ``bands``: 1-based GeoTIFF band numbers (``microflow pair``) or
    STAC asset names (``microflow event``), each estimated and then combined.
    ``nodata``: a value that marks missing pixels, overriding the file's tag.
    ``zero_is_nodata``: treat 0 as missing; None = yes for unsigned 16-bit data (Sentinel-2
    DN) and for files whose nodata tag is 0, else no (and a warning if zeros are found)."""

    bands: tuple[int | str, ...] = (1,)
    nodata: float | None = None
    zero_is_nodata: bool | None = None

    def __post_init__(self) -> None:
        bands = tuple(self.bands) if isinstance(self.bands, list | tuple) else (self.bands,)
        object.__setattr__(self, "bands", bands)
        _check(len(bands) >= 1, "give at least one band")
        _check(len(set(bands)) == len(bands), f"bands must not repeat, got {list(bands)}")
        for b in bands:
            if isinstance(b, str):
                _check(bool(b.strip()), "an asset name must not be empty")
            else:
                _check(_int("band", b) >= 1, f"band numbers start at 1, got {b}")
        if self.nodata is not None:
            object.__setattr__(self, "nodata", _finite("nodata", self.nodata))

    @property
    def label(self) -> str:
        """The bands as provenance records them (``"band 1"``, ``"red+nir"``)."""
        if all(isinstance(b, int) for b in self.bands):
            return ("band " if len(self.bands) == 1 else "bands ") + ",".join(
                str(b) for b in self.bands)
        return "+".join(str(b) for b in self.bands)


def model_defaults() -> dict[str, float | int]:
    """The defaults that belong to the science (``model``): log-TV λ, ε and iterations
    (``model.denoise.LogTVConfig``) and the low-confidence threshold
    (``model.uncertainty.DEFAULT_MAX_SIGMA_PX``). Read only when a run starts
    (:meth:`RunConfig.resolved`): importing them loads torch, which validation must not
    wait for."""
    from model.denoise import LogTVConfig
    from model.uncertainty import DEFAULT_MAX_SIGMA_PX

    d = LogTVConfig()
    return {"lam": d.lam, "eps": d.eps, "outer_iters": d.outer_iters,
            "inner_iters": d.inner_iters, "max_sigma": DEFAULT_MAX_SIGMA_PX}


@dataclass(frozen=True)
class DenoiseConfig:
    """log-TV of the raw field (px units): ``lam`` λ (px²), ``eps`` ε, iterations (None:
    the model's defaults, see :func:`model_defaults`), and ``halo``: px of neighbouring
    tiles each chunked solve sees."""

    lam: float | None = None
    eps: float | None = None
    outer_iters: int | None = None
    inner_iters: int | None = None
    halo: int = 32

    def __post_init__(self) -> None:
        if self.lam is not None:
            _check(_finite("lambda", self.lam) >= 0, f"lambda must be >= 0, got {self.lam}")
        if self.eps is not None:
            _check(_finite("epsilon", self.eps) > 0, f"epsilon must be > 0, got {self.eps}")
        for name in ("outer_iters", "inner_iters"):
            value = getattr(self, name)
            if value is not None:
                _check(_int(name, value) >= 1, f"{name} must be >= 1, got {value}")
        _check(_int("denoise_halo", self.halo) >= 0,
               f"denoise_halo must be >= 0 px, got {self.halo}")

    def logtv(self):
        """``model.denoise.LogTVConfig`` with these values (the model's for None)."""
        from model.denoise import LogTVConfig

        return LogTVConfig(**{k: v for k, v in (("lam", self.lam), ("eps", self.eps),
                                                ("outer_iters", self.outer_iters),
                                                ("inner_iters", self.inner_iters))
                              if v is not None})


@dataclass(frozen=True)
class ConfidenceConfig:
    """What counts as measured. ``max_sigma``: pixels whose σ (px, either component) is
    above it are flagged low confidence (None: the model's default, see
    :func:`model_defaults`). ``edge_margin``: pixels within this many px of a missing
    pixel are flagged edge (the model's receptive field reaches into the gap). ``ramp``:
    the co-registration ramp removed from ``east``/``north`` (``keep`` none, ``offset`` a
    constant, ``plane`` a plane); ``*_raw`` keep it. The default is ``offset``: on the
    demo rupture (a long strike-slip fault whose far field spans the scene) a fitted plane
    took real deformation with it (denoised error 2.73 m with ``plane``, 1.05 m with
    ``offset``, 1.06 m with ``keep``), while a real pair's co-registration error is mostly
    a constant (the committed S2 pair: 1.9 px, varying by ~0.1 px)."""

    max_sigma: float | None = None
    edge_margin: int = 8
    ramp: str = "offset"

    def __post_init__(self) -> None:
        if self.max_sigma is not None:
            _check(_finite("max_sigma", self.max_sigma) > 0,
                   f"max_sigma must be > 0 px, got {self.max_sigma}")
        _check(_int("edge_margin", self.edge_margin) >= 0,
               f"edge_margin must be >= 0 px, got {self.edge_margin}")
        _check(self.ramp in RAMP_MODES,
               f"ramp must be one of {', '.join(RAMP_MODES)}, got {self.ramp!r}")


@dataclass(frozen=True)
class OutputConfig:
    """Where results go. ``out``: a local path or ``s3://bucket/prefix/cube.zarr``
    (``pipeline.store``). ``if_exists``: what to do when the cube already holds this pair
    (same scene ids) computed from other inputs or settings: ``resume`` refuses (a pair
    with the same identity always resumes), ``append`` adds it as a new pair,
    ``overwrite`` replaces it. ``quicklook_dir``: a local folder for the PNGs (default:
    beside a local cube, the current directory for a remote one)."""

    out: str = ""
    if_exists: str = "resume"
    quicklooks: bool = True
    quicklook_dir: str = ""

    def __post_init__(self) -> None:
        _check(bool(str(self.out).strip()), "out (the cube path) is required")
        try:
            check_location(self.out)
        except ValueError as e:
            raise ConfigError(f"out: {e}") from None
        _check(not is_remote(self.quicklook_dir),
               f"quicklook_dir must be a local folder, got {self.quicklook_dir!r}")
        _check(self.if_exists in ("resume", "append", "overwrite"),
               f"if_exists must be resume, append or overwrite, got {self.if_exists!r}")


@dataclass(frozen=True)
class ClusterConfig:
    """``dask_address``: ``tcp://host:port`` of an existing scheduler; else a local
    cluster of ``workers`` processes (one thread each)."""

    dask_address: str | None = None
    workers: int = 2

    def __post_init__(self) -> None:
        _check(_int("workers", self.workers) >= 1, f"workers must be >= 1, got {self.workers}")
        if self.dask_address:
            _check("://" in self.dask_address or ":" in self.dask_address,
                   f"dask_address must look like tcp://HOST:PORT, got {self.dask_address!r}")


@dataclass(frozen=True)
class RunConfig:
    """Every setting of one run; see the module docstring."""

    output: OutputConfig
    tiling: TilingConfig = field(default_factory=TilingConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    input: InputConfig = field(default_factory=InputConfig)
    denoise: DenoiseConfig = field(default_factory=DenoiseConfig)
    confidence: ConfidenceConfig = field(default_factory=ConfidenceConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    search: SearchParams | None = None

    def __post_init__(self) -> None:
        _check(self.denoise.halo <= self.tiling.tile,
               f"denoise_halo ({self.denoise.halo} px) must not exceed the tile "
               f"({self.tiling.tile} px)")
        _check(self.confidence.edge_margin <= self.tiling.tile,
               f"edge_margin ({self.confidence.edge_margin} px) must not exceed the tile")

    # flat keyword names (CLI long options with "_") -> (part, field)
    FLAT: ClassVar[dict[str, tuple[str, str]]] = {
        "tile": ("tiling", "tile"), "chunk": ("tiling", "tile"), "halo": ("tiling", "halo"),
        "batch_size": ("tiling", "batch_size"),
        "weights": ("model", "weights"), "device": ("model", "device"),
        "torch_threads": ("model", "torch_threads"),
        "flip_average": ("model", "flip_average"),
        "bands": ("input", "bands"), "nodata": ("input", "nodata"),
        "zero_is_nodata": ("input", "zero_is_nodata"),
        "lam": ("denoise", "lam"), "eps": ("denoise", "eps"),
        "denoise_halo": ("denoise", "halo"), "outer_iters": ("denoise", "outer_iters"),
        "inner_iters": ("denoise", "inner_iters"),
        "max_sigma": ("confidence", "max_sigma"), "edge_margin": ("confidence", "edge_margin"),
        "ramp": ("confidence", "ramp"),
        "out": ("output", "out"), "if_exists": ("output", "if_exists"),
        "quicklooks": ("output", "quicklooks"), "quicklook_dir": ("output", "quicklook_dir"),
        "dask_address": ("cluster", "dask_address"), "workers": ("cluster", "workers"),
    }
    SEARCH_KEYS: ClassVar[tuple[str, ...]] = (
        "stac_url", "collection", "event_time", "bbox", "point", "radius_km", "days_before",
        "days_after", "max_cloud", "same_orbit", "pairs")
    PAIRING_KEYS: ClassVar[tuple[str, ...]] = ("same_orbit", "pairs")
    """Search keys of the pairing rule; their defaults are ``SearchParams``' own."""

    @classmethod
    def from_flat(cls, **settings: Any) -> RunConfig:
        """Build from flat settings; ``None`` means "the default". With ``event_time``
        given, the STAC search is built too (``bands`` are then asset names).

        Raises ConfigError (one line) for an unknown name or an unusable value.
        """
        parts: dict[str, dict[str, Any]] = {}
        search: dict[str, Any] = {}
        for key, value in settings.items():
            if key in cls.SEARCH_KEYS:
                search[key] = value
                continue
            if key not in cls.FLAT:
                raise ConfigError(f"unknown setting {key!r}")
            if value is None:
                continue
            part, name = cls.FLAT[key]
            parts.setdefault(part, {})[name] = value
        kinds = {"tiling": TilingConfig, "model": ModelConfig, "input": InputConfig,
                 "denoise": DenoiseConfig, "confidence": ConfidenceConfig,
                 "output": OutputConfig, "cluster": ClusterConfig}
        built = {part: kind(**parts.get(part, {})) for part, kind in kinds.items()}
        params = None
        if search.get("event_time") is not None:
            from .aoi import SEARCH_DEFAULTS, search_params

            assets = built["input"].bands
            if settings.get("bands") is None:
                assets = (SEARCH_DEFAULTS["asset"],)
            _check(all(isinstance(b, str) for b in assets),
                   f"a STAC event needs asset names, got {list(assets)}")
            built["input"] = InputConfig(**{**asdict(built["input"]), "bands": assets})
            given = {k: v for k, v in search.items() if v is not None}
            pairing = {k: given.pop(k) for k in cls.PAIRING_KEYS if k in given}
            params = search_params(asset=assets[0], **given)
            try:
                params = replace(params, **pairing)
            except (TypeError, ValueError) as e:
                raise ConfigError(str(e)) from None
        elif any(v is not None for v in search.values()):
            raise ConfigError("a STAC search needs event_time")
        return cls(search=params, **built)

    def resolved(self) -> RunConfig:
        """This config with the model's defaults filled in (imports torch)."""
        d = model_defaults()
        den = {k: d[k] if getattr(self.denoise, k) is None else getattr(self.denoise, k)
               for k in ("lam", "eps", "outer_iters", "inner_iters")}
        sigma = d["max_sigma"] if self.confidence.max_sigma is None else \
            self.confidence.max_sigma
        return replace(self, denoise=replace(self.denoise, **den),
                       confidence=replace(self.confidence, max_sigma=sigma))

    def as_attrs(self) -> dict[str, Any]:
        """Flat provenance of the settings (names as in the cube's attributes)."""
        attrs: dict[str, Any] = {
            "tile_core_px": self.tiling.tile, "chunk_px": self.tiling.tile,
            "halo_px": self.tiling.halo, "batch_size": self.tiling.batch_size,
            "flip_average": self.model.flip_average,
            "logtv_lambda": self.denoise.lam, "logtv_epsilon": self.denoise.eps,
            "logtv_outer_iters": self.denoise.outer_iters,
            "logtv_inner_iters": self.denoise.inner_iters,
            "logtv_halo_px": self.denoise.halo,
            "max_sigma_px": self.confidence.max_sigma,
            "edge_margin_px": self.confidence.edge_margin,
            "ramp": self.confidence.ramp, "band": self.input.label,
            "bands": [str(b) for b in self.input.bands],
            "nodata": self.input.nodata,
            "zero_is_nodata": "auto" if self.input.zero_is_nodata is None
            else self.input.zero_is_nodata,
        }
        if self.search is not None:
            attrs.update(self.search.as_attrs())
        return attrs

    def numbers_key(self) -> dict[str, Any]:
        """The settings that change the numbers in the cube (part of a pair's identity)."""
        return {
            "tile": self.tiling.tile, "halo": self.tiling.halo,
            "flip_average": self.model.flip_average,
            "bands": [str(b) for b in self.input.bands], "nodata": self.input.nodata,
            "zero_is_nodata": self.input.zero_is_nodata,
            "denoise": {f.name: getattr(self.denoise, f.name) for f in fields(self.denoise)},
            "confidence": asdict(self.confidence),
        }
