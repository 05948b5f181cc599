"""`plan_demand`: the `migperf plan` workflow as a library call."""

from __future__ import annotations

from pathlib import Path

import pytest

from migperf.errors import ReadOnlyError
from migperf.nvml import open_nvml
from migperf.planner import PlanReport, VerifyOptions, plan_demand
from tests.planner.conftest import fill_store

CAPS = {"7g.80gb": 700.0, "3g.40gb": 350.0, "1g.10gb": 130.0}


def test_plans_writes_mig_parted_and_reports_no_failure(tmp_path: Path, demand_file) -> None:  # type: ignore[no-untyped-def]
    db = fill_store(tmp_path / "s.db", CAPS)
    out = tmp_path / "mig.yaml"
    events: list[tuple[str, str]] = []
    report = plan_demand(
        demand_file(qps=800), db, out=out, on_event=lambda k, line: events.append((k, line))
    )
    assert isinstance(report, PlanReport) and report.stage == "planned"
    assert report.plan is not None and report.plan.feasible and report.plan.gpus_used == 1
    assert report.mig_parted == out and out.exists()
    assert report.failure() is None and events == []
    assert report.to_dict()["mig_parted"] == str(out)


def test_missing_capacities_come_back_with_the_error_the_command_ends_with(
    tmp_path: Path,
    demand_file,  # type: ignore[no-untyped-def]
) -> None:
    events: list[tuple[str, str]] = []
    missing_db = tmp_path / "none.db"
    report = plan_demand(
        demand_file(), missing_db, on_event=lambda k, line: events.append((k, line))
    )
    assert report.stage == "missing" and report.plan is None and len(report.missing) == 3
    assert events == [("note", f"NOTE: no results store at {missing_db}: nothing is measured yet.")]
    failure = report.failure()
    assert failure is not None
    assert (
        failure.message == f"3 capacity value(s) the plan needs were never measured in {missing_db}"
    )
    assert report.to_dict()["results"] == str(missing_db)


def test_verify_with_a_read_only_handle_is_refused_before_any_work(
    tmp_path: Path,
    demand_file,  # type: ignore[no-untyped-def]
) -> None:
    verify = VerifyOptions(open_gpus=lambda: open_nvml("a100-80gb", read_only=True))
    with pytest.raises(ReadOnlyError, match="--verify applies the plan's layouts") as exc:
        plan_demand(demand_file(), tmp_path / "never-read.db", verify=verify)
    assert "plan without --verify" in exc.value.hint
