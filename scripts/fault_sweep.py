"""Fail or crash every NVML call of an experiment's layout changes, once each, and check the damage.

For each simulated NVML function the run calls, and each of its calls (every
call of the functions that change a GPU; the first, second and last of the
others), this runs ``migperf run`` with that one call failing (``Unknown``) or
SIGKILLing the process (``crash``), then the command an operator runs next
(``migperf run --resume``), and checks what the project promises:

* the GPU ends in the layout it started from;
* every run that finished is stored exactly once (no run key has two ``ok``
  attempts), and after the resume every run's latest attempt is ``ok``.

Usage: ``python scripts/fault_sweep.py [--quick]`` (``--quick``: the first
call of each function only). Prints one line per case and a summary; exits 1
if any case broke a promise. Runs on the simulator, in a private state dir.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SPEC = "a100-80gb"
START_LAYOUT = "1g.10gb*2,2g.20gb"
CONFIG = """
name: faults
gpus: [0]
layouts: ["0", "9,9"]
instances: first
stop: {warmup_iterations: 1, min_iterations: 3, min_duration_s: 0.0, max_duration_s: 5}
timeout_s: 60
telemetry: {enabled: false}
jobs:
  - workload: gemm
    model_args: {n: 32}
    sweep: {batch_size: [1]}
"""
#: Calls that change a GPU: every one of their calls is failed and crashed.
CHANGING = (
    "nvmlDeviceCreateGpuInstanceWithPlacement",
    "nvmlGpuInstanceCreateComputeInstanceWithPlacement",
    "nvmlGpuInstanceCreateComputeInstance",
    "nvmlComputeInstanceDestroy",
    "nvmlGpuInstanceDestroy",
)
#: Calls that read: their first, second and last call is failed and crashed.
READING = (
    "nvmlDeviceGetGpuInstances",
    "nvmlGpuInstanceGetComputeInstances",
    "nvmlDeviceGetGpuInstancePossiblePlacements",
    "nvmlDeviceGetGpuInstanceProfileInfo",
    "nvmlDeviceGetMigDeviceHandleByIndex",
    "nvmlDeviceGetUUID",
)


def migperf(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "migperf", "--simulate", SPEC, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def layout(env: dict[str, str]) -> str:
    code = (
        "from migperf.nvml import open_nvml\n"
        "from migperf.mig.snapshot import take_snapshot\n"
        f"with open_nvml({SPEC!r}) as n: print(take_snapshot(n, 0).describe())"
    )
    env = {k: v for k, v in env.items() if k != "MIGPERF_SIM_FAULTS"}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    ).stdout.strip()


def fresh(base: Path, name: str) -> tuple[dict[str, str], Path, Path]:
    state = base / name
    state.mkdir()
    env = {**os.environ, "MIGPERF_STATE_DIR": str(state)}
    env.pop("MIGPERF_SIM_FAULTS", None)
    cfg = state / "faults.yaml"
    cfg.write_text(CONFIG)
    proc = migperf(env, "mig", "apply", START_LAYOUT, "--gpu", "0")
    if proc.returncode != 0:
        raise SystemExit(f"setup failed: {proc.stderr}")
    return env, cfg, state / "r.db"


def call_counts(base: Path) -> dict[str, int]:
    """How often a clean run calls each function (rules that never fire count them)."""
    env, cfg, db = fresh(base, "count")
    env["MIGPERF_SIM_FAULTS"] = ";".join(f"{f}@1000000=Unknown" for f in CHANGING + READING)
    proc = migperf(env, "run", str(cfg), "--results", str(db))
    if proc.returncode != 0:
        raise SystemExit(f"the clean run failed: {proc.stderr}")
    state_file = next((Path(env["MIGPERF_STATE_DIR"]) / "sim").glob("*.json"))
    counts: dict[str, int] = json.loads(state_file.read_text()).get("fault_calls", {})
    return counts


def stored(db: Path) -> list[tuple[str, int, str]]:
    if not db.exists():
        return []
    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT run_key, attempt, status FROM runs").fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        con.close()


def check_case(base: Path, function: str, nth: int, action: str) -> tuple[bool, str]:
    env, cfg, db = fresh(base, f"{function}-{nth}-{action}")
    before = layout(env)
    faulty = dict(env, MIGPERF_SIM_FAULTS=f"{function}@{nth}={action}")
    first = migperf(faulty, "run", str(cfg), "--results", str(db))
    ok_before = {k for k, _, s in stored(db) if s == "ok"}
    again = migperf(env, "run", str(cfg), "--results", str(db), "--resume")
    rows = stored(db)
    problems = []
    if layout(env) != before:
        problems.append(f"layout {layout(env)!r}, not {before!r}")
    ok_keys = [k for k, _, s in rows if s == "ok"]
    if len(ok_keys) != len(set(ok_keys)):
        problems.append("a run stored ok twice")
    if not ok_before <= set(ok_keys):
        problems.append("a finished result was lost")
    latest: dict[str, tuple[int, str]] = {}
    for k, a, s in rows:
        if a >= latest.get(k, (0, ""))[0]:
            latest[k] = (a, s)
    if len(latest) != 2 or any(s != "ok" for _, s in latest.values()):
        problems.append(f"after --resume: {sorted(latest.values())} (exit {again.returncode})")
    what = f"first exit {first.returncode}, resume exit {again.returncode}"
    return not problems, what + ("; " + "; ".join(problems) if problems else "")


def main() -> int:
    """Run the sweep; 0 when every case kept every promise."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only the first call of each function")
    args = parser.parse_args()
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="migperf-faults-") as tmp:
        base = Path(tmp)
        counts = call_counts(base)
        cases = []
        for function, n in sorted(counts.items()):
            if args.quick:
                calls = [1]
            elif function in CHANGING:
                calls = list(range(1, n + 1))
            else:
                calls = sorted({1, min(2, n), n})
            cases += [(function, k, action) for k in calls for action in ("Unknown", "crash")]
        print(f"calls of a clean run: {counts}; {len(cases)} case(s)", flush=True)
        broken = 0
        for function, nth, action in cases:
            good, detail = check_case(base, function, nth, action)
            broken += not good
            print(f"{'ok  ' if good else 'FAIL'} {function}@{nth}={action}: {detail}", flush=True)
    print(
        f"{len(cases) - broken}/{len(cases)} case(s) ended in the original layout with every "
        f"finished result stored once ({time.monotonic() - t0:.0f} s)"
    )
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
