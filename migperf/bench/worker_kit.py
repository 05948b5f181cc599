"""What every worker body needs: the barrier, the device, and results for failures.

Shared by the plain measurement (:func:`migperf.bench.worker.run_spec`) and
the inference scenarios (:func:`migperf.bench.scenarios.run_scenario`), so
neither imports the other. torch is imported inside the functions only.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from typing import IO, TYPE_CHECKING, Any

from migperf.bench.emulation import emulation_from_env, oom_message
from migperf.bench.result import ErrorInfo, Status, WorkerResult
from migperf.bench.spec import BenchSpec
from migperf.errors import GpuNotFoundError, MigperfError

if TYPE_CHECKING:
    import torch

__all__ = [
    "Barrier",
    "BarrierAbortedError",
    "EventChannel",
    "device_kind",
    "failure_result",
    "is_out_of_memory",
    "freeze_imports",
    "memory_readings",
    "pin_allocator",
    "preload_workload",
    "reset_between_runs",
    "select_device",
    "simulated_warning",
]

_MIB = 1024 * 1024
_OOM_MARKERS = (
    "out of memory",
    "can't allocate memory",
    "cannot allocate memory",
    "cublas_status_alloc_failed",
    "std::bad_alloc",
)


class BarrierAbortedError(MigperfError):
    """The parent closed stdin (or sent something else) instead of ``go``."""


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether an exception is an out-of-memory failure (CUDA or the CPU allocator)."""
    import torch

    if isinstance(exc, torch.OutOfMemoryError):
        return True
    if isinstance(exc, (RuntimeError, MemoryError)):
        text = str(exc).lower()
        return isinstance(exc, MemoryError) or any(m in text for m in _OOM_MARKERS)
    return False


def simulated_warning() -> str:
    """What a simulated slot's result says about its numbers: emulated, or the whole CPU's."""
    emulation = emulation_from_env()
    if emulation is None:
        return (
            "simulated GPU slot: every number was measured on this host's CPU, not on a GPU "
            "(not emulated: the whole CPU's speed and memory, whatever the slice)"
        )
    return (
        "simulated GPU slot: every number was measured on this host's CPU, not on a GPU; "
        + emulation.describe()
    )


def select_device(spec: BenchSpec) -> torch.device:
    """The device the spec runs on, given this process's environment.

    Raises:
        GpuNotFoundError: When the spec expects CUDA and torch sees no CUDA device.
    """
    import torch

    if spec.simulated or spec.expect_device == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda", 0)
    if spec.expect_device == "cuda":
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        build = (
            f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "built without CUDA"
        )
        raise GpuNotFoundError(
            f"device {spec.device_label or 'cuda'} was requested but torch in the worker sees no CUDA "
            f"device (CUDA_VISIBLE_DEVICES={visible!r}; torch {torch.__version__} {build})",
            hint="check the index or MIG UUID with `nvidia-smi -L`, or measure on the CPU with --device cpu",
        )
    return torch.device("cpu")


class EventChannel:
    """The worker's events to its parent: one JSON object per line on the event descriptor.

    The parent reads them (:class:`~migperf.bench.process.WorkerProcess`) to
    release a barrier (``ready``) and to show the run's progress (``phase``:
    ``building``, ``warmup``, ``measuring``, ``trial``). Without a descriptor
    nothing is sent. A parent that stopped reading never stops the run.

    Args:
        fd: The descriptor (``MIGPERF_READY_FD``), or ``None``.
    """

    def __init__(self, fd: int | None) -> None:
        self.fd = fd

    def send(self, event: str, **info: Any) -> None:
        """Write ``{"event": event, "unix_s": ..., **info}`` as one line."""
        if self.fd is None:
            return
        line = json.dumps({"event": event, "unix_s": time.time(), **info}) + "\n"
        try:
            os.write(self.fd, line.encode())
        except OSError:
            self.fd = None

    def phase(self, phase: str, **info: Any) -> None:
        """Report the phase the run enters."""
        self.send("phase", phase=phase, **info)


class Barrier:
    """The worker side of the co-location barrier.

    Args:
        stdin: Where the parent's ``go`` comes from (``None``: end of input at once).
        ready_fd: Where the ready event goes (stderr when ``None``).
    """

    def __init__(self, stdin: IO[str] | None, ready_fd: int | None) -> None:
        self.stdin = stdin
        self.ready_fd = ready_fd
        self.ready_unix_s: float | None = None
        self.go_unix_s: float | None = None

    def wait(self) -> None:
        """Report ready, then block until the parent sends ``go``.

        Raises:
            BarrierAbortedError: When the parent closed stdin or sent something else.
        """
        self.ready_unix_s = time.time()
        line = (
            json.dumps({"event": "ready", "pid": os.getpid(), "unix_s": self.ready_unix_s}) + "\n"
        )
        if self.ready_fd is not None:
            os.write(self.ready_fd, line.encode())
        else:
            sys.stderr.write(line)
            sys.stderr.flush()
        got = self.stdin.readline() if self.stdin is not None else ""
        if got.strip() != "go":
            raise BarrierAbortedError(
                "the barrier was abandoned: expected 'go' on stdin, "
                + ("got end of input" if not got else f"got {got.strip()!r}"),
                hint="another co-located worker probably failed before it was ready",
            )
        self.go_unix_s = time.time()


def device_kind(device: Any) -> Any:
    """``"cuda"`` or ``"cpu"`` for a torch device, ``None`` before one was chosen."""
    return None if device is None else ("cuda" if device.type == "cuda" else "cpu")


def memory_readings(device: Any) -> dict[str, float | None]:
    """Peak memory of this process: the device's (CUDA only) and the host's resident set, in MiB."""
    out: dict[str, float | None] = {"peak_memory_mib": None, "peak_reserved_mib": None}
    out["host_peak_rss_mib"] = _host_peak_rss_mib()
    if device is not None and device.type == "cuda":
        import torch

        out["peak_memory_mib"] = torch.cuda.max_memory_allocated(device) / _MIB
        out["peak_reserved_mib"] = torch.cuda.max_memory_reserved(device) / _MIB
    return out


def _host_peak_rss_mib() -> float | None:
    """Peak resident set since the process started or :func:`reset_between_runs` (``VmHWM``)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource

        # Linux reports ru_maxrss in KiB (the process's lifetime peak: no reset).
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    except (ImportError, OSError):
        return None


def reset_between_runs(*, keep_models: bool = True) -> None:
    """Make the next run of a warm worker start as clean as a fresh process's.

    Frees what the last run left (Python garbage, the CUDA caching
    allocator's blocks, freed heap returned to the system), resets CUDA's
    peak-memory statistics and the host's peak resident set (``VmHWM``,
    through ``/proc/self/clear_refs``), and drops torch.compile's caches.
    The model kept by :mod:`migperf.bench.model_cache` stays unless
    ``keep_models`` is false.

    The collection is cheap because what the imports left was frozen before
    the first run (:func:`freeze_imports`): it passes over what the runs made.
    """
    import gc

    from migperf.bench.model_cache import clear_models

    if not keep_models:
        clear_models()
    gc.collect()
    torch_mod = sys.modules.get("torch")
    if torch_mod is not None:
        dynamo = sys.modules.get("torch._dynamo")
        if dynamo is not None:
            dynamo.reset()
        if torch_mod.cuda.is_initialized():
            torch_mod.cuda.synchronize()
            torch_mod.cuda.empty_cache()
            torch_mod.cuda.reset_peak_memory_stats()
    try:
        import ctypes

        ctypes.CDLL(None).malloc_trim(0)  # glibc: give freed heap back (RLIMIT_DATA counts it)
    except (OSError, AttributeError):
        pass
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")  # Linux: reset the peak resident set size to the current one
    except OSError:
        pass


#: glibc's mallopt parameters and the values every worker pins (see :func:`pin_allocator`).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD = 32 * _MIB  # the most glibc's dynamic threshold grows to on 64-bit
_TRIM_THRESHOLD = 2 * _MMAP_THRESHOLD  # as glibc keeps it when the threshold moves


def pin_allocator() -> bool:
    """Fix glibc malloc's mmap and trim thresholds, so the allocator behaves alike in every worker.

    glibc starts a process at a 128 KiB mmap threshold and raises it as
    large blocks are freed: until then each iteration maps, faults in and
    unmaps its large tensors. A fresh worker measures while that still
    happens, a warm one after its earlier runs settled it: on a CPU (a
    simulated slot) a BERT training step took 4 % more CPU time in a fresh
    worker. Pinned, both measure with the threshold a long-lived process
    reaches, and the same in any order of runs. Returns whether it was set
    (glibc only; elsewhere nothing changes).
    """
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        return bool(
            libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
            and libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)
        )
    except (OSError, AttributeError):
        return False


def preload_workload(name: str) -> None:
    """Import what building workload ``name`` will: torch, its module and model classes.

    A worker does it before its first run, so the imports (transformers'
    take seconds and 200 MiB) are neither in the build's time nor in an
    emulated slice's memory (:func:`migperf.bench.emulation.limit_memory`
    takes what the process holds then as its baseline), in a fresh worker
    as in a warm one forked from a zygote that imported them. A bad name
    imports nothing; the run reports it.
    """
    import importlib

    importlib.import_module("torch")
    from migperf.bench.workloads import load_workload

    try:
        cls = load_workload(name)
        model_class = getattr(cls, "MODEL_CLASS", None)
        if model_class:
            transformers = importlib.import_module("transformers")
            getattr(transformers, model_class)
            getattr(transformers, getattr(cls, "CONFIG_CLASS", "AutoConfig"))
    except Exception:  # noqa: BLE001 - the run itself reports a workload that cannot load
        return


def freeze_imports() -> None:
    """Collect, then freeze what is left (:func:`gc.freeze`): the imports, before any run.

    A collection then passes over only the objects made since: the warm
    worker's reset between runs takes milliseconds, where a full pass over
    torch's and transformers' ~400k objects takes 0.3-0.4 s on a busy core.
    A zygote does it before it forks (and its workers inherit it), as the
    CPython documentation advises, so the workers also keep its pages shared.
    Nothing frozen is ever garbage: models are built after it.
    """
    import gc

    gc.collect()
    gc.freeze()


def failure_result(
    spec: BenchSpec,
    exc: Exception,
    *,
    phase: str,
    device: torch.device | None,
    warnings: list[str],
) -> WorkerResult:
    """The result of a run that raised ``exc`` during ``phase`` (call it inside the ``except``).

    A :class:`~migperf.errors.MigperfError` is ``invalid`` (``aborted`` for an
    abandoned barrier), out of memory is ``oom`` with the batch size, anything
    else is ``crashed`` with the traceback.
    """
    if isinstance(exc, MigperfError):
        status: Status = "aborted" if isinstance(exc, BarrierAbortedError) else "invalid"
        return WorkerResult.for_spec(
            spec,
            status,
            device_kind=device_kind(device),
            warnings=warnings,
            error=ErrorInfo(
                kind=type(exc).__name__, message=exc.message, hint=exc.hint, phase=phase
            ),
            **memory_readings(device),
        )
    if is_out_of_memory(exc):
        lines = str(exc).strip().splitlines()
        detail, kind = (lines[0] if lines else type(exc).__name__), type(exc).__name__
        emulation = emulation_from_env() if spec.simulated else None
        if emulation is not None:
            # The slice ran out, as CUDA would report it, whichever allocator said so.
            detail, kind = oom_message(emulation, exc), "OutOfMemoryError"
        return WorkerResult.for_spec(
            spec,
            "oom",
            device_kind=device_kind(device),
            warnings=warnings,
            error=ErrorInfo(
                kind=kind,
                message=f"out of memory at batch size {spec.batch_size} during {phase}: {detail}",
                hint="use a smaller batch size or sequence length, or a larger slice",
                phase=phase,
            ),
            **memory_readings(device),
        )
    return WorkerResult.for_spec(
        spec,
        "crashed",
        device_kind=device_kind(device),
        warnings=warnings,
        error=ErrorInfo(
            kind=type(exc).__name__,
            message=f"{type(exc).__name__} during {phase}: {exc}",
            hint="see the traceback; rerun the spec with `python -m migperf.bench.worker` to debug",
            phase=phase,
            traceback=traceback.format_exc(),
        ),
        **memory_readings(device),
    )
