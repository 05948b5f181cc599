"""``bench --results``: store benchmark results the way ``migperf run`` does.

Each result becomes one run record in the results store, keyed by what was
measured (the spec's hash, the device, the repeat), so ``results show``,
``report``, ``compare`` and ``plan`` read it like an experiment's runs. The
device is looked up in NVML (read-only): a MIG device gives its GPU, profile
and layout, which is what the planner needs to use a measured capacity
(``--find-max-qps``). A second ``bench`` of the same thing adds an attempt; the
latest one is what readers use.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from migperf.bench.result import WorkerResult

__all__ = ["BENCH_EXPERIMENT", "store_bench_results"]

#: The experiment name bench results are stored under.
BENCH_EXPERIMENT = "bench"


def _where(device: str | None, simulate: str | None) -> dict[str, Any]:
    """GPU, profile and layout of ``device`` from NVML; empty for the CPU or a device NVML lacks."""
    text = (device or "").strip()
    if not text or text.lower() in ("cpu", "auto"):
        return {}
    from migperf.errors import MigperfError
    from migperf.nvml import open_nvml
    from migperf.telemetry.target import resolve_target

    try:
        nvml = open_nvml(simulate, allow_fallback=False, read_only=True)
    except MigperfError:
        return {}
    try:
        target = resolve_target(nvml, text)
        if target is None:
            return {}
        info = nvml.gpu(target.gpu_index)
        layout = None
        if info.mig_mode and info.mig_mode.current:
            layout = ",".join(d.name.rsplit(" ", 1)[-1] for d in nvml.mig_devices(target.gpu_index))
        return {
            "driver_version": nvml.driver_version(),
            "gpu_index": target.gpu_index,
            "gpu_name": info.name,
            "gpu_uuid": target.gpu_uuid,
            "mig_uuid": target.mig_uuid,
            "profile": target.profile,
            "layout": layout or None,
        }
    except MigperfError:
        return {}
    finally:
        nvml.shutdown()


def store_bench_results(
    path: Path,
    results: list[WorkerResult],
    *,
    device: str | None,
    simulate: str | None,
    repeats: int,
) -> int:
    """Store ``results`` in the store at ``path``; returns how many were stored.

    Raises:
        MigperfError: the store cannot be opened for writing (see :class:`ResultsStore`).
    """
    from migperf.experiments.records import metrics_of
    from migperf.results.store import ResultsStore, RunRecord

    where = _where(device, simulate)
    stored = 0
    with ResultsStore(path) as store:
        for i, r in enumerate(results):
            data = r.to_dict()
            spec = dict(data.get("spec") or {})
            # What was measured, without the run-local fields: the same bench
            # on the same device is the same run (a new attempt next time).
            for key in (
                "seed",
                "device_label",
                "expect_device",
                "inject_crash",
                "inject_hang",
                "inject_oom",
            ):
                spec.pop(key, None)
            config_hash = hashlib.sha256(
                json.dumps(spec, sort_keys=True, default=str).encode()
            ).hexdigest()[:16]
            repeat = i % max(repeats, 1)
            run_key = f"{config_hash}:{device or 'auto'}:{r.batch_size}:{repeat}"
            latest = store.latest_attempts(config_hash).get(run_key)
            env = data.get("environment") or {}
            rec = RunRecord(
                run_key=run_key,
                experiment=BENCH_EXPERIMENT,
                config_hash=config_hash,
                status=str(r.status),
                started_unix=time.time(),
                error=data.get("error"),
                gpu_index=where.get("gpu_index"),
                gpu_name=where.get("gpu_name"),
                gpu_uuid=where.get("gpu_uuid"),
                driver_version=where.get("driver_version") or env.get("driver_version"),
                layout=where.get("layout"),
                profile=where.get("profile"),
                mig_uuid=where.get("mig_uuid"),
                device=device,
                device_kind=r.device_kind,
                simulated=bool(r.simulated),
                workload=r.workload,
                task=r.task,
                precision=spec.get("precision"),
                batch_size=r.batch_size,
                seq_len=spec.get("seq_len"),
                repeat=repeat,
                params={"source": "bench", "spec": spec},
                environment=env,
                result=data,
                metrics=metrics_of(r),
                samples={"latency_ms": list(r.latency_samples_ms)}
                if r.latency_samples_ms
                else None,
                telemetry=data.get("telemetry"),
                attempt=(latest[0] + 1) if latest else 1,
            )
            if store.record(rec) is not None:
                stored += 1
    return stored
