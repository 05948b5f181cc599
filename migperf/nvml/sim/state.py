"""Persistent state of a simulated machine: one JSON file, one file lock.

Separate CLI invocations and worker processes must see one GPU, exactly as
they would see one real driver. So the simulated driver state lives in
``<state dir>/sim/<machine>.json`` and every simulated NVML call runs under
``<machine>.json.lock``: it loads the file, acts, and writes it back
atomically (write to a temporary file, then ``os.replace``) when it changed.

Cost. Telemetry makes about ten NVML calls per reading, ten times a second,
so a call must be cheap. A transaction opened inside another one by the same
thread joins it (the outer one loads and saves once), which lets a sampler
group a whole reading under one lock (``SimNvmlLib.batch``, ``Nvml.batch``).
And the parsed state is kept between transactions with the exact bytes it
came from, plus an untouched copy: each transaction still reads the file
under the lock, but parses it only when the bytes differ (so a change made by
any other process, or by hand, is always seen; no clock or inode
heuristics), and decides whether to save by comparing the state with the
untouched copy (``==``) instead of encoding it.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from migperf.errors import UsageError
from migperf.nvml.catalog import MODELS, get_model
from migperf.nvml.sim.placement import GI_ID_MAPPINGS
from migperf.paths import state_dir

STATE_VERSION = 1

#: Forces every GPU of a newly booted simulated machine to one GPU-instance id
#: mapping (``standard`` or ``swapped``, :data:`~migperf.nvml.sim.placement.GI_ID_MAPPINGS`);
#: unset, each GPU gets one chosen from its UUID, so both occur.
GI_IDS_ENV = "MIGPERF_SIM_GI_IDS"

# Bus ids of a DGX A100's eight GPUs, so simulated nodes look like real ones.
_DGX_BUS_IDS = (0x07, 0x0F, 0x47, 0x4E, 0x87, 0x90, 0xB7, 0xBD)

_NAMESPACE = uuid.UUID("6d1f5a2e-7c4b-4a39-9d0c-3f1c2b8e5a10")


@dataclass(frozen=True)
class MachineSpec:
    """What ``--simulate`` asked for: GPU models and counts, and start-up options.

    Grammar: ``MODEL[:COUNT][:OPTION...]``, several joined with ``+`` for a
    mixed node (``a100-80gb:4+h100-80gb:4``). Options: ``mig-off`` (GPUs start
    with MIG disabled) and ``user`` (calls that need root fail with
    ``NVMLError_NoPermission``, as for an unprivileged user).
    """

    models: tuple[str, ...]
    mig_off: bool = False
    unprivileged: bool = False

    @property
    def machine_name(self) -> str:
        """File-system name of this machine's state."""
        parts: list[str] = []
        i = 0
        while i < len(self.models):
            j = i
            while j < len(self.models) and self.models[j] == self.models[i]:
                j += 1
            parts.append(f"{self.models[i]}-x{j - i}")
            i = j
        name = "+".join(parts)
        if self.mig_off:
            name += "-migoff"
        if self.unprivileged:
            name += "-user"
        return name

    def __str__(self) -> str:
        return self.machine_name


def parse_machine_spec(text: str) -> MachineSpec:
    """Parse a ``--simulate`` / ``MIGPERF_SIMULATE`` value.

    Raises:
        UsageError: for an unknown model, a bad count or an unknown option.
    """
    text = text.strip().lower()
    known = ", ".join(sorted(MODELS))
    if not text:
        raise UsageError("--simulate needs a GPU model", hint=f"known models: {known}")
    models: list[str] = []
    mig_off = unprivileged = False
    for group in text.split("+"):
        fields = [f for f in group.split(":")]
        model = fields[0].strip()
        if model not in MODELS:
            raise UsageError(
                f"--simulate {text!r}: unknown GPU model {model!r}",
                hint=f"known models: {known}; e.g. --simulate a100-80gb:8",
            )
        count = 1
        for opt in fields[1:]:
            opt = opt.strip()
            if re.fullmatch(r"\d+", opt):
                count = int(opt)
                if not 1 <= count <= 64:
                    raise UsageError(
                        f"--simulate {text!r}: GPU count {count} is out of range",
                        hint="use 1 to 64 GPUs, e.g. a100-80gb:8",
                    )
            elif opt == "mig-off":
                mig_off = True
            elif opt == "user":
                unprivileged = True
            else:
                raise UsageError(
                    f"--simulate {text!r}: unknown option {opt!r}",
                    hint="options are a GPU count, 'mig-off' and 'user', e.g. h100-80gb:2:mig-off",
                )
        models.extend([model] * count)
    return MachineSpec(models=tuple(models), mig_off=mig_off, unprivileged=unprivileged)


def _bus_id(index: int) -> str:
    bus = _DGX_BUS_IDS[index] if index < len(_DGX_BUS_IDS) else 0xC0 + index
    return f"00000000:{bus:02X}:00.0"


def gi_id_mapping(gpu_uuid: str) -> str:
    """The GPU-instance id mapping a newly booted GPU gets.

    ``MIGPERF_SIM_GI_IDS`` forces one; otherwise it is chosen from the GPU's
    UUID (stable for a machine, different across GPUs and machines), so no
    code or test can count on a particular id.

    Raises:
        UsageError: ``MIGPERF_SIM_GI_IDS`` names no mapping.
    """
    forced = os.environ.get(GI_IDS_ENV, "").strip().lower()
    if forced in GI_ID_MAPPINGS:
        return forced
    if forced:
        raise UsageError(
            f"{GI_IDS_ENV}={forced!r} is not a GPU-instance id mapping",
            hint=f"use one of {', '.join(GI_ID_MAPPINGS)}, or unset it",
        )
    return GI_ID_MAPPINGS[uuid.UUID(gpu_uuid.removeprefix("GPU-")).int % len(GI_ID_MAPPINGS)]


def new_state(spec: MachineSpec) -> dict[str, Any]:
    """The state of a freshly booted simulated machine.

    Raises:
        UsageError: ``MIGPERF_SIM_GI_IDS`` names no mapping.
    """
    now = time.time()
    gpus = []
    for index, key in enumerate(spec.models):
        model = get_model(key)
        mig = 1 if model.mig_capable and not spec.mig_off else 0
        gpu_uuid = "GPU-" + str(uuid.uuid5(_NAMESPACE, f"{spec.machine_name}/{index}"))
        gpus.append(
            {
                "index": index,
                "model": key,
                "uuid": gpu_uuid,
                "gi_id_map": gi_id_mapping(gpu_uuid),
                "pci_bus_id": _bus_id(index),
                "mig_current": mig,
                "mig_pending": mig,
                "compute_mode": 0,
                "gpu_instances": [],
                "processes": [],
                "extra_energy_mj": 0.0,
            }
        )
    return {
        "version": STATE_VERSION,
        "machine": spec.machine_name,
        "models": list(spec.models),
        "unprivileged": spec.unprivileged,
        "driver_loaded_unix": now,
        "serial": 0,
        "fault_calls": {},
        "gpus": gpus,
    }


def mig_uuid(gpu_uuid: str, serial: int) -> str:
    """A MIG device UUID in the R470+ form (``MIG-`` + a version-5 UUID).

    Keyed by the compute instance's creation serial, so it is stable for the
    life of the instance and new when the instance is recreated, as NVML says.
    """
    return "MIG-" + str(uuid.uuid5(_NAMESPACE, f"{gpu_uuid}/{serial}"))


def _dump(state: dict[str, Any]) -> str:
    # One canonical text: it is both what is saved and what detects a change.
    # Compact separators keep json on its C encoder (indent would not).
    return json.dumps(state, sort_keys=True, separators=(",", ":"))


class _FlockLock:
    """An exclusive lock across processes (flock) and threads (a mutex).

    Every simulated NVML call takes it, so it must be cheap: one ``flock`` on
    a descriptor kept open, reopened after a fork so parent and child never
    share a lock.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._mutex = threading.Lock()
        self._fd: int | None = None
        self._pid = 0

    def __enter__(self) -> None:
        self._mutex.acquire()
        try:
            if self._fd is None or self._pid != os.getpid():
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
                self._pid = os.getpid()
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        except BaseException:
            self._mutex.release()
            raise

    def __exit__(self, *exc: object) -> None:
        try:
            assert self._fd is not None
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._mutex.release()


class MachineState:
    """Access to one simulated machine's state file."""

    def __init__(self, spec: MachineSpec, root: Path | None = None) -> None:
        self.spec = spec
        directory = (root or state_dir()) / "sim"
        self.path = directory / f"{spec.machine_name}.json"
        self._lock = _FlockLock(Path(str(self.path) + ".lock"))
        # The open transaction: (pid, thread) that holds it, and its state.
        self._owner: tuple[int, int] | None = None
        self._open_state: dict[str, Any] | None = None
        # Valid while the file holds exactly ``raw``: the state parsed from it,
        # never handed out, and an equal copy that transactions work on.
        self._cache: tuple[bytes, dict[str, Any], dict[str, Any]] | None = None
        #: Counts outermost transactions: what was checked in this one need not be again.
        self.generation = 0

    @contextmanager
    def transaction(self) -> Iterator[dict[str, Any]]:
        """Lock, load (creating the machine on first use), yield, save if changed.

        A transaction opened by a thread that already holds one joins it: it
        gets the same state, and the outermost transaction saves (or, on an
        exception, discards) everything at its end.
        """
        me = (os.getpid(), threading.get_ident())
        if self._owner == me and self._open_state is not None:
            yield self._open_state
            return
        with self._lock:
            self.generation += 1
            raw = self._read()
            cache = self._cache
            if raw is not None and cache is not None and cache[0] == raw:
                pristine: dict[str, Any] | None = cache[1]
                state = cache[2]
            else:
                self._cache = None
                state, pristine = self._parse(raw)
            self._owner, self._open_state = me, state
            try:
                yield state
            except BaseException:
                # The body may have half-changed the working copy: forget it.
                self._cache = None
                raise
            finally:
                self._owner, self._open_state = None, None
            if raw is not None and pristine is not None and state == pristine:
                # Unchanged (a C-level comparison, far cheaper than encoding to compare text).
                self._cache = (raw, pristine, state)
                return
            self._cache = None
            text = _dump(state)
            data = text.encode()
            if data != raw:
                self._save_text(text)
            self._cache = (data, json.loads(data), json.loads(data))

    def joined(self) -> dict[str, Any] | None:
        """The state of the transaction this thread holds, or None when it holds none."""
        if self._owner == (os.getpid(), threading.get_ident()):
            return self._open_state
        return None

    def read(self) -> dict[str, Any]:
        """A snapshot of the state, taken under the lock."""
        with self.transaction() as state:
            return json.loads(json.dumps(state))

    def _read(self) -> bytes | None:
        """The state file's bytes, None when there is none."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            size = 1 << 20
            data = os.read(fd, size)
            if len(data) < size:
                return data  # a short read of a regular file is its end
            chunks = [data]
            while chunk := os.read(fd, size):
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def _parse(self, raw: bytes | None) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """(state to work on, an equal untouched copy); no copy for a freshly booted machine."""
        if raw is None:
            return new_state(self.spec), None
        try:
            state = json.loads(raw)
        except json.JSONDecodeError:
            # A torn or hand-edited file: a real driver would have lost its
            # state too (reload), so start the machine afresh.
            return new_state(self.spec), None
        if state.get("version") != STATE_VERSION or state.get("models") != list(self.spec.models):
            return new_state(self.spec), None
        return state, json.loads(raw)

    def _save_text(self, text: str) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=self.path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def delete(self) -> None:
        """Forget the machine (the next call boots it afresh)."""
        with self._lock:
            self._cache = None
            self.path.unlink(missing_ok=True)
