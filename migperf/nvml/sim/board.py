"""The simulated driver's board queries: identity, modes, limits, PCIe, ECC, NVLink, engines.

What monitoring tools (nvitop, gpustat, DCGM-style exporters) read besides
telemetry. Each answers as the model's real driver would: the board's facts
(:mod:`migperf.nvml.sim.boardfacts`; the H200's are a real driver's recorded
answers), or the error a real driver gives.

On MIG, nvml.h documents these refusals [V], modelled here:

* encoder, decoder, JPEG and OFA utilization: "On MIG-enabled GPUs, querying
  ... utilization is not currently supported" (NOT_SUPPORTED on the parent
  with MIG on and on every MIG device handle);
* ``nvmlDeviceGetNumGpuCores``: "On MIG-enabled GPUs, querying the device's
  core count is currently not supported" (NOT_SUPPORTED "by the device or a
  mig device");
* ``nvmlDeviceGetSamples`` for GPU, memory, encoder and decoder utilization
  samples: "not currently supported" on MIG-enabled GPUs;
* ``nvmlDeviceGetComputeMode`` on the parent: "If MIG is enabled on a GPU,
  device must be MIG device handle" (NOT_SUPPORTED chosen, the stricter answer [U]).

Board-level facts (identity strings, modes, limits, thresholds, PCIe, ECC,
NVLink) answer on the GPU handle; a MIG device handle gets NOT_SUPPORTED
[U: the real code is not documented; nomad treats MIG handles the same way].
docs/reference/nvml-surface.md has the whole table.
"""

from __future__ import annotations

import math
import time
from typing import Any

import pynvml

from migperf.nvml import catalog
from migperf.nvml.catalog import SIM_DRIVER_VERSION
from migperf.nvml.sim import workload
from migperf.nvml.sim.boardfacts import BoardFacts, board
from migperf.nvml.sim.core import E_INVALID, E_NOT_FOUND, E_NOT_SUPPORTED, MIB, SimLibCore
from migperf.nvml.sim.core import Fail as _Fail
from migperf.nvml.sim.core import nvml_call as _nvml
from migperf.nvml.sim.core import out as _out
from migperf.nvml.sim.core import val as _val

#: nvmlDeviceGetSupportedClocksEventReasons on the recorded H200 [V].
SUPPORTED_CLOCK_REASONS = 511
#: Sampling period the engine utilization calls report, in microseconds [V: H200].
ENGINE_SAMPLING_US = 100000
#: nvmlDeviceGetSamples: one sample every 200 ms, the last 16 kept [U: the H200 kept 79].
SAMPLE_PERIOD_S = 0.2
SAMPLES_KEPT = 16

_UTIL_SAMPLES = {
    pynvml.NVML_GPU_UTILIZATION_SAMPLES,
    pynvml.NVML_MEMORY_UTILIZATION_SAMPLES,
    pynvml.NVML_ENC_UTILIZATION_SAMPLES,
    pynvml.NVML_DEC_UTILIZATION_SAMPLES,
    pynvml.NVML_JPG_UTILIZATION_SAMPLES,
    pynvml.NVML_OFA_UTILIZATION_SAMPLES,
}


class BoardQueries(SimLibCore):
    """Static board facts, modes and link state over the simulated machine."""

    def _facts(self, st: dict[str, Any], handle: Any) -> tuple[dict[str, Any], BoardFacts]:
        """(gpu, its board facts) for a GPU handle; NOT_SUPPORTED on a MIG device handle."""
        gpu = self._board_only(st, handle)
        return gpu, board(gpu["model"])

    def _no_mig(self, st: dict[str, Any], handle: Any) -> dict[str, Any]:
        """The GPU of a handle, refusing MIG device handles and GPUs with MIG enabled."""
        gpu, gi, _ = self._device(st, handle)
        if gi is not None or self._mig_on(gpu):
            raise _Fail(E_NOT_SUPPORTED)
        return gpu

    # -------------------------------------------------------------- identity

    @_nvml
    def nvmlDeviceGetBrand(self, st: dict[str, Any], handle: Any, ref: Any) -> None:
        _out(ref).value = self._facts(st, handle)[1].brand

    @_nvml
    def nvmlDeviceGetBoardPartNumber(
        self, st: dict[str, Any], handle: Any, buf: Any, size: Any
    ) -> None:
        self._write_str(buf, size, self._facts(st, handle)[1].board_part_number)

    @_nvml
    def nvmlDeviceGetVbiosVersion(
        self, st: dict[str, Any], handle: Any, buf: Any, size: Any
    ) -> None:
        self._write_str(buf, size, self._facts(st, handle)[1].vbios_version)

    @_nvml
    def nvmlDeviceGetInforomImageVersion(
        self, st: dict[str, Any], handle: Any, buf: Any, size: Any
    ) -> None:
        self._write_str(buf, size, self._facts(st, handle)[1].inforom_image_version)

    @_nvml
    def nvmlDeviceGetVirtualizationMode(self, st: dict[str, Any], handle: Any, ref: Any) -> None:
        _out(ref).value = self._facts(st, handle)[1].virtualization_mode

    @_nvml
    def nvmlDeviceGetPersistenceMode(self, st: dict[str, Any], handle: Any, ref: Any) -> None:
        self._facts(st, handle)
        _out(ref).value = 1  # enabled, as on datacenter nodes (nvidia-persistenced) [V: H200]

    @_nvml
    def nvmlDeviceGetDisplayMode(self, st: dict[str, Any], handle: Any, ref: Any) -> None:
        self._facts(st, handle)
        _out(ref).value = 1  # [V: H200 answers 1 with no display attached]

    @_nvml
    def nvmlDeviceGetDisplayActive(self, st: dict[str, Any], handle: Any, ref: Any) -> None:
        self._facts(st, handle)
        _out(ref).value = 0

    @_nvml
    def nvmlDeviceGetComputeMode(self, st: dict[str, Any], handle: Any, ref: Any) -> None:
        gpu, gi, _ = self._device(st, handle)
        if gi is None and self._mig_on(gpu):
            # "If MIG is enabled on a GPU, device must be MIG device handle" (nvml.h);
            # with MIG off the H200 answered 0 (default) [V].
            raise _Fail(E_NOT_SUPPORTED)
        _out(ref).value = gpu["compute_mode"]

    @_nvml
    def nvmlDeviceGetNumGpuCores(self, st: dict[str, Any], handle: Any, ref: Any) -> None:
        gpu = self._no_mig(st, handle)  # nvml.h: not supported on MIG-enabled GPUs [V]
        _out(ref).value = board(gpu["model"]).gpu_cores

    @_nvml
    def nvmlDeviceGetMemoryBusWidth(self, st: dict[str, Any], handle: Any, ref: Any) -> None:
        _out(ref).value = self._facts(st, handle)[1].memory_bus_width

    @_nvml
    def nvmlDeviceGetBusType(self, st: dict[str, Any], handle: Any, ref: Any) -> None:
        self._facts(st, handle)
        _out(ref).value = 2  # NVML_BUS_TYPE_PCIE: the host link, SXM boards too [V: H200]

    @_nvml
    def nvmlDeviceGetBAR1MemoryInfo(self, st: dict[str, Any], handle: Any, ref: Any) -> None:
        gpu, gi, _ = self._device(st, handle)
        if gi is None and self._mig_on(gpu):
            # Aggregate "only if the caller has appropriate privileges" (nvml.h).
            self._require_root(st)
        total_mib = board(gpu["model"]).bar1_mib
        if gi is not None:
            # Per instance: its share of the aperture, as of the framebuffer [U].
            model = self._model(gpu)
            total_mib = total_mib * gi["size"] // max(model.placement_units, 1)
        info = _out(ref)
        info.bar1Total = total_mib * MIB
        info.bar1Used = 2 * MIB  # [V: the idle H200 used 1.6 MiB]
        info.bar1Free = info.bar1Total - info.bar1Used

    @_nvml
    def nvmlDeviceGetGspFirmwareMode(
        self, st: dict[str, Any], handle: Any, enabled: Any, default: Any
    ) -> None:
        self._facts(st, handle)
        _out(enabled).value = 1  # GSP on by default on R580 [V: H200]
        _out(default).value = 1

    @_nvml
    def nvmlDeviceGetGspFirmwareVersion(self, st: dict[str, Any], handle: Any, buf: Any) -> None:
        self._facts(st, handle)
        buf.value = SIM_DRIVER_VERSION.encode()  # the driver's own version [V: H200]

    @_nvml
    def nvmlDeviceGetDriverModel(
        self, st: dict[str, Any], handle: Any, current: Any, pending: Any
    ) -> None:
        self._device(st, handle)
        raise _Fail(E_NOT_SUPPORTED)  # "if the platform is not windows" (nvml.h)

    nvmlDeviceGetDriverModel_v2 = nvmlDeviceGetDriverModel

    @_nvml
    def nvmlDeviceGetConfComputeMemSizeInfo(
        self, st: dict[str, Any], handle: Any, ref: Any
    ) -> None:
        gpu, _ = self._facts(st, handle)
        model = self._model(gpu)
        if model.architecture < catalog.ARCH_HOPPER:
            raise _Fail(E_NOT_SUPPORTED)  # confidential computing is Hopper and newer
        info = _out(ref)
        # Confidential computing off: nothing protected [U].
        info.protectedMemSizeKib = 0
        info.unprotectedMemSizeKib = model.memory_total_mib * 1024

    # ------------------------------------------------------- cooling, power

    @_nvml
    def nvmlDeviceGetNumFans(self, st: dict[str, Any], handle: Any, ref: Any) -> None:
        self._facts(st, handle)
        _out(ref).value = 0  # passively cooled datacenter boards [V: H200]

    @_nvml
    def nvmlDeviceGetFanSpeed(self, st: dict[str, Any], handle: Any, ref: Any) -> None:
        self._facts(st, handle)
        raise _Fail(E_NOT_SUPPORTED)  # [V: H200]

    @_nvml
    def nvmlDeviceGetFanSpeed_v2(self, st: dict[str, Any], handle: Any, fan: Any, ref: Any) -> None:
        self._facts(st, handle)
        raise _Fail(E_NOT_SUPPORTED)

    @_nvml
    def nvmlDeviceGetTemperatureThreshold(
        self, st: dict[str, Any], handle: Any, kind: Any, ref: Any
    ) -> None:
        facts = self._facts(st, handle)[1]
        k = _val(kind)
        if not 0 <= k < pynvml.NVML_TEMPERATURE_THRESHOLD_COUNT:
            raise _Fail(E_INVALID)
        # Acoustic and GPS thresholds are for boards with fans and a GPS feature [U].
        value = facts.temperature_thresholds[k] if k < 4 else 0
        if not value:
            raise _Fail(E_NOT_SUPPORTED)
        _out(ref).value = value

    @_nvml
    def nvmlDeviceGetPerformanceState(self, st: dict[str, Any], handle: Any, ref: Any) -> None:
        self._facts(st, handle)
        _out(ref).value = 0  # P0: persistence mode keeps it there [V: H200 idle]

    @_nvml
    def nvmlDeviceGetPowerState(self, st: dict[str, Any], handle: Any, ref: Any) -> None:
        self._facts(st, handle)
        _out(ref).value = 0

    @_nvml
    def nvmlDeviceGetPowerManagementMode(self, st: dict[str, Any], handle: Any, ref: Any) -> None:
        self._facts(st, handle)
        _out(ref).value = 1  # NVML_FEATURE_ENABLED [V: H200]

    @_nvml
    def nvmlDeviceGetPowerManagementLimitConstraints(
        self, st: dict[str, Any], handle: Any, low: Any, high: Any
    ) -> None:
        facts = self._facts(st, handle)[1]
        _out(low).value = facts.power_min_w * 1000
        _out(high).value = facts.power_max_w * 1000

    @_nvml
    def nvmlDeviceGetPowerManagementDefaultLimit(
        self, st: dict[str, Any], handle: Any, ref: Any
    ) -> None:
        gpu, _ = self._facts(st, handle)
        _out(ref).value = self._model(gpu).power_limit_w * 1000

    # ----------------------------------------------------------------- clocks

    def _app_clock(self, gpu: dict[str, Any], clock_type: int) -> int:
        mhz = workload.clock_mhz(self._model(gpu), clock_type, busy=True)
        if mhz is None:
            raise _Fail(E_INVALID)
        return mhz

    @_nvml
    def nvmlDeviceGetApplicationsClock(
        self, st: dict[str, Any], handle: Any, clock_type: Any, ref: Any
    ) -> None:
        gpu, _ = self._facts(st, handle)
        # Datacenter boards run applications clocks at the maximum [V: H200 1980/3201].
        _out(ref).value = self._app_clock(gpu, _val(clock_type))

    @_nvml
    def nvmlDeviceGetDefaultApplicationsClock(
        self, st: dict[str, Any], handle: Any, clock_type: Any, ref: Any
    ) -> None:
        gpu, _ = self._facts(st, handle)
        _out(ref).value = self._app_clock(gpu, _val(clock_type))

    @_nvml
    def nvmlDeviceGetMaxCustomerBoostClock(
        self, st: dict[str, Any], handle: Any, clock_type: Any, ref: Any
    ) -> None:
        gpu, _ = self._facts(st, handle)
        _out(ref).value = self._app_clock(gpu, _val(clock_type))

    @_nvml
    def nvmlDeviceGetSupportedClocksEventReasons(
        self, st: dict[str, Any], handle: Any, ref: Any
    ) -> None:
        self._facts(st, handle)
        _out(ref).value = SUPPORTED_CLOCK_REASONS

    nvmlDeviceGetSupportedClocksThrottleReasons = nvmlDeviceGetSupportedClocksEventReasons

    # ---------------------------------------------------------------- engines

    def _engine_util(self, st: dict[str, Any], handle: Any, util: Any, period: Any) -> None:
        self._no_mig(st, handle)  # nvml.h: not supported on MIG-enabled GPUs [V]
        _out(util).value = 0  # simulated work never uses the media engines
        _out(period).value = ENGINE_SAMPLING_US

    @_nvml
    def nvmlDeviceGetEncoderUtilization(
        self, st: dict[str, Any], handle: Any, util: Any, period: Any
    ) -> None:
        self._engine_util(st, handle, util, period)

    @_nvml
    def nvmlDeviceGetDecoderUtilization(
        self, st: dict[str, Any], handle: Any, util: Any, period: Any
    ) -> None:
        self._engine_util(st, handle, util, period)

    @_nvml
    def nvmlDeviceGetJpgUtilization(
        self, st: dict[str, Any], handle: Any, util: Any, period: Any
    ) -> None:
        self._engine_util(st, handle, util, period)

    @_nvml
    def nvmlDeviceGetOfaUtilization(
        self, st: dict[str, Any], handle: Any, util: Any, period: Any
    ) -> None:
        self._engine_util(st, handle, util, period)

    @_nvml
    def nvmlDeviceGetEncoderCapacity(
        self, st: dict[str, Any], handle: Any, kind: Any, ref: Any
    ) -> None:
        self._facts(st, handle)
        _out(ref).value = 100  # percent free [V: H200, which has no NVENC, says 100]

    @_nvml
    def nvmlDeviceGetEncoderStats(
        self, st: dict[str, Any], handle: Any, count: Any, fps: Any, latency: Any
    ) -> None:
        self._facts(st, handle)
        _out(count).value = _out(fps).value = _out(latency).value = 0

    @_nvml
    def nvmlDeviceGetEncoderSessions(
        self, st: dict[str, Any], handle: Any, count: Any, arr: Any
    ) -> None:
        self._facts(st, handle)
        _out(count).value = 0

    @_nvml
    def nvmlDeviceGetFBCStats(self, st: dict[str, Any], handle: Any, ref: Any) -> None:
        self._facts(st, handle)
        stats = _out(ref)
        stats.sessionsCount = stats.averageFPS = stats.averageLatency = 0

    @_nvml
    def nvmlDeviceGetProcessUtilization(
        self, st: dict[str, Any], handle: Any, arr: Any, count: Any, since: Any
    ) -> None:
        gpu = self._no_mig(st, handle)  # nvml.h: not supported on MIG-enabled GPUs [V]
        self._prune_once(gpu)
        procs = [p for p in gpu["processes"] if not p.get("mps")]
        cnt = _out(count)
        if not procs:
            raise _Fail(E_NOT_FOUND)  # "if sample entries are not found" (nvml.h)
        if arr is None or cnt.value < len(procs):
            cnt.value = len(procs)
            raise _Fail(pynvml.NVML_ERROR_INSUFFICIENT_SIZE)
        sm, mem = workload.utilization_pct(self._load_fraction(gpu))
        now_us = int(time.time() * 1e6)
        for i, p in enumerate(procs):
            arr[i].pid, arr[i].timeStamp = p["pid"], now_us
            arr[i].smUtil, arr[i].memUtil = sm, mem
            arr[i].encUtil = arr[i].decUtil = 0
        cnt.value = len(procs)

    @_nvml
    def nvmlDeviceGetSamples(
        self,
        st: dict[str, Any],
        handle: Any,
        kind: Any,
        since: Any,
        value_type: Any,
        count: Any,
        arr: Any,
    ) -> None:
        gpu, gi, _ = self._device(st, handle)
        k = _val(kind)
        if not 0 <= k <= pynvml.NVML_OFA_UTILIZATION_SAMPLES:
            raise _Fail(E_INVALID)
        if gi is not None or (self._mig_on(gpu) and k in _UTIL_SAMPLES):
            raise _Fail(E_NOT_SUPPORTED)  # nvml.h: utilization samples, MIG-enabled GPUs [V]
        if k == pynvml.NVML_MODULE_POWER_SAMPLES:
            raise _Fail(E_NOT_SUPPORTED)  # module power is for Grace Hopper modules [U]
        now = time.time()
        last = math.floor(now / SAMPLE_PERIOD_S) * SAMPLE_PERIOD_S
        stamps = [int((last - i * SAMPLE_PERIOD_S) * 1e6) for i in reversed(range(SAMPLES_KEPT))]
        stamps = [t for t in stamps if t > _val(since)]
        if not stamps:
            raise _Fail(E_NOT_FOUND)
        _out(value_type).value = pynvml.NVML_VALUE_TYPE_UNSIGNED_INT
        cnt = _out(count)
        if arr is None:
            cnt.value = len(stamps)
            return
        value = self._sample_value(gpu, k)
        n = min(len(stamps), cnt.value)
        for i in range(n):
            arr[i].timeStamp = stamps[len(stamps) - n + i]
            arr[i].sampleValue.uiVal = value
        cnt.value = n

    def _sample_value(self, gpu: dict[str, Any], kind: int) -> int:
        load = self._load_fraction(gpu)
        model = self._model(gpu)
        if kind == pynvml.NVML_TOTAL_POWER_SAMPLES:
            return int(workload.power_w(model, load) * 1000)
        if kind == pynvml.NVML_GPU_UTILIZATION_SAMPLES:
            return workload.utilization_pct(load)[0]
        if kind == pynvml.NVML_MEMORY_UTILIZATION_SAMPLES:
            return workload.utilization_pct(load)[1]
        if kind == pynvml.NVML_PROCESSOR_CLK_SAMPLES:
            return workload.clock_mhz(model, pynvml.NVML_CLOCK_SM, load > 0) or 0
        if kind == pynvml.NVML_MEMORY_CLK_SAMPLES:
            return model.max_mem_clock_mhz
        return 0  # encoder, decoder, JPEG, OFA: never busy

    # ------------------------------------------------------------------ PCIe

    @_nvml
    def nvmlDeviceGetCurrPcieLinkGeneration(
        self, st: dict[str, Any], handle: Any, ref: Any
    ) -> None:
        _out(ref).value = self._facts(st, handle)[1].pcie_generation

    @_nvml
    def nvmlDeviceGetMaxPcieLinkGeneration(self, st: dict[str, Any], handle: Any, ref: Any) -> None:
        _out(ref).value = self._facts(st, handle)[1].pcie_generation

    @_nvml
    def nvmlDeviceGetGpuMaxPcieLinkGeneration(
        self, st: dict[str, Any], handle: Any, ref: Any
    ) -> None:
        _out(ref).value = self._facts(st, handle)[1].pcie_generation

    @_nvml
    def nvmlDeviceGetCurrPcieLinkWidth(self, st: dict[str, Any], handle: Any, ref: Any) -> None:
        _out(ref).value = self._facts(st, handle)[1].pcie_width

    @_nvml
    def nvmlDeviceGetMaxPcieLinkWidth(self, st: dict[str, Any], handle: Any, ref: Any) -> None:
        _out(ref).value = self._facts(st, handle)[1].pcie_width

    @_nvml
    def nvmlDeviceGetPcieThroughput(
        self, st: dict[str, Any], handle: Any, counter: Any, ref: Any
    ) -> None:
        gpu, _ = self._facts(st, handle)
        if _val(counter) not in (pynvml.NVML_PCIE_UTIL_TX_BYTES, pynvml.NVML_PCIE_UTIL_RX_BYTES):
            raise _Fail(E_INVALID)
        # KB/s: a trickle at idle [V: 762/585 on the idle H200], more under load [U].
        _out(ref).value = int(600 + 250_000 * self._load_fraction(gpu))

    @_nvml
    def nvmlDeviceGetPcieReplayCounter(self, st: dict[str, Any], handle: Any, ref: Any) -> None:
        self._facts(st, handle)
        _out(ref).value = 0

    # ----------------------------------------------------------- memory health

    @_nvml
    def nvmlDeviceGetEccMode(
        self, st: dict[str, Any], handle: Any, current: Any, pending: Any
    ) -> None:
        self._facts(st, handle)
        _out(current).value = _out(pending).value = 1  # [V: H200]

    @_nvml
    def nvmlDeviceGetTotalEccErrors(
        self, st: dict[str, Any], handle: Any, error_type: Any, counter: Any, ref: Any
    ) -> None:
        self._facts(st, handle)
        if _val(error_type) not in (0, 1) or _val(counter) not in (0, 1):
            raise _Fail(E_INVALID)
        _out(ref).value = 0

    @_nvml
    def nvmlDeviceGetRetiredPagesPendingStatus(
        self, st: dict[str, Any], handle: Any, ref: Any
    ) -> None:
        self._facts(st, handle)
        raise _Fail(E_NOT_SUPPORTED)  # row remapping replaced page retirement [V: H200]

    @_nvml
    def nvmlDeviceGetRetiredPages_v2(
        self, st: dict[str, Any], handle: Any, cause: Any, count: Any, addrs: Any, stamps: Any
    ) -> None:
        self._facts(st, handle)
        raise _Fail(E_NOT_SUPPORTED)

    @_nvml
    def nvmlDeviceGetRemappedRows(
        self, st: dict[str, Any], handle: Any, corr: Any, unc: Any, pending: Any, failure: Any
    ) -> None:
        if not self._facts(st, handle)[1].remapper_rows:
            raise _Fail(E_NOT_SUPPORTED)
        _out(corr).value = _out(unc).value = _out(pending).value = _out(failure).value = 0

    @_nvml
    def nvmlDeviceGetRowRemapperHistogram(self, st: dict[str, Any], handle: Any, ref: Any) -> None:
        rows = self._facts(st, handle)[1].remapper_rows
        if not rows:
            raise _Fail(E_NOT_SUPPORTED)
        values = _out(ref)
        values.max, values.high, values.partial, values.low, values.none = rows, 0, 0, 0, 0

    # ---------------------------------------------------------------- NVLink

    def _nvlink(self, st: dict[str, Any], handle: Any, link: Any) -> BoardFacts:
        facts = self._facts(st, handle)[1]
        if not facts.nvlinks:
            raise _Fail(E_NOT_SUPPORTED)  # [V: every link of the recorded H200]
        if not 0 <= _val(link) < facts.nvlinks:
            raise _Fail(E_INVALID)
        return facts

    @_nvml
    def nvmlDeviceGetNvLinkState(
        self, st: dict[str, Any], handle: Any, link: Any, ref: Any
    ) -> None:
        self._nvlink(st, handle, link)
        _out(ref).value = 1  # NVML_FEATURE_ENABLED

    @_nvml
    def nvmlDeviceGetNvLinkVersion(
        self, st: dict[str, Any], handle: Any, link: Any, ref: Any
    ) -> None:
        _out(ref).value = self._nvlink(st, handle, link).nvlink_version
