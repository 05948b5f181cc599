"""Fault injection for the simulated NVML.

Recovery code (transactional apply, journal replay, worker crash handling) is
only trustworthy if its failure paths run in tests. ``MIGPERF_SIM_FAULTS``
makes chosen simulated NVML calls fail, in any process that uses the
simulator, as a list separated by ``;``::

    FUNCTION[@N[+]]=ACTION

* ``FUNCTION`` is the pynvml function name, e.g. ``nvmlDeviceCreateGpuInstanceWithPlacement``
  (version suffixes such as ``_v2`` are ignored).
* ``@N`` fires on the N-th call only (1-based), ``@N+`` on the N-th and every
  later call; without ``@`` every call fails.
* ``ACTION`` is an NVML error name as pynvml spells its classes without the
  ``NVMLError_`` prefix (``InUse``, ``InsufficientResources``, ``NoPermission``,
  ``Unknown``, ``GpuIsLost``...), an integer NVML return code, or ``crash``,
  which SIGKILLs the calling process mid-call (nothing of that call is saved).

A rule that could never fire is an error, not a silent no-op: a function
the simulator does not have (:data:`SIMULATED_FUNCTIONS`), an error name
pynvml does not define, a code that is not an NVML error, or ``@0``; the
message names each bad rule and lists the valid choices.

Calls are counted in the simulated machine's state file, so "the 2nd create"
means the 2nd create on that machine, across processes, since the counter was
last cleared (:func:`migperf.nvml.sim.control.clear_fault_counters`).
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass
from typing import Any

import pynvml

from migperf.errors import UsageError

ENV_VAR = "MIGPERF_SIM_FAULTS"

#: The simulated functions a rule can name, as :func:`canonical_function`
#: spells them. Kept here, not read from the simulator, because the simulator
#: imports this module; tests/nvml checks that the two agree.
SIMULATED_FUNCTIONS: frozenset[str] = frozenset(
    {
        "nvmlComputeInstanceDestroy",
        "nvmlComputeInstanceGetInfo",
        "nvmlDeviceCreateGpuInstance",
        "nvmlDeviceCreateGpuInstanceWithPlacement",
        "nvmlDeviceGetAccountingBufferSize",
        "nvmlDeviceGetAccountingMode",
        "nvmlDeviceGetAccountingPids",
        "nvmlDeviceGetAccountingStats",
        "nvmlDeviceGetApplicationsClock",
        "nvmlDeviceGetArchitecture",
        "nvmlDeviceGetAttributes",
        "nvmlDeviceGetBAR1MemoryInfo",
        "nvmlDeviceGetBoardPartNumber",
        "nvmlDeviceGetBrand",
        "nvmlDeviceGetBusType",
        "nvmlDeviceGetClockInfo",
        "nvmlDeviceGetComputeInstanceId",
        "nvmlDeviceGetComputeMode",
        "nvmlDeviceGetComputeRunningProcesses",
        "nvmlDeviceGetConfComputeMemSizeInfo",
        "nvmlDeviceGetCount",
        "nvmlDeviceGetCudaComputeCapability",
        "nvmlDeviceGetCurrPcieLinkGeneration",
        "nvmlDeviceGetCurrPcieLinkWidth",
        "nvmlDeviceGetCurrentClocksEventReasons",
        "nvmlDeviceGetCurrentClocksThrottleReasons",
        "nvmlDeviceGetDecoderUtilization",
        "nvmlDeviceGetDefaultApplicationsClock",
        "nvmlDeviceGetDeviceHandleFromMigDeviceHandle",
        "nvmlDeviceGetDisplayActive",
        "nvmlDeviceGetDisplayMode",
        "nvmlDeviceGetDriverModel",
        "nvmlDeviceGetEccMode",
        "nvmlDeviceGetEncoderCapacity",
        "nvmlDeviceGetEncoderSessions",
        "nvmlDeviceGetEncoderStats",
        "nvmlDeviceGetEncoderUtilization",
        "nvmlDeviceGetEnforcedPowerLimit",
        "nvmlDeviceGetFBCStats",
        "nvmlDeviceGetFanSpeed",
        "nvmlDeviceGetFieldValues",
        "nvmlDeviceGetGpuInstanceById",
        "nvmlDeviceGetGpuInstanceId",
        "nvmlDeviceGetGpuInstancePossiblePlacements",
        "nvmlDeviceGetGpuInstanceProfileInfo",
        "nvmlDeviceGetGpuInstanceProfileInfoById",
        "nvmlDeviceGetGpuInstanceRemainingCapacity",
        "nvmlDeviceGetGpuInstances",
        "nvmlDeviceGetGpuMaxPcieLinkGeneration",
        "nvmlDeviceGetGraphicsRunningProcesses",
        "nvmlDeviceGetGspFirmwareMode",
        "nvmlDeviceGetGspFirmwareVersion",
        "nvmlDeviceGetHandleByIndex",
        "nvmlDeviceGetHandleByPciBusId",
        "nvmlDeviceGetHandleByUUID",
        "nvmlDeviceGetIndex",
        "nvmlDeviceGetInforomImageVersion",
        "nvmlDeviceGetJpgUtilization",
        "nvmlDeviceGetMPSComputeRunningProcesses",
        "nvmlDeviceGetMaxClockInfo",
        "nvmlDeviceGetMaxCustomerBoostClock",
        "nvmlDeviceGetMaxMigDeviceCount",
        "nvmlDeviceGetMaxPcieLinkGeneration",
        "nvmlDeviceGetMaxPcieLinkWidth",
        "nvmlDeviceGetMemoryBusWidth",
        "nvmlDeviceGetMemoryInfo",
        "nvmlDeviceGetMigDeviceHandleByIndex",
        "nvmlDeviceGetMigMode",
        "nvmlDeviceGetMinorNumber",
        "nvmlDeviceGetName",
        "nvmlDeviceGetNumFans",
        "nvmlDeviceGetNumGpuCores",
        "nvmlDeviceGetNvLinkState",
        "nvmlDeviceGetNvLinkVersion",
        "nvmlDeviceGetOfaUtilization",
        "nvmlDeviceGetPciInfo",
        "nvmlDeviceGetPcieReplayCounter",
        "nvmlDeviceGetPcieThroughput",
        "nvmlDeviceGetPerformanceState",
        "nvmlDeviceGetPersistenceMode",
        "nvmlDeviceGetPowerManagementDefaultLimit",
        "nvmlDeviceGetPowerManagementLimit",
        "nvmlDeviceGetPowerManagementLimitConstraints",
        "nvmlDeviceGetPowerManagementMode",
        "nvmlDeviceGetPowerState",
        "nvmlDeviceGetPowerUsage",
        "nvmlDeviceGetProcessUtilization",
        "nvmlDeviceGetRemappedRows",
        "nvmlDeviceGetRetiredPages",
        "nvmlDeviceGetRetiredPagesPendingStatus",
        "nvmlDeviceGetRowRemapperHistogram",
        "nvmlDeviceGetRunningProcessDetailList",
        "nvmlDeviceGetSamples",
        "nvmlDeviceGetSerial",
        "nvmlDeviceGetSupportedClocksEventReasons",
        "nvmlDeviceGetSupportedClocksThrottleReasons",
        "nvmlDeviceGetTemperature",
        "nvmlDeviceGetTemperatureThreshold",
        "nvmlDeviceGetTemperatureV",
        "nvmlDeviceGetTotalEccErrors",
        "nvmlDeviceGetTotalEnergyConsumption",
        "nvmlDeviceGetUUID",
        "nvmlDeviceGetUtilizationRates",
        "nvmlDeviceGetVbiosVersion",
        "nvmlDeviceGetVirtualizationMode",
        "nvmlDeviceIsMigDeviceHandle",
        "nvmlDeviceSetMigMode",
        "nvmlGpmMetricsGet",
        "nvmlGpmMigSampleGet",
        "nvmlGpmQueryDeviceSupport",
        "nvmlGpmSampleAlloc",
        "nvmlGpmSampleFree",
        "nvmlGpmSampleGet",
        "nvmlGpuInstanceCreateComputeInstance",
        "nvmlGpuInstanceCreateComputeInstanceWithPlacement",
        "nvmlGpuInstanceDestroy",
        "nvmlGpuInstanceGetComputeInstanceById",
        "nvmlGpuInstanceGetComputeInstancePossiblePlacements",
        "nvmlGpuInstanceGetComputeInstanceProfileInfo",
        "nvmlGpuInstanceGetComputeInstanceRemainingCapacity",
        "nvmlGpuInstanceGetComputeInstances",
        "nvmlGpuInstanceGetInfo",
        "nvmlSystemGetCudaDriverVersion",
        "nvmlSystemGetDriverVersion",
        "nvmlSystemGetNVMLVersion",
    }
)

#: Error names an action may use (pynvml's ``NVMLError_<name>`` classes).
ERROR_NAMES: tuple[str, ...] = tuple(
    sorted(
        n.removeprefix("NVMLError_")
        for n in dir(pynvml)
        if n.startswith("NVMLError_")
        and isinstance(getattr(pynvml, n), type)
        and issubclass(getattr(pynvml, n), pynvml.NVMLError)
    )
)
#: NVML error return codes an action may give as a number.
ERROR_CODES: frozenset[int] = frozenset(
    int(getattr(pynvml, n)) for n in dir(pynvml) if n.startswith("NVML_ERROR_")
)

# ASCII only: \d and \w also match "٣" and other scripts' digits and letters.
_RULE = re.compile(
    r"^\s*(?P<fn>nvml\w+)\s*(?:@\s*(?P<n>\d+)\s*(?P<plus>\+)?)?\s*=\s*(?P<action>\w+)\s*$",
    re.ASCII,
)
_HINT = (
    "write FUNCTION[@N[+]]=ACTION separated by ';', e.g. "
    "nvmlDeviceCreateGpuInstanceWithPlacement@2=InsufficientResources"
)


def canonical_function(name: str) -> str:
    """A function name as rules match it: version suffixes dropped (``_v2``, ``InfoV``).

    The simulator names its fault points the same way, so a rule may say
    ``nvmlDeviceGetCount`` or ``nvmlDeviceGetCount_v2``.
    """
    name = re.sub(r"_v\d+$", "", name, flags=re.ASCII)
    if name.endswith(("InfoV", "ByIdV")):
        name = name[:-1]
    return name


@dataclass(frozen=True)
class FaultRule:
    """One ``FUNCTION[@N[+]]=ACTION`` rule."""

    function: str
    nth: int | None
    and_after: bool
    action: int | str  # an nvmlReturn_t code, or "crash"

    def matches(self, call_number: int) -> bool:
        """Whether the rule fires on the ``call_number``-th call (1-based)."""
        if self.nth is None:
            return True
        return call_number >= self.nth if self.and_after else call_number == self.nth


def _action(text: str) -> int | str:
    """The action of a rule.

    Raises:
        ValueError: an unknown name or code; the message lists the valid ones.
    """
    if text == "crash":
        return "crash"
    if text.isascii() and text.isdigit():
        code = int(text) if len(text) < 6 else -1
        if code not in ERROR_CODES:
            raise ValueError(
                f"{text} is not an NVML error code; codes: {', '.join(map(str, sorted(ERROR_CODES)))}"
            )
        return code
    cls = getattr(pynvml, f"NVMLError_{text}", None)
    if text not in ERROR_NAMES or cls is None:
        close = difflib.get_close_matches(text, ERROR_NAMES, n=3)
        guess = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ValueError(
            f"unknown action {text!r}{guess}; use 'crash', an NVML error code, or one of: "
            + ", ".join(ERROR_NAMES)
        )
    return int(cls().value)


def _rule(part: str) -> FaultRule:
    """One rule.

    Raises:
        ValueError: malformed, or naming an unknown function, count or action.
    """
    m = _RULE.match(part)
    if m is None:
        raise ValueError("cannot parse it; " + _HINT)
    function = canonical_function(m["fn"])
    if function not in SIMULATED_FUNCTIONS:
        close = difflib.get_close_matches(function, sorted(SIMULATED_FUNCTIONS), n=3)
        guess = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ValueError(
            f"the simulator has no function {m['fn']!r}{guess}, so the rule would never fire; "
            "functions: " + ", ".join(sorted(SIMULATED_FUNCTIONS))
        )
    nth = None
    if m["n"]:
        nth = int(m["n"]) if len(m["n"]) < 10 else 10**9
        if nth < 1:
            raise ValueError("calls are counted from 1; @0 would never fire")
    return FaultRule(function, nth, bool(m["plus"]), _action(m["action"]))


def parse_faults(text: str) -> tuple[FaultRule, ...]:
    """Parse a ``MIGPERF_SIM_FAULTS`` value.

    Raises:
        UsageError: when a rule is malformed or names a function the
            simulator does not have, an unknown error name or code, or call
            number 0; every bad rule is named, with the valid choices.
    """
    rules = []
    problems = []
    for part in text.split(";"):
        if not part.strip():
            continue
        try:
            rules.append(_rule(part))
        except ValueError as exc:
            problems.append(f"rule {part.strip()!r}: {exc}")
    if problems:
        raise UsageError(
            f"{ENV_VAR}: " + "; ".join(problems),
            hint=_HINT + "; see migperf/nvml/sim/faults.py for the rule format",
        )
    return tuple(rules)


class FaultPlan:
    """The active fault rules; counts calls of the functions they name."""

    def __init__(self, rules: tuple[FaultRule, ...] = ()) -> None:
        self.rules = rules
        self._functions = {r.function for r in rules}

    @classmethod
    def from_env(cls) -> FaultPlan:
        """Rules from ``MIGPERF_SIM_FAULTS`` (read at every call or batch, see :meth:`fire`)."""
        return cls(parse_faults(os.environ.get(ENV_VAR, "")))

    def fire(
        self, function: str, state: dict[str, Any], env: str | None = None
    ) -> int | str | None:
        """Count a call of ``function``; the action to take, or None to proceed.

        ``env`` is the ``MIGPERF_SIM_FAULTS`` value when the caller has just
        read it (once for a batch of calls); None reads it now.
        """
        if env is None:
            env = os.environ.get(ENV_VAR, "")
        if env != getattr(self, "_env", None):
            # Tests and parents change the variable between calls.
            self._env = env
            self.rules = parse_faults(env)
            self._functions = {r.function for r in self.rules}
        if function not in self._functions:
            return None
        counters = state.setdefault("fault_calls", {})
        counters[function] = counters.get(function, 0) + 1
        n = counters[function]
        for rule in self.rules:
            if rule.function == function and rule.matches(n):
                return rule.action
        return None
