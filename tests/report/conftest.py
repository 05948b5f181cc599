"""Stores to report on: one written by the real runner on the simulator, and synthetic ones.

The runner store is built once per session (the workers dominate the test
time): gemm n=32 on layouts "0" and "9,9" with ``instances: each``, batch
sizes 1 and 2, and a layout "19" whose GPU instance cannot be created (a
simulated NVML fault), so the store also holds the runner's own
``layout_failed`` runs with their reason.

The synthetic stores are written with :meth:`ResultsStore.record`, like the
runner does, with every kind of number the report plots: batch and sequence
sweeps, telemetry, server-scenario arrival-rate sweeps under MIG, MPS and
time-slicing, max-QPS searches, co-located groups with their baselines, and
raw latency samples.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from migperf.results.store import ResultsStore, RunRecord

GPU = "NVIDIA H100 80GB HBM3"
DRIVER = "570.86.15"
ENV = {"migperf_version": "0.1.0", "torch_version": "2.5.1"}

RUNNER_CONFIG = """
name: report-tiny
gpus: [0]
layouts: ["0", "9,9", "19"]
instances: each
repeats: 1
stop: {warmup_iterations: 1, min_iterations: 400, min_duration_s: 0.0, max_duration_s: 5}
timeout_s: 60
jobs:
  - workload: gemm
    model_args: {n: 32}
    sweep: {batch_size: [1, 2]}
"""
# Layout "0" creates GPU instance 1, "9,9" instances 2 and 3: the 4th create (layout
# "19") fails, so the runner stores its runs as layout_failed, with no worker started.
RUNNER_FAULT = "nvmlDeviceCreateGpuInstanceWithPlacement@4=Unknown"


@pytest.fixture(scope="session")
def runner_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A store written by the real ExperimentRunner on a simulated A100 80GB.

    gemm n=32 at batch sizes 1 and 2 on 7g.80gb and on both 3g.40gb slices of
    "9,9" (six workers), and layout "19" failing to apply (two layout_failed runs).
    """
    from migperf.experiments.config import load_config
    from migperf.experiments.planning import plan_experiment
    from migperf.experiments.runner import ExperimentRunner
    from migperf.nvml import open_nvml
    from migperf.nvml.sim import clear_cache

    root = tmp_path_factory.mktemp("runner")
    cfg_path = root / "report-tiny.yaml"
    cfg_path.write_text(RUNNER_CONFIG)
    db = root / "runner.db"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MIGPERF_STATE_DIR", str(root / "state"))
        for name in ("MIGPERF_SIMULATE", "MIGPERF_READ_ONLY"):
            mp.delenv(name, raising=False)
        mp.setenv("MIGPERF_SIM_FAULTS", RUNNER_FAULT)
        clear_cache()
        cfg = load_config(cfg_path)
        with open_nvml("a100-80gb") as nvml:
            plan = plan_experiment(nvml, cfg, str(cfg_path))
            with ResultsStore(db) as store:
                ExperimentRunner(nvml, plan, store).run()
        clear_cache()
    yield db


# ------------------------------------------------------------ synthetic


class StoreWriter:
    """Writes runs into a store the way the runner does, with plausible numbers."""

    def __init__(
        self,
        path: Path,
        *,
        config_hash: str = "feedc0de12345678",
        seed: int = 7,
        simulated: bool = False,
        gpu: str = GPU,
    ) -> None:
        self.store = ResultsStore(path)
        self.config_hash = config_hash
        self.rng = random.Random(seed)
        self.simulated = simulated
        self.gpu = gpu
        self.n = 0

    def close(self) -> None:
        self.store.close()

    def samples(self, mean_ms: float, n: int = 60, cv: float = 0.04) -> list[float]:
        return [max(1e-3, self.rng.gauss(mean_ms, cv * mean_ms)) for _ in range(n)]

    def run(
        self,
        *,
        status: str = "ok",
        error: str | None = None,
        profile: str | None = "1g.10gb",
        layout: str = "19",
        workload: str = "resnet50",
        task: str = "infer",
        batch_size: int = 1,
        seq_len: int = 128,
        repeat: int = 0,
        params: dict[str, Any] | None = None,
        metrics: dict[str, float | None] | None = None,
        samples: list[float] | None = None,
        experiment: str = "synthetic",
    ) -> int | None:
        self.n += 1
        units = {
            "samples_per_s": "1/s",
            "target_qps": "1/s",
            "max_qps_under_slo": "1/s",
            "energy_per_sample_j": "J",
            "instance_memory_used_max_mib": "MiB",
            "activity_graphics_pct": "%",
            "slo_met": "bool",
            "slo_percentile": "%",
        }
        p = {
            "model_args": {},
            "sharing": "exclusive",
            "role": "job",
            "group_id": None,
            "group_size": 1,
            "slot": f"{profile or 'gpu'}#0",
        }
        p.update(params or {})
        return self.store.record(
            RunRecord(
                run_key=f"{self.config_hash}-{self.n}",
                experiment=experiment,
                config_hash=self.config_hash,
                status=status,
                started_unix=1_700_000_000.0 + self.n,
                error=error,
                gpu_index=0,
                gpu_name=self.gpu,
                gpu_uuid="GPU-0000",
                driver_version=DRIVER,
                layout=layout,
                profile=profile,
                simulated=self.simulated,
                workload=workload,
                task=task,
                precision="fp32",
                batch_size=batch_size,
                seq_len=seq_len,
                repeat=repeat,
                params=p,
                environment=ENV if status == "ok" else {},
                metrics={k: (v, units.get(k, "ms")) for k, v in (metrics or {}).items()},
                samples={"latency_ms": samples} if samples else None,
            )
        )

    def throughput_run(
        self,
        profile: str | None,
        slices: int,
        batch_size: int,
        *,
        workload: str = "resnet50",
        seq_len: int = 128,
        repeat: int = 0,
        scale: float = 1.0,
        layout: str | None = None,
        telemetry: bool = True,
        raw: bool = True,
        params: dict[str, Any] | None = None,
    ) -> int | None:
        """One exclusive throughput run whose speed grows with slices and batch size."""
        per_sample_ms = 4.0 / slices * (128 / seq_len) ** -0.8 if seq_len else 4.0 / slices
        lat = (1.0 + per_sample_ms * batch_size) / scale
        samples = self.samples(lat)
        mean = sum(samples) / len(samples)
        s = sorted(samples)
        metrics: dict[str, float | None] = {
            "samples_per_s": batch_size * 1000.0 / mean,
            "latency_mean_ms": mean,
            "latency_mean_ci_low_ms": mean * 0.98,
            "latency_mean_ci_high_ms": mean * 1.02,
            "latency_p50_ms": s[len(s) // 2],
            "latency_p99_ms": s[-1],
        }
        if telemetry:
            metrics.update(
                activity_graphics_pct=min(100.0, 20.0 + 10 * batch_size / slices),
                instance_memory_used_max_mib=900.0 + 120 * batch_size,
                energy_per_sample_j=0.5 * (7 / slices) / batch_size,
            )
        return self.run(
            profile=profile,
            layout=layout or (profile or "mig-off"),
            workload=workload,
            batch_size=batch_size,
            seq_len=seq_len,
            repeat=repeat,
            metrics=metrics,
            samples=samples if raw else None,
            params=params,
        )


PROFILES = ((None, 7), ("7g.80gb", 7), ("3g.40gb", 3), ("1g.10gb", 1))


def write_rich(path: Path, *, simulated: bool = False) -> Path:
    """A store with every kind of number a report plots, plus failed runs."""
    w = StoreWriter(path, simulated=simulated)
    # Batch sweep on four profiles (MIG off included), two repeats.
    for (profile, slices), bs, rep in itertools.product(PROFILES, (1, 2, 8), (0, 1)):
        w.throughput_run(profile, slices, bs, repeat=rep)
    # A language model's sequence-length sweep (throughput and latency only).
    for (profile, slices), seq in itertools.product(PROFILES[1:2], (64, 128, 256)):
        w.throughput_run(
            profile, slices, 8, workload="bert-base", seq_len=seq, telemetry=False, raw=False
        )
    # Server scenario, arrival-rate sweep, MIG vs MPS vs time-slicing.
    for sharing, profile, slot in (
        ("mig", "3g.40gb", "3g.40gb#0"),
        ("mps", None, "gpu/mps0"),
        ("timeslice", None, "gpu/ts0"),
    ):
        for qps in (50.0, 100.0, 200.0):
            slow = {"mig": 1.0, "mps": 1.3, "timeslice": 2.0}[sharing] * (1 + qps / 150)
            samples = w.samples(5.0 * slow, n=200, cv=0.2)
            s = sorted(samples)
            p99 = s[int(0.99 * len(s))]
            w.run(
                profile=profile,
                layout="9,9" if profile else "mig-off",
                workload="resnet50",
                params={
                    "sharing": sharing,
                    "slot": slot,
                    "group_id": f"srv-{sharing}-{qps:g}",
                    "group_size": 2,
                    "scenario": {
                        "name": "server",
                        "target_qps": qps,
                        "latency_target_ms": 10.0,
                        "latency_percentile": 99.0,
                    },
                },
                metrics={
                    "samples_per_s": qps * 0.99,
                    "latency_mean_ms": sum(samples) / len(samples),
                    "latency_p50_ms": s[len(s) // 2],
                    "latency_p99_ms": p99,
                    "target_qps": qps,
                    "slo_met": 1.0 if p99 <= 10.0 else 0.0,
                    "slo_latency_ms": 10.0,
                    "slo_percentile": 99.0,
                },
                samples=samples,
            )
    # Max QPS under the SLO per profile; 1g missed the SLO even at the lowest rate.
    for profile, value in (("1g.10gb", None), ("3g.40gb", 180.0), ("7g.80gb", 420.0)):
        w.run(
            profile=profile,
            layout=profile,
            workload="resnet50",
            batch_size=1,
            params={
                "scenario": {
                    "name": "server",
                    "find_max_qps": True,
                    "latency_target_ms": 10.0,
                    "latency_percentile": 99.0,
                },
            },
            metrics={"max_qps_under_slo": value, "slo_latency_ms": 10.0, "slo_percentile": 99.0},
        )
    # Two jobs co-located on the two 3g slices of "9,9", and each alone (baselines).
    for i, tp in enumerate((900.0, 820.0)):
        slot = f"3g.40gb#{i}"
        w.run(
            profile="3g.40gb",
            layout="9,9",
            workload="bert-base",
            batch_size=8,
            params={
                "sharing": "mig",
                "group_id": "grp-mig",
                "group_size": 2,
                "slot": slot,
                "slots": ["3g.40gb#0", "3g.40gb#1"],
            },
            metrics={"samples_per_s": tp, "latency_p99_ms": 12.0 + i},
        )
        w.run(
            profile="3g.40gb",
            layout="9,9",
            workload="bert-base",
            batch_size=8,
            params={"role": "baseline", "slot": slot},
            metrics={"samples_per_s": 1000.0, "latency_p99_ms": 10.0},
        )
    # Failures: every one must be listed with its reason.
    w.run(status="oom", error="CUDA out of memory. Tried to allocate 20.00 GiB", batch_size=64)
    w.run(status="skipped", error="batch size 64 already ran out of memory", batch_size=128)
    w.run(status="crashed", error="worker exited with signal 11 (SIGSEGV)", profile="3g.40gb")
    w.run(
        status="layout_failed",
        error="creating 3g.40gb failed: In use; rolled back",
        layout="9,9",
        profile="3g.40gb",
    )
    w.close()
    return path


@pytest.fixture(scope="session")
def rich_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic store (real-GPU numbers, not simulated) that exercises every plot."""
    return write_rich(tmp_path_factory.mktemp("rich") / "rich.db")


@pytest.fixture(scope="session")
def rich_report(rich_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from migperf.report import build_report

    return build_report(rich_store, tmp_path_factory.mktemp("rich-report"))


@pytest.fixture(scope="session")
def runner_report(runner_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from migperf.report import build_report

    return build_report(runner_store, tmp_path_factory.mktemp("runner-report"))
