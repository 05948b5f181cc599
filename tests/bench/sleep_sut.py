"""A ScenarioRunner over the SYNTHETIC sleep workload: a SUT whose service time is known."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from migperf.bench.scenarios import ScenarioRunner
from migperf.bench.spec import BenchSpec
from migperf.bench.workloads import build_workload


def sleep_runner(
    log_dir: Path, scenario: dict[str, Any], *, service_ms: float = 0.5, batch: int = 1
) -> ScenarioRunner:
    """A runner serving ``service_ms`` per batch under ``scenario``, logging to ``log_dir``."""
    spec = BenchSpec(
        workload="sleep",
        task="infer",
        batch_size=batch,
        model_args={"service_ms": service_ms},
        expect_device="cpu",
        warmup_iterations=1,
        min_duration_s=0.2,
        max_duration_s=10.0,
        scenario=scenario,
    )
    assert spec.scenario is not None
    qsl = spec.scenario.effective_qsl_size(batch)
    prepared = build_workload(spec.model_copy(update={"batch_size": qsl}), None)  # type: ignore[arg-type]
    return ScenarioRunner(spec, prepared, None, log_dir)
