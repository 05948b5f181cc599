"""Spec validation and the result document's schema."""

from __future__ import annotations

import pytest

from migperf.bench.result import RESULT_SCHEMA_VERSION, ErrorInfo, WorkerResult, load_result
from migperf.bench.spec import BenchSpec, parse_spec
from migperf.errors import UsageError


def test_task_default_warmup() -> None:
    assert BenchSpec(workload="gemm", task="infer").effective_warmup == 10
    assert BenchSpec(workload="bert-base", task="train").effective_warmup == 40
    assert BenchSpec(workload="gemm", task="infer", warmup_iterations=0).effective_warmup == 0


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"task": "fly"}, "task"),
        ({"batch_size": 0}, "batch_size"),
        (
            {"min_duration_s": 10, "max_duration_s": 1},
            "max_duration_s (1) is below min_duration_s (10)",
        ),
        ({"bogus": 1}, "bogus"),
        ({"schema_version": 99}, "newer"),
    ],
)
def test_invalid_specs_name_the_field(fields: dict, needle: str) -> None:
    with pytest.raises(UsageError, match="invalid benchmark spec") as info:
        parse_spec({"workload": "gemm", "task": "infer", **fields})
    assert needle in info.value.message


def test_spec_round_trips_through_one_json_line() -> None:
    spec = BenchSpec(workload="bert-base", task="train", model_args={"num_hidden_layers": 2})
    line = spec.to_line()
    assert "\n" not in line
    assert parse_spec(line) == spec


def test_config_hash_ignores_how_the_run_is_executed() -> None:
    a = BenchSpec(workload="gemm", task="infer")
    assert (
        a.config_hash() == a.model_copy(update={"repeat_index": 3, "barrier": True}).config_hash()
    )
    assert (
        a.config_hash()
        == BenchSpec(workload="gemm", task="infer", warmup_iterations=10).config_hash()
    )
    assert a.config_hash() != a.model_copy(update={"batch_size": 2}).config_hash()


def test_result_round_trips_and_refuses_newer_schemas() -> None:
    spec = BenchSpec(workload="gemm", task="infer", batch_size=8)
    r = WorkerResult.for_spec(spec, "oom", error=ErrorInfo(kind="OutOfMemoryError", message="x"))
    assert r.batch_size == 8 and r.config_hash == spec.config_hash()
    back = load_result(r.to_json())
    assert back == r
    data = r.to_dict()
    data["schema_version"] = RESULT_SCHEMA_VERSION + 1
    with pytest.raises(UsageError, match="schema_version"):
        load_result(data)
    with pytest.raises(UsageError, match="malformed"):
        load_result("{not json")
