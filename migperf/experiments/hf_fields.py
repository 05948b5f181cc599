"""The fields of a ``transformers`` configuration class, read from its source without importing it.

A model workload takes any field of its configuration class as a model
argument (``num_hidden_layers``, ``n_layers``...). The worker checks them
against ``ConfigClass().to_dict()``, but importing a configuration class
imports torch (seconds), which config validation must not do. So the
installed package's source is read instead: the class's and its bases'
annotated fields (transformers 5), the keyword arguments and ``self.<field>``
assignments of their ``__init__``/``__post_init__`` (transformers 4), the
``kwargs.pop("<field>", ...)`` they consume, and property setters.

The answer is a superset of what the worker accepts (a few internal names
come along) or None when the source cannot be found or read, in which case
only the workload's own arguments are checked before a run; it never
rejects a field the worker would take (``tests/experiments`` compares it
with ``to_dict()`` of every model workload).
"""

from __future__ import annotations

import ast
import functools
import importlib.util
from pathlib import Path
from typing import Any

__all__ = ["config_fields"]

# Keys the worker refuses although to_dict() has them: bookkeeping, and the
# 1000-entry label maps (the bench workloads' _META_KEYS and _UNRECORDED).
_NOT_ARGS = frozenset(
    {
        "transformers_version",
        "model_type",
        "architectures",
        "_name_or_path",
        "dtype",
        "torch_dtype",
        "id2label",
        "label2id",
    }
)
_NO_DEFAULT = object()


def _root() -> Path | None:
    # find_spec of a top-level name locates the package without running it.
    spec = importlib.util.find_spec("transformers")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


@functools.lru_cache(maxsize=64)
def _module(path: Path) -> ast.Module | None:
    try:
        return ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return None


def _resolve(path: Path, module: ast.Module, name: str) -> Path | None:
    """The file that defines ``name``, per the module's own ``from ... import``."""
    for node in module.body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            return path
        if isinstance(node, ast.ImportFrom) and any(a.name == name for a in node.names):
            base = path.parent
            for _ in range(max(node.level - 1, 0)):
                base = base.parent
            rel = Path(*(node.module or "").split("."))
            for cand in (base / rel.with_suffix(".py"), base / rel / "__init__.py"):
                if cand.is_file():
                    return cand
    return None


def _literal(node: ast.expr | None) -> Any:
    if node is None:
        return _NO_DEFAULT
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return _NO_DEFAULT


def _from_function(fn: ast.FunctionDef, out: dict[str, Any]) -> None:
    args = fn.args.args[1:] + fn.args.kwonlyargs
    defaults = [None] * (len(fn.args.args) - 1 - len(fn.args.defaults)) + list(fn.args.defaults)
    defaults += list(fn.args.kw_defaults)
    for arg, default in zip(args, defaults, strict=False):
        out.setdefault(arg.arg, _literal(default))
    for node in ast.walk(fn):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, ast.AnnAssign):
            targets = [node.target]
        for t in targets:
            if (
                isinstance(t, ast.Attribute)
                and isinstance(t.value, ast.Name)
                and t.value.id == "self"
            ):
                out.setdefault(t.attr, _NO_DEFAULT)
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("pop", "get")
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "kwargs"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            out.setdefault(
                node.args[0].value, _literal(node.args[1] if len(node.args) > 1 else None)
            )


def _collect(path: Path, name: str, out: dict[str, Any], depth: int) -> None:
    module = _module(path)
    if module is None or depth > 8:
        return
    cls = next((n for n in module.body if isinstance(n, ast.ClassDef) and n.name == name), None)
    if cls is None:
        return
    # The class's own defaults first: a subclass overrides its bases'.
    for node in cls.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            if "ClassVar" not in ast.unparse(node.annotation):
                out.setdefault(node.target.id, _literal(node.value))
        elif isinstance(node, ast.FunctionDef):
            if node.name in ("__init__", "__post_init__"):
                _from_function(node, out)
            for dec in node.decorator_list:
                if isinstance(dec, ast.Attribute) and dec.attr == "setter":
                    out.setdefault(node.name, _NO_DEFAULT)
    for base in cls.bases:
        if isinstance(base, ast.Name):
            where = _resolve(path, module, base.id)
            if where is not None:
                _collect(where, base.id, out, depth + 1)


@functools.lru_cache(maxsize=32)
def config_fields(config_class: str) -> dict[str, Any] | None:
    """The fields a model argument may set on ``config_class``, with their literal defaults.

    Args:
        config_class: A ``transformers`` configuration class name (``BertConfig``).

    Returns:
        ``{field: default}``, the default None where the source gives no
        literal; None when transformers or the class's source is not found.
    """
    root = _root()
    if root is None:
        return None
    stem = config_class.removesuffix("Config").lower()
    path = root / "models" / stem / f"configuration_{stem}.py"
    if not path.is_file():
        return None
    found: dict[str, Any] = {}
    _collect(path, config_class, found, 0)
    fields = {
        k: (None if v is _NO_DEFAULT else v)
        for k, v in found.items()
        if k not in _NOT_ARGS and not k.startswith("_")
    }
    return fields or None
