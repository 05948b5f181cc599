"""SYNTHETIC workloads with a known answer, for testing migperf's load generation and statistics.

* ``sleep``: no model, no device work. Each batch takes ``service_ms``
  plus ``per_sample_ms`` per sample in it, spent in ``time.sleep`` (which
  releases the GIL, as a CUDA-bound model's host thread would while it
  waits). A batch of 1 at ``service_ms=5`` serves at most 200 samples/s, so
  a load test's capacity and latency can be checked against queueing theory.
  ``time.sleep`` overshoots by the operating system's timer slack (about
  0.05-0.1 ms on Linux), so the service time is a floor, not an exact value.

  With ``hold_mib``, it also holds that much device memory for the whole
  run (allocated once, never touched): a working set of a known size, to
  find where a slice runs out of memory without computing anything.

Results of these workloads describe migperf, never a GPU; their names and
notes say so.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

from migperf.bench.workloads.base import PreparedWorkload, Workload, split_model_args
from migperf.errors import UsageError

__all__ = ["Sleep"]

_MIB = 1024 * 1024


class Sleep(Workload):
    """A fixed service time per batch, spent sleeping (SYNTHETIC)."""

    NAME: ClassVar[str] = "sleep"
    FAMILY: ClassVar[str] = "synthetic"
    DESCRIPTION: ClassVar[str] = (
        "SYNTHETIC: sleeps service_ms (+ per_sample_ms per sample) per batch; no model"
    )
    TASKS: ClassVar[tuple[str, ...]] = ("infer",)
    WORKLOAD_ARGS: ClassVar[Mapping[str, Any]] = {
        "service_ms": 5.0,
        "per_sample_ms": 0.0,
        "hold_mib": 0.0,
    }

    def prepare(self) -> PreparedWorkload:
        """The sleeping step; without ``hold_mib`` nothing is allocated and torch is not imported.

        Raises:
            UsageError: For an unknown argument, a negative time or size, or ``--compile``.
        """
        if self.spec.compile:
            raise UsageError(
                "sleep is a synthetic workload with no model; --compile does not apply",
                hint="drop --compile",
            )
        wargs, _ = split_model_args(self.NAME, self.spec.model_args, self.WORKLOAD_ARGS, None)
        service_s = float(wargs["service_ms"]) / 1000.0
        per_sample_s = float(wargs["per_sample_ms"]) / 1000.0
        if service_s < 0 or per_sample_s < 0:
            raise UsageError(
                f"sleep: service_ms={wargs['service_ms']} and per_sample_ms={wargs['per_sample_ms']} "
                "must not be negative"
            )
        hold_mib = float(wargs["hold_mib"])
        if hold_mib < 0:
            raise UsageError(f"sleep: hold_mib={wargs['hold_mib']} must not be negative")
        # The step's closure keeps the held memory alive for the whole run.
        held = self._hold(int(hold_mib * _MIB)) if hold_mib else None
        b = self.spec.batch_size
        clock = time.perf_counter

        def nap(seconds: float) -> None:
            # Sleep to a deadline: a second short sleep absorbs an early wake-up.
            assert held is None or held.numel() > 0
            end = clock() + seconds
            left = seconds
            while left > 0:
                time.sleep(left)
                left = end - clock()

        def step(mark: Callable[[], None]) -> None:
            nap(service_s + per_sample_s * b)

        def infer_batch(indices: Sequence[int]) -> None:
            nap(service_s + per_sample_s * len(indices))

        return PreparedWorkload(
            step=step,
            phases=("sleep",),
            samples_per_step=b,
            config={
                "service_ms": service_s * 1000.0,
                "per_sample_ms": per_sample_s * 1000.0,
                "hold_mib": hold_mib,
                "synthetic": True,
            },
            notes=[
                f"SYNTHETIC workload 'sleep': no model ran; each batch slept {service_s * 1000:g} ms"
                + (f" + {per_sample_s * 1000:g} ms per sample" if per_sample_s else "")
                + (f", holding {hold_mib:g} MiB of device memory" if hold_mib else "")
            ],
            infer_batch=infer_batch,
        )

    def _hold(self, size: int) -> Any:
        """``size`` bytes of device memory, allocated and never touched (a known working set)."""
        import torch

        return torch.empty(size, dtype=torch.uint8, device=self.device)
