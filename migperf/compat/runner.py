"""Running the matrix: each framework's checks in check processes of their own.

For each framework, the one-device checks run in one process with the first
device exposed, then the two-device checks in another with both exposed
(``CUDA_VISIBLE_DEVICES=A,B``). The process prints a line per check as it
finishes; each check has its own time limit: a check that overruns it is a
``fail`` ("timed out"), its process (and everything it started) is killed,
and the checks after it run in a fresh process. A process that dies takes
only its check in flight with it, as a ``fail`` with its exit code and the
last lines of its stderr.

Nothing here imports a framework, and nothing changes a GPU.
"""

from __future__ import annotations

import json
import os
import queue
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from migperf import __version__
from migperf.compat.frameworks import FRAMEWORKS, SERVING, TWO_DEVICE_CHECKS, Framework
from migperf.compat.probes.kit import CONTEXT_ENV, IMPORT_FAILED, LINE_PREFIX, Context, trim
from migperf.compat.targets import CompatTarget
from migperf.errors import UsageError
from migperf.results.compat import CompatRow

__all__ = ["CompatMatrix", "resolve_frameworks", "run_matrix"]

#: Where ``python -m migperf.compat.probes`` finds this migperf.
_ROOT = str(Path(__file__).resolve().parents[2])


@dataclass
class CompatMatrix:
    """One run of the matrix.

    Attributes:
        session: Its id (``compat-YYYYMMDD-HHMMSS-xxxx``), the rows' session.
        started_unix: When it started.
        target: The devices it ran on.
        rows: One per (framework, check), in the order they ran.
    """

    session: str
    started_unix: float
    target: CompatTarget
    rows: list[CompatRow] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """Verdict -> rows with it."""
        out = {v: 0 for v in ("pass", "fail", "expected-fail", "skipped")}
        for r in self.rows:
            out[r.verdict] += 1
        return out

    @property
    def failed(self) -> bool:
        """Whether any check failed unexpectedly (what makes ``migperf compat`` exit 1)."""
        return any(r.verdict == "fail" for r in self.rows)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (``migperf compat --json``)."""
        return {
            "session": self.session,
            "started_unix": self.started_unix,
            "simulated": self.target.simulated,
            "target": self.target.to_dict(),
            "counts": self.counts(),
            "rows": [r.to_dict() for r in self.rows],
        }


def resolve_frameworks(names: Sequence[str] | None) -> list[Framework]:
    """The frameworks (and servers) named, in matrix order; every one for None or empty.

    Raises:
        UsageError: a name is not a known framework or server.
    """
    every = [*FRAMEWORKS, *SERVING]
    if not names:
        return every
    known = {f.key for f in every}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UsageError(
            f"unknown framework {', '.join(repr(n) for n in unknown)}",
            hint="choose from: " + ", ".join(f.key for f in every),
        )
    return [f for f in every if f.key in set(names)]


def _env(
    fw: Framework,
    target: CompatTarget,
    devices: list[str],
    timeout_s: float,
    extra_path: Sequence[Path],
) -> dict[str, str]:
    env = dict(os.environ)
    env.update(fw.env)
    path = (
        [str(p) for p in extra_path]
        + [_ROOT]
        + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    )
    env["PYTHONPATH"] = os.pathsep.join(path)
    env["PYTHONUNBUFFERED"] = "1"
    env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
    env["CUDA_VISIBLE_DEVICES"] = ",".join(devices)
    ctx = Context(
        framework=fw.key,
        module=fw.module,
        install=fw.install,
        devices=tuple(devices),
        mig=target.first.mig,
        simulated=target.simulated,
        memory_mib=target.first.memory_mib,
        timeout_s=timeout_s,
    )
    env[CONTEXT_ENV] = ctx.to_env()
    return env


def _reader(stream: IO[str], out: queue.Queue[dict[str, Any] | None]) -> None:
    for line in stream:
        if line.startswith(LINE_PREFIX):
            try:
                out.put(json.loads(line[len(LINE_PREFIX) :]))
            except ValueError:
                continue
    out.put(None)


def _kill(proc: subprocess.Popen[str]) -> None:
    """The check process and everything it started (its own session)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
    proc.wait()


def _stderr_tail(err: IO[str]) -> str:
    err.seek(0)
    lines = [ln for ln in err.read().splitlines() if ln.strip()]
    return trim(" | ".join(lines[-4:]), 500)


def run_checks(
    fw: Framework, checks: list[str], env: Mapping[str, str], timeout_s: float, python: str
) -> dict[str, dict[str, Any]]:
    """Run checks in check processes; check -> its result line (verdict, detail, wall_s, version)."""
    results: dict[str, dict[str, Any]] = {}
    pending = list(checks)
    while pending:
        with tempfile.TemporaryFile("w+") as err:
            proc = subprocess.Popen(
                [python, "-m", "migperf.compat.probes", fw.probe, ",".join(pending)],
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                start_new_session=True,
            )
            lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
            assert proc.stdout is not None
            reader = threading.Thread(target=_reader, args=(proc.stdout, lines), daemon=True)
            reader.start()
            started = time.monotonic()
            while pending:
                try:
                    line = lines.get(timeout=timeout_s)
                except queue.Empty:
                    _kill(proc)
                    check = pending.pop(0)
                    results[check] = {
                        "verdict": "fail",
                        "detail": f"timed out after {timeout_s:g} s (the check process was killed)",
                        "wall_s": round(time.monotonic() - started, 3),
                    }
                    break
                if line is None:
                    rc = proc.wait()
                    check = pending.pop(0)
                    tail = _stderr_tail(err)
                    results[check] = {
                        "verdict": "fail",
                        "detail": f"the check process exited with code {rc}"
                        + (f": {tail}" if tail else ""),
                        "wall_s": round(time.monotonic() - started, 3),
                    }
                    break
                check = str(line.get("check"))
                if check in pending:
                    pending.remove(check)
                    results[check] = line
                started = time.monotonic()
            else:
                proc.wait()
            reader.join(timeout=5)
            if proc.stdout:
                proc.stdout.close()
        if "import" in results and results["import"]["verdict"] == "fail":
            # The process died or hung importing the framework: the other checks would too.
            for check in pending:
                results[check] = {"verdict": "skipped", "detail": IMPORT_FAILED, "wall_s": None}
            pending = []
    return results


def run_matrix(
    target: CompatTarget,
    frameworks: Sequence[str] | None = None,
    *,
    timeout_s: float = 120.0,
    extra_path: Sequence[Path] = (),
    python: str = sys.executable,
    on_row: Callable[[CompatRow], None] | None = None,
) -> CompatMatrix:
    """Run every check of every framework named (all by default) on ``target``.

    Args:
        target: The devices (:func:`migperf.compat.targets.choose_target`).
        frameworks: Framework and server keys; None for all.
        timeout_s: Each check's time limit.
        extra_path: Folders put first on the check processes' ``PYTHONPATH``
            (a framework build to test instead of the installed one).
        python: The interpreter of the check processes.
        on_row: Called with each row as it is decided (progress).

    Raises:
        UsageError: an unknown framework, or a time limit that is not positive.
    """
    if not timeout_s > 0:
        raise UsageError(
            f"--timeout must be positive, not {timeout_s:g}", hint="e.g. --timeout 120"
        )
    chosen = resolve_frameworks(frameworks)
    started = time.time()
    matrix = CompatMatrix(
        session=f"compat-{time.strftime('%Y%m%d-%H%M%S', time.localtime(started))}-{secrets.token_hex(2)}",
        started_unix=started,
        target=target,
    )
    base_versions = {
        "python": sys.version.split()[0],
        "migperf": __version__,
        "driver": target.driver_version,
    }
    for fw in chosen:
        one = [c for c in fw.checks if c not in TWO_DEVICE_CHECKS]
        two = [c for c in fw.checks if c in TWO_DEVICE_CHECKS]
        first = [target.first.cuda_visible] if target.first.cuda_visible else []
        results = run_checks(
            fw, one, _env(fw, target, first, timeout_s, extra_path), timeout_s, python
        )
        gate = results.get("import")
        if two:
            blocked = _two_device_block(target, gate)
            if blocked:
                results.update(
                    {c: {"verdict": "skipped", "detail": blocked, "wall_s": None} for c in two}
                )
            else:
                assert target.second is not None
                both = [target.first.cuda_visible, target.second.cuda_visible]
                results.update(
                    run_checks(
                        fw, two, _env(fw, target, both, timeout_s, extra_path), timeout_s, python
                    )
                )
        version = next((r.get("version") for r in results.values() if r.get("version")), None)
        for check in fw.checks:
            line = results[check]
            row = CompatRow(
                session=matrix.session,
                started_unix=started,
                device=target.first.label,
                second_device=target.second.label if target.second else None,
                gpu_name=target.first.name,
                driver_version=target.driver_version,
                framework=fw.key,
                framework_version=version,
                check_name=check,
                verdict=str(line["verdict"]),
                detail=line.get("detail"),
                wall_s=line.get("wall_s"),
                simulated=target.simulated,
                versions={**base_versions, fw.key: version},
            )
            matrix.rows.append(row)
            if on_row is not None:
                on_row(row)
    return matrix


def _two_device_block(target: CompatTarget, gate: dict[str, Any] | None) -> str:
    """Why the two-device checks do not run ('' when they do)."""
    if gate is not None and gate.get("verdict") != "pass":
        if str(gate.get("detail") or "").startswith("not installed"):
            return str(gate["detail"])
        return IMPORT_FAILED if gate.get("verdict") == "fail" else "import skipped"
    if target.simulated:
        return "no CUDA (simulated GPU)"
    if target.second is None:
        return target.second_missing
    return ""
