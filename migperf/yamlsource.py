"""YAML files read with their line numbers, so errors can say ``file:line: field``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import yaml

from migperf.errors import ConfigError


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
            raise ConfigError(f"{source}{line}: not valid YAML: {exc.problem or exc}", hint=hint) from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{source}: not valid YAML: {exc}", hint=hint) from None
        if root is None:
            raise ConfigError(f"{source}: the file is empty", hint=hint)
        yield loader, root
    finally:
        loader.dispose()
