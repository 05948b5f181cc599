"""The simulated driver's telemetry: power, energy, temperature, clocks, utilization, GPM.

The numbers follow the load that registered processes put on a GPU
(:mod:`migperf.nvml.sim.workload`). Board sensors answer on the GPU handle
only; a MIG device handle gets ``NOT_SUPPORTED`` (docs/reference/mig-facts.md 8.6).
"""

from __future__ import annotations

import time
from typing import Any

import pynvml

from migperf.nvml.sim import workload
from migperf.nvml.sim.boardfacts import board
from migperf.nvml.sim.core import (
    E_INVALID,
    E_NOT_SUPPORTED,
    E_VERSION_MISMATCH,
    SUCCESS,
    SimLibCore,
)
from migperf.nvml.sim.core import Fail as _Fail
from migperf.nvml.sim.core import nvml_call as _nvml
from migperf.nvml.sim.core import out as _out
from migperf.nvml.sim.core import val as _val


class TelemetryQueries(SimLibCore):
    """NVML's telemetry functions over the simulated machine."""

    def _power_w(self, gpu: dict[str, Any]) -> float:
        model = self._model(gpu)
        return workload.power_w(model, self._load_fraction(gpu))

    @_nvml
    def nvmlDeviceGetPowerUsage(self, st: dict[str, Any], handle: Any, ref: Any) -> None:
        gpu = self._board_only(st, handle)
        _out(ref).value = int(self._power_w(gpu) * 1000)

    @_nvml
    def nvmlDeviceGetTotalEnergyConsumption(
        self, st: dict[str, Any], handle: Any, ref: Any
    ) -> None:
        gpu = self._board_only(st, handle)
        model = self._model(gpu)
        now = time.time()
        self._prune_once(gpu)  # exited processes' energy goes into extra_energy_mj
        _out(ref).value = int(workload.energy_mj(model, gpu, st["driver_loaded_unix"], now))

    @_nvml
    def nvmlDeviceGetEnforcedPowerLimit(self, st: dict[str, Any], handle: Any, ref: Any) -> None:
        gpu = self._board_only(st, handle)
        _out(ref).value = self._model(gpu).power_limit_w * 1000

    @_nvml
    def nvmlDeviceGetPowerManagementLimit(self, st: dict[str, Any], handle: Any, ref: Any) -> None:
        gpu = self._board_only(st, handle)
        _out(ref).value = self._model(gpu).power_limit_w * 1000

    @_nvml
    def nvmlDeviceGetTemperature(
        self, st: dict[str, Any], handle: Any, sensor: Any, ref: Any
    ) -> None:
        gpu = self._board_only(st, handle)
        if _val(sensor) != pynvml.NVML_TEMPERATURE_GPU:
            raise _Fail(E_INVALID)
        _out(ref).value = workload.temperature_c(self._load_fraction(gpu))

    @_nvml
    def nvmlDeviceGetTemperatureV(self, st: dict[str, Any], handle: Any, ref: Any) -> None:
        gpu = self._board_only(st, handle)
        reading = _out(ref)
        if reading.version != pynvml.nvmlTemperature_v1:
            raise _Fail(E_VERSION_MISMATCH)
        if reading.sensorType != pynvml.NVML_TEMPERATURE_GPU:
            raise _Fail(E_INVALID)
        reading.temperature = workload.temperature_c(self._load_fraction(gpu))

    def _clock(self, gpu: dict[str, Any], clock_type: int, maximum: bool) -> int:
        model = self._model(gpu)
        busy = maximum or self._load_fraction(gpu) > 0
        mhz = workload.clock_mhz(model, clock_type, busy)
        if mhz is None:
            raise _Fail(E_INVALID)
        if not busy and clock_type in (pynvml.NVML_CLOCK_GRAPHICS, pynvml.NVML_CLOCK_SM):
            return board(gpu["model"]).idle_sm_clock_mhz  # [V: 345 MHz on the idle H200]
        return mhz

    @_nvml
    def nvmlDeviceGetClockInfo(
        self, st: dict[str, Any], handle: Any, clock_type: Any, ref: Any
    ) -> None:
        gpu = self._board_only(st, handle)
        _out(ref).value = self._clock(gpu, _val(clock_type), maximum=False)

    @_nvml
    def nvmlDeviceGetMaxClockInfo(
        self, st: dict[str, Any], handle: Any, clock_type: Any, ref: Any
    ) -> None:
        gpu = self._board_only(st, handle)
        _out(ref).value = self._clock(gpu, _val(clock_type), maximum=True)

    @_nvml
    def nvmlDeviceGetUtilizationRates(self, st: dict[str, Any], handle: Any, ref: Any) -> None:
        gpu, gi, _ = self._device(st, handle)
        if gi is not None or self._mig_on(gpu):
            # "On MIG-enabled GPUs, querying device utilization rates is not
            # currently supported" (nvml.h) [V].
            raise _Fail(E_NOT_SUPPORTED)
        u = _out(ref)
        u.gpu, u.memory = workload.utilization_pct(self._load_fraction(gpu))

    @_nvml
    def nvmlDeviceGetCurrentClocksEventReasons(
        self, st: dict[str, Any], handle: Any, ref: Any
    ) -> None:
        gpu = self._board_only(st, handle)
        idle = self._load_fraction(gpu) == 0
        _out(ref).value = (
            pynvml.nvmlClocksEventReasonGpuIdle if idle else pynvml.nvmlClocksEventReasonNone
        )

    nvmlDeviceGetCurrentClocksThrottleReasons = nvmlDeviceGetCurrentClocksEventReasons

    # --------------------------------------------------------- field values

    @_nvml
    def nvmlDeviceGetFieldValues(
        self, st: dict[str, Any], handle: Any, count: Any, values: Any
    ) -> None:
        gpu, gi, _ = self._device(st, handle)
        arr = _out(values)
        for i in range(_val(count)):
            v = arr[i]
            if v.fieldId == pynvml.NVML_FI_DEV_POWER_INSTANT and gi is None:
                v.valueType = pynvml.NVML_VALUE_TYPE_UNSIGNED_INT
                v.value.uiVal = int(self._power_w(gpu) * 1000)
                v.timestamp = int(time.time() * 1e6)
                v.nvmlReturn = SUCCESS
            else:
                # Board sensors on MIG handles and fields not modelled [U].
                v.nvmlReturn = E_NOT_SUPPORTED
