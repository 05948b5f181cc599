"""YAML files read with their line numbers, so errors can say ``file:line: field``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from migperf.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


@contextmanager
def composed(text: str, source: str, hint: str) -> Iterator[tuple[yaml.SafeLoader, yaml.Node]]:
    """Parse ``text`` to a node tree (with marks) and yield ``(loader, root node)``.

    Raises:
        ConfigError: the text is not YAML (with the line to fix) or is empty.
    """
    loader = yaml.SafeLoader(text)
    try:
        try:
            root = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            # An unclosed bracket is reported at the end of the file; the line
            # where it was opened (the context) is what the user must fix.
            mark = exc.context_mark or exc.problem_mark
            line = f":{mark.line + 1}" if mark is not None else ""
            raise ConfigError(
                f"{source}{line}: not valid YAML: {exc.problem or exc}", hint=hint
            ) from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{source}: not valid YAML: {exc}", hint=hint) from None
        if root is None:
            raise ConfigError(f"{source}: the file is empty", hint=hint)
        yield loader, root
    finally:
        loader.dispose()


def _lines(node: yaml.Node, path: tuple[Any, ...], out: dict[tuple[Any, ...], int]) -> None:
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            out[path + (k.value,)] = k.start_mark.line + 1
            _lines(v, path + (k.value,), out)
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            _lines(v, path + (i,), out)


def _where(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for p in loc:
        parts.append(f"[{p}]" if isinstance(p, int) else ("." if parts else "") + str(p))
    return "".join(parts)


def _is_tag(part: Any) -> bool:
    """Pydantic's union-member tags in an error location (``RangeSpec``, ``list[any]``)."""
    return isinstance(part, str) and (part[:1].isupper() or part in ("list[any]",))


def validate_yaml(text: str, source: str, model: type[M], *, kind: str, hint: str) -> M:
    """Parse YAML ``text`` and validate it as ``model``, every problem with its line.

    Args:
        text: The file's text.
        source: Its name in messages.
        model: The pydantic model of the whole file.
        kind: What the file is, for the not-a-mapping message (``an experiment file``).
        hint: What to do, for every error.

    Raises:
        ConfigError: not YAML, not a mapping, or invalid; the message lists
            every problem as ``source:line: field: problem``.
    """
    with composed(text, source, hint) as (loader, root):
        lines: dict[tuple[Any, ...], int] = {}
        _lines(root, (), lines)
        data = loader.construct_document(root)
    if not isinstance(data, dict):
        raise ConfigError(f"{source}:1: {kind} must be a mapping of fields", hint=hint)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(p for p in err["loc"] if not _is_tag(p))
            line_no = next((lines[loc[:k]] for k in range(len(loc), -1, -1) if loc[:k] in lines), 1)
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown field"
            elif err["type"] == "missing":
                msg = "required field is missing"
            problems.append(f"{source}:{line_no}: {_where(loc) or '(top level)'}: {msg}")
        unique = list(dict.fromkeys(problems))
        head = f"{len(unique)} problem(s) in {source}:\n  " if len(unique) > 1 else ""
        raise ConfigError(head + "\n  ".join(unique), hint=hint) from None


def read_text(path: Path) -> str:
    """A config file's text.

    Raises:
        ConfigError: the file cannot be read.
    """
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"cannot read {path}: {exc.strerror or exc}", hint="check the path"
        ) from None
