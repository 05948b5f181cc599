"""What every probe shares: the check context, the verdict exceptions, the check table.

A check is a function ``(Context) -> str``: it returns what it saw (the
``pass`` detail), raises :class:`Skip` when it cannot run here (no CUDA, a
single device), :class:`ExpectedFail` when it failed the way NVIDIA documents
(``docs/reference/mig-compat.md``), and any other exception is a ``fail``
with that exception as the error.

Runs inside a check process only; imports no framework itself.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

__all__ = [
    "CONTEXT_ENV",
    "IMPORT_FAILED",
    "LINE_PREFIX",
    "ONE_MIG_DEVICE",
    "Context",
    "ExpectedFail",
    "Probe",
    "Skip",
    "describe",
    "importable",
    "load_probe",
    "loss_fell",
    "trim",
    "two_devices",
]

#: The variable that hands a check process its :class:`Context` (JSON).
CONTEXT_ENV = "MIGPERF_COMPAT_CONTEXT"

#: What a check process puts before each result line (frameworks print to stdout too).
LINE_PREFIX = "MIGPERF-COMPAT "

#: Why the checks after a failed import did not run.
IMPORT_FAILED = "import failed (see the import row)"

#: Where an error is longer than this, the table keeps its start and its end.
MAX_ERROR = 600


class Skip(Exception):
    """The check cannot run here; the message says why."""


class ExpectedFail(Exception):
    """The check failed the way NVIDIA documents for MIG; the message is the error and the fact."""


#: NVIDIA's fact behind a process that sees one of two exposed MIG devices.
ONE_MIG_DEVICE = (
    "NVIDIA: a CUDA process enumerates one MIG device (one per GPU instance on R570+ drivers); "
    "see docs/reference/mig-compat.md"
)


def two_devices(ctx: Context, seen: str, count: int) -> str:
    """The verdict of a framework that sees ``count`` GPUs with two devices exposed.

    Both seen: ``seen``. One of two MIG devices: the documented limit
    (:class:`ExpectedFail`). One of two whole GPUs: a failure.
    """
    if count >= 2:
        return seen
    if ctx.mig:
        raise ExpectedFail(f"{seen}. {ONE_MIG_DEVICE}")
    raise RuntimeError(f"{seen}; expected 2")


def loss_fell(losses: Sequence[float], where: str) -> str:
    """A training check's verdict: the loss must fall over its steps.

    Raises:
        RuntimeError: it did not.
    """
    steps = len(losses)
    if not losses[-1] < losses[0]:
        raise RuntimeError(f"the loss did not fall in {steps} steps: {list(losses)}")
    return f"{steps} SGD steps on {where}, loss {losses[0]:.3f} -> {losses[-1]:.3f}"


@dataclass(frozen=True)
class Context:
    """What a check process knows about where it runs.

    Attributes:
        framework: The framework key (``pytorch``, ...).
        module: The import that says the framework is installed.
        install: What brings it (for ``not installed``).
        devices: The devices exposed (``CUDA_VISIBLE_DEVICES`` split), empty on the simulator.
        mig: The exposed devices are MIG devices.
        simulated: The GPU is migperf's simulator: no CUDA; checks that can run on
            the CPU do, and their rows say ``simulated``.
        memory_mib: The (first) device's memory as NVML reports it.
        timeout_s: The check's time limit (a check's own children get less).
    """

    framework: str
    module: str
    install: str
    devices: tuple[str, ...] = ()
    mig: bool = False
    simulated: bool = False
    memory_mib: int | None = None
    timeout_s: float = 120.0

    @classmethod
    def from_env(cls) -> Context:
        """The context the runner put in :data:`CONTEXT_ENV`."""
        data = json.loads(os.environ[CONTEXT_ENV])
        data["devices"] = tuple(data.get("devices") or ())
        return cls(**data)

    def to_env(self) -> str:
        """This context as :data:`CONTEXT_ENV`'s value."""
        data = self.__dict__.copy()
        data["devices"] = list(self.devices)
        return json.dumps(data)

    def no_cuda(self, what: str) -> Skip:
        """``skipped: no CUDA``, saying what the framework sees."""
        where = (
            "simulated GPU"
            if self.simulated
            else f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '(unset)')}"
        )
        return Skip(f"no CUDA: {what} ({where})")

    def on_cpu(self) -> bool:
        """Whether a check without CUDA may run on the CPU (only on the simulator).

        On a real GPU a framework that sees no CUDA must not pass on the CPU: the
        row would read as a pass on the slice.
        """
        return self.simulated


@dataclass(frozen=True)
class Probe:
    """A framework's check table.

    Attributes:
        checks: check name -> function.
        version: Imports the framework and gives its version (and CUDA build).
        installed: Whether the framework can be imported at all (default: its
            module is found; a module that is found but fails to import is a
            ``fail``, not ``not installed``).
    """

    checks: dict[str, Callable[[Context], str]]
    version: Callable[[], str]
    installed: Callable[[Context], bool] = field(default=lambda ctx: importable(ctx.module))


def importable(module: str) -> bool:
    """Whether ``module`` is found on the path (without importing it; a parent package is)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def trim(text: str, limit: int = MAX_ERROR) -> str:
    """An error on one line, at most ``limit`` characters (its start and its end)."""
    flat = re.sub(r"\s+", " ", text).strip()
    if len(flat) <= limit:
        return flat
    keep = (limit - 5) // 2
    return f"{flat[:keep]} ... {flat[-keep:]}"


def describe(exc: BaseException) -> str:
    """``Type: message`` of an exception, trimmed."""
    name = type(exc).__name__
    module = type(exc).__module__
    if module not in ("builtins", "__main__") and not module.startswith("migperf"):
        name = f"{module.split('.')[0]}.{name}"
    message = str(exc)
    return trim(f"{name}: {message}" if message else name)


def load_probe(spec: str) -> Probe:
    """The :class:`Probe` named ``module:NAME``."""
    module, _, name = spec.partition(":")
    probe = getattr(importlib.import_module(module), name)
    if not isinstance(probe, Probe):
        raise TypeError(f"{spec} is not a Probe")
    return probe
