"""YAML files read safely and with their line numbers, so errors can say ``file:line: field``.

Every YAML input of migperf (experiment configs, demand files, mig-parted
files) is read here: :func:`read_text` refuses files over :data:`MAX_BYTES`
and bytes that are not UTF-8; :func:`composed` refuses deep nesting, alias
bombs, recursive aliases, non-plain tags (``!!python/object``) and duplicate
mapping keys before anything is built; :func:`validate_yaml` validates a
pydantic model and lists every problem as ``file:line: field: problem``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from migperf.errors import ConfigError

M = TypeVar("M", bound=BaseModel)

#: A problem found after schema validation: the field's path in the data and what is wrong.
Problem = tuple[tuple[Any, ...], str]

#: Largest YAML input read, in bytes: configs are a few KiB; a bigger file is a
#: mistake (a results dump, a binary) and the pure-Python parser would take minutes on it.
MAX_BYTES = 4 * 1024 * 1024
#: Deepest nesting of lists and mappings; real files nest under 10 levels, and
#: the composer and every walk over the tree recurse once per level.
MAX_DEPTH = 64
#: Most alias (``*name``) uses in one file.
MAX_ALIASES = 10_000
#: Most nodes the document holds with every alias expanded: aliases share
#: nodes, so a "billion laughs" file is tiny until something walks it.
MAX_NODES = 1_000_000

_CORE_TAG = "tag:yaml.org,2002:"
_MERGE_TAG = _CORE_TAG + "merge"
# The plain YAML types safe_load builds; anything else (!!python/object, local
# tags) is refused before construction.
_SAFE_TAGS = frozenset(t for t in yaml.SafeLoader.yaml_constructors if t is not None) | {
    _MERGE_TAG  # the ``<<`` key, resolved by the constructor itself
}


def _short_tag(tag: str) -> str:
    return "!!" + tag.removeprefix(_CORE_TAG) if tag.startswith(_CORE_TAG) else tag


class _LimitError(Exception):
    """A limit of the safe reader was passed; ``composed`` adds the file and line."""

    def __init__(self, mark: yaml.Mark | None, problem: str) -> None:
        super().__init__(problem)
        self.mark = mark
        self.problem = problem


class _SafeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses deep nesting and alias floods while composing."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self._depth = 0
        self._aliases = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise _LimitError(event.start_mark, f"more than {MAX_ALIASES:,} aliases")
            return super().compose_node(parent, index)
        collection = isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent))
        self._depth += collection
        try:
            if self._depth > MAX_DEPTH:
                # Checked before descending: the composer recurses once per level.
                raise _LimitError(event.start_mark, f"nested deeper than {MAX_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= collection


def _check_size(text: str, source: str, hint: str) -> None:
    size = len(text) if len(text) * 4 <= MAX_BYTES else len(text.encode("utf-8", "replace"))
    if size > MAX_BYTES:
        raise ConfigError(
            f"{source}: {size:,} bytes is more than the {MAX_BYTES // 2**20} MiB a YAML file may have",
            hint=f"{hint}; is this the right file?",
        )


def _inspect(loader: yaml.SafeLoader, root: yaml.Node, source: str, hint: str) -> None:
    """Refuse cycles, expansion bombs and deep alias nesting; list bad tags and duplicate keys.

    One pass over the node graph (each distinct node once, aliases shared),
    iterative so a hostile file cannot exhaust the stack.

    Raises:
        ConfigError: the graph is too large or recursive (at once), or has
            refused tags or duplicate keys (every one listed).
    """
    size: dict[int, int] = {}
    height: dict[int, int] = {}
    open_: set[int] = set()
    problems: list[str] = []

    def at(node: yaml.Node) -> str:
        return f"{source}:{node.start_mark.line + 1}"

    # (node, its children done?, its path from the root, for messages)
    stack: list[tuple[yaml.Node, bool, tuple[Any, ...]]] = [(root, False, ())]
    while stack:
        node, done, path = stack.pop()
        key = id(node)
        children: list[tuple[yaml.Node, tuple[Any, ...]]] = []
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                name = k.value if isinstance(k, yaml.ScalarNode) else "?"
                children += [(k, path), (v, (*path, name))]
        elif isinstance(node, yaml.SequenceNode):
            children = [(v, (*path, i)) for i, v in enumerate(node.value)]
        if done:
            open_.discard(key)
            size[key] = 1 + sum(size[id(c)] for c, _ in children)
            height[key] = (
                (1 + max((height[id(c)] for c, _ in children), default=0))
                if (isinstance(node, yaml.CollectionNode))
                else 0
            )
            if size[key] > MAX_NODES:
                raise ConfigError(
                    f"{at(node)}: aliases expand this document past {MAX_NODES:,} values "
                    "(an alias bomb?)",
                    hint=f"{hint}; write the values out instead of nesting aliases",
                )
            if height[key] > MAX_DEPTH:
                raise ConfigError(
                    f"{at(node)}: aliases nest this document deeper than {MAX_DEPTH} levels",
                    hint=hint,
                )
            continue
        if key in size:
            continue
        if key in open_:
            raise ConfigError(
                f"{at(node)}: an alias refers to a list or mapping that contains it "
                "(a recursive structure)",
                hint=f"{hint}; remove the recursive alias",
            )
        open_.add(key)
        if node.tag not in _SAFE_TAGS:
            problems.append(
                f"{at(node)}: the tag {_short_tag(node.tag)} is not allowed; only plain YAML "
                "values (strings, numbers, booleans, lists, mappings) are read"
            )
        if isinstance(node, yaml.MappingNode):
            where = _where(path)
            problems += [
                f"{at(k)}: " + (f"{where}: " if where else "") + f"duplicate key {name!r}"
                for k, name in _duplicates(loader, node)
            ]
        stack.append((node, True, path))
        stack.extend((c, False, p) for c, p in children if id(c) not in size)
    if problems:
        head = f"{len(problems)} problem(s) in {source}:\n  " if len(problems) > 1 else ""
        raise ConfigError(head + "\n  ".join(problems), hint=hint)


def _duplicates(loader: yaml.SafeLoader, node: yaml.MappingNode) -> list[tuple[yaml.Node, Any]]:
    """The key nodes of ``node`` that repeat an earlier key, with the key.

    PyYAML keeps the last of two equal keys without a word; a repeated field
    is almost always an editing mistake that silently drops a setting.
    """
    first: set[Any] = set()
    out: list[tuple[yaml.Node, Any]] = []
    for knode, _ in node.value:
        if not isinstance(knode, yaml.ScalarNode) or knode.tag == _MERGE_TAG:
            continue
        try:
            key: Any = loader.construct_object(knode) if knode.tag in _SAFE_TAGS else knode.value
            hash(key)
        except (yaml.YAMLError, ValueError, TypeError):
            key = knode.value
        if key in first:
            out.append((knode, key))
        first.add(key)
    return out


@contextmanager
def composed(text: str, source: str, hint: str) -> Iterator[tuple[yaml.SafeLoader, yaml.Node]]:
    """Parse ``text`` to a node tree (with marks) and yield ``(loader, root node)``.

    This is the one way migperf reads YAML (experiment configs, demand files,
    mig-parted files). Before anything is built it refuses text over
    :data:`MAX_BYTES`, nesting deeper than :data:`MAX_DEPTH`, more than
    :data:`MAX_ALIASES` aliases, aliases that expand past :data:`MAX_NODES`
    values or refer to themselves, tags other than plain YAML types
    (``!!python/object...``) and duplicate mapping keys.

    Raises:
        ConfigError: the text is not YAML (with the line to fix), is empty,
            or breaks one of the limits above (with the line).
    """
    _check_size(text, source, hint)
    loader = _SafeLoader(text)
    try:
        try:
            root = loader.get_single_node()
        except _LimitError as exc:
            line = f":{exc.mark.line + 1}" if exc.mark is not None else ""
            raise ConfigError(f"{source}{line}: {exc.problem}", hint=hint) from None
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
        _inspect(loader, root, source, hint)
        yield loader, root
    finally:
        loader.dispose()


def construct(loader: yaml.SafeLoader, node: yaml.Node, source: str, hint: str) -> Any:
    """The Python value of a node from :func:`composed`.

    Raises:
        ConfigError: the value cannot be built (``!!int abc``, an unhashable
            key), with the file and line.
    """
    try:
        return loader.construct_object(node, deep=True)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark or node.start_mark
        raise ConfigError(
            f"{source}:{mark.line + 1}: not valid YAML: {exc.problem or exc}", hint=hint
        ) from None
    except (yaml.YAMLError, ValueError, TypeError, OverflowError) as exc:
        # The constructor does not say which value it choked on: find it.
        bad = _failing_scalar(loader, node) or node
        raise ConfigError(
            f"{source}:{bad.start_mark.line + 1}: not valid YAML: {exc}", hint=hint
        ) from None


def _failing_scalar(loader: yaml.SafeLoader, root: yaml.Node) -> yaml.Node | None:
    """The first scalar under ``root`` whose value cannot be built (``!!int abc``)."""
    stack = [root]
    seen: set[int] = set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.ScalarNode):
            try:
                yaml.SafeLoader("").construct_object(node)
            except (yaml.YAMLError, ValueError, TypeError, OverflowError):
                return node
        elif isinstance(node, yaml.MappingNode):
            stack.extend(n for pair in reversed(node.value) for n in reversed(pair))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(reversed(node.value))
    return None


def _lines(node: yaml.Node, path: tuple[Any, ...], out: dict[tuple[Any, ...], int]) -> None:
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if not isinstance(k, yaml.ScalarNode):
                continue  # a list or mapping as a key: construction refuses it with its line
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
    """Whether a part of an error location is pydantic's tag of a union member.

    E.g. ``RangeSpec``, ``list[any]``, ``function-after[_one_rule(), RangeSpec]``.
    """
    # Field names never hold brackets; pydantic's member tags do (``literal['a','b']``, ``list[str]``).
    return isinstance(part, str) and (
        part[:1].isupper() or "[" in part or part.startswith("function-")
    )


def _literal_message(err: Any, other_forms: bool) -> str:
    """``'frist' is not one of first, each, all; did you mean 'first'?`` for a literal error."""
    import difflib
    import re

    options = re.findall(r"'([^']*)'", str((err.get("ctx") or {}).get("expected", "")))
    given = err.get("input")
    msg = f"{given!r} is not one of {', '.join(options)}" if options else err["msg"]
    if isinstance(given, str):
        close = difflib.get_close_matches(given, options, n=1)
        if close:
            msg += f"; did you mean {close[0]!r}?"
    if other_forms:
        msg += " (other forms are accepted too: see `migperf config schema`)"
    return msg


def _line_of(loc: tuple[Any, ...], lines: dict[tuple[Any, ...], int]) -> int:
    return next((lines[loc[:k]] for k in range(len(loc), -1, -1) if loc[:k] in lines), 1)


def validate_yaml(
    text: str,
    source: str,
    model: type[M],
    *,
    kind: str,
    hint: str,
    checks: Callable[[dict[str, Any], M | None], Iterable[Problem]] | None = None,
) -> M:
    """Parse YAML ``text`` and validate it as ``model``, every problem with its line.

    Args:
        text: The file's text.
        source: Its name in messages.
        model: The pydantic model of the whole file.
        kind: What the file is, for the not-a-mapping message (``an experiment file``).
        hint: What to do, for every error.
        checks: Further checks the schema cannot express: called with the
            parsed data and the validated model (None when the schema found
            problems, so checks of parts can still run); returns
            ``(field path, problem)`` pairs, reported with the schema's.

    Raises:
        ConfigError: not YAML, over a limit of :func:`composed`, not a
            mapping, or invalid; the message lists every problem as
            ``source:line: field: problem``.
    """
    with composed(text, source, hint) as (loader, root):
        lines: dict[tuple[Any, ...], int] = {}
        _lines(root, (), lines)
        data = construct(loader, root, source, hint)
    if not isinstance(data, dict):
        raise ConfigError(f"{source}:1: {kind} must be a mapping of fields", hint=hint)
    found: list[tuple[int, str]] = []
    result: M | None = None
    try:
        result = model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        # A union (a list or a range) reports every member; when one member
        # got past the type check, its complaint is the one that helps.
        typed = {
            tuple(p for p in e["loc"] if not _is_tag(p))
            for e in errors
            if not e["type"].endswith("_type")
        }
        dropped = set()
        for err in errors:
            loc = tuple(p for p in err["loc"] if not _is_tag(p))
            if err["type"].endswith("_type") and loc in typed and len(loc) < len(err["loc"]):
                dropped.add(loc)
        for err in errors:
            loc = tuple(p for p in err["loc"] if not _is_tag(p))
            if err["type"].endswith("_type") and loc in typed and len(loc) < len(err["loc"]):
                continue
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "literal_error":
                msg = _literal_message(err, other_forms=loc in dropped)
            elif err["type"] == "extra_forbidden":
                msg = "unknown field"
            elif err["type"] == "missing":
                msg = "required field is missing"
            found.append((_line_of(loc, lines), f"{_where(loc) or '(top level)'}: {msg}"))
    for loc, msg in checks(data, result) if checks is not None else ():
        found.append((_line_of(loc, lines), f"{_where(loc) or '(top level)'}: {msg}"))
    if result is not None and not found:
        return result
    # In file order, so a reader fixes them top to bottom.
    unique = list(dict.fromkeys(f"{source}:{n}: {m}" for n, m in sorted(found, key=lambda f: f[0])))
    head = f"{len(unique)} problem(s) in {source}:\n  " if len(unique) > 1 else ""
    raise ConfigError(head + "\n  ".join(unique), hint=hint) from None


def read_text(path: Path, *, what: str = "", hint: str = "check the path") -> str:
    """A YAML file's text: at most :data:`MAX_BYTES`, strictly UTF-8.

    Args:
        path: The file.
        what: What it is, for the cannot-read message (``"mig-parted config "``).
        hint: What to do when it cannot be read.

    Raises:
        ConfigError: the file cannot be read, is larger than :data:`MAX_BYTES`
            (refused before it is parsed, or even read whole), or is not UTF-8
            (the message names the line and byte offset).
    """
    try:
        with path.open("rb") as f:
            # One byte more than allowed tells "too large" without reading a
            # huge (or endless, like /dev/zero) file.
            data = f.read(MAX_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read {what}{path}: {exc.strerror or exc}", hint=hint) from None
    if len(data) > MAX_BYTES:
        raise ConfigError(
            f"{path}: the file is larger than the {MAX_BYTES // 2**20} MiB a YAML file may have",
            hint="is this the right file? experiment, demand and mig-parted files are a few KiB",
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            f"{path}:{line}: byte offset {exc.start} (0x{data[exc.start]:02x}) is not valid UTF-8",
            hint="save the file as UTF-8 (YAML files must be UTF-8 text)",
        ) from None
