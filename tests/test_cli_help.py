"""The command's help: every command and option described, help without
errors, the version, and no heavy imports before a command runs."""

import argparse
import json
import subprocess
import sys

import pytest

import streamae
from streamae import cli


def _subparsers(parser):
    return parser.commands


def _required_groups(parser):
    return [g for g in parser._mutually_exclusive_groups if g.required]


def _options(parser):
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._VersionAction,
                               argparse._SubParsersAction)):
            continue
        yield action


def test_every_command_has_a_description():
    for name, p in _subparsers(cli.build_parser()).items():
        assert p.description and len(p.description) > 20, name


@pytest.mark.parametrize("command", list(_subparsers(cli.build_parser())))
def test_every_option_has_help_and_its_default(command):
    p = _subparsers(cli.build_parser())[command]
    formatter = p._get_formatter()
    in_required_group = {id(a) for g in _required_groups(p) for a in g._group_actions}
    for action in _options(p):
        name = "/".join(action.option_strings) or action.dest
        assert action.help, f"{command} {name} has no help"
        is_flag = action.nargs == 0
        if (not action.option_strings or action.required or is_flag
                or id(action) in in_required_group):
            continue
        shown = formatter._expand_help(action)
        assert "default" in shown, f"{command} {name}: no default in {shown!r}"


def test_strategy_and_optimizer_choices_match_the_library():
    from streamae._engine import STRATEGIES
    from streamae._optim import OPTIMIZERS
    from streamae._options import PAGE_CACHE_MODES

    assert cli.STRATEGIES == STRATEGIES
    assert cli.OPTIMIZERS == OPTIMIZERS
    assert cli.PAGE_CACHE_MODES == PAGE_CACHE_MODES


@pytest.mark.parametrize("argv", [[], ["help"]])
def test_no_command_or_help_prints_help(argv, capsys):
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: streamae")
    for name in ("train", "patches", "import", "encode", "show", "demo", "gradcheck"):
        assert name in out
    assert "docs/" in out  # the epilog points to the docs


def test_help_command_prints_a_commands_help(capsys):
    assert cli.main(["help", "import"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: streamae import") and "--scale-from" in out


def test_help_of_an_unknown_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["help", "trian"])
    assert exc.value.code == 2
    assert "no command 'trian'" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["-V", "--version"])
def test_version(flag, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([flag])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"streamae {streamae.__version__}"


HEAVY = ("numpy", "numba", "dask", "scipy", "zarr", "tqdm")


def test_parser_imports_nothing_heavy():
    code = ("import sys, json, streamae.cli; streamae.cli.build_parser()."
            "parse_args(['train', 'x', '--out', 'y']); "
            f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert json.loads(out) == []


def test_public_names_load_on_first_use():
    code = ("import sys, json, streamae; before = 'numba' in sys.modules; "
            "from streamae import SparseAutoencoder, DataError; "
            "print(json.dumps([before, 'numba' in sys.modules, "
            "sorted(set(streamae.__all__) - set(dir(streamae)))]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert json.loads(out) == [False, True, []]


def test_every_public_name_resolves():
    for name in streamae.__all__:
        assert getattr(streamae, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        streamae.nope  # noqa: B018


def _words(text):
    """``text`` with runs of white space (line wrapping) as one space."""
    return " ".join(text.split())


def test_the_checkpoint_rule_reads_the_same_in_help_and_docs(capsys):
    """One rule, in `train --help`, docs/cli.md and docs/reliability.md."""
    import os

    from streamae._constants import CHECKPOINT_RULE

    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    assert _words(CHECKPOINT_RULE) in _words(capsys.readouterr().out)
    docs = os.path.join(os.path.dirname(__file__), os.pardir, "docs")
    for page in ("cli.md", "reliability.md"):
        with open(os.path.join(docs, page), encoding="utf-8") as f:
            assert _words(CHECKPOINT_RULE) in _words(f.read()), page


_RUN_AND_LIST = """
import json, sys
from streamae.cli import main
code = main(sys.argv[1:])
print(json.dumps([code, sorted({m.split(".")[0] for m in sys.modules})]))
"""


def _imports_of(argv, cwd):
    """Exit status and the top-level modules loaded by ``streamae ARGV``."""
    out = subprocess.run([sys.executable, "-c", _RUN_AND_LIST, *argv], capture_output=True,
                         text=True, check=True, cwd=cwd).stdout
    return json.loads(out.splitlines()[-1])


def test_each_command_imports_only_what_it_needs(tmp_path):
    """Start-up time is mostly imports: `show` draws without scikit-learn, Dask or
    Numba, and `train` on threads does not load distributed or Matplotlib."""
    import numpy as np

    from streamae._store import write_array

    write_array(tmp_path / "x.zarr", np.full((40, 4), 0.5), chunk_rows=20)
    code, train = _imports_of(["train", "x.zarr", "--out", "m.zarr", "--hidden", "2",
                               "--max-iter", "1", "--quiet"], tmp_path)
    assert code == 0
    assert "distributed" not in train and "matplotlib" not in train
    code, show = _imports_of(["show", "m.zarr"], tmp_path)
    assert code == 0 and "matplotlib" in show  # it did draw
    for heavy in ("sklearn", "dask", "numba", "distributed", "scipy", "pandas"):
        assert heavy not in show, heavy
