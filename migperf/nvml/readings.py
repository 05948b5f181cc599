"""Telemetry readings: board sensors, per-slice memory, NVML GPM activity.

:class:`NvmlReadings` adds what the sampler (:mod:`migperf.telemetry.sampler`)
reads many times a second to the inventory
(:class:`~migperf.nvml.inventory.NvmlInventory`): power (average and
instantaneous), the energy counter, clocks, temperature, utilization, memory
and clock-event reasons of a GPU; memory of each MIG device; and GPM activity
of a GPU or GPU instance. A reading never raises for a metric NVML refuses: it
says why the metric is missing, and whether asking again could help.
"""

from __future__ import annotations

import contextlib
import time
import types
from collections.abc import Collection, Iterator, Sequence
from typing import Any

from migperf import errors
from migperf.nvml import catalog
from migperf.nvml.inventory import NvmlInventory
from migperf.nvml.types import GpmActivity, GpuSample, MigDevice, MigMemorySample

_MIB = 1024 * 1024


class NvmlReadings(NvmlInventory):
    """Telemetry reads of GPUs, MIG devices and GPU instances (``nvidia-smi --query-gpu``, ``dcgmi dmon``).

    Args:
        module: ``pynvml`` or a module with the same surface (the simulator).
        simulated: Whether ``module`` is the simulator; results say so.
        read_only: Refuse every call that would change a GPU.
        fallback_reason: Why a simulator stands in for a missing driver, if it does.
    """

    def __init__(
        self,
        module: types.ModuleType,
        *,
        simulated: bool,
        read_only: bool = False,
        fallback_reason: str | None = None,
    ) -> None:
        super().__init__(
            module, simulated=simulated, read_only=read_only, fallback_reason=fallback_reason
        )
        # Telemetry reads many times a second: handles are looked up once.
        self._board_handles: dict[int, Any] = {}
        self._mig_handles: dict[str, Any] = {}
        self._gpm_previous: dict[tuple[int, int | None], tuple[Any, float]] = {}
        self._gpm_spare: list[Any] = []

    def shutdown(self) -> None:
        """Free the GPM samples, then release NVML (``nvmlShutdown``); errors are ignored."""
        if self._initialized:
            # The samples are driver memory: they go back while NVML is still open.
            self._free_gpm_samples()
        super().shutdown()

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Group the NVML reads this thread makes inside the block (one telemetry reading).

        On the simulator every NVML call locks the machine's state file and
        checks it for changes; inside the block that happens once for all the
        calls, which is most of a simulated reading's cost. Other threads' and
        processes' calls wait for the block to end, so keep it to one reading.
        A real driver needs nothing: there the block does nothing.
        """
        batch = getattr(getattr(self.nvml, "sim_lib", None), "batch", None)
        if not self.simulated or batch is None:
            yield
            return
        with batch():
            yield

    def _board_handle(self, gpu_index: int) -> Any:
        handle = self._board_handles.get(gpu_index)
        if handle is None:
            handle = self._board_handles[gpu_index] = self._handle(gpu_index)
        return handle

    def _telemetry_reason(
        self, gpu_index: int, metric: str, fn_name: str, exc: Any
    ) -> tuple[bool, str]:
        """``(permanent, reason)`` for a telemetry read that failed.

        Permanent means "NVML does not give this here" (not supported, not in
        this driver, not for this user): asking again would not help.
        """
        n = self.nvml
        if isinstance(exc, n.NVMLError_NotSupported):
            why = f"{fn_name}: Not Supported"
            if metric in ("gpu_util_pct", "mem_util_pct") and self._mig_on(gpu_index):
                why += (
                    " (NVML does not report utilization on MIG-enabled GPUs, nvidia-smi shows"
                    " N/A; per-instance activity comes from NVML GPM on Hopper and newer, or"
                    " from DCGM: --dcgm-url)"
                )
            return True, why
        if isinstance(exc, n.NVMLError_FunctionNotFound):
            return True, f"{fn_name} is not in this driver's NVML library (Function Not Found)"
        if isinstance(exc, n.NVMLError_NoPermission):
            why = f"{fn_name}: Insufficient Permissions"
            if metric == "memory_used_mib" and self._mig_on(gpu_index):
                why += (
                    " (in MIG mode NVML reports whole-GPU memory to privileged callers only;"
                    " per-slice memory is read from each MIG device)"
                )
            return True, why
        return False, f"{fn_name}: {exc}"

    def _mig_on(self, gpu_index: int) -> bool:
        try:
            mode = self.mig_mode(gpu_index)
        except errors.MigperfError:
            return False
        return bool(mode and mode.current)

    def sample_gpu(self, gpu_index: int, skip: Collection[str] = ()) -> GpuSample:
        """Read a physical GPU's board-level telemetry once.

        Never raises for a metric NVML refuses: that metric is None, with the
        reason in ``unsupported`` (not supported here) or ``errors`` (this
        reading failed). ``nvidia-smi -i N --query-gpu=power.draw,
        clocks.sm,clocks.mem,temperature.gpu,utilization.gpu,memory.used,
        clocks_event_reasons.active --format=csv`` shows the same.

        Args:
            gpu_index: The GPU.
            skip: Metric names (:data:`~migperf.nvml.types.GPU_METRICS`) not to
                read, e.g. those already known to be unsupported.

        Raises:
            GpuNotFoundError: when the GPU does not exist.
        """
        n = self.nvml
        h = self._board_handle(gpu_index)
        unsupported: dict[str, str] = {}
        failed: dict[str, str] = {}
        skipped = skip if isinstance(skip, frozenset) else frozenset(skip)

        def read(metrics: tuple[str, ...], *calls: tuple[str, tuple[Any, ...]]) -> Any:
            if skipped.issuperset(metrics):
                return None
            for k, (fn_name, args) in enumerate(calls):
                try:
                    fn = getattr(n, fn_name, None)
                    if fn is None:
                        raise n.NVMLError(n.NVML_ERROR_FUNCTION_NOT_FOUND)
                    return fn(h, *args)
                except n.NVMLError as exc:
                    if k + 1 < len(calls) and isinstance(exc, n.NVMLError_FunctionNotFound):
                        continue  # an older or newer name for the same reading
                    permanent, why = self._telemetry_reason(gpu_index, metrics[0], fn_name, exc)
                    for m in metrics:
                        (unsupported if permanent else failed)[m] = why
                    return None
            return None

        power = read(("power_w",), ("nvmlDeviceGetPowerUsage", ()))
        instant = self._power_instant_w(h, gpu_index, skip, unsupported, failed)
        energy = read(("energy_mj",), ("nvmlDeviceGetTotalEnergyConsumption", ()))
        sm = read(("sm_clock_mhz",), ("nvmlDeviceGetClockInfo", (n.NVML_CLOCK_SM,)))
        mem_clock = read(("mem_clock_mhz",), ("nvmlDeviceGetClockInfo", (n.NVML_CLOCK_MEM,)))
        temp = read(
            ("temperature_c",),
            ("nvmlDeviceGetTemperature", (n.NVML_TEMPERATURE_GPU,)),
            ("nvmlDeviceGetTemperatureV", (n.NVML_TEMPERATURE_GPU,)),
        )
        util = read(("gpu_util_pct", "mem_util_pct"), ("nvmlDeviceGetUtilizationRates", ()))
        memory = read(("memory_used_mib",), ("nvmlDeviceGetMemoryInfo", ()))
        reasons = read(
            ("throttle_reasons",),
            ("nvmlDeviceGetCurrentClocksEventReasons", ()),
            ("nvmlDeviceGetCurrentClocksThrottleReasons", ()),
        )
        return GpuSample(
            gpu_index=gpu_index,
            power_w=None if power is None else int(power) / 1000.0,
            power_instant_w=instant,
            energy_mj=None if energy is None else int(energy),
            sm_clock_mhz=None if sm is None else int(sm),
            mem_clock_mhz=None if mem_clock is None else int(mem_clock),
            temperature_c=None if temp is None else int(temp),
            gpu_util_pct=None if util is None else int(util.gpu),
            mem_util_pct=None if util is None else int(util.memory),
            memory_used_mib=None if memory is None else int(memory.used) / _MIB,
            memory_total_mib=None if memory is None else int(memory.total) / _MIB,
            throttle_reasons=None if reasons is None else int(reasons),
            unsupported=unsupported,
            errors=failed,
        )

    def _power_instant_w(
        self,
        h: Any,
        gpu_index: int,
        skip: Collection[str],
        unsupported: dict[str, str],
        failed: dict[str, str],
    ) -> float | None:
        # On Ampere (but GA100) and newer nvmlDeviceGetPowerUsage is a 1 s
        # average; the instantaneous reading is a field value.
        n = self.nvml
        if "power_instant_w" in skip:
            return None
        fn_name = "nvmlDeviceGetFieldValues"
        try:
            field = n.nvmlDeviceGetFieldValues(h, [n.NVML_FI_DEV_POWER_INSTANT])[0]
            if int(field.nvmlReturn) != n.NVML_SUCCESS:
                raise n.NVMLError(int(field.nvmlReturn))
        except n.NVMLError as exc:
            permanent, why = self._telemetry_reason(
                gpu_index, "power_instant_w", f"{fn_name}(NVML_FI_DEV_POWER_INSTANT)", exc
            )
            (unsupported if permanent else failed)["power_instant_w"] = why
            return None
        kind = int(field.valueType)
        member = {0: "dVal", 1: "uiVal", 2: "ulVal", 3: "ullVal", 4: "sllVal", 5: "siVal"}
        value = getattr(field.value, member.get(kind, "uiVal"))
        return float(value) / 1000.0

    def mig_memory(
        self, gpu_index: int, devices: Sequence[MigDevice] | None = None
    ) -> list[MigMemorySample]:
        """Memory used and total of each MIG device (its GPU instance's framebuffer).

        ``nvidia-smi`` shows it in the "MIG devices" table. A device whose
        reading fails gets a sample with ``error`` set instead of raising.

        Args:
            gpu_index: The physical GPU.
            devices: The MIG devices to read, as :meth:`mig_devices` listed
                them (pass them to avoid listing again on every reading);
                None lists them now.
        """
        n = self.nvml
        if devices is None:
            devices = self.mig_devices(gpu_index)
        out = []
        for dev in devices:
            used = total = None
            error = None
            for attempt in range(2):
                try:
                    h = self._mig_handles.get(dev.mig_uuid)
                    if h is None:
                        h = n.nvmlDeviceGetHandleByUUID(dev.mig_uuid)
                        self._mig_handles[dev.mig_uuid] = h
                    mem = n.nvmlDeviceGetMemoryInfo(h)
                    used, total, error = int(mem.used) / _MIB, int(mem.total) / _MIB, None
                    break
                except n.NVMLError as exc:
                    # A stale handle (the instance was recreated) is looked up again once.
                    self._mig_handles.pop(dev.mig_uuid, None)
                    error = f"nvmlDeviceGetMemoryInfo({dev.mig_uuid}): {exc}"
                    stale = isinstance(exc, (n.NVMLError_InvalidArgument, n.NVMLError_NotFound))
                    if not stale or attempt:
                        break
            out.append(
                MigMemorySample(
                    gpu_index=gpu_index,
                    mig_uuid=dev.mig_uuid,
                    gi_id=dev.gi_id,
                    ci_id=dev.ci_id,
                    memory_used_mib=used,
                    memory_total_mib=total,
                    error=error,
                )
            )
        return out

    def gpm_support(self, gpu_index: int) -> str | None:
        """Why NVML GPM (per-instance activity) is not available on a GPU; None when it is.

        GPM needs a Hopper or newer GPU and a driver that has it; on Ampere
        (A100, A30) per-instance activity needs DCGM profiling instead.
        """
        n = self.nvml
        h = self._board_handle(gpu_index)
        fn_name = "nvmlGpmQueryDeviceSupport"
        try:
            fn = getattr(n, fn_name, None)
            if fn is None:
                raise n.NVMLError(n.NVML_ERROR_FUNCTION_NOT_FOUND)
            support = fn(h)
        except n.NVMLError as exc:
            return self._telemetry_reason(gpu_index, "gpm", fn_name, exc)[1]
        if not int(support.isSupportedDevice):
            try:
                arch = catalog.ARCH_NAMES.get(int(n.nvmlDeviceGetArchitecture(h)), "unknown")
            except n.NVMLError:
                arch = "unknown"
            return (
                f"GPU {gpu_index} ({arch}) has no NVML GPM (Hopper and newer only); per-instance "
                "activity on it needs DCGM profiling (--dcgm-url)"
            )
        return None

    def gpm_activity(self, gpu_index: int, gi_id: int | None = None) -> GpmActivity:
        """Activity of a GPU instance (``gi_id``) or the whole GPU since the previous call.

        Takes an NVML GPM sample (``nvmlGpmMigSampleGet`` / ``nvmlGpmSampleGet``)
        and computes the metrics between it and the previous one for the
        same entity; the first call only takes the first sample. NVML wants
        samples more than 100 ms apart. ``dcgmi dmon -e 1001,1002,1003,1004,1005``
        shows the DCGM equivalents. Never raises for an NVML refusal.
        """
        n = self.nvml
        h = self._board_handle(gpu_index)
        key = (gpu_index, gi_id)
        metric_ids = (
            ("graphics_util_pct", "NVML_GPM_METRIC_GRAPHICS_UTIL"),
            ("sm_util_pct", "NVML_GPM_METRIC_SM_UTIL"),
            ("sm_occupancy_pct", "NVML_GPM_METRIC_SM_OCCUPANCY"),
            ("tensor_util_pct", "NVML_GPM_METRIC_ANY_TENSOR_UTIL"),
            ("dram_bw_util_pct", "NVML_GPM_METRIC_DRAM_BW_UTIL"),
        )
        names = [m for m, _ in metric_ids]

        def refused(fn_name: str, exc: Any) -> GpmActivity:
            permanent, why = self._telemetry_reason(gpu_index, "gpm", fn_name, exc)
            table = dict.fromkeys(names, why)
            if permanent:
                return GpmActivity(gpu_index=gpu_index, gi_id=gi_id, unsupported=table)
            return GpmActivity(gpu_index=gpu_index, gi_id=gi_id, errors=table)

        try:
            sample = self._gpm_spare.pop() if self._gpm_spare else n.nvmlGpmSampleAlloc()
        except n.NVMLError as exc:
            return refused("nvmlGpmSampleAlloc", exc)
        fn_name = "nvmlGpmSampleGet" if gi_id is None else "nvmlGpmMigSampleGet"
        try:
            if gi_id is None:
                n.nvmlGpmSampleGet(h, sample)
            else:
                n.nvmlGpmMigSampleGet(h, gi_id, sample)
        except n.NVMLError as exc:
            self._gpm_spare.append(sample)
            return refused(fn_name, exc)
        now = time.monotonic()
        previous = self._gpm_previous.get(key)
        self._gpm_previous[key] = (sample, now)
        if previous is None:
            return GpmActivity(gpu_index=gpu_index, gi_id=gi_id)
        old, then = previous
        self._gpm_spare.append(old)
        request = n.c_nvmlGpmMetricsGet_t()
        request.version = n.NVML_GPM_METRICS_GET_VERSION
        request.numMetrics = len(metric_ids)
        request.sample1 = old
        request.sample2 = sample
        for k, (_, const) in enumerate(metric_ids):
            request.metrics[k].metricId = getattr(n, const)
        try:
            n.nvmlGpmMetricsGet(request)
        except n.NVMLError as exc:
            return refused("nvmlGpmMetricsGet", exc)
        values: dict[str, float | None] = {}
        unsupported: dict[str, str] = {}
        failed: dict[str, str] = {}
        for k, (name, const) in enumerate(metric_ids):
            m = request.metrics[k]
            code = int(m.nvmlReturn)
            if code == n.NVML_SUCCESS:
                values[name] = float(m.value)
                continue
            values[name] = None
            permanent, why = self._telemetry_reason(
                gpu_index, name, f"nvmlGpmMetricsGet({const})", n.NVMLError(code)
            )
            (unsupported if permanent else failed)[name] = why
        return GpmActivity(
            gpu_index=gpu_index,
            gi_id=gi_id,
            interval_s=now - then,
            unsupported=unsupported,
            errors=failed,
            **values,
        )

    def _free_gpm_samples(self) -> None:
        samples = [s for s, _ in self._gpm_previous.values()] + self._gpm_spare
        self._gpm_previous.clear()
        self._gpm_spare.clear()
        for s in samples:
            with contextlib.suppress(self.nvml.NVMLError):
                self.nvml.nvmlGpmSampleFree(s)
