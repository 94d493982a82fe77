"""The cube writer: a pair's place in the cube (identity, resume, append, overwrite) and the
execution of its block writes on a Dask cluster, with progress and failures that fail.

Each block of a stage is one Dask task chain ending in ``cube.write_block``; blocks whose
stage marker is already stored are skipped, so a rerun resumes. A block whose task
raises fails the run with :class:`BlockFailedError` naming the block and the worker's
error; its marker is never written, so a rerun computes it again.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import dask
import dask.array as da
import numpy as np

from . import cube
from .cube_lock import cube_lock

log = logging.getLogger(__name__)


class PairExistsError(ValueError):
    """The cube holds the same scenes computed from other inputs or settings."""


class BlockFailedError(RuntimeError):
    """A block's task raised on a worker."""


@dataclass(frozen=True)
class PairMeta:
    """A pair's scene ids and dates (ids are STAC item ids or file names)."""

    pre_id: str
    post_id: str
    pre_time: datetime | None = None
    post_time: datetime | None = None


def open_pair(out: str | Path, *, x: np.ndarray, y: np.ndarray, crs, tile: int, meta: PairMeta,
              key: str, attrs: dict, provenance: dict, if_exists: str = "resume") -> int:
    """The pair's index in the cube at ``out`` (a folder or an ``s3://`` URL; created on the
    grid if missing).

    The same scenes with the same ``key`` resume. The same scenes with another key are
    added as a new pair (``if_exists="append"``), replace the old one (``"overwrite"``),
    or raise :class:`PairExistsError` saying which option to use (``"resume"``). The
    decision and the new slot are taken under the cube's lock (``pipeline.cube_lock``), so
    runs started together into one cube, new or not, each get their own pair.
    """
    cube.create_cube(out, x=x, y=y, crs=crs, chunk=tile, attrs=attrs)
    with cube_lock(out):  # the decision and the new slot, as one step
        return _place_pair(out, meta=meta, key=key, provenance=provenance,
                           if_exists=if_exists)


def _place_pair(out: str | Path, *, meta: PairMeta, key: str, provenance: dict,
                if_exists: str) -> int:
    entries = scene_entries(out, meta)
    refuse_other_identity(out, entries, meta, {key}, if_exists)
    same = [e for e in entries if e.key == key]
    if same:
        log.info("%s already holds pair %d (%s -> %s) with the same inputs and settings: "
                 "resuming it", out, same[-1].index, meta.pre_id, meta.post_id)
        return same[-1].index
    times = {"pre_time": meta.pre_time, "post_time": meta.post_time}
    if entries and if_exists == "overwrite":
        index = entries[-1].index
        log.warning("overwriting pair %d (%s -> %s) of %s: its inputs or settings differ",
                    index, meta.pre_id, meta.post_id, out)
        cube.reset_pair(out, index, key=key, attrs=provenance, **times)
        return index
    return cube.add_pair(out, pre_id=meta.pre_id, post_id=meta.post_id, attrs=provenance,
                         key=key, **times)


def scene_entries(out: str | Path, meta: PairMeta) -> list:
    """The cube's pairs (``cube.PairEntry``) of the same pre and post scenes as ``meta``."""
    return [e for e in cube.pairs(out) if (e.pre_id, e.post_id) == (meta.pre_id, meta.post_id)]


def refuse_other_identity(out: str | Path, entries: list, meta: PairMeta, keys: set[str],
                          if_exists: str) -> None:
    """Raise :class:`PairExistsError` when ``if_exists`` is ``"resume"`` and the cube's
    ``entries`` for these scenes hold none of ``keys`` (the identities the run may have)."""
    if entries and if_exists == "resume" and not any(e.key in keys for e in entries):
        raise PairExistsError(
            f"{out} already holds {meta.pre_id} -> {meta.post_id} (pair {entries[-1].index}) "
            "computed from other input files or settings; rerun with --append to add this "
            "result as a new pair, or --overwrite to replace it")


def _progress_bar(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="block", file=sys.stderr, disable=not enabled,
                dynamic_ncols=True, leave=True)


def write_stage(out: str | Path, index: int, stage: str, arrays: dict[str, da.Array], client, *,
                progress: bool = True) -> int:
    """Compute and write every not-yet-written block of one stage of one pair.

    ``arrays``: the stage's variables (``cube.STAGES[stage]``), lazy ``(H, W)`` arrays
    chunked like the cube. Runs on ``client`` (a ``distributed.Client``). Returns the
    number of blocks computed. Raises :class:`BlockFailedError` on the first block that
    fails (the others are cancelled).
    """
    from distributed import as_completed

    names = list(cube.STAGES[stage])
    assert set(arrays) == set(names), (sorted(arrays), names)
    blocks = [arrays[n] for n in names]
    nbi, nbj = blocks[0].numblocks
    chunk = blocks[0].chunks[0][0]
    done = cube.done_blocks(out, index, stage)
    todo = [(i, j) for i in range(nbi) for j in range(nbj) if (i, j) not in done]
    log.info("pair %d %s: %d of %d blocks to compute (%d already in the cube)", index, stage,
             len(todo), nbi * nbj, len(done))
    if not todo:
        return 0
    path = str(out)

    def write(*parts, block_info=None):
        (r0, _), (c0, _) = block_info[0]["array-location"]
        cube.write_block(path, index, r0, c0, dict(zip(names, parts, strict=True)))
        return np.ones((1, 1), np.int8)

    status = da.map_blocks(write, *blocks, dtype=np.int8, chunks=((1,) * nbi, (1,) * nbj),
                           name=f"write-{stage}-pair{index}-{dask.base.tokenize(*blocks)}")
    parts = [status.blocks[i, j] for i, j in todo]
    t0 = time.monotonic()
    # optimize_graph=False: blockwise fusion would fold the inference into other tasks
    # and drop its GPU annotation; tasks here are whole chunks, so fusion gains nothing.
    futures = client.compute(parts, optimize_graph=False)
    where = {f.key: ij for f, ij in zip(futures, todo, strict=True)}
    bar = _progress_bar(len(todo), f"pair {index} {stage}", progress)
    try:
        for future in as_completed(futures):
            if future.status == "error":
                i, j = where[future.key]
                exc = future.exception()
                client.cancel(futures)
                r1 = min((i + 1) * chunk, blocks[0].shape[0]) - 1
                c1 = min((j + 1) * chunk, blocks[0].shape[1]) - 1
                why = " ".join(str(exc).split())
                why = why if len(why) <= 400 else why[:400] + "…"
                raise BlockFailedError(
                    f"block ({i}, {j}) (rows {i * chunk}-{r1}, cols {j * chunk}-{c1}) of pair "
                    f"{index} failed in {stage}: {type(exc).__name__}: {why}") from exc
            bar.update(1)
    except BaseException:
        client.cancel(futures)
        raise
    finally:
        bar.close()
    elapsed = time.monotonic() - t0
    log.info("pair %d %s: %d blocks in %.1f s (%.2f blocks/s)", index, stage, len(todo),
             elapsed, len(todo) / max(elapsed, 1e-9))
    return len(todo)
