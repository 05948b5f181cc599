"""The one YAML reader: hostile or broken files fail fast with file:line, for every reader.

Experiment configs, demand files and mig-parted files all read YAML through
migperf.yamlsource; each limit is checked through all three.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from migperf.errors import ConfigError
from migperf.experiments.config import load_config
from migperf.mig.migparted import load_migparted
from migperf.planner.demand import load_demand
from migperf.yamlsource import MAX_BYTES, MAX_DEPTH

READERS: dict[str, Callable[[Path], Any]] = {
    "config": load_config,
    "demand": load_demand,
    "migparted": load_migparted,
}

BILLION_LAUGHS = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def _error(reader: str, path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        READERS[reader](path)
    return info.value.message


@pytest.fixture(params=sorted(READERS))
def reader(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_a_file_over_the_size_limit_is_refused_before_parsing(reader: str, tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    # Valid YAML all the way: only its size is wrong.
    path.write_text("# padding\n" * (MAX_BYTES // 10 + 1))
    t0 = time.monotonic()
    msg = _error(reader, path)
    assert time.monotonic() - t0 < 1.0  # refused, not parsed (that would take minutes)
    assert str(path) in msg and "larger than the 4 MiB" in msg


def test_billion_laughs_fails_fast(reader: str, tmp_path: Path) -> None:
    path = tmp_path / "lol.yaml"
    path.write_text(BILLION_LAUGHS)
    t0 = time.monotonic()
    msg = _error(reader, path)
    assert time.monotonic() - t0 < 1.0
    assert msg.startswith(f"{path}:") and "alias bomb" in msg


def test_nesting_deeper_than_the_limit(reader: str, tmp_path: Path) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text("x: " + "[" * 10_000 + "]" * 10_000 + "\n")  # would overflow the stack
    msg = _error(reader, path)
    assert msg == f"{path}:1: nested deeper than {MAX_DEPTH} levels"
    block = tmp_path / "block.yaml"
    block.write_text("".join("  " * i + f"k{i}:\n" for i in range(MAX_DEPTH + 5)))
    assert f"nested deeper than {MAX_DEPTH} levels" in _error(reader, block)


def test_aliases_cannot_nest_past_the_depth_limit(tmp_path: Path) -> None:
    # Each level is shallow where it is written; the aliases stack them up.
    lines = ["l0: &l0 [x]"] + [f"l{i}: &l{i} [*l{i - 1}]" for i in range(1, MAX_DEPTH + 2)]
    path = tmp_path / "stack.yaml"
    path.write_text("\n".join(lines) + "\n")
    assert f"deeper than {MAX_DEPTH} levels" in _error("config", path)


def test_a_recursive_alias_is_refused(reader: str, tmp_path: Path) -> None:
    path = tmp_path / "rec.yaml"
    path.write_text("version: v1\nx: &a [1, *a]\n")
    assert f"{path}:2: an alias refers to a list or mapping that contains it" in _error(
        reader, path
    )


def test_bytes_that_are_not_utf8_are_named_by_offset(reader: str, tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"name: x\ndescription: caf\xe9\n")
    msg = _error(reader, path)
    assert msg == f"{path}:2: byte offset 24 (0xe9) is not valid UTF-8"


def test_duplicate_keys_are_errors_with_every_line(reader: str, tmp_path: Path) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text("version: v1\nname: a\nlist:\n  - {k: 1, k: 2}\nname: b\n")
    msg = _error(reader, path)
    assert "2 problem(s)" in msg
    assert f"{path}:4: list[0]: duplicate key 'k'" in msg
    assert f"{path}:5: duplicate key 'name'" in msg


def test_python_tags_are_a_clean_error(reader: str, tmp_path: Path) -> None:
    path = tmp_path / "py.yaml"
    path.write_text(
        "version: v1\nname: !!python/object/apply:os.system ['echo pwned']\n"
        "other: !!python/name:os.getcwd ''\n"
    )
    msg = _error(reader, path)
    assert f"{path}:2: the tag !!python/object/apply:os.system is not allowed" in msg
    assert f"{path}:3: the tag !!python/name:os.getcwd is not allowed" in msg


def test_values_that_cannot_be_built_are_clean_errors(reader: str, tmp_path: Path) -> None:
    path = tmp_path / "int.yaml"
    path.write_text("version: !!int abc\n")
    assert _error(reader, path).startswith(f"{path}:1: not valid YAML: invalid literal for int()")
    late = tmp_path / "late.yaml"
    late.write_text("version: v1\nmig-configs:\n  x: [1, !!float abc]\n")
    assert _error("config", late).startswith(f"{late}:3: not valid YAML")
    key = tmp_path / "key.yaml"
    key.write_text("? [1, 2]\n: x\n")
    assert _error(reader, key).startswith(f"{key}:1: ")  # mig-parted: "key [1, 2] is not a string"
    assert _error("config", key) == f"{key}:1: not valid YAML: found unhashable key"


def test_ordinary_anchors_and_merge_keys_still_work() -> None:
    from migperf.experiments.config import parse_config

    cfg = parse_config(
        "name: x\nstop: &s {min_iterations: 3, min_duration_s: 0, max_duration_s: 5}\n"
        "jobs:\n  - &j {workload: gemm, model_args: {n: 8}}\n  - {<<: *j, batch_size: 2}\n"
    )
    assert [j.batch_size for j in cfg.jobs] == [1, 2] and cfg.stop.min_iterations == 3
