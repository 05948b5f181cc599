"""Inference scenarios without LoadGen: spec rules, the batcher, the capacity search, the verdicts."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from migperf.bench.scenario_result import EarlyStoppingResult, ScenarioResult
from migperf.bench.scenario_spec import ScenarioSpec, early_stopping_min_queries
from migperf.bench.scenarios import DynamicBatcher, find_max_qps, loadgen_percentiles
from migperf.bench.scenarios.loadgen_log import (
    LoadGenLogError,
    parse_early_stopping,
    parse_loadgen_logs,
    verdict_sentence,
)
from migperf.bench.spec import _NOT_HASHED, BenchSpec, parse_spec
from migperf.errors import UsageError

# --- spec ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"name": "server"}, "needs target_qps (or find_max_qps)"),
        ({"name": "offline", "find_max_qps": True}, "find_max_qps applies to the server"),
        ({"name": "offline", "target_qps": 5}, "target_qps applies to the server"),
        ({"name": "server", "target_qps": 5, "concurrency": 4}, "concurrency applies"),
        ({"name": "offline", "samples_per_query": 4}, "samples_per_query applies"),
        ({"name": "server", "target_qps": 5, "latency_percentile": 98}, "not one LoadGen reports"),
        ({"name": "offline", "latency_target_ms": 5}, "does not apply to the offline"),
        (
            {"name": "multi-stream", "samples_per_query": 8, "qsl_size": 4},
            "qsl_size (4) is below samples_per_query (8)",
        ),
        (
            {"name": "single-stream", "min_query_count": 50, "max_query_count": 10},
            "max_query_count (10) is below min_query_count (50)",
        ),
    ],
)
def test_scenario_rules_say_what_is_wrong(fields: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValidationError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        ScenarioSpec(**fields)


def test_early_stopping_counts_match_loadgens_messages() -> None:
    # LoadGen: server p99 "would need 459 more" with none processed; single-stream
    # p90 "processed at least 64"; multi-stream p99 "need to process at least 662".
    assert early_stopping_min_queries(99) == 459
    assert early_stopping_min_queries(90, overlatency=1) == 64
    assert early_stopping_min_queries(99, overlatency=1) == 662
    assert early_stopping_min_queries(90) == 44


def test_default_query_counts_let_early_stopping_pass() -> None:
    assert ScenarioSpec(name="server", target_qps=5).effective_min_query_count == 918
    assert ScenarioSpec(name="multi-stream").effective_min_query_count == 662
    assert ScenarioSpec(name="single-stream").effective_min_query_count == 100
    assert ScenarioSpec(name="offline").effective_min_query_count == 100
    assert (
        ScenarioSpec(name="server", target_qps=5, min_query_count=7).effective_min_query_count == 7
    )
    s = ScenarioSpec(name="multi-stream", samples_per_query=16)
    assert s.effective_percentile == 99.0 and s.effective_samples_per_query == 16
    assert s.effective_qsl_size(max_batch_size=4) == 64
    assert ScenarioSpec(name="single-stream").effective_percentile == 90.0
    assert ScenarioSpec(name="server", target_qps=1).effective_latency_target_ms == 100.0
    assert ScenarioSpec(name="closed-loop").effective_latency_target_ms is None


def test_bench_spec_takes_a_scenario_for_inference_only() -> None:
    spec = parse_spec(
        {"workload": "gemm", "task": "infer", "scenario": {"name": "server", "target_qps": 20}}
    )
    assert spec.scenario is not None and spec.scenario.target_qps == 20
    assert parse_spec(spec.to_line()) == spec
    with pytest.raises(UsageError, match="needs task 'infer'"):
        parse_spec({"workload": "bert-base", "task": "train", "scenario": {"name": "offline"}})
    with pytest.raises(UsageError, match="scenario"):
        parse_spec({"workload": "gemm", "task": "infer", "scenario": {"name": "server"}})


def test_config_hash_counts_the_scenario_but_not_the_log_dir() -> None:
    plain = BenchSpec(workload="gemm", task="infer")
    # A spec without a scenario hashes as before the field existed: without the key.
    data = plain.model_dump(mode="json", exclude=set(_NOT_HASHED) | {"scenario"})
    data["warmup_iterations"] = plain.effective_warmup
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    assert plain.config_hash() == hashlib.sha256(text.encode()).hexdigest()[:16]
    a = plain.model_copy(update={"scenario": ScenarioSpec(name="server", target_qps=10)})
    b = a.model_copy(update={"loadgen_log_dir": "/somewhere/else"})
    c = plain.model_copy(update={"scenario": ScenarioSpec(name="server", target_qps=20)})
    assert a.config_hash() == b.config_hash() != plain.config_hash()
    assert a.config_hash() != c.config_hash()


# --- the batcher ----------------------------------------------------------------


def _collect() -> tuple[list[list[Any]], Any]:
    done: list[list[Any]] = []
    lock = threading.Lock()

    def on_complete(tags: list[Any]) -> None:
        with lock:
            done.append(list(tags))

    return done, on_complete


def test_batcher_never_exceeds_the_max_batch_and_answers_everything() -> None:
    seen: list[list[int]] = []
    done, on_complete = _collect()

    def run(indices: Any) -> None:
        seen.append(list(indices))
        time.sleep(0.002)

    b = DynamicBatcher(run, on_complete, max_batch_size=3)
    with b:
        b.submit([(i, i % 5) for i in range(10)])
        deadline = time.monotonic() + 5
        while b.samples < 10 and time.monotonic() < deadline:
            time.sleep(0.001)
    assert sorted(t for batch in done for t in batch) == list(range(10))
    assert all(len(s) <= 3 for s in seen)
    assert [i for s in seen for i in s] == [i % 5 for i in range(10)]
    stats = b.stats()
    assert stats.samples == 10 and stats.batches == len(seen)
    assert sum(k * v for k, v in stats.batch_size_counts.items()) == 10
    assert stats.busy_s > 0 and stats.window_s and 0 < (stats.utilization or 0) <= 1


def test_queue_delay_waits_for_a_fuller_batch() -> None:
    seen: list[int] = []
    done, on_complete = _collect()
    b = DynamicBatcher(
        lambda idx: seen.append(len(idx)), on_complete, max_batch_size=4, max_queue_delay_s=0.2
    )
    with b:
        for i in range(4):
            b.submit([(i, 0)])
            time.sleep(0.01)
        deadline = time.monotonic() + 5
        while b.samples < 4 and time.monotonic() < deadline:
            time.sleep(0.001)
    # Without the delay the first sample would have gone alone.
    assert seen == [4]


def test_a_failing_model_still_answers_every_sample() -> None:
    done, on_complete = _collect()

    def run(indices: Any) -> None:
        raise RuntimeError("boom")

    b = DynamicBatcher(run, on_complete, max_batch_size=2)
    with b:
        b.submit([(i, 0) for i in range(5)])
        deadline = time.monotonic() + 5
        while b.samples < 5 and time.monotonic() < deadline:
            time.sleep(0.001)
    assert sorted(t for batch in done for t in batch) == list(range(5))
    assert isinstance(b.error, RuntimeError)


def test_percentiles_follow_loadgens_convention() -> None:
    lat = loadgen_percentiles([float(i) for i in range(1, 101)])
    # LoadGen: the sorted sample at index floor(n * p), no interpolation.
    assert (lat.p50, lat.p90, lat.p99, lat.p99_9) == (51.0, 91.0, 100.0, 100.0)
    assert (lat.min, lat.max, lat.mean) == (1.0, 100.0, 50.5)
    assert lat.at(99) == 100.0 and lat.at(99.9) == 100.0
    assert loadgen_percentiles([]).p50 is None


# --- the capacity search -----------------------------------------------------


def _threshold(capacity: float) -> tuple[list[float], Any]:
    tried: list[float] = []

    def run_at(qps: float) -> tuple[bool, None]:
        tried.append(qps)
        return qps <= capacity, None

    return tried, run_at


@pytest.mark.parametrize("start", [20.0, 173.2, 1000.0])
def test_search_brackets_then_bisects_to_the_precision(start: float) -> None:
    tried, run_at = _threshold(173.2)
    lo, hi, trials, reason = find_max_qps(run_at, start_qps=start, precision=0.05)
    assert reason is None
    assert lo is not None and hi is not None
    assert lo <= 173.2 < hi and hi / lo - 1 <= 0.05
    assert [t[0] for t in trials] == tried
    assert all(v == (q <= 173.2) for q, v, _ in trials)


def test_search_gives_up_when_nothing_is_valid() -> None:
    _, run_at = _threshold(0.1)
    lo, hi, trials, reason = find_max_qps(run_at, start_qps=8.0, min_qps=1.0)
    assert lo is None and hi == 1.0
    assert [t[0] for t in trials] == [8.0, 4.0, 2.0, 1.0]
    assert reason is not None and "no rate down to 1 QPS met the target" in reason


def test_search_says_when_it_ran_out_of_trials() -> None:
    _, run_at = _threshold(100.0)
    lo, hi, trials, reason = find_max_qps(run_at, start_qps=10.0, precision=0.001, max_trials=6)
    assert len(trials) == 6 and lo is not None and hi is not None and lo <= 100 < hi
    assert reason is not None and "raise max_trials" in reason
    with pytest.raises(UsageError):
        find_max_qps(run_at, start_qps=0.0)


# --- verdicts in plain words -------------------------------------------------


def _result(**kw: Any) -> ScenarioResult:
    base: dict[str, Any] = {
        "scenario": "server",
        "generator": "mlperf_loadgen",
        "verdict": "",
        "target_qps": 200.0,
        "latency_target_ms": 50.0,
        "latency_percentile": 99.0,
        "target_percentile_latency_ms": 71.2,
        "query_count": 1024,
        "samples_per_query": 1,
    }
    base.update(kw)
    return ScenarioResult(**base)


def test_latency_over_the_target_is_one_sentence() -> None:
    r = _result(
        valid=False,
        checks={
            "perf_constraints_met": False,
            "min_duration_met": True,
            "min_queries_met": True,
            "early_stopping_met": True,
        },
    )
    sentence, reasons = verdict_sentence(r)
    assert sentence == "INVALID: p99 = 71.2 ms exceeds the 50 ms target at 200 QPS"
    assert reasons == ["p99 = 71.2 ms exceeds the 50 ms target at 200 QPS"]


def test_too_few_queries_names_how_many_more() -> None:
    r = _result(
        scenario="single-stream",
        target_qps=None,
        latency_percentile=99.0,
        valid=False,
        checks={"min_duration_met": True, "min_queries_met": True, "early_stopping_met": False},
        early_stopping=parse_early_stopping(
            " * Only processed 598 queries.  * Need to process at least 662 queries for "
            "early stopping.",
            False,
        ),
    )
    assert verdict_sentence(r)[0] == "INVALID: needs at least 64 more queries to bound p99"


def test_every_reason_is_listed() -> None:
    r = _result(
        valid=False,
        checks={
            "perf_constraints_met": False,
            "min_duration_met": False,
            "min_queries_met": False,
            "early_stopping_met": False,
        },
        early_stopping=EarlyStoppingResult(met=False, more_queries_needed=11023),
        settings={"min_query_count": 918},
        query_count=20,
        loadgen_errors=["IssueQueryThread 0 Ending early: Max query count reached. query_count 20"],
    )
    sentence, reasons = verdict_sentence(r, min_duration_s=1.0)
    assert len(reasons) == 5
    assert sentence.startswith("INVALID: p99 = 71.2 ms exceeds the 50 ms target at 200 QPS; ")
    assert "needs at least 11,023 more queries to bound p99" in sentence
    assert "the run ended before the 1 s minimum duration" in sentence
    assert "issued 20 queries, under the minimum of 918" in sentence
    assert "LoadGen stopped early at the maximum query count" in sentence


def test_offline_too_short_says_to_raise_the_expected_qps() -> None:
    r = _result(
        scenario="offline",
        target_qps=None,
        latency_target_ms=None,
        latency_percentile=None,
        valid=False,
        completed_qps=459.0,
        checks={"min_duration_met": False, "min_queries_met": True, "early_stopping_met": True},
        settings={"target_qps": 100},
    )
    sentence, _ = verdict_sentence(r, min_duration_s=10)
    assert sentence == (
        "INVALID: the single offline query finished before the 10 s minimum duration: LoadGen "
        "sized it for 100 samples/s but the system did 459; raise the expected QPS"
    )


def test_valid_sentences_state_the_headline() -> None:
    ok = {"perf_constraints_met": True, "min_duration_met": True, "min_queries_met": True}
    assert (
        verdict_sentence(_result(valid=True, checks=ok, target_percentile_latency_ms=12.34))[0]
        == "VALID: p99 = 12.3 ms is within the 50 ms target at 200 QPS (1,024 queries)"
    )
    ss = _result(
        scenario="single-stream",
        valid=True,
        target_qps=None,
        latency_percentile=90.0,
        target_percentile_latency_ms=2.2257,
        latency_target_ms=2.0,
        slo_met=False,
        query_count=460,
    )
    assert verdict_sentence(ss)[0] == (
        "VALID: p90 = 2.23 ms over 460 queries; p90 is over the 2 ms target "
        "(migperf's check, not LoadGen's)"
    )


def test_early_stopping_texts_parse() -> None:
    server = parse_early_stopping(
        " * Run unsuccessful.  * Processed 93 queries.  * Would need to run at least 366 more "
        "queries,  with the run being successful if every additional  query were under latency.",
        False,
    )
    assert server.more_queries_needed == 366 and server.estimate_ms is None
    single = parse_early_stopping(
        " * Processed at least 64 queries (460).  * Would discard 30 highest latency queries.  "
        "* Early stopping 90.0th percentile estimate: 2304312",
        True,
    )
    assert single.percentile == 90.0 and single.estimate_ms == pytest.approx(2.304312)
    assert single.more_queries_needed is None and single.met is True


def _mllog(key: str, value: Any, *, error: bool = False) -> str:
    meta = {"is_error": error, "is_warning": False, "file": "x.cc", "line_no": 1}
    return ":::MLLOG " + json.dumps({"key": key, "value": value, "metadata": meta})


def test_detail_log_errors_and_a_disagreeing_summary_are_reported(tmp_path: Path) -> None:
    lines = [
        _mllog("loadgen_version", "6.0.17 @ d6147c7eb7"),
        _mllog("effective_scenario", "Server"),
        _mllog("effective_min_query_count", 918),
        _mllog("effective_min_duration_ms", 1000),
        _mllog(
            "error_runtime",
            "IssueQueryThread 0 Ending early: Max query count reached. query_count 20",
            error=True,
        ),
        _mllog("result_validity", "INVALID"),
        _mllog("result_perf_constraints_met", True),
        _mllog("result_min_duration_met", False),
        _mllog("result_min_queries_met", False),
        _mllog("early_stopping_met", False),
        _mllog(
            "early_stopping_result",
            " * Run unsuccessful.  * Would need to run at least 439 more queries,",
        ),
        _mllog("result_query_count", 20),
        _mllog("result_completed_samples_per_sec", 97.1),
        _mllog("result_99.00_percentile_latency_ns", 2_500_000),
    ]
    (tmp_path / "mlperf_log_detail.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "mlperf_log_summary.txt").write_text("Scenario : Server\nResult is : VALID\n")
    spec = ScenarioSpec(name="server", target_qps=100, latency_target_ms=50)
    r = parse_loadgen_logs(tmp_path, spec, target_qps=100)
    assert r.valid is False and r.loadgen_version == "6.0.17"
    assert r.end_reason == "Ending early: Max query count reached. query_count 20"
    assert r.target_percentile_latency_ms == 2.5 and r.completed_qps == 97.1
    assert r.settings["min_query_count"] == 918
    assert r.verdict == (
        "INVALID: needs at least 439 more queries to bound p99 (and only if every further query "
        "is within the target); the run ended before the 1 s minimum duration; issued 20 "
        "queries, under the minimum of 918; LoadGen stopped early at the maximum query count"
    )
    assert any(
        "summary says VALID but its detail log says INVALID" in w for w in r.loadgen_warnings
    )
    with pytest.raises(LoadGenLogError, match="cannot read LoadGen's detail log"):
        parse_loadgen_logs(tmp_path / "missing", spec)
