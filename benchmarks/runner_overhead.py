"""How much of a sweep's wall time is spent measuring, with warm and with fresh workers.

Runs two experiments through the real runner, workers and store, each once
with ``workers: warm`` and once with ``workers: fresh``, in this one command:

* the quickstart (``configs/quickstart.yaml``: 3 layouts, 9 runs of
  ResNet-18 inference and a small BERT training step);
* a 20-run GEMM sweep (2 layouts x 5 batch sizes x 2 repeats, 0.5 s windows).

and prints side by side: wall time (planning + running), the measuring share
(time inside measurement windows / wall), the per-run fixed cost (wall minus
measuring, model builds and the configured warmup, per run), and the model
builds counted from the stored results (``params.worker.model_cached``).

Then it checks that warm workers measure the same thing: per run key, the
throughput ratio warm / fresh, against the noise of the fresh runs themselves
(the spread between the GEMM sweep's two repeats of one setting).

Run: ``.venv/bin/python benchmarks/runner_overhead.py`` (on the simulator when
no GPU is present; a few minutes on 2 cores).
"""

from __future__ import annotations

import json
import os
import sqlite3
import statistics
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
    """Plan and run ``text`` with ``workers: mode``; what it cost, from the report and the store."""
    from migperf.experiments.config import parse_config
    from migperf.experiments.planning import plan_experiment
    from migperf.experiments.runner import ExperimentRunner
    from migperf.nvml import open_nvml
    from migperf.results import ResultsStore

    db = tmp / f"{mode}-{time.monotonic_ns()}.db"
    t0 = time.monotonic()
    cfg = parse_config(text).model_copy(update={"workers": mode})
    with open_nvml("a100-80gb") as nvml:
        plan = plan_experiment(nvml, cfg)
        with ResultsStore(db) as store:
            report = ExperimentRunner(nvml, plan, store).run()
    wall = time.monotonic() - t0
    rows = (
        sqlite3.connect(db)
        .execute("select run_key, params, result, layout, workload, batch_size from runs")
        .fetchall()
    )
    builds = build_s = warmup_s = 0.0
    throughput: dict[str, float] = {}
    settings: dict[tuple[Any, ...], list[float]] = {}
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
            settings.setdefault(tuple(setting), []).append(throughput[key])
        assert worker.get("mode") == mode, (worker, mode)
    runs = len(rows)
    measure = report.time_s["measure"]
    return {
        "runs": runs,
        "ok": report.stored,
        "wall": wall,
        "measure": measure,
        "share": measure / wall,
        "fixed": (wall - measure - build_s - warmup_s) / runs,
        "builds": int(builds),
        "build_s": build_s,
        "warmup_s": warmup_s,
        "throughput": throughput,
        "settings": settings,
        "labels": labels,
    }


def agreement(warm: dict[str, float], fresh: dict[str, float]) -> tuple[float, float, int]:
    """Median warm/fresh throughput ratio, its spread (max |ratio - 1|), and how many keys."""
    ratios = [warm[k] / fresh[k] for k in warm if k in fresh and fresh[k] > 0]
    return statistics.median(ratios), max(abs(r - 1) for r in ratios), len(ratios)


def repeat_noise(settings: dict[tuple[Any, ...], list[float]]) -> tuple[float, float]:
    """One mode's own noise: median and worst |r0/r1 - 1| between two repeats of one setting."""
    gaps = [abs(v[0] / v[1] - 1) for v in settings.values() if len(v) == 2 and v[1] > 0]
    return (statistics.median(gaps), max(gaps)) if gaps else (float("nan"), float("nan"))


def main() -> int:
    tmp = Path(tempfile.mkdtemp())
    os.environ["MIGPERF_STATE_DIR"] = str(tmp / "state")
    quickstart = (ROOT / "configs" / "quickstart.yaml").read_text()
    out: dict[str, dict[str, dict[str, Any]]] = {}
    only = sys.argv[1:]  # e.g. `quickstart`: run only the sweeps named
    for name, text in (("quickstart", quickstart), ("gemm x20", GEMM)):
        if only and name.split()[0] not in only:
            continue
        out[name] = {}
        for mode in ("warm", "fresh"):
            print(f"running {name} with {mode} workers ...", file=sys.stderr, flush=True)
            out[name][mode] = run_once(text, mode, tmp)
    print(f"host: {os.cpu_count()} CPU cores (simulated GPU; shared machine: other load skews)")
    head = f"{'sweep':<11} {'mode':<6} {'runs':>4} {'wall s':>7} {'measuring':>10} {'fixed s/run':>11} {'builds':>6} {'build s':>7} {'warmup s':>8}"
    print(head)
    for name, modes in out.items():
        for mode, r in modes.items():
            print(
                f"{name:<11} {mode:<6} {r['runs']:>4} {r['wall']:>7.1f} {r['share']:>9.0%} "
                f"{r['fixed']:>11.2f} {r['builds']:>6} {r['build_s']:>7.1f} {r['warmup_s']:>8.1f}"
            )
    print("goals: warm >= 70 % measuring on the quickstart; fixed cost < 0.3 s per run")
    for name, modes in out.items():
        med, worst, n = agreement(modes["warm"]["throughput"], modes["fresh"]["throughput"])
        print(
            f"{name}: warm/fresh throughput, {n} run keys: median ratio {med:.3f}, "
            f"worst |ratio - 1| {worst:.1%}"
        )
    qs = out.get("quickstart") or {"fresh": {"labels": {}}}
    for key, label in sorted(qs["fresh"]["labels"].items(), key=lambda kv: kv[1]):
        w, f = qs["warm"]["throughput"].get(key), qs["fresh"]["throughput"].get(key)
        if w and f:
            print(f"  quickstart {label:<36} warm {w:9.1f}  fresh {f:9.1f}  ratio {w / f:.3f}")
    for mode in ("fresh", "warm") if "gemm x20" in out else ():
        med_gap, worst_gap = repeat_noise(out["gemm x20"][mode]["settings"])
        print(
            f"noise ({mode}): two repeats of one GEMM setting differ by {med_gap:.1%} "
            f"(median), {worst_gap:.1%} (worst)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
