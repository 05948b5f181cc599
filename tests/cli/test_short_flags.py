"""Each short flag means one thing across every migperf command (#24: ``-f`` meant three)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import typer

from migperf.cli.main import app


def _walk(command: Any, path: str, ctx: Any) -> list[tuple[str, Any]]:
    out = [(path, command)]
    if hasattr(command, "list_commands"):
        # The group's own API: the top level imports its commands on demand.
        for name in command.list_commands(ctx):
            out += _walk(command.get_command(ctx, name), f"{path} {name}", ctx)
    return out


def test_every_short_flag_has_one_meaning() -> None:
    root = typer.main.get_command(app)
    ctx = root.make_context("migperf", ["gpus"], resilient_parsing=True)
    meanings: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for path, command in _walk(root, "migperf", ctx):
        for param in getattr(command, "params", []):
            opts = list(getattr(param, "opts", [])) + list(getattr(param, "secondary_opts", []))
            shorts = [o for o in opts if len(o) == 2 and o.startswith("-")]
            longs = sorted(o for o in opts if o.startswith("--"))
            for short in shorts:
                meanings[short][",".join(longs)].append(path)
    clashes = {s: dict(m) for s, m in meanings.items() if len(m) > 1}
    assert not clashes, f"short flags with several meanings: {clashes}"
    # The ones people type most keep their letters.
    assert set(meanings["-f"]) == {"--config"} and set(meanings["-i"]) == {"--gpu"}
