"""Every scenario end to end through the real worker subprocess, checked against LoadGen's own summary.

All workers start at once in a module fixture (most of their time is the
torch import, which two cores do in parallel); each test then waits for its
own. The numbers are not judged here, only that migperf reports exactly what
LoadGen wrote in ``mlperf_log_summary.txt`` of the same run.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from migperf.bench.device import worker_env
from migperf.bench.process import WorkerProcess
from migperf.bench.scenario_result import LatencyPercentiles, ScenarioResult
from migperf.bench.scenarios import loadgen_percentiles
from migperf.bench.spec import BenchSpec
from tests.bench.tiny import TINY

ENV = worker_env("cpu")
QUICK: dict[str, Any] = {"warmup_iterations": 2, "min_duration_s": 0.3, "max_duration_s": 20.0}


def _spec(workload: str, batch: int, scenario: dict[str, Any], root: Path) -> BenchSpec:
    return BenchSpec(
        workload=workload,
        task="infer",
        batch_size=batch,
        model_args=TINY[workload],
        scenario=scenario,
        loadgen_log_dir=str(root),
        **QUICK,
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("loadgen")
    specs = {
        # A real transformers model behind the batcher: gathers of QSL samples.
        "server": _spec(
            "resnet18",
            4,
            {"name": "server", "target_qps": 60, "latency_target_ms": 500, "min_query_count": 40},
            root,
        ),
        "single-stream": _spec("gemm", 1, {"name": "single-stream", "min_query_count": 70}, root),
        "multi-stream": _spec(
            "gemm",
            4,
            {"name": "multi-stream", "samples_per_query": 6, "min_query_count": 40},
            root,
        ),
        "offline": _spec("gemm", 8, {"name": "offline", "min_query_count": 200}, root),
        "closed-loop": _spec(
            "gemm", 2, {"name": "closed-loop", "concurrency": 3, "min_query_count": 50}, root
        ),
    }
    procs = {name: WorkerProcess(s, ENV, timeout_s=180.0) for name, s in specs.items()}
    for p in procs.values():
        p.start()
    try:
        yield {"procs": procs, "root": root}
    finally:
        for p in procs.values():
            p.kill()


def _ok(runs: dict[str, Any], name: str) -> tuple[Any, ScenarioResult]:
    r = runs["procs"][name].wait()
    assert r.status == "ok", (r.error, r.process.stderr_tail if r.process else None)
    assert r.scenario is not None and r.scenario.scenario == name
    return r, r.scenario


def _summary(s: ScenarioResult) -> dict[str, str]:
    """LoadGen's summary file, read independently of migperf's parser."""
    assert s.log_dir is not None
    text = (Path(s.log_dir) / "mlperf_log_summary.txt").read_text()
    out: dict[str, str] = {}
    for line in text.splitlines():
        m = re.match(r"^\s*([^:*][^:]*?)\s*:\s*(.*?)\s*$", line)
        if m:
            out.setdefault(m.group(1), m.group(2))
    return out


def _ns(value: float | None) -> int:
    assert value is not None
    return round(value * 1e6)


def _check_latencies(summary: dict[str, str], lat: LatencyPercentiles) -> None:
    assert int(summary["Min latency (ns)"]) == _ns(lat.min)
    assert int(summary["Max latency (ns)"]) == _ns(lat.max)
    assert int(summary["Mean latency (ns)"]) == _ns(lat.mean)
    for label, value in (
        ("50.00", lat.p50),
        ("90.00", lat.p90),
        ("95.00", lat.p95),
        ("97.00", lat.p97),
        ("99.00", lat.p99),
        ("99.90", lat.p99_9),
    ):
        assert int(summary[f"{label} percentile latency (ns)"]) == _ns(value), label


def _check_common(summary: dict[str, str], r: Any, s: ScenarioResult, root: Path) -> None:
    assert summary["Result is"] == ("VALID" if s.valid else "INVALID")
    assert summary["Early stopping satisfied"] == (
        "Yes" if s.checks["early_stopping_met"] else "NO"
    )
    assert summary["Min duration satisfied"] == ("Yes" if s.checks["min_duration_met"] else "NO")
    assert summary["Scenario"] == s.loadgen_scenario
    assert int(summary["min_query_count"]) == s.settings["min_query_count"]
    assert s.verdict.startswith(summary["Result is"] + ":")
    assert s.loadgen_version and s.seeds["schedule_rng_seed"] == 0
    # The logs stay with the run, under the directory the spec named.
    assert Path(s.log_dir or "").parent == root
    assert {"mlperf_log_summary.txt", "mlperf_log_detail.txt"} <= set(s.log_files)
    assert s.batching is not None and s.batching.samples >= (s.sample_count or 0)
    assert r.timing is not None and r.timing.window_end_unix_s > r.timing.window_start_unix_s
    assert r.environment is not None and r.environment.device_kind == "cpu"


def test_server_reports_what_loadgen_wrote(runs: dict[str, Any]) -> None:
    r, s = _ok(runs, "server")
    summary = _summary(s)
    _check_common(summary, r, s, runs["root"])
    assert summary["Performance constraints satisfied"] == (
        "Yes" if s.checks["perf_constraints_met"] else "NO"
    )
    assert float(summary["Completed samples per second"]) == pytest.approx(
        s.completed_qps, abs=0.006
    )
    assert float(summary["Scheduled samples per second"]) == pytest.approx(
        s.scheduled_qps, abs=0.006
    )
    assert float(summary["target_qps"]) == s.target_qps == 60
    assert int(summary["target_latency (ns)"]) == 500_000_000 == _ns(s.latency_target_ms)
    _check_latencies(summary, s.latency_ms)
    assert s.target_percentile_latency_ms == s.latency_ms.p99
    assert r.throughput is not None and r.throughput.samples_per_s == s.completed_qps
    assert r.workload == "resnet18" and r.parameter_count and r.parameter_count > 0


def test_single_stream_reports_what_loadgen_wrote(runs: dict[str, Any]) -> None:
    r, s = _ok(runs, "single-stream")
    summary = _summary(s)
    _check_common(summary, r, s, runs["root"])
    assert int(summary["90.0th percentile latency (ns)"]) == _ns(s.target_percentile_latency_ms)
    # The summary prints 2 decimals, the detail log 6 significant digits: above
    # 10,000 QPS (a fast host) the detail log is the coarser one.
    assert float(summary["QPS w/ loadgen overhead"]) == pytest.approx(
        s.completed_qps, abs=0.006, rel=1e-5
    )
    assert float(summary["QPS w/o loadgen overhead"]) == pytest.approx(
        s.qps_without_overhead, abs=0.006, rel=1e-5
    )
    _check_latencies(summary, s.latency_ms)
    es = s.early_stopping
    assert es is not None and es.percentile == 90.0
    text = (Path(s.log_dir or "") / "mlperf_log_summary.txt").read_text()
    m = re.search(r"Early stopping 90\.0th percentile estimate: (\d+)", text)
    # 70 queries are past the 64 LoadGen needs for its p90 estimate.
    assert m is not None and es.met is True
    assert int(m.group(1)) == _ns(es.estimate_ms)


def test_multi_stream_reports_per_query_latency(runs: dict[str, Any]) -> None:
    r, s = _ok(runs, "multi-stream")
    summary = _summary(s)
    _check_common(summary, r, s, runs["root"])
    assert int(summary["samples_per_query"]) == s.samples_per_query == 6
    assert int(summary["99.0th percentile latency (ns)"]) == _ns(s.target_percentile_latency_ms)
    # MultiStream's summary lists the per-query latencies.
    assert s.query_latency_ms is not None
    _check_latencies(summary, s.query_latency_ms)
    assert s.sample_count == 6 * (s.query_count or 0)
    assert s.completed_qps and s.completed_qps > 0
    assert s.batching is not None and max(s.batching.batch_size_counts) <= 4


def test_offline_reports_samples_per_second(runs: dict[str, Any]) -> None:
    r, s = _ok(runs, "offline")
    summary = _summary(s)
    _check_common(summary, r, s, runs["root"])
    assert float(summary["Samples per second"]) == pytest.approx(s.completed_qps, rel=1e-5)
    assert int(summary["samples_per_query"]) == s.sample_count
    assert s.query_count == 1 and (s.sample_count or 0) >= 200
    _check_latencies(summary, s.latency_ms)
    assert s.batching is not None and s.batching.batch_size_counts.get(8, 0) >= 1


def test_closed_loop_is_timed_by_migperf(runs: dict[str, Any]) -> None:
    r, s = _ok(runs, "closed-loop")
    assert s.generator == "closed_loop" and s.valid is None and s.log_files == []
    assert s.concurrency == 3 and (s.query_count or 0) >= 50
    assert s.verdict.startswith("closed loop at concurrency 3 (not LoadGen; no validity)")
    # Every request is timed: the raw samples, the summary and LoadGen-style percentiles agree.
    assert len(r.latency_samples_ms) == s.query_count
    assert r.latency_ms is not None and r.latency_ms.count == s.query_count
    assert loadgen_percentiles(r.latency_samples_ms) == s.latency_ms
    assert s.completed_qps == pytest.approx(s.query_count / (s.duration_s or 1))
    assert s.batching is not None and max(s.batching.batch_size_counts) <= 2
