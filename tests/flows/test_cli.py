import subprocess
import sys
from pathlib import Path

import pytest

from flows.cli import build_parser, main


def test_every_documented_command_is_there():
    text = build_parser().format_help()
    for cmd in ("data", "train", "benchmark", "pair", "event", "demo"):
        assert cmd in text


@pytest.mark.parametrize("argv, message", [
    (["event", "--event-time", "2023-02-06", "--out", "x.zarr"], "exactly one of bbox"),
    (["event", "--point", "37", "37", "--event-time", "2023-02-06", "--out", "x.zarr"],
     "radius_km"),
    (["event", "--bbox", "0", "0", "1", "1", "--event-time", "yesterday", "--out", "x.zarr"],
     "ISO 8601"),
])
def test_bad_event_parameters_fail_before_any_work(argv, message, tmp_path, capsys,
                                                   monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.zarr").exists()


@pytest.mark.parametrize("argv, message", [
    (["pair", "a.tif", "b.tif", "--out", "x.zarr", "--halo", "500"], "halo"),
    (["pair", "a.tif", "b.tif", "--out", "x.zarr", "--batch-size", "0"], "batch_size"),
    (["pair", "a.tif", "b.tif", "--out", "x.zarr", "--device", "bogus"], "device"),
    (["pair", "a.tif", "b.tif", "--out", "x.zarr", "--lambda", "-1"], "lambda"),
    (["pair", "a.tif", "b.tif", "--out", "x.zarr", "--weights", "nope"], "unknown model"),
    (["pair", "a.tif", "b.tif", "--out", "x.zarr", "--weights", "/dev/null/w.safetensors"],
     "not found"),
    (["event", "--bbox", "0", "0", "1", "1", "--event-time", "2023-02-06", "--out", "x.zarr",
      "--device", "bogus"], "device"),
    (["demo", "--out", "d", "--max-sigma", "0"], "max_sigma"),
])
def test_bad_settings_exit_2_with_one_line_in_under_5_s(argv, message, tmp_path):
    """Validation runs before any file, cluster, server or network call."""
    import time

    exe = str(Path(sys.executable).with_name("microflow"))
    t0 = time.monotonic()
    res = subprocess.run([exe, *argv], capture_output=True, text=True, cwd=tmp_path,
                         timeout=60)
    seconds = time.monotonic() - t0
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in res.stderr, lines
    assert seconds < 5, seconds
    assert not any(tmp_path.iterdir())


def test_every_knob_is_exposed_with_help():
    text = " ".join(build_parser()._subparsers._group_actions[0].choices["pair"]
                    .format_help().split())
    for option in ("--band", "--tile", "--halo", "--lambda", "--epsilon", "--denoise-halo",
                   "--max-sigma", "--edge-margin", "--ramp", "--nodata", "--zero-is-nodata",
                   "--append", "--overwrite", "--weights", "--device", "--flip-average",
                   "--dask-address"):
        assert option in text, option


def test_console_script_runs():
    res = subprocess.run([sys.executable, "-m", "flows.cli", "--help"], capture_output=True,
                         text=True)
    assert res.returncode == 0 and "microflow" in res.stdout


def test_data_rebuilds_sample_files_an_older_generator_made_and_keeps_current_ones(
        tmp_path, caplog):
    """`microflow data` skips a current sample file, and rebuilds one written before the
    generator recorded its version (procedural textures only: nothing to download)."""
    import numpy as np

    from model.dataset import load_samples, sample_file_version
    from model.synthetic import GENERATOR_VERSION

    argv = ["data", "--train-samples", "4", "--val-samples", "0", "--texture-variety", "1",
            "--size", "48", "--out", str(tmp_path)]
    assert main(argv) == 0
    (path,) = tmp_path.glob("train-48-*.npz")
    assert sample_file_version(path) == GENERATOR_VERSION
    assert not load_samples(path).stale
    mtime = path.stat().st_mtime_ns
    assert main(argv) == 0
    assert path.stat().st_mtime_ns == mtime  # current: kept

    with np.load(path) as d:  # as a file from before versions were recorded
        old = {k: d[k] for k in d.files if k != "generator_version"}
    np.savez(path, **old)
    assert sample_file_version(path) == 0
    with caplog.at_level("WARNING"):
        assert load_samples(path).stale
        assert main(argv) == 0
    assert "version 0" in caplog.text and "rebuild" in caplog.text
    assert sample_file_version(path) == GENERATOR_VERSION
