"""The simulator's state cache and joined transactions never hide or lose a change."""

from __future__ import annotations

from pathlib import Path

import pytest

from migperf.nvml.facade import Nvml
from migperf.nvml.sim.state import MachineState, parse_machine_spec


def _machine(state_dir: Path) -> MachineState:
    return MachineState(parse_machine_spec("a30"), state_dir)


def test_a_same_size_edit_in_place_is_seen(state_dir: Path) -> None:
    mine, other = _machine(state_dir), _machine(state_dir)
    with mine.transaction() as st:
        st["gpus"][0]["compute_mode"] = 1
    assert mine.read()["gpus"][0]["compute_mode"] == 1  # now cached
    # Same length, same inode, written in place (not the simulator's replace): still seen.
    text = mine.path.read_text()
    assert text.count('"compute_mode":1') == 1
    mine.path.write_text(text.replace('"compute_mode":1', '"compute_mode":2'))
    assert mine.read()["gpus"][0]["compute_mode"] == 2
    # And a change saved through another instance (another process's view).
    with other.transaction() as st:
        st["gpus"][0]["compute_mode"] = 3
    assert mine.read()["gpus"][0]["compute_mode"] == 3


def test_a_failed_transaction_changes_nothing_and_leaves_no_stale_cache(state_dir: Path) -> None:
    m = _machine(state_dir)
    m.read()
    with pytest.raises(RuntimeError), m.transaction() as st:
        st["gpus"][0]["compute_mode"] = 3
        raise RuntimeError("half-way")
    assert m.read()["gpus"][0]["compute_mode"] == 0
    assert _machine(state_dir).read()["gpus"][0]["compute_mode"] == 0


def test_a_nested_transaction_joins_and_the_outer_one_saves(state_dir: Path) -> None:
    m, other = _machine(state_dir), _machine(state_dir)
    m.read()
    with m.transaction() as outer:
        with m.transaction() as inner:
            assert inner is outer
            inner["gpus"][0]["compute_mode"] = 1
        assert m.joined() is outer
        # Nothing is on disk until the outer transaction ends.
        assert '"compute_mode":1' not in m.path.read_text()
    assert m.joined() is None
    assert other.read()["gpus"][0]["compute_mode"] == 1


def test_a_batch_saves_what_its_calls_changed(
    sim_h100: Nvml, state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Fault counters are state too: counted inside a batch, saved at its end.
    monkeypatch.setenv("MIGPERF_SIM_FAULTS", "nvmlDeviceGetPowerUsage@99=Unknown")
    with sim_h100.batch():
        for _ in range(3):
            sim_h100.sample_gpu(0)
    fresh = MachineState(parse_machine_spec("h100-80gb"), state_dir).read()
    assert fresh["fault_calls"]["nvmlDeviceGetPowerUsage"] == 3
