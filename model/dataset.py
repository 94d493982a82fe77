"""Batches of semi-synthetic training pairs, as arrays (generation and augmentation)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from .metrics import FAULT_NEIGHBOURHOOD_PX, near_fault
from .synthetic import GENERATOR_VERSION, RANGES, TemporalChange, make_pair
from .temporal_change import RealisticChange

RANGE_NAMES = list(RANGES)  # index <-> name in sample sets
log = logging.getLogger(__name__)


@dataclass
class SampleSet:
    """``n`` pairs: ``pre``/``post`` ``(n, H, W)`` float32, ``flow`` ``(n, 2, H, W)`` float32
    (px), ``valid``/``fault`` ``(n, H, W)`` bool, ``range_idx`` ``(n,)`` into
    ``RANGE_NAMES``, ``change`` ``(n,)`` bool (temporal change applied), ``realistic``
    ``(n,)`` bool (that change was a ``RealisticChange``; False in files written before it
    existed), ``peak`` ``(n,)`` the largest displacement magnitude, px;
    ``generator_version`` the :data:`model.synthetic.GENERATOR_VERSION` that made them (0 in
    files written before it was recorded)."""

    pre: np.ndarray
    post: np.ndarray
    flow: np.ndarray
    valid: np.ndarray
    fault: np.ndarray
    range_idx: np.ndarray
    change: np.ndarray
    peak: np.ndarray
    realistic: np.ndarray | None = None
    generator_version: int = 0

    def __post_init__(self) -> None:
        if self.realistic is None:
            self.realistic = np.zeros(len(self.pre), bool)
        self.generator_version = int(self.generator_version)

    def __len__(self) -> int:
        return len(self.pre)

    def to_dict(self) -> dict[str, np.ndarray]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d) -> SampleSet:
        return cls(**{k: np.asarray(d[k]) for k in cls.__dataclass_fields__ if k in d})

    @property
    def stale(self) -> bool:
        """Made by an older generator than this code's (pairs or ``valid`` differ)."""
        return self.generator_version != GENERATOR_VERSION


def load_samples(path) -> SampleSet:
    """A sample ``.npz`` as a :class:`SampleSet`, with a warning if an older generator made it."""
    samples = SampleSet.from_dict(np.load(path))
    if samples.stale:
        log.warning("%s was made by generator version %d, this is version %d; `microflow "
                    "data` rebuilds it", path, samples.generator_version, GENERATOR_VERSION)
    return samples


def sample_file_version(path) -> int:
    """The generator version a sample ``.npz`` was written with (0: not recorded), read
    without loading its arrays."""
    with np.load(path) as d:
        return int(d["generator_version"]) if "generator_version" in d.files else 0


def loss_weights(samples: SampleSet, fault_weight: float = 0.0,
                 radius: float = FAULT_NEIGHBOURHOOD_PX) -> np.ndarray:
    """Per-pixel loss weights ``(n, H, W)`` float32: 0 where not valid, else
    ``1 + fault_weight`` within ``radius`` px of the fault trace and 1 elsewhere.

    The fault neighbourhood is a few percent of a crop, so an unweighted loss barely sees
    the step that log-TV and the benchmark's "within 3 px" care about.
    """
    w = samples.valid.astype(np.float32)
    if fault_weight > 0:
        for i in np.flatnonzero(samples.fault.any(axis=(1, 2))):
            w[i] *= 1.0 + fault_weight * near_fault(samples.fault[i], radius)
    return w


def generate_samples(textures: list[np.ndarray], n: int, size: int, rng: np.random.Generator,
                     ranges: list[str] | None = None, change_fraction: float = 0.5,
                     realistic_fraction: float = 0.0,
                     realistic: RealisticChange | None = None) -> SampleSet:
    """Generate ``n`` pairs of ``size x size`` px, cycling over ``ranges`` (default all).

    Each texture must be at least ``size + 32`` px and NaN-free (see
    ``pipeline.textures.random_crops``). ``change_fraction`` of pairs get temporal change;
    of those, ``realistic_fraction`` get ``realistic`` (default ``RealisticChange()``:
    parcels, clouds, water, sensor; see ``model.temporal_change``) and the rest the simple
    ``TemporalChange``. With
    ``realistic_fraction=0`` the random stream, hence the samples, are as before it existed.
    """
    ranges = ranges or RANGE_NAMES
    realistic = realistic or RealisticChange()
    out: dict[str, list] = {k: [] for k in SampleSet.__dataclass_fields__
                            if k != "generator_version"}
    for i in range(n):
        name = ranges[i % len(ranges)]
        tex = textures[int(rng.integers(len(textures)))]
        change = rng.random() < change_fraction
        kind = TemporalChange()
        if change and realistic_fraction > 0 and rng.random() < realistic_fraction:
            kind = realistic
        pair = make_pair(tex, rng, (size, size), name, temporal_change=change, change=kind)
        out["pre"].append(pair.pre)
        out["post"].append(pair.post)
        out["flow"].append(pair.flow)
        out["valid"].append(pair.valid)
        out["fault"].append(pair.fault_mask)
        out["range_idx"].append(RANGE_NAMES.index(name))
        out["change"].append(pair.params["temporal_change"])
        out["realistic"].append(pair.params["realistic"])
        out["peak"].append(float(np.hypot(*pair.flow).max()))
    return SampleSet(**{k: np.asarray(v) for k, v in out.items()},
                     generator_version=GENERATOR_VERSION)


def augment_batch(pre: np.ndarray, post: np.ndarray, flow: np.ndarray, valid: np.ndarray,
                  crop: int, rng: np.random.Generator
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Random crop, flips and transposes of a batch, with the matching field changes.

    A left-right flip negates ``dx``, an up-down flip negates ``dy``, a transpose swaps
    them. Inputs ``(B, H, W)`` / ``(B, 2k, H, W)``: ``flow`` may stack several
    ``(dx, dy)`` fields (e.g. the truth and a starting field), each transformed alike;
    outputs cropped to ``crop``.
    """
    b, h, w = pre.shape
    k = flow.shape[1] // 2
    flip_x = np.tile(np.array([-1, 1], np.float32), k)[:, None, None]
    flip_y = np.tile(np.array([1, -1], np.float32), k)[:, None, None]
    swap = np.arange(2 * k).reshape(k, 2)[:, ::-1].ravel()  # (dx, dy) -> (dy, dx)
    outs = ([], [], [], [])
    for i in range(b):
        r = int(rng.integers(0, h - crop + 1))
        c = int(rng.integers(0, w - crop + 1))
        a, p = pre[i, r:r + crop, c:c + crop], post[i, r:r + crop, c:c + crop]
        f, v = flow[i, :, r:r + crop, c:c + crop].copy(), valid[i, r:r + crop, c:c + crop]
        if rng.random() < 0.5:
            a, p, v, f = a[:, ::-1], p[:, ::-1], v[:, ::-1], f[:, :, ::-1] * flip_x
        if rng.random() < 0.5:
            a, p, v, f = a[::-1], p[::-1], v[::-1], f[:, ::-1] * flip_y
        if rng.random() < 0.5:
            a, p, v, f = a.T, p.T, v.T, f[swap].transpose(0, 2, 1)
        for lst, x in zip(outs, (a, p, f, v), strict=True):
            lst.append(np.ascontiguousarray(x))
    return tuple(np.stack(x) for x in outs)  # type: ignore[return-value]
