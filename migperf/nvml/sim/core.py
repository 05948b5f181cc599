"""The plumbing every simulated NVML C function shares: return codes, handles, the lock.

:class:`SimLibCore` is the base of the simulated ``libnvidia-ml``
(:class:`~migperf.nvml.sim.lib.SimNvmlLib`): opaque handles (pointers to
structs it owns) and what they resolve to in the machine state, the GPU model
behind a GPU, and the checks many calls share (MIG on, root, board-only
sensors). :func:`nvml_call` turns a method into a C function: it runs under the
machine lock with fault injection and returns an ``nvmlReturn_t``; a method
reports an error by raising :class:`Fail`. The C functions themselves live in
``lib.py`` (devices, MIG), ``processes.py``, ``telemetry.py`` and ``board.py``.
"""

from __future__ import annotations

import ctypes
import functools
import os
import re
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pynvml

from migperf.nvml import catalog
from migperf.nvml.catalog import GpuModel, ProfileFact
from migperf.nvml.sim import workload
from migperf.nvml.sim.faults import ENV_VAR as FAULTS_ENV_VAR
from migperf.nvml.sim.faults import FaultPlan
from migperf.nvml.sim.state import MachineState

MIB = 1024 * 1024
SUCCESS = pynvml.NVML_SUCCESS
E_UNINIT = pynvml.NVML_ERROR_UNINITIALIZED
E_INVALID = pynvml.NVML_ERROR_INVALID_ARGUMENT
E_NOT_SUPPORTED = pynvml.NVML_ERROR_NOT_SUPPORTED
E_NO_PERMISSION = pynvml.NVML_ERROR_NO_PERMISSION
E_NOT_FOUND = pynvml.NVML_ERROR_NOT_FOUND
E_INSUFFICIENT_SIZE = pynvml.NVML_ERROR_INSUFFICIENT_SIZE
E_IN_USE = pynvml.NVML_ERROR_IN_USE
E_INSUFFICIENT_RESOURCES = pynvml.NVML_ERROR_INSUFFICIENT_RESOURCES
E_VERSION_MISMATCH = pynvml.NVML_ERROR_ARGUMENT_VERSION_MISMATCH


class Fail(Exception):
    """Internal: return this nvmlReturn_t code from the current call."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def val(x: Any) -> int:
    """An integer argument, whether passed as int, ctypes scalar or enum."""
    if isinstance(x, int):
        return x
    v = getattr(x, "value", x)
    return int(v)


def text(x: Any) -> str:
    """A string argument, whether passed as str, bytes or ``c_char_p``."""
    x = getattr(x, "value", x)
    return x.decode() if isinstance(x, bytes) else str(x)


def out(ref: Any) -> Any:
    """The object an out-parameter (``byref(x)`` or ``pointer(x)``) refers to."""
    if ref is None:
        raise Fail(E_INVALID)
    obj = getattr(ref, "_obj", None)
    if obj is not None:
        return obj
    contents = getattr(ref, "contents", None)
    if contents is not None:
        return contents
    return ref


def fault_name(symbol: str) -> str:
    """The pynvml-level name of a C symbol, as fault specs spell it."""
    name = re.sub(r"_v\d+$", "", symbol)
    if name.endswith(("InfoV", "ByIdV")):
        name = name[:-1]
    return name


def nvml_call(func: Callable[..., None]) -> Callable[..., int]:
    """Run a simulated C function under the machine lock with fault injection."""
    symbol = func.__name__
    name = fault_name(symbol)

    def call(self: SimLibCore, st: dict[str, Any], args: tuple[Any, ...], env: str | None) -> int:
        # Failures return inside the transaction so the fault counter (and
        # pruned processes) are saved; every call validates before it
        # mutates, so a failed call changes nothing else.
        action = self.faults.fire(name, st, env)
        if action == "crash":
            # A process killed mid-call: nothing of this call is saved,
            # as with a real SIGKILL.
            os.kill(os.getpid(), signal.SIGKILL)
        if action is not None:
            return int(action)
        try:
            func(self, st, *args)
        except Fail as fail:
            return fail.code
        return SUCCESS

    @functools.wraps(func)
    def wrapper(self: SimLibCore, *args: Any) -> int:
        if self._init_count <= 0 and not symbol.startswith("nvmlInit"):
            return E_UNINIT
        st = self.machine.joined()
        if st is not None:
            # Inside this thread's batch: its transaction saves at its end, and
            # the fault rules are read once for it.
            generation = self.machine.generation
            if self._faults_env[0] != generation:
                self._faults_env = (generation, os.environ.get(FAULTS_ENV_VAR, ""))
            return call(self, st, args, self._faults_env[1])
        with self.machine.transaction() as st:
            return call(self, st, args, None)

    return wrapper


class SimLibCore:
    """What every simulated C function stands on: the machine, its handles, shared checks."""

    def __init__(self, machine: MachineState, faults: FaultPlan | None = None) -> None:
        self.machine = machine
        self.faults = faults or FaultPlan.from_env()
        self._init_count = 0
        self._structs: dict[tuple[Any, ...], ctypes.Structure] = {}
        self._keys: dict[int, tuple[Any, ...]] = {}
        # GPM sample buffers (by address) and what each sample recorded.
        self._gpm_buffers: dict[int, Any] = {}
        self._gpm_samples: dict[int, tuple[tuple[int, int | None], float, float]] = {}
        # GPU index -> the machine transaction in which its processes were last pruned.
        self._pruned: dict[int, int] = {}
        # (machine transaction, MIGPERF_SIM_FAULTS as read in it).
        self._faults_env: tuple[int, str] = (-1, "")

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Run the calls made inside the block (by this thread) in one machine transaction.

        The state file is locked, read and checked for changes once for the
        whole block instead of once per call; the block's changes are saved
        together at its end. Before ``nvmlInit`` the calls fail anyway, so
        nothing is locked.
        """
        if self._init_count <= 0:
            yield
            return
        with self.machine.transaction():
            yield

    # ----------------------------------------------------------------- handles

    def _set_handle(self, ref: Any, key: tuple[Any, ...]) -> None:
        struct = self._structs.get(key)
        if struct is None:
            kind = key[0]
            cls = {
                "gpu": pynvml.struct_c_nvmlDevice_t,
                "mig": pynvml.struct_c_nvmlDevice_t,
                "gi": pynvml.struct_c_nvmlGpuInstance_t,
                "ci": pynvml.struct_c_nvmlComputeInstance_t,
            }[kind]
            struct = cls()
            self._structs[key] = struct
            self._keys[ctypes.addressof(struct)] = key
        ptr = out(ref)
        ctypes.c_void_p.from_address(ctypes.addressof(ptr)).value = ctypes.addressof(struct)

    def _fill_handles(
        self, arr: Any, count: Any, handle_cls: Any, keys: list[tuple[Any, ...]]
    ) -> None:
        """Fill a caller-allocated handle array, or report the size it needs."""
        cnt = out(count)
        if arr is None or cnt.value < len(keys):
            cnt.value = len(keys)
            raise Fail(E_INSUFFICIENT_SIZE)
        for i, key in enumerate(keys):
            h = handle_cls()
            self._set_handle(ctypes.byref(h), key)
            arr[i] = h
        cnt.value = len(keys)

    def _key(self, handle: Any) -> tuple[Any, ...]:
        try:
            # A handle is a pointer to one of our structs; addressof(contents) is the
            # cheapest way to its address (every telemetry call comes here).
            addr: int | None = ctypes.addressof(handle.contents)
        except (AttributeError, TypeError, ValueError):  # not a pointer, or NULL
            addr = ctypes.cast(handle, ctypes.c_void_p).value if handle is not None else None
        key = self._keys.get(addr or 0)
        if key is None:
            raise Fail(E_INVALID)
        return key

    @staticmethod
    def _gpu(st: dict[str, Any], index: int) -> dict[str, Any]:
        if not 0 <= index < len(st["gpus"]):
            raise Fail(E_INVALID)
        return st["gpus"][index]

    def _device(
        self, st: dict[str, Any], handle: Any
    ) -> tuple[dict[str, Any], dict[str, Any] | None, dict[str, Any] | None]:
        """(gpu, gi, ci) for a device or MIG-device handle (gi/ci None for a GPU)."""
        key = self._key(handle)
        if key[0] == "gpu":
            return self._gpu(st, key[1]), None, None
        if key[0] == "mig":
            gpu = self._gpu(st, key[1])
            gi, ci = self._find_ci(gpu, key[2])
            return gpu, gi, ci
        raise Fail(E_INVALID)

    def _parent(self, st: dict[str, Any], handle: Any) -> dict[str, Any]:
        gpu, gi, _ = self._device(st, handle)
        if gi is not None:
            raise Fail(E_INVALID)
        return gpu

    @staticmethod
    def _find_gi(gpu: dict[str, Any], uid: int) -> dict[str, Any]:
        for gi in gpu["gpu_instances"]:
            if gi["uid"] == uid:
                return gi
        # A handle to an instance that was destroyed [U: driver returns
        # INVALID_ARGUMENT for stale handles].
        raise Fail(E_INVALID)

    @staticmethod
    def _find_ci(gpu: dict[str, Any], uid: int) -> tuple[dict[str, Any], dict[str, Any]]:
        for gi in gpu["gpu_instances"]:
            for ci in gi["compute_instances"]:
                if ci["uid"] == uid:
                    return gi, ci
        raise Fail(E_INVALID)

    def _gi_handle(self, st: dict[str, Any], handle: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        key = self._key(handle)
        if key[0] != "gi":
            raise Fail(E_INVALID)
        gpu = self._gpu(st, key[1])
        return gpu, self._find_gi(gpu, key[2])

    def _ci_handle(
        self, st: dict[str, Any], handle: Any
    ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        key = self._key(handle)
        if key[0] != "ci":
            raise Fail(E_INVALID)
        gpu = self._gpu(st, key[1])
        gi, ci = self._find_ci(gpu, key[2])
        return gpu, gi, ci

    # ------------------------------------------------------------------ model

    @staticmethod
    def _model(gpu: dict[str, Any]) -> GpuModel:
        return catalog.get_model(gpu["model"])

    def _mig_on(self, gpu: dict[str, Any]) -> bool:
        return bool(gpu["mig_current"])

    def _require_mig_capable(self, gpu: dict[str, Any]) -> GpuModel:
        model = self._model(gpu)
        if not model.mig_capable:
            raise Fail(E_NOT_SUPPORTED)
        return model

    def _require_mig_on(self, gpu: dict[str, Any]) -> GpuModel:
        model = self._require_mig_capable(gpu)
        if not self._mig_on(gpu):
            raise Fail(E_NOT_SUPPORTED)
        return model

    def _require_root(self, st: dict[str, Any]) -> None:
        if st.get("unprivileged"):
            raise Fail(E_NO_PERMISSION)

    def _profile_by_id(self, gpu: dict[str, Any], profile_id: int) -> ProfileFact:
        p = self._model(gpu).profile_by_id(profile_id)
        if p is None:
            raise Fail(E_INVALID)
        return p

    @staticmethod
    def _write_str(buf: Any, size: Any, text: str) -> None:
        data = text.encode()
        if len(data) + 1 > val(size):
            raise Fail(E_INSUFFICIENT_SIZE)
        buf.value = data

    # ------------------------------------------------------- MIG devices

    @staticmethod
    def _mig_order(gpu: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """MIG devices sorted by (GI id, CI id), the observed enumeration order."""
        pairs = [(gi, ci) for gi in gpu["gpu_instances"] for ci in gi["compute_instances"]]
        return sorted(pairs, key=lambda p: (p[0]["gi_id"], p[1]["ci_id"]))

    def _mig_index(self, gpu: dict[str, Any], ci: dict[str, Any]) -> int:
        return [c["uid"] for _, c in self._mig_order(gpu)].index(ci["uid"])

    # -------------------------------------------------- processes and load

    def _prune_once(self, gpu: dict[str, Any]) -> None:
        """:func:`workload.prune_processes`, once per GPU per machine transaction.

        A telemetry reading (one batch) reads a GPU's load several times; one
        liveness check of its processes (a syscall each) serves them all.
        """
        generation = self.machine.generation
        if self._pruned.get(gpu["index"]) != generation:
            workload.prune_processes(gpu)
            self._pruned[gpu["index"]] = generation

    def _load_fraction(self, gpu: dict[str, Any]) -> float:
        """Share of the GPU's compute slices that simulated processes keep busy."""
        self._prune_once(gpu)
        return workload.load_fraction(gpu)

    def _board_only(self, st: dict[str, Any], handle: Any) -> dict[str, Any]:
        gpu, gi, _ = self._device(st, handle)
        if gi is not None:
            # Board sensors are not attributed to MIG devices [U: likely
            # NOT_SUPPORTED; nomad skips them on MIG handles].
            raise Fail(E_NOT_SUPPORTED)
        return gpu
