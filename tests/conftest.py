"""Shared fixtures: every test gets its own simulated machines and no stray env."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from migperf.nvml import open_nvml
from migperf.nvml.facade import Nvml
from migperf.nvml.sim import clear_cache

_ENV = ("MIGPERF_SIMULATE", "MIGPERF_SIM_FAULTS", "MIGPERF_READ_ONLY")


@pytest.fixture(autouse=True)
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private migperf state directory, so simulated GPUs start fresh per test."""
    d = tmp_path / "state"
    monkeypatch.setenv("MIGPERF_STATE_DIR", str(d))
    for name in _ENV:
        monkeypatch.delenv(name, raising=False)
    clear_cache()
    yield d
    clear_cache()


@pytest.fixture
def sim() -> Iterator[Callable[..., Nvml]]:
    """Open a simulated machine: ``sim("a100-40gb:2")``; closed after the test."""
    opened: list[Nvml] = []

    def _open(spec: str, read_only: bool = False) -> Nvml:
        nvml = open_nvml(spec, read_only=read_only)
        opened.append(nvml)
        return nvml

    yield _open
    for n in opened:
        n.shutdown()


@pytest.fixture
def sim_a100_40gb(sim: Callable[..., Nvml]) -> Nvml:
    return sim("a100-40gb")


@pytest.fixture
def sim_a100_80gb(sim: Callable[..., Nvml]) -> Nvml:
    return sim("a100-80gb")


@pytest.fixture
def sim_h100(sim: Callable[..., Nvml]) -> Nvml:
    return sim("h100-80gb")


@pytest.fixture
def sim_h100_mig_off(sim: Callable[..., Nvml]) -> Nvml:
    return sim("h100-80gb:1:mig-off")
