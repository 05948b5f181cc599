"""``migperf plan`` as one call: from a demand file and a results store to a plan, written and checked.

:func:`plan_demand` reads the demand, builds the capacity table from the
store and from any capacities files (:mod:`migperf.planner.capfile`; a file's
value wins over the store's for the same key), finds what is missing (and
writes the experiments that measure it, or estimates it), derates, plans,
writes the mig-parted file (and, when the plan runs MPS inside MIG, its MPS
side file) and, when asked, verifies the plan on the GPUs. It returns a :class:`PlanReport`; the caller
prints it, and ends with :meth:`PlanReport.failure` when that is not None
(the plan is worth printing even when the demand cannot be met).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from migperf.errors import MigperfError, ReadOnlyError
from migperf.planner.candidates import needed_keys, planning_layouts
from migperf.planner.capacity import (
    CapacityTable,
    MissingCapacity,
    capacity_table,
    derate_factors,
)
from migperf.planner.demand import DemandSpec, load_demand
from migperf.planner.export import (
    DEFAULT_CONFIG_NAME,
    measurement_configs,
    mps_side_path,
    plan_mps_file,
    plan_to_migparted,
)
from migperf.planner.optimizer import plan_layout
from migperf.planner.result import Plan

if TYPE_CHECKING:
    from migperf.nvml.facade import Nvml
    from migperf.planner.verify import VerifyResult

__all__ = ["EventKind", "PlanReport", "VerifyOptions", "plan_demand"]

#: ``note``: something the user should know, always shown; ``verify``: a line
#: of verification progress (``migperf plan --json`` leaves these out).
EventKind = Literal["note", "verify"]


@dataclass(frozen=True)
class VerifyOptions:
    """How to check the plan on the GPUs (``migperf plan --verify``).

    Attributes:
        open_gpus: Opens NVML for changes. Called once the demand is read,
            before the store is; :func:`plan_demand` shuts the handle down when
            it is done. It may raise :class:`~migperf.errors.ReadOnlyError`.
        min_duration_s: Minimum duration of each verify run.
        min_query_count: LoadGen's minimum query count per run (None: enough
            for early stopping).
        timeout_s: Wall-clock limit of each verify worker.
    """

    open_gpus: Callable[[], Nvml]
    min_duration_s: float = 30.0
    min_query_count: int | None = None
    timeout_s: float = 900.0


@dataclass(frozen=True)
class PlanReport:
    """What :func:`plan_demand` did.

    Attributes:
        stage: ``measurements`` (capacities were missing and the experiments
            that measure them were written), ``missing`` (capacities are
            missing; nothing was planned) or ``planned``.
        demand_file: The demand file.
        results: The results store.
        missing: The capacities the plan needs that were never measured.
        measurements: The experiment configs written, per GPU model.
        table: The capacities planned with (``planned``).
        plan: The plan (``planned``).
        out: Where the mig-parted file was asked for.
        verify: What verification found (None when it did not run).
        capacities: The capacities files read.
        mps_file: The MPS side file written next to ``out`` (None: the plan
            runs no MPS, or no ``out``).
    """

    stage: Literal["measurements", "missing", "planned"]
    demand_file: Path
    results: Path
    missing: tuple[MissingCapacity, ...] = ()
    measurements: dict[str, Path] = field(default_factory=dict)
    table: CapacityTable | None = None
    plan: Plan | None = None
    out: Path | None = None
    verify: VerifyResult | None = None
    capacities: tuple[Path, ...] = ()
    mps_file: Path | None = None

    @property
    def mig_parted(self) -> Path | None:
        """The mig-parted file written (None when not asked for or the plan has no GPUs)."""
        return (
            self.out if self.out is not None and self.plan is not None and self.plan.gpus else None
        )

    def failure(self) -> MigperfError | None:
        """The error the command ends with, after printing the report (None: success)."""
        if self.stage == "missing":
            files = ", ".join(str(p) for p in self.capacities)
            return MigperfError(
                f"{len(self.missing)} capacity value(s) the plan needs were never measured in "
                f"{self.results}" + (f" nor given in {files}" if files else ""),
                hint=f"write the experiment that measures them with `migperf plan "
                f"{self.demand_file} --write-config measure.yaml`, run it (`migperf run "
                f"measure.yaml --results {self.results}`), and plan again; or pass "
                "--assume-linear to estimate them "
                "(labelled estimate)",
            )
        if self.plan is None:
            return None
        if not self.plan.feasible:
            return MigperfError(
                "the demand cannot be met: " + "; ".join(self.plan.explanation),
                hint="add GPUs, lower target_qps or headroom, or relax the SLOs; the table above "
                "is the best balanced plan on the GPUs available",
            )
        if self.verify is not None and not self.verify.all_held:
            return MigperfError(
                "verification failed: "
                + ", ".join(j.name for j in self.verify.jobs if not j.held)
                + " did not hold co-located",
                hint="re-plan with more headroom or with --derate after measuring co-located runs",
            )
        return None

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (``migperf plan --json``)."""
        missing = [m.to_dict() for m in self.missing]
        if self.stage == "measurements":
            return {
                "missing": missing,
                "written": {model: str(p) for model, p in self.measurements.items()},
            }
        if self.stage == "missing" or self.plan is None or self.table is None:
            return {"missing": missing, "results": str(self.results)}
        data = self.plan.to_dict()
        data["capacities"] = self.table.to_list()
        data["mig_parted"] = None if self.mig_parted is None else str(self.mig_parted)
        data["mps_file"] = None if self.mps_file is None else str(self.mps_file)
        data["capacities_files"] = [str(p) for p in self.capacities]
        if self.verify is not None:
            data["verify"] = self.verify.to_dict()
        return data


def _verify_refused(reason: str) -> ReadOnlyError:
    """The error that refuses ``--verify`` in read-only mode.

    Args:
        reason: Why changes are refused (a :class:`~migperf.errors.ReadOnlyError`'s message).
    """
    return ReadOnlyError(
        f"{reason}; --verify applies the plan's layouts",
        hint="plan without --verify (planning only reads the results store), or drop "
        "--read-only to verify",
    )


def _open_for_verify(options: VerifyOptions) -> Nvml:
    try:
        nvml = options.open_gpus()
    except ReadOnlyError as exc:
        raise _verify_refused(exc.message) from None
    if nvml.read_only:
        # A read-only handle would fail on the first layout change, after the
        # solve; refuse before any work, as the read-only mode check does.
        nvml.shutdown()
        raise _verify_refused("refusing to verify the plan: the NVML handle is read-only")
    return nvml


def plan_demand(
    demand_file: Path,
    results: Path,
    *,
    out: Path | None = None,
    name: str = DEFAULT_CONFIG_NAME,
    write_config: Path | None = None,
    assume_linear: bool = False,
    derate: bool = False,
    gpu_count: int | None = None,
    time_limit_s: float = 20.0,
    verify: VerifyOptions | None = None,
    on_event: Callable[[EventKind, str], None] | None = None,
    capacities: Sequence[Path] = (),
) -> PlanReport:
    """Plan a demand from a results store and capacities files: the whole ``migperf plan`` workflow.

    Args:
        demand_file: Demand YAML.
        results: Results store (a missing store means nothing is measured).
        out: Write the plan there as a mig-parted ``version: v1`` config (and,
            when the plan runs MPS inside MIG, the MPS side file next to it,
            ``NAME.mps.yaml``).
        name: Configuration name in the mig-parted file.
        write_config: Write the experiment config that measures the missing
            capacities there (one file per GPU model, suffixed with the model,
            when several lack data); with capacities missing, nothing is planned.
        assume_linear: Estimate missing capacities from the nearest measured
            profile, scaled by SM count.
        derate: Scale capacities by the normalized progress measured in
            co-located MIG runs.
        gpu_count: Use exactly this many GPUs and maximize the smallest coverage.
        time_limit_s: Solver time limit per program.
        verify: Apply the plan and run every service co-located (only when the
            plan is feasible and has GPUs).
        on_event: Called with each note and line of progress, as shown to a user.
        capacities: Capacities files (CSV or YAML, see
            :mod:`migperf.planner.capfile`); a service they cover needs no
            ``workload`` unless it is verified.

    Returns:
        The report; :meth:`PlanReport.failure` says whether the command failed.

    Raises:
        ReadOnlyError: ``verify`` in read-only mode (before any work).
        ConfigError: the demand file or a capacities file is invalid (every
            problem listed as ``file:line: problem``), or a service that needs
            a workload (not in any capacities file, or verified) lacks one.
        MigperfError: the store cannot be read, a layout cannot be applied, ...
    """
    import pandas as pd

    from migperf.results import load

    def emit(kind: EventKind, line: str) -> None:
        if on_event is not None:
            on_event(kind, line)

    files = tuple(capacities)
    demand, file_table = _demand_and_files(demand_file, files, verify=verify is not None)
    nvml = _open_for_verify(verify) if verify is not None else None
    try:
        if results.exists():
            frame = load(results, wide=True)
        else:
            frame = pd.DataFrame()
            if not files:
                emit("note", f"NOTE: no results store at {results}: nothing is measured yet.")
        table = capacity_table(frame, demand)
        if file_table is not None:
            table, replaced = table.merged(file_table)
            if replaced:
                emit(
                    "note",
                    f"NOTE: {replaced} capacity value(s) from the capacities file(s) replace the "
                    "store's for the same key.",
                )
        layouts = {g.model: planning_layouts(g) for g in demand.gpus}
        needed = needed_keys(demand, layouts)
        if assume_linear:
            table = table.with_linear_estimates(needed)
        missing = tuple(table.missing(needed, demand.max_processes))
        if write_config is not None:
            unmeasurable = sorted({m.job for m in missing if demand.job(m.job).workload is None})
            if unmeasurable:
                emit(
                    "note",
                    f"NOTE: {', '.join(unmeasurable)} give(s) no workload, so migperf cannot "
                    "measure them; add their missing rows to a capacities file.",
                )
            if missing:
                return PlanReport(
                    stage="measurements",
                    demand_file=demand_file,
                    results=results,
                    missing=missing,
                    measurements=_write_measurements(
                        demand, demand_file, missing, write_config, results
                    ),
                    out=out,
                    capacities=files,
                )
            emit("note", "nothing to measure: the store has every capacity the plan needs")
        if missing:
            return PlanReport(
                stage="missing",
                demand_file=demand_file,
                results=results,
                missing=missing,
                out=out,
                capacities=files,
            )
        if derate:
            factors, what = derate_factors(frame, demand)
            table = table.derated(factors)
            emit("note", f"NOTE: {what}.")

        plan = plan_layout(
            demand, table, layouts=layouts, gpu_count=gpu_count, time_limit_s=time_limit_s
        )
        mps_file = None
        if out is not None and plan.gpus:
            out.parent.mkdir(parents=True, exist_ok=True)
            if plan.uses_mps:
                mps_file = mps_side_path(out)
                mps_file.write_text(plan_mps_file(plan, name, str(demand_file)), encoding="utf-8")
            out.write_text(
                plan_to_migparted(
                    plan, name, str(demand_file), mps_file=str(mps_file) if mps_file else ""
                ),
                encoding="utf-8",
            )
        checked = None
        if nvml is not None and verify is not None and plan.feasible and plan.gpus:
            from migperf.planner.verify import verify_plan

            checked = verify_plan(
                nvml,
                plan,
                demand,
                min_duration_s=verify.min_duration_s,
                min_query_count=verify.min_query_count,
                timeout_s=verify.timeout_s,
                on_event=lambda line: emit("verify", line),
            )
        return PlanReport(
            stage="planned",
            demand_file=demand_file,
            results=results,
            table=table,
            plan=plan,
            out=out,
            verify=checked,
            capacities=files,
            mps_file=mps_file,
        )
    finally:
        if nvml is not None:
            nvml.shutdown()


def _demand_and_files(
    demand_file: Path, files: Sequence[Path], *, verify: bool
) -> tuple[DemandSpec, CapacityTable | None]:
    """The demand, checked for the workloads it needs, and the capacities files' table.

    Without capacities files every service needs a workload (as always). With
    them, a service needs one only when no file covers it (the store must be
    searched) or the plan is verified (its workers must run it).

    Raises:
        ConfigError: the demand or a capacities file is invalid.
    """
    if not files:
        return load_demand(demand_file), None
    from migperf.planner.capfile import load_capacities

    demand = load_demand(demand_file, require_workload=())
    table = load_capacities(files, demand)
    covered = {k[2] for k in table.entries} | {k[2] for k in table.mps}
    need = [s.name for s in demand.services if verify or s.name not in covered]
    if any(demand.job(n).workload is None for n in need):
        # Parse again, asking for those workloads: the errors then carry their lines.
        demand = load_demand(demand_file, require_workload=need)
    return demand, table


def _write_measurements(
    demand: DemandSpec,
    demand_file: Path,
    missing: Sequence[MissingCapacity],
    path: Path,
    results: Path,
) -> dict[str, Path]:
    """Write the experiments that measure the missing capacities; their paths per model."""
    texts = measurement_configs(demand, missing, source=str(demand_file), results=results)
    written: dict[str, Path] = {}
    for model, text in texts.items():
        target = path if len(texts) == 1 else path.with_name(f"{path.stem}-{model}{path.suffix}")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        written[model] = target
    return written
