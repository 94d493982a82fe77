import subprocess
import sys

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
def test_bad_event_parameters_fail_before_any_work(argv, message, tmp_path):
    with pytest.raises(SystemExit, match=message):
        main(argv)
    assert not (tmp_path / "x.zarr").exists()


def test_console_script_runs():
    res = subprocess.run([sys.executable, "-m", "flows.cli", "--help"], capture_output=True,
                         text=True)
    assert res.returncode == 0 and "microflow" in res.stdout
