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

Calls are counted in the simulated machine's state file, so "the 2nd create"
means the 2nd create on that machine, across processes, since the counter was
last cleared (:func:`migperf.nvml.sim.control.clear_fault_counters`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

import pynvml

from migperf.errors import UsageError

ENV_VAR = "MIGPERF_SIM_FAULTS"

_RULE = re.compile(
    r"^\s*(?P<fn>nvml\w+)\s*(?:@\s*(?P<n>\d+)\s*(?P<plus>\+)?)?\s*=\s*(?P<action>\w+)\s*$"
)


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
    if text == "crash":
        return "crash"
    if text.isdigit():
        return int(text)
    cls = getattr(pynvml, f"NVMLError_{text}", None)
    if cls is None or not isinstance(cls, type) or not issubclass(cls, pynvml.NVMLError):
        raise UsageError(
            f"{ENV_VAR}: unknown action {text!r}",
            hint="use an NVML error name such as InUse or InsufficientResources, a code, or 'crash'",
        )
    return int(cls().value)


def parse_faults(text: str) -> tuple[FaultRule, ...]:
    """Parse a ``MIGPERF_SIM_FAULTS`` value.

    Raises:
        UsageError: when a rule is malformed or names an unknown action.
    """
    rules = []
    for part in text.split(";"):
        if not part.strip():
            continue
        m = _RULE.match(part)
        if m is None:
            raise UsageError(
                f"{ENV_VAR}: cannot parse rule {part.strip()!r}",
                hint="write FUNCTION[@N[+]]=ACTION, e.g. nvmlDeviceCreateGpuInstanceWithPlacement@2=InsufficientResources",
            )
        rules.append(
            FaultRule(
                function=m["fn"],
                nth=int(m["n"]) if m["n"] else None,
                and_after=bool(m["plus"]),
                action=_action(m["action"]),
            )
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
