"""The README stays a user's guide: short, the two commands first, about the software."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
CI = Path(__file__).resolve().parents[1] / ".ci" / "run"


def test_readme_is_at_most_300_lines():
    assert len(README.read_text().splitlines()) <= 300


def test_readme_opens_with_the_demo_and_test_commands_that_ci_runs():
    first_block = re.search(r"```\w*\n(.*?)```", README.read_text(), re.S).group(1)
    commands = [line.split("#")[0].strip() for line in first_block.splitlines()]
    assert commands[:2] == ["make demo", "make test"]
    assert "make test" in CI.read_text()


def test_readme_speaks_of_the_software_not_of_how_the_work_went():
    text = README.read_text().lower()
    for phrase in ("this session", "session", "beside the trainer", "ad-hoc", "trainer paused"):
        assert phrase not in text, phrase
