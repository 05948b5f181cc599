"""Slurm's own commands (``sbatch``, ``squeue``, ``sacct``, ``scancel``) and the executor's options.

Every command runs from an argument list, never a shell string. Job states
come from ``squeue --states=all`` (it keeps finished jobs for the cluster's
``MinJobAge``) and, for a job it no longer knows, from ``sacct`` where
accounting is set up.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from migperf.errors import MigperfError, UsageError

__all__ = [
    "ACTIVE_STATES",
    "JobState",
    "SlurmOptions",
    "job_states",
    "parse_options",
    "scancel",
    "sbatch",
    "slurm_problem",
]

#: States of a job that may still write its shard.
ACTIVE_STATES = frozenset(
    {
        "PENDING",
        "CONFIGURING",
        "RUNNING",
        "COMPLETING",
        "SUSPENDED",
        "REQUEUED",
        "REQUEUE_HOLD",
        "REQUEUE_FED",
        "RESIZING",
        "SIGNALING",
        "STAGE_OUT",
        "STOPPED",
    }
)

SLURM_HINT = (
    "run migperf where Slurm's client commands work (a login node), or start a local "
    'Slurm for tests with `eval "$(scripts/slurm-local start)"`'
)


class SlurmOptions(BaseModel):
    """``executor: {slurm: {...}}``: how each job is requested (all optional)."""

    model_config = ConfigDict(extra="forbid")

    partition: str | None = None
    account: str | None = None
    time: str | None = Field(None, description="Time limit of each job (sbatch --time).")
    jobs: int = Field(2, ge=1, description="Jobs the runs are spread over.")
    nodelist: list[str] = Field(
        default_factory=list, description="One job per named node (sets `jobs`)."
    )
    gres: str | None = Field(None, description="GRES of each job, e.g. gpu:1g.10gb:1.")
    exclusive: bool = Field(False, description="Whole nodes; needed for layout sweeps.")
    cpus_per_task: int | None = Field(None, ge=1)
    sbatch_args: list[str] = Field(default_factory=list, description="Extra sbatch options.")
    workdir: str | None = Field(
        None, description="Shared folder for shards and job logs (default ./.migperf-slurm)."
    )
    python: str | None = Field(None, description="Python on the nodes (default: this one).")
    poll_s: float = Field(1.0, gt=0)
    max_jobs_per_run: int = Field(3, ge=1, description="Jobs a run may be tried in.")
    close_timeout_s: float = Field(120.0, gt=0)
    plan_timeout_s: float = Field(600.0, gt=0)

    def sbatch_options(self, index: int | None = None) -> list[str]:
        """The request as sbatch options; ``index`` picks a node of ``nodelist``."""
        out = ["--nodes=1", "--ntasks=1", "--no-requeue"]
        for flag, value in (
            ("--partition", self.partition),
            ("--account", self.account),
            ("--time", self.time),
            ("--gres", self.gres),
            ("--cpus-per-task", self.cpus_per_task),
        ):
            if value is not None:
                out.append(f"{flag}={value}")
        if self.exclusive:
            out.append("--exclusive")
        if index is not None and self.nodelist:
            out.append(f"--nodelist={self.nodelist[index % len(self.nodelist)]}")
        return out + list(self.sbatch_args)


def parse_options(options: Mapping[str, Any], address: str | None) -> SlurmOptions:
    """Validate ``executor: {slurm: {...}}`` (``address``: the partition of ``slurm:PART``).

    Raises:
        UsageError: an unknown or invalid option.
    """
    data = dict(options)
    if address:
        data["partition"] = address
    try:
        opts = SlurmOptions.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise UsageError(
            f"executor slurm: {where}: {first['msg']}",
            hint="options: " + ", ".join(SlurmOptions.model_fields),
        ) from None
    if opts.nodelist:
        opts = opts.model_copy(update={"jobs": len(opts.nodelist)})
    return opts


def slurm_problem() -> str | None:
    """Why Slurm cannot be used from here (None: ``sinfo`` answers)."""
    for tool in ("sbatch", "squeue", "scancel", "sinfo"):
        if shutil.which(tool) is None:
            return f"{tool} is not on PATH (Slurm's client commands are not installed)"
    try:
        proc = subprocess.run(
            ["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"sinfo did not answer: {exc}"
    if proc.returncode != 0:
        return f"sinfo failed: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}"
    return None


def _run(args: Sequence[str], what: str, timeout: float = 60.0) -> str:
    try:
        proc = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise UsageError(f"{what}: {args[0]} is not installed here", hint=SLURM_HINT) from None
    except subprocess.TimeoutExpired:
        raise MigperfError(f"{what}: {args[0]} did not answer in {timeout:g} s") from None
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()
        raise MigperfError(
            f"{what}: {' '.join(args[:1])} exited with {proc.returncode}: "
            f"{tail[-1] if tail else 'no output'}",
            hint=SLURM_HINT,
        )
    return proc.stdout


def sbatch(script: Path, options: Sequence[str], output: Path, name: str) -> str:
    """Submit ``script`` as one job; its id.

    Raises:
        MigperfError: sbatch refused it (its message is kept).
    """
    out = _run(
        ["sbatch", "--parsable", f"--job-name={name}", f"--output={output}", *options, str(script)],
        f"cannot submit {name}",
    )
    return out.strip().split(";")[0]


@dataclass(frozen=True)
class JobState:
    """A job as Slurm reports it."""

    job_id: str
    state: str
    reason: str = ""
    nodes: str = ""
    exit_code: str = ""

    @property
    def active(self) -> bool:
        """Whether it may still run (and write its shard)."""
        return self.state in ACTIVE_STATES

    def describe(self) -> str:
        """``slurm job 12 TIMEOUT (reason TimeLimit, exit code 0:15)``."""
        extra = []
        if self.reason and self.reason not in ("None", "(null)"):
            extra.append(f"reason {self.reason}")
        if self.exit_code and self.exit_code not in ("0:0", ""):
            extra.append(f"exit code {self.exit_code}")
        return f"slurm job {self.job_id} {self.state}" + (f" ({', '.join(extra)})" if extra else "")


def job_states(job_ids: Iterable[str]) -> dict[str, JobState]:
    """Each job's state (``squeue``, then ``sacct`` for those it forgot; UNKNOWN when neither knows)."""
    ids = list(dict.fromkeys(job_ids))
    if not ids:
        return {}
    out: dict[str, JobState] = {}
    try:
        proc = subprocess.run(
            ["squeue", "-h", "--states=all", f"--jobs={','.join(ids)}", "-o", "%i|%T|%r|%N"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        lines = proc.stdout.splitlines()
    except (OSError, subprocess.TimeoutExpired):
        lines = []
    for line in lines:
        parts = line.strip().split("|")
        if len(parts) == 4 and parts[0] in ids:
            out[parts[0]] = JobState(parts[0], parts[1], parts[2], parts[3])
    missing = [i for i in ids if i not in out]
    if missing and shutil.which("sacct"):
        try:
            proc = subprocess.run(
                [
                    "sacct",
                    "-n",
                    "-X",
                    "-P",
                    f"--jobs={','.join(missing)}",
                    "--format=JobID,State,ExitCode,NodeList",
                ],
                capture_output=True,
                text=True,
                timeout=60,
            )
            for line in proc.stdout.splitlines() if proc.returncode == 0 else []:
                jid, state, code, nodes = (line.split("|") + ["", "", "", ""])[:4]
                if jid in missing:
                    # "CANCELLED by 0" -> CANCELLED
                    out[jid] = JobState(
                        jid, state.split()[0] if state else "UNKNOWN", "", nodes, code
                    )
        except (OSError, subprocess.TimeoutExpired):
            pass
    for jid in ids:
        out.setdefault(jid, JobState(jid, "UNKNOWN", "neither squeue nor sacct knows it"))
    return out


def scancel(job_ids: Iterable[str], signal: str | None = None) -> None:
    """Cancel jobs, or only send them ``signal`` (to every process, the batch shell too)."""
    ids = list(job_ids)
    if not ids:
        return
    args = ["scancel", *([f"--signal={signal}", "--full"] if signal else []), *ids]
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        subprocess.run(args, capture_output=True, text=True, timeout=60)
