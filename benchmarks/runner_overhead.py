"""How much of a sweep's wall time is spent measuring, with warm and with fresh workers.

Runs two experiments through the real runner, workers and store, with
``workers: warm`` and with ``workers: fresh``, in this one command:

* the quickstart (``configs/quickstart.yaml``: 3 layouts, 9 runs of
  ResNet-18 inference and a small BERT training step);
* a 20-run GEMM sweep (2 layouts x 5 batch sizes x 2 repeats, 0.5 s windows).

The modes are interleaved, ABBA: round 1 runs warm then fresh, round 2 fresh
then warm (``--rounds N``, default 2), so a machine whose load drifts during
the command weighs on both modes alike. For every sweep and round it prints:
wall time (planning + running), the measuring share (time inside measurement
windows / wall), the start (from the runner's start to the first worker's
``building``: the zygote's imports when warm, the first worker's when fresh),
the per-run fixed cost (wall minus measuring, model builds and the configured
warmup, per run) with and without that start, and the model builds counted
from the stored results (``params.worker.model_cached``).

Then it states whether warm workers measure the same thing: per run key, the
throughput ratio warm / fresh (geometric means over the rounds), against the
noise of each mode measured the same way (the same key in two rounds of one
mode, ``|r1 / r2 - 1|``), and calls them in agreement when the median ratio
is within the larger median same-mode gap of 1.

Run: ``.venv/bin/python benchmarks/runner_overhead.py [quickstart|gemm] [--rounds N]``
(on the simulator when no GPU is present; about 5 minutes on 2 busy cores).
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

GEMM = """
name: gemm-overhead
layouts: ["0", "14,14,14,19"]
instances: first
repeats: 2
stop: {warmup_iterations: 2, min_iterations: 5, min_duration_s: 0.5, max_duration_s: 5}
jobs:
  - workload: gemm
    model_args: {n: 128}
    sweep: {batch_size: [1, 2, 4, 8, 16]}
"""


def run_once(text: str, mode: str, tmp: Path) -> dict[str, Any]:
    """Plan and run ``text`` with ``workers: mode``; what it cost, from the report, its events and the store."""
    from migperf.experiments.config import parse_config
    from migperf.experiments.planning import plan_experiment
    from migperf.experiments.runner import ExperimentRunner
    from migperf.nvml import open_nvml
    from migperf.results import ResultsStore

    db = tmp / f"{mode}-{time.monotonic_ns()}.db"
    first_build: list[float] = []

    def on_event(kind: str, **info: Any) -> None:
        if kind == "run_phase" and info.get("phase") == "building" and not first_build:
            first_build.append(time.monotonic())

    t0 = time.monotonic()
    cfg = parse_config(text).model_copy(update={"workers": mode})
    with open_nvml("a100-80gb") as nvml:
        plan = plan_experiment(nvml, cfg)
        with ResultsStore(db) as store:
            report = ExperimentRunner(nvml, plan, store, on_event=on_event).run()
    wall = time.monotonic() - t0
    rows = (
        sqlite3.connect(db)
        .execute("select run_key, params, result, layout, workload, batch_size from runs")
        .fetchall()
    )
    builds = build_s = warmup_s = 0.0
    throughput: dict[str, float] = {}
    labels: dict[str, str] = {}
    for key, params, result, *setting in rows:
        labels[key] = f"{setting[1]} {setting[0]} bs={setting[2]}"
        p, r = json.loads(params), json.loads(result)
        worker = p.get("worker") or {}
        timing = r.get("timing") or {}
        if not worker.get("model_cached"):
            builds += 1
            build_s += timing.get("build_duration_s") or 0.0
        warmup_s += timing.get("warmup_duration_s") or 0.0
        if r.get("throughput"):
            throughput[key] = r["throughput"]["samples_per_s"]
        assert worker.get("mode") == mode, (worker, mode)
    runs = len(rows)
    measure = report.time_s["measure"]
    start = (first_build[0] - t0) if first_build else 0.0
    fixed = wall - measure - build_s - warmup_s
    return {
        "mode": mode,
        "runs": runs,
        "ok": report.stored,
        "wall": wall,
        "measure": measure,
        "share": measure / wall,
        "start": start,
        "fixed": fixed / runs,
        "fixed_after_start": (fixed - start) / runs,
        "builds": int(builds),
        "build_s": build_s,
        "warmup_s": warmup_s,
        "throughput": throughput,
        "labels": labels,
        "load": os.getloadavg()[0],
    }


def _gm(values: list[float]) -> float:
    return math.exp(statistics.fmean(math.log(v) for v in values))


def agreement(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Warm / fresh throughput per key (geometric means over rounds) and each mode's own round-to-round gap."""
    by_mode: dict[str, list[dict[str, float]]] = {"warm": [], "fresh": []}
    for r in runs:
        by_mode[r["mode"]].append(r["throughput"])
    keys = set.intersection(*(set(t) for m in by_mode.values() for t in m))
    per_key = {
        k: _gm([t[k] for t in by_mode["warm"]]) / _gm([t[k] for t in by_mode["fresh"]])
        for k in keys
    }
    ratios = sorted(per_key.values())
    gaps: dict[str, float] = {}
    for mode, tables in by_mode.items():
        if len(tables) >= 2:
            gaps[mode] = statistics.median(abs(tables[0][k] / tables[1][k] - 1) for k in keys)
    median = statistics.median(ratios)
    noise = max(gaps.values()) if gaps else float("nan")
    quart = statistics.quantiles(ratios, n=4) if len(ratios) >= 2 else [median, median, median]
    return {
        "keys": len(keys),
        "median": median,
        "q1": quart[0],
        "q3": quart[2],
        "gaps": gaps,
        "noise": noise,
        "agree": abs(median - 1) <= noise,
        "ratios": per_key,
    }


def main(argv: list[str]) -> int:
    rounds = 2
    if "--rounds" in argv:
        i = argv.index("--rounds")
        rounds = int(argv[i + 1])
        argv = argv[:i] + argv[i + 2 :]
    only = argv  # e.g. `quickstart`: run only the sweeps named
    tmp = Path(tempfile.mkdtemp())
    os.environ["MIGPERF_STATE_DIR"] = str(tmp / "state")
    # The first interpreter to import torch reads it from disk; no mode should pay that.
    subprocess.run([sys.executable, "-c", "import torch, transformers"], check=False)
    quickstart = (ROOT / "configs" / "quickstart.yaml").read_text()
    out: dict[str, list[dict[str, Any]]] = {}
    for name, text in (("quickstart", quickstart), ("gemm x20", GEMM)):
        if only and name.split()[0] not in only:
            continue
        out[name] = []
        for rnd in range(rounds):
            order = ("warm", "fresh") if rnd % 2 == 0 else ("fresh", "warm")
            for mode in order:
                print(
                    f"round {rnd + 1}: {name} with {mode} workers ...", file=sys.stderr, flush=True
                )
                out[name].append(run_once(text, mode, tmp) | {"round": rnd + 1})
    print(
        f"host: {os.cpu_count()} CPU cores (simulated GPU; shared machine: other load skews); "
        f"load: 1-min load average at the end of each sweep"
    )
    head = (
        f"{'sweep':<11} {'mode':<6} {'rnd':>3} {'load':>4} {'runs':>4} {'wall s':>7} {'measuring':>9} "
        f"{'start s':>7} {'fixed s/run':>11} {'w/o start':>9} {'builds':>6} {'build s':>7} {'warmup s':>8}"
    )
    print(head)
    for name, runs in out.items():
        for r in runs:
            print(
                f"{name:<11} {r['mode']:<6} {r['round']:>3} {r['load']:>4.1f} {r['runs']:>4} "
                f"{r['wall']:>7.1f} {r['share']:>9.0%} {r['start']:>7.2f} {r['fixed']:>11.2f} "
                f"{r['fixed_after_start']:>9.2f} {r['builds']:>6} {r['build_s']:>7.1f} {r['warmup_s']:>8.1f}"
            )
    print(
        "goals: warm >= 70 % measuring on the quickstart; fixed cost < 0.3 s per run; "
        "warm and fresh throughput agree within noise"
    )
    for name, runs in out.items():
        if len({r["mode"] for r in runs}) < 2:
            continue
        a = agreement(runs)
        gaps = ", ".join(f"{m} {g:.1%}" for m, g in a["gaps"].items()) or "n/a (one round)"
        verdict = "agree" if a["agree"] else "DIFFER"
        print(
            f"{name}: warm/fresh throughput over {a['keys']} run keys: median {a['median']:.3f} "
            f"(quartiles {a['q1']:.3f}-{a['q3']:.3f}); noise, the same key in two rounds of one mode "
            f"(median |r1/r2 - 1|): {gaps} -> {verdict} within noise"
        )
        labels = runs[0]["labels"]
        for key, ratio in sorted(a["ratios"].items(), key=lambda kv: labels[kv[0]]):
            print(f"  {labels[key]:<36} warm/fresh {ratio:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
