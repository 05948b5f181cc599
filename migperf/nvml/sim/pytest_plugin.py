"""pytest plugin: a simulated GPU machine per test, for code that imports ``pynvml``.

Installed with migperf (the ``pytest11`` entry point ``migperf_sim``), so any
project's tests can ask for the ``simulated_gpus`` fixture::

    def test_my_monitor_sees_the_mig_devices(simulated_gpus):
        machine = simulated_gpus("h100-80gb:8", layout="3g.40gb,1g.10gb*2")
        import my_monitor                          # its `import pynvml` gets the simulator
        assert len(my_monitor.mig_devices(0)) == 3
        machine.attach_process(0, mig_uuid=machine.mig_devices(0)[0].uuid)

Each call gives a fresh machine in its own temporary state directory, with
MIG enabled (unless the spec says ``mig-off``) and the optional layout on
every GPU. For the test's duration ``sys.modules["pynvml"]`` is the machine's
simulated driver (:func:`migperf.nvml.sim.patched`) and ``MIGPERF_STATE_DIR``
points at its state, so migperf itself sees the same machine; :meth:`SimulatedMachine.env`
is the environment for a subprocess (a second program, ``nvitop``) to see it too.

Loading the plugin imports nothing but this module: the simulator is
imported when a test asks for the fixture.
"""

from __future__ import annotations

import re
import tempfile
import types
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import pytest

__all__ = ["MigDevice", "SimulatedMachine", "parse_simple_layout", "simulated_gpus"]

_ITEM = re.compile(r"^(?P<profile>\d+g\.\d+gb(?:[+-][a-z0-9.]+)?|\d+)(?:[*x](?P<count>\d+))?$")
_LAYOUT_HINT = (
    'write comma-separated GPU-instance profiles, each with an optional count: "3g.40gb,1g.10gb*2" '
    "(each gets one compute instance spanning it)"
)


@dataclass(frozen=True)
class MigDevice:
    """A MIG device as NVML enumerates it under its GPU."""

    index: int
    uuid: str
    name: str
    gpu_instance_id: int
    compute_instance_id: int
    memory_mib: int


def parse_simple_layout(text: str) -> list[str]:
    """The profiles of a layout such as ``"3g.40gb,1g.10gb*2"``, one per GPU instance.

    The plugin's layout grammar is the part of ``migperf mig apply --layout``'s
    that names profiles (names or ids) and counts (``*N`` or ``xN``); every GPU
    instance gets one compute instance spanning it.

    Raises:
        UsageError: an item is not a profile with an optional count.
    """
    from migperf.errors import UsageError

    out: list[str] = []
    for raw in text.split(","):
        item = re.sub(r"\s+", "", raw).lower()
        if not item:
            continue
        m = _ITEM.match(item)
        if m is None:
            raise UsageError(
                f"simulated_gpus layout {text!r}: bad item {raw.strip()!r}", hint=_LAYOUT_HINT
            )
        count = int(m["count"] or 1)
        if not 1 <= count <= 8:
            raise UsageError(
                f"simulated_gpus layout {text!r}: count {count} is out of range", hint="use 1 to 8"
            )
        out += [m["profile"]] * count
    return out


@dataclass
class SimulatedMachine:
    """One test's simulated machine: its driver module, its state, its MIG devices."""

    spec: str
    state_dir: Path
    pynvml: types.ModuleType
    _shim_dir: Path | None = field(default=None, repr=False)

    def gpu_count(self) -> int:
        """How many GPUs the machine has."""
        return int(self.pynvml.nvmlDeviceGetCount())

    def mig_devices(self, gpu_index: int = 0) -> list[MigDevice]:
        """The MIG devices of a GPU in NVML's order (empty with MIG off)."""
        n = self.pynvml
        handle = n.nvmlDeviceGetHandleByIndex(gpu_index)
        out = []
        for i in range(n.nvmlDeviceGetMaxMigDeviceCount(handle)):
            try:
                mig = n.nvmlDeviceGetMigDeviceHandleByIndex(handle, i)
            except n.NVMLError_NotFound:
                continue
            out.append(
                MigDevice(
                    index=i,
                    uuid=n.nvmlDeviceGetUUID(mig),
                    name=n.nvmlDeviceGetName(mig),
                    gpu_instance_id=n.nvmlDeviceGetGpuInstanceId(mig),
                    compute_instance_id=n.nvmlDeviceGetComputeInstanceId(mig),
                    memory_mib=n.nvmlDeviceGetMemoryInfo(mig).total // (1024 * 1024),
                )
            )
        return out

    def apply_layout(self, layout: str, gpu_index: int | None = None) -> None:
        """Create the layout's GPU instances (largest first), each with one full compute instance.

        Args:
            layout: e.g. ``"3g.40gb,1g.10gb*2"`` (:func:`parse_simple_layout`).
            gpu_index: One GPU, or None for every GPU.

        Raises:
            UsageError: the layout is malformed, names a profile the GPU lacks,
                or does not fit; MIG is off on the GPU.
        """
        from migperf.errors import UsageError
        from migperf.nvml.catalog import CI_ID_OF_SLICES, get_model
        from migperf.nvml.sim.state import parse_machine_spec

        names = parse_simple_layout(layout)
        models = parse_machine_spec(self.spec).models
        n = self.pynvml
        for i in range(len(models)) if gpu_index is None else [gpu_index]:
            model = get_model(models[i])
            profiles = []
            for name in names:
                p = next((q for q in model.profiles if name in (q.name, str(q.profile_id))), None)
                if p is None:
                    known = ", ".join(q.name for q in model.profiles) or "none (no MIG)"
                    raise UsageError(
                        f"simulated_gpus layout {layout!r}: {model.name} has no profile {name!r}",
                        hint=f"its profiles: {known}",
                    )
                profiles.append(p)
            handle = n.nvmlDeviceGetHandleByIndex(i)
            if not n.nvmlDeviceGetMigMode(handle)[0]:
                raise UsageError(
                    f"simulated_gpus: MIG is off on GPU {i}, so layout {layout!r} cannot be made",
                    hint="drop ':mig-off' from the spec, or the layout",
                )
            profiles.sort(key=lambda q: (-q.memory_slices, -q.compute_slices))
            for p in profiles:
                try:
                    gi = n.nvmlDeviceCreateGpuInstance(handle, p.profile_id)
                    n.nvmlGpuInstanceCreateComputeInstance(gi, CI_ID_OF_SLICES[p.compute_slices])
                except n.NVMLError as exc:
                    raise UsageError(
                        f"simulated_gpus layout {layout!r} does not fit GPU {i} ({model.name}): "
                        f"creating {p.name} failed: {exc}",
                        hint="use fewer or smaller instances; `migperf mig layouts --model "
                        f"{model.key}` lists layouts that fit",
                    ) from None

    def attach_process(
        self,
        gpu_index: int = 0,
        *,
        mig_uuid: str | None = None,
        pid: int | None = None,
        used_mib: float = 1024.0,
        mps: bool = False,
    ) -> int:
        """Mark a process (default: this one) as running on a GPU or one of its MIG devices.

        NVML lists it with its PID and ``used_mib`` while it lives
        (:func:`migperf.nvml.sim.control.attach_process`). Returns the pid.
        """
        from migperf.nvml.sim import control

        return control.attach_process(
            self.spec,
            gpu_index,
            mig_uuid=mig_uuid,
            pid=pid,
            used_mib=used_mib,
            mps=mps,
            root=self.state_dir,
        )

    def detach_process(self, gpu_index: int, pid: int) -> None:
        """Unlist a process, as if it had exited."""
        from migperf.nvml.sim import control

        control.detach_process(self.spec, gpu_index, pid, root=self.state_dir)

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """Environment for a subprocess whose ``import pynvml`` should see this machine."""
        from migperf.nvml.sim.intercept import simulated_environment, write_shim

        if self._shim_dir is None:
            self._shim_dir = Path(tempfile.mkdtemp(prefix="shim-", dir=self.state_dir))
            write_shim(self._shim_dir)
        return simulated_environment(self.spec, self._shim_dir, root=self.state_dir, base=base)


@pytest.fixture
def simulated_gpus(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., SimulatedMachine]]:
    """A factory of simulated machines: ``simulated_gpus("h100-80gb:8", layout="3g.40gb,1g.10gb*2")``.

    Each call returns a :class:`SimulatedMachine` with its own state directory;
    ``import pynvml`` gives the last one made until the test ends.
    """
    from migperf.nvml.sim import clear_cache, patched, simulated_pynvml

    with ExitStack() as stack:

        def make(spec: str, layout: str | None = None) -> SimulatedMachine:
            root = tmp_path_factory.mktemp("migperf-sim")
            module = simulated_pynvml(spec, root)
            machine = SimulatedMachine(spec=spec, state_dir=root, pynvml=module)
            module.nvmlInit()
            stack.callback(module.nvmlShutdown)
            if layout:
                machine.apply_layout(layout)
            stack.enter_context(patched(spec, root))
            monkeypatch.setenv("MIGPERF_STATE_DIR", str(root))
            return machine

        yield make
    clear_cache()
