"""How long ``migperf`` takes to start, against a minimal typer app in the same run.

Each round starts, in fresh subprocesses and in the same order every round
(interleaved A B C D A B C D ..., so load from other tenants that drifts over
seconds falls on every command alike):

* a minimal typer app with one command (``--help``), with migperf's typer
  settings (plain help, no rich traceback handler): the floor, what any typer
  CLI on this Python pays (interpreter, site, typer and its click);
* the same app with typer's defaults, which import rich (reported, not the floor);
* ``python -m migperf --help``, ``python -m migperf gpus --help`` and
  ``python -m migperf run --help``.

Each time is the wall time from ``subprocess.run`` to the child's exit. The
medians over ``--rounds`` rounds, each command's ratio to the minimal app's
median, and the interquartile range are printed. ``migperf --help`` and
``migperf gpus --help`` must stay within ``--limit`` (1.3x) of the minimal
app: the command lists every command from a static table and imports a
command's module only when that command runs (``migperf.cli._common.MigperfGroup``).
``run --help`` imports ``migperf.cli.run`` and is reported, not judged.

Run: ``.venv/bin/python benchmarks/cli_start.py [--rounds 15] [--limit 1.3] [--json]``.
Exits 1 when a judged ratio is over the limit.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MINIMAL_APP = '''\
import typer

app = typer.Typer({settings})


@app.command()
def hello(name: str = "world") -> None:
    """Say hello."""
    print(f"hello {{name}}")


app()
'''

#: The floor: migperf's own typer settings (plain help, no rich tracebacks), so
#: the ratio is what migperf adds. typer's defaults import rich for the help and
#: the traceback handler (~50 ms more), which flatters every ratio; reported too.
BASELINE = "minimal typer app --help"
BASELINES = {
    BASELINE: "add_completion=False, rich_markup_mode=None, pretty_exceptions_enable=False",
    "typer defaults app --help": "",
}

#: name -> (arguments after ``python``, judged against the limit)
COMMANDS: dict[str, tuple[list[str], bool]] = {
    "migperf --help": (["-m", "migperf", "--help"], True),
    "migperf gpus --help": (["-m", "migperf", "gpus", "--help"], True),
    "migperf run --help": (["-m", "migperf", "run", "--help"], False),
}


def _time(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, env=env, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(
            f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.decode(errors='replace')}"
        )
    return elapsed


def _quartiles(values: list[float]) -> tuple[float, float]:
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], q[2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="ABAB... rounds (default 15)")
    parser.add_argument("--limit", type=float, default=1.3, help="largest ratio allowed")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    if args.rounds < 3:
        parser.error("--rounds must be at least 3")

    env = dict(os.environ, COLUMNS="100")
    env.pop("PYTHONPROFILEIMPORTTIME", None)
    with tempfile.TemporaryDirectory() as tmp:
        runs: dict[str, list[str]] = {}
        for i, (name, settings) in enumerate(BASELINES.items()):
            app = Path(tmp) / f"minimal_typer_app_{i}.py"
            app.write_text(MINIMAL_APP.format(settings=settings))
            runs[name] = [str(app), "--help"]
        runs.update({name: argv for name, (argv, _) in COMMANDS.items()})
        # One untimed start of each first: bytecode caches written, files in the page cache.
        for argv in runs.values():
            _time([sys.executable, *argv], env)
        times: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.rounds):
            for name, argv in runs.items():
                times[name].append(_time([sys.executable, *argv], env))

    base = statistics.median(times[BASELINE])
    rows = []
    failed = []
    for name, values in times.items():
        median = statistics.median(values)
        q1, q3 = _quartiles(values)
        judged = COMMANDS.get(name, ([], False))[1]
        ratio = median / base
        if judged and ratio > args.limit:
            failed.append(name)
        rows.append(
            {
                "command": name,
                "median_ms": round(median * 1e3, 1),
                "iqr_ms": [round(q1 * 1e3, 1), round(q3 * 1e3, 1)],
                "ratio": round(ratio, 3),
                "judged": judged,
            }
        )
    if args.json:
        print(json.dumps({"rounds": args.rounds, "limit": args.limit, "rows": rows}, indent=2))
    else:
        print(f"{args.rounds} interleaved rounds, fresh processes, {sys.executable}")
        print(f"{'command':<28} {'median ms':>10} {'IQR ms':>16} {'ratio':>7}")
        for r in rows:
            iqr = f"{r['iqr_ms'][0]:.1f}-{r['iqr_ms'][1]:.1f}"
            mark = f"  (limit {args.limit:g}x)" if r["judged"] else ""
            print(f"{r['command']:<28} {r['median_ms']:>10.1f} {iqr:>16} {r['ratio']:>6.2f}x{mark}")
        print("FAIL: over the limit: " + ", ".join(failed) if failed else "OK: within the limit")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
