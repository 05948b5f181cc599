"""The ``migperf`` command line: typer commands that parse, call the library, and print.

Nothing here measures or partitions by itself: each command calls one
library function (:func:`migperf.experiments.open_executor`,
:func:`migperf.planner.plan_demand`, :func:`migperf.mig.apply_layout`, ...)
and turns its result into tables, or its :class:`~migperf.errors.MigperfError`
into ``ERROR:``/``HINT:`` and an exit code (:mod:`migperf.cli._common`).
Importing it loads neither torch, pandas nor pynvml. Example::

    from typer.testing import CliRunner
    result = CliRunner().invoke(app, ["--simulate", "a100-80gb", "gpus"])
"""

from __future__ import annotations

from migperf.cli.main import app

__all__ = ["app"]
