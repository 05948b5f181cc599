"""A check process: ``python -m migperf.compat.probes PROBE CHECK[,CHECK...]``.

Runs the named checks of one framework in this process, in order, with the
environment the runner gave it (``CUDA_VISIBLE_DEVICES`` and the context in
``MIGPERF_COMPAT_CONTEXT``), and prints one JSON line per check, after ``MIGPERF-COMPAT ``, as soon as it
finishes::

    MIGPERF-COMPAT {"check": "infer", "verdict": "pass", "detail": "...", "wall_s": 0.41, "version": "..."}

The runner reads the lines against each check's time limit; a check that
hangs is the runner's to stop. A framework that is not installed gives one
``skipped`` line per check and no import is tried; after a failed ``import``
the other checks are ``skipped``.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from migperf.compat.probes.kit import (
    IMPORT_FAILED,
    LINE_PREFIX,
    Context,
    ExpectedFail,
    Skip,
    describe,
    load_probe,
)


def _emit(line: dict[str, Any]) -> None:
    sys.stdout.write(LINE_PREFIX + json.dumps(line, default=str) + "\n")
    sys.stdout.flush()


def main(argv: list[str]) -> int:
    """Run the checks; exit 0 whatever their verdicts (2 on a bad command line)."""
    if len(argv) != 2:
        sys.stderr.write("usage: python -m migperf.compat.probes MODULE:NAME CHECK[,CHECK...]\n")
        return 2
    probe = load_probe(argv[0])
    checks = [c for c in argv[1].split(",") if c]
    ctx = Context.from_env()
    if not probe.installed(ctx):
        for check in checks:
            _emit(
                {
                    "check": check,
                    "verdict": "skipped",
                    "detail": f"not installed: {ctx.install}",
                    "wall_s": None,
                }
            )
        return 0
    version: str | None = None
    blocked: str | None = None
    for check in checks:
        if blocked is not None:
            _emit({"check": check, "verdict": "skipped", "detail": blocked, "wall_s": None})
            continue
        fn = probe.checks[check]
        t0 = time.perf_counter()
        try:
            verdict, detail = "pass", fn(ctx)
        except Skip as exc:
            verdict, detail = "skipped", str(exc)
        except ExpectedFail as exc:
            verdict, detail = "expected-fail", str(exc)
        except BaseException as exc:  # noqa: BLE001 - a check's every failure is its verdict
            if isinstance(exc, KeyboardInterrupt):
                raise
            verdict, detail = "fail", describe(exc)
        wall = time.perf_counter() - t0
        if version is None and verdict != "fail":
            try:
                version = probe.version()
            except Exception:  # noqa: BLE001 - a version we cannot read is left out
                version = None
        if check == "import" and verdict != "pass":
            blocked = IMPORT_FAILED if verdict == "fail" else f"import {verdict}: {detail}"
        _emit(
            {
                "check": check,
                "verdict": verdict,
                "detail": detail,
                "wall_s": round(wall, 3),
                "version": version,
            }
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
