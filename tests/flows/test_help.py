"""`microflow --help` is written for users: every option of every command, whoever adds it,
says what it does and its default as a value, and every command shows a working example.

The checks walk the parser, so options added later are held to the same rules."""

import argparse
import re
import shlex
import subprocess
import sys

import pytest

from flows.cli import build_parser

# Python names a default must never print as: dotted module paths, CONSTANT_NAMES,
# reprs of objects
PYTHON_NAME = re.compile(r"\b(?:model|pipeline|flows|bench)\.[A-Za-z_]"
                         r"|(?<![$\w])[A-Z][A-Z0-9]*_[A-Z0-9_]*[A-Z0-9]\b"
                         r"|<(?:function|class|bound|module)\b|object at 0x|\w+Config\b")
SIMPLE_DEFAULTS = (type(None), bool, int, float, str)


def _commands(parser: argparse.ArgumentParser, prefix: str = "microflow"):
    """(name, parser) of the top level and of every subcommand, nested ones too."""
    yield prefix, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, f"{prefix} {name}")


def _options(parser: argparse.ArgumentParser):
    """Every argument a user can give (positionals too), without -h and the command
    choice."""
    return [a for a in parser._actions
            if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))]


def _rendered(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    """The help text of one argument as `--help` prints it (defaults filled in)."""
    return " ".join(parser._get_formatter()._expand_help(action).split())


PARSER = build_parser()
COMMANDS = dict(_commands(PARSER))
ARGUMENTS = [(name, a) for name, p in COMMANDS.items() for a in _options(p)]


def _id(item) -> str:
    name, action = item
    return f"{name} {action.option_strings[0] if action.option_strings else action.dest}"


@pytest.mark.parametrize("item", ARGUMENTS, ids=_id)
def test_every_argument_of_every_command_has_a_help_sentence(item):
    name, action = item
    text = _rendered(COMMANDS[name], action)
    assert action.help not in (None, argparse.SUPPRESS) and len(text.split()) >= 3, text


@pytest.mark.parametrize("item", [i for i in ARGUMENTS if i[1].option_strings and
                                  not i[1].required], ids=_id)
def test_every_optional_option_states_its_default_as_a_value(item):
    name, action = item
    text = _rendered(COMMANDS[name], action)
    assert "default" in text, f"{_id(item)}: no default in {text!r}"
    assert "{model:" not in text, text
    default = action.default
    values = default if isinstance(default, list | tuple) else [default]
    assert all(isinstance(v, SIMPLE_DEFAULTS) for v in values), f"{_id(item)}: {default!r}"
    if default not in (None, False, argparse.SUPPRESS) and action.nargs != 0:
        shown = {" ".join(str(v) for v in values), " ".join(f"{v:g}" for v in values
                                                            if isinstance(v, float))}
        assert any(s and s in text for s in shown), f"{_id(item)}: {default!r} not in {text!r}"


@pytest.mark.parametrize("name", list(COMMANDS))
def test_no_default_prints_as_a_python_name(name):
    text = COMMANDS[name].format_help()
    words = " ".join(w for w in text.split() if "://" not in w)
    assert not PYTHON_NAME.findall(words), PYTHON_NAME.findall(words)


def test_science_defaults_print_as_the_models_numbers():
    from model.denoise import LogTVConfig
    from model.uncertainty import DEFAULT_MAX_SIGMA_PX

    pair = COMMANDS["microflow pair"]
    by_flag = {a.option_strings[0]: _rendered(pair, a) for a in _options(pair)
               if a.option_strings}
    assert f"(default {LogTVConfig().lam:g})" in by_flag["--lambda"]
    assert f"(default {LogTVConfig().eps:g})" in by_flag["--epsilon"]
    assert f"(default {DEFAULT_MAX_SIGMA_PX:g})" in by_flag["--max-sigma"]


def _example_argv(epilog: str) -> list[str]:
    (example,) = re.findall(r"example:\n(.*)", epilog, flags=re.S)
    argv = shlex.split(example.replace("\\\n", " "))
    assert argv[0] == "microflow", argv
    return argv[1:]


@pytest.mark.parametrize("name", [n for n in COMMANDS if n != "microflow"])
def test_every_command_shows_one_example_that_parses(name):
    parser = COMMANDS[name]
    assert parser.epilog and "example:" in parser.epilog, name
    argv = _example_argv(parser.epilog)
    assert " ".join(["microflow", *argv]).startswith(name), argv
    args = PARSER.parse_args(argv)  # exits (SystemExit) on an option that does not exist
    assert args.func is not None


def test_top_level_help_says_what_the_tool_does_and_documents_verbose():
    text = " ".join(PARSER.format_help().split())
    assert "thin argument parsing" not in text
    for word in ("ground displacement", "satellite images", "before", "after", "Zarr cube"):
        assert word in text, word
    verbose = next(a for a in _options(PARSER) if "-v" in a.option_strings)
    assert "traceback" in _rendered(PARSER, verbose)


def test_pair_says_which_image_is_the_earlier_and_which_files_it_reads():
    pair = COMMANDS["microflow pair"]
    pre, post = (next(a for a in _options(pair) if a.dest == d) for d in ("pre", "post"))
    pre_text, post_text = _rendered(pair, pre), _rendered(pair, post)
    assert "earlier" in pre_text and "before the event" in pre_text
    assert "later" in post_text and "after the event" in post_text
    assert "GeoTIFF" in pre_text and "projected CRS" in pre_text


def test_event_area_options_give_units_and_the_rule_between_them():
    event = COMMANDS["microflow event"]
    text = {a.option_strings[0]: _rendered(event, a) for a in _options(event)
            if a.option_strings}
    assert "degrees" in text["--bbox"] and "not with --point" in text["--bbox"]
    assert "degrees" in text["--point"] and "needs --radius-km" in text["--point"]
    assert "km" in text["--radius-km"] and "only with --point" in text["--radius-km"]


def test_building_the_parser_and_parsing_do_not_import_torch():
    """The science's defaults are read only when help is printed: validation must not
    wait for torch (tests/flows/test_cli.py holds bad settings to under 5 s)."""
    code = ("import sys; from flows.cli import build_parser; "
            "build_parser().parse_args(['pair', 'a.tif', 'b.tif', '--out', 'x.zarr']); "
            "print('torch' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True)
    assert res.stdout.strip() == "False", res.stdout + res.stderr
