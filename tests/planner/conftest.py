"""Stores shaped exactly as docs/results-schema.md says, and demand files, for planner tests."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from migperf.nvml.catalog import get_model
from migperf.results.store import ResultsStore, RunRecord

_keys = itertools.count()


def record_server(
    store: ResultsStore,
    *,
    model: str = "a100-80gb",
    profile: str | None = "1g.10gb",
    workload: str = "resnet50",
    precision: str = "fp16",
    batch_size: int = 8,
    max_qps: float | None = 100.0,
    latency_target_ms: float = 50.0,
    percentile: float = 99.0,
    repeat: int = 0,
    simulated: bool = False,
    gpu_name: str | None = None,
    p_latency_ms: float | None = None,
    status: str = "ok",
    model_args: dict[str, Any] | None = None,
) -> None:
    """One `find_max_qps` server run, as the experiment runner stores it."""
    name = gpu_name or get_model(model).name
    scenario = {
        "name": "server",
        "find_max_qps": True,
        "latency_target_ms": latency_target_ms,
        "latency_percentile": percentile,
    }
    slot = f"{profile}#0" if profile else "gpu"
    lat_col = "latency_p" + f"{percentile:g}".replace(".", "_") + "_ms"
    metrics: dict[str, tuple[float | None, str]] = {
        "max_qps_under_slo": (max_qps, "1/s"),
        "slo_latency_ms": (latency_target_ms, "ms"),
        "slo_percentile": (percentile, "%"),
        "samples_per_s": ((max_qps or 0.0) * 0.99, "1/s"),
        "scenario_valid": (1.0 if max_qps else 0.0, "bool"),
    }
    if p_latency_ms is not None:
        metrics[lat_col] = (p_latency_ms, "ms")
    store.record(
        RunRecord(
            run_key=f"k{next(_keys)}",
            experiment="capacity",
            config_hash="c0ffee",
            status=status,
            gpu_index=0,
            gpu_name=name,
            gpu_uuid="GPU-00000000-0000-0000-0000-000000000000",
            layout=profile or "",
            profile=profile,
            device="MIG-x" if profile else "0",
            device_kind="cuda",
            simulated=simulated,
            workload=workload,
            task="infer",
            precision=precision,
            batch_size=batch_size,
            seq_len=128,
            repeat=repeat,
            params={
                "model_args": model_args or {},
                "slots": [slot],
                "slot": slot,
                "sharing": "exclusive",
                "group_id": None,
                "group_size": 1,
                "role": "job",
                "scenario": scenario,
            },
            metrics=metrics,
        )
    )


def record_throughput(
    store: ResultsStore,
    *,
    model: str = "a100-80gb",
    profile: str | None = "1g.10gb",
    workload: str = "bert-base",
    task: str = "train",
    precision: str = "bf16",
    batch_size: int = 32,
    samples_per_s: float = 100.0,
    repeat: int = 0,
    group_id: str | None = None,
    sharing: str = "exclusive",
    role: str = "job",
    layout: str | None = None,
) -> None:
    """A throughput run (training, or inference without a scenario), alone or co-located."""
    slot = f"{profile}#0" if profile else "gpu"
    store.record(
        RunRecord(
            run_key=f"k{next(_keys)}",
            experiment="throughput",
            config_hash="c0ffee",
            status="ok",
            gpu_index=0,
            gpu_name=get_model(model).name,
            layout=layout or profile or "",
            profile=profile,
            workload=workload,
            task=task,
            precision=precision,
            batch_size=batch_size,
            seq_len=128,
            repeat=repeat,
            params={
                "model_args": {},
                "slots": [slot],
                "slot": slot,
                "sharing": sharing,
                "group_id": group_id,
                "group_size": 2 if group_id else 1,
                "role": role,
            },
            metrics={"samples_per_s": (samples_per_s, "1/s"), "latency_p99_ms": (10.0, "ms")},
        )
    )


DEMAND = """\
services:
  - name: image-api
    workload: resnet50
    precision: fp16
    batch_size: 8
    target_qps: {qps}
    slo: {{percentile: 99, latency_ms: 50}}
gpus:
  - model: a100-80gb
    count: {count}
    profiles: {profiles}
headroom: 0.1
{extra}"""


@pytest.fixture
def demand_file(tmp_path: Path):  # type: ignore[no-untyped-def]
    def make(
        qps: float = 500,
        count: int = 2,
        profiles: str = "[7g.80gb, 3g.40gb, 1g.10gb]",
        extra: str = "",
    ) -> Path:
        path = tmp_path / "demand.yaml"
        path.write_text(DEMAND.format(qps=qps, count=count, profiles=profiles, extra=extra))
        return path

    return make


def fill_store(path: Path, caps: dict[str, float], **kw: Any) -> Path:
    """A store with three repeats per profile of image-api's model at p99 <= 50 ms."""
    with ResultsStore(path) as store:
        for profile, qps in caps.items():
            for rep, f in enumerate((0.95, 1.0, 1.1)):
                record_server(store, profile=profile, max_qps=qps * f, repeat=rep, **kw)
    return path
