"""``migperf`` imports a command's module only when that command is used (#18: start time).

``migperf --help`` lists every command from the static table
``migperf.cli.main.COMMANDS``; these tests hold that table to the real
commands, so the listing a user reads is the one the commands would give.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from migperf.cli.main import COMMANDS, app

runner = CliRunner()


def _root() -> Any:
    return typer.main.get_command(app)


def test_the_table_names_every_command_and_each_line_is_the_real_one() -> None:
    root = _root()
    ctx = root.make_context("migperf", ["gpus"], resilient_parsing=True)
    names = root.list_commands(ctx)
    assert names == list(COMMANDS), "every top-level command belongs in COMMANDS, in --help order"
    for name in names:
        real = root.get_command(ctx, name)
        assert real is not None and real.name == name, name
        stand_in = typer.core.TyperCommand(name=name, help=COMMANDS[name].short_help)
        # Equal at every width the Commands: section may shorten them to.
        for limit in (20, 45, 66, 10**6):
            assert stand_in.get_short_help_str(limit) == real.get_short_help_str(limit), (
                name,
                limit,
            )


def test_help_lists_the_same_lines_before_and_after_the_commands_are_loaded() -> None:
    root = _root()
    ctx = root.make_context("migperf", ["gpus"], resilient_parsing=True)
    lazy_help = root.get_help(ctx)
    assert "bench    Measure training and inference throughput and latency of one..." in lazy_help
    assert not set(COMMANDS) - {"gpus"} & set(root.commands), "listing loaded a command"
    for name in root.list_commands(ctx):
        root.get_command(ctx, name)
    assert set(root.commands) == set(COMMANDS)
    assert root.get_help(ctx) == lazy_help


def _modules_after(*args: str) -> set[str]:
    code = (
        "import sys, migperf.cli.main\n"
        "from typer.testing import CliRunner\n"
        f"r = CliRunner().invoke(migperf.cli.main.app, {list(args)!r})\n"
        "assert r.exit_code == 0, r.output\n"
        "print(' '.join(sorted(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=os.environ, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return set(out.stdout.split())


@pytest.mark.parametrize("args", [["--help"], ["gpus", "--help"]])
def test_help_imports_no_command_module_and_no_rich_pydantic_or_yaml(args: list[str]) -> None:
    loaded = _modules_after(*args)
    heavy = {m for m in loaded if m.split(".")[0] in ("rich", "pydantic", "pydantic_core", "yaml")}
    assert not heavy, sorted(heavy)
    cli = {m for m in loaded if m.startswith("migperf.")}
    assert cli <= {
        "migperf.cli",
        "migperf.cli.main",
        "migperf.cli._common",
        "migperf.errors",
        "migperf.procs",
    }, sorted(cli)


def test_a_command_imports_its_own_module_only() -> None:
    loaded = _modules_after("run", "--help")
    assert "migperf.cli.run" in loaded
    assert (
        not {"migperf.cli.bench", "migperf.cli.mig", "migperf.cli.plan", "migperf.bench"} & loaded
    )


def test_a_mistyped_command_suggests_one_not_loaded_yet() -> None:
    result = runner.invoke(app, ["bnch"])
    assert result.exit_code == 2
    assert "No such command 'bnch'. Did you mean 'bench'?" in result.stderr
    result = runner.invoke(app, ["resuls", "list"])
    assert "Did you mean 'results'?" in result.stderr


def test_global_options_keep_their_values_without_coercion(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIGPERF_READ_ONLY", "1")
    result = runner.invoke(app, ["--simulate", "a30", "mig", "enable"])
    assert result.exit_code != 0 and "read-only mode is on" in result.stderr
    monkeypatch.setenv("MIGPERF_READ_ONLY", "0")
    monkeypatch.setenv("MIGPERF_SIMULATE", "h200")
    result = runner.invoke(app, ["gpus", "--json"])
    assert result.exit_code == 0 and "H200" in result.stdout


def test_an_older_typer_without_type_descriptor_is_left_alone() -> None:
    # Seen on the lent H200's image: its typer's options have no type_descriptor,
    # and every migperf command died with AttributeError at start.
    from typer.core import TyperOption

    from migperf.cli._common import PlainOption

    bare = TyperOption.__new__(TyperOption)  # an option as an older typer builds it
    PlainOption.adopt(bare)
    assert type(bare) is TyperOption
