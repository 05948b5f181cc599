"""MpsDaemon against the simulated control program: lifecycle, clients, every way it fails."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from migperf.errors import MigperfError, UsageError
from migperf.sharing.mps import (
    MpsClient,
    MpsDaemon,
    format_pinned_mem_limit,
    format_thread_percentage,
    mps_daemons,
    mps_for_run,
    resolve_control,
    simulated_control,
)
from migperf.sharing.sim_mps_control import FAULTS_ENV, MODULE, register_client, write_wrapper
from tests.sharing.conftest import MIG_A, MIG_B, ROOT, processes_with, running, start_client


def _daemon(env: dict[str, str], log_dir: Path | None = None, **kw: Any) -> MpsDaemon:
    return MpsDaemon(MIG_A, control=simulated_control(), env=env, log_dir=log_dir, **kw)


def test_lifecycle_start_verify_clients_quit(sim_env: dict[str, str], tmp_path: Path) -> None:
    log = tmp_path / "log"
    mps = _daemon(sim_env, log, default_thread_percentage=80)
    with mps:
        pipe = mps.pipe_dir
        assert pipe != Path("/tmp/nvidia-mps") and pipe.is_dir()
        assert oct(pipe.stat().st_mode & 0o777) == "0o700"
        assert mps.pid is not None and running(mps.pid)
        base = {"PATH": "/usr/bin", "CUDA_VISIBLE_DEVICES": "", "CUDA_MPS_PIPE_DIRECTORY": "/x"}
        env_a = mps.client_env(base, thread_percentage=50, pinned_mem_limit_mib=2048)
        env_b = mps.client_env(base, thread_percentage=25.5)
        assert {k: v for k, v in env_a.items() if k.startswith("CUDA")} == {
            "CUDA_VISIBLE_DEVICES": MIG_A,
            "CUDA_MPS_PIPE_DIRECTORY": str(pipe),
            "CUDA_MPS_LOG_DIRECTORY": str(log),
            "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": "50",
            "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT": "0=2048M",
        }
        assert env_b["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] == "25.5"
        assert "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT" not in env_b
        assert base["CUDA_MPS_PIPE_DIRECTORY"] == "/x"  # the caller's dict is untouched
        clients = [start_client(env_a), start_client(env_b)]
        mps.track(*clients)
        info = mps.verify([c.pid for c in clients], timeout_s=10)
        assert info.verified and info.client_count == 2
        assert info.client_pids == sorted(c.pid for c in clients)
        server = info.server_pid
        assert server is not None and running(server)
        daemon_pid = mps.pid
    # Clients stopped, server and daemon gone, private pipe removed, log kept.
    assert all(c.returncode is not None for c in clients)
    assert [c["outcome"] for c in mps.info.clients] == ["terminated", "terminated"]
    assert not running(daemon_pid) and not running(server)
    assert processes_with(str(pipe)) == []
    assert not pipe.exists()
    assert mps.info.stopped == "quit" and mps.info.warnings == []
    asked = (log / "commands.log").read_text().splitlines()
    assert asked == [
        "get_server_list",
        "set_default_active_thread_percentage 80",
        "get_server_list",
        f"get_client_list {server}",
        f"terminate_client {server} {clients[0].pid}",
        f"terminate_client {server} {clients[1].pid}",
        "quit",
    ]
    control_log = (log / "control.log").read_text()
    assert f"CUDA_VISIBLE_DEVICES={MIG_A}" in control_log
    assert f"NEW CLIENT {clients[0].pid}" in control_log
    record = json.loads(json.dumps(mps.info.to_dict()))
    assert record["daemon_pid"] == daemon_pid and record["server_pid"] == server
    assert record["pipe_dir"] == str(pipe) and record["thread_percentages"] == [50.0, 25.5]
    assert record["pinned_mem_limits"] == ["0=2048M", None]
    assert record["default_thread_percentage"] == 80
    assert [c["command"] for c in record["commands"]] == asked
    assert record["commands"][2]["answer"] == str(server)


def test_quit_runs_in_finally_when_the_body_raises(sim_env: dict[str, str], tmp_path: Path) -> None:
    log = tmp_path / "log"
    mps = _daemon(sim_env, log)
    with pytest.raises(RuntimeError, match="boom"), mps:
        pid = mps.pid
        client = start_client(mps.client_env(sim_env))
        mps.track(client)
        raise RuntimeError("boom")
    assert pid is not None and not running(pid)
    assert client.returncode == -15
    assert (log / "commands.log").read_text().splitlines()[-1] == "quit"
    assert mps.info.stopped == "quit"
    assert processes_with(mps.info.pipe_dir) == []


def test_a_crashed_client_is_reported_and_the_daemon_still_quits(
    sim_env: dict[str, str], tmp_path: Path
) -> None:
    with _daemon(sim_env, tmp_path / "log") as mps:
        env = mps.client_env(sim_env, thread_percentage=50)
        crasher = start_client(env, exit_code=3, sleep_s=0)
        crasher.wait(timeout=10)
        steady = start_client(env)
        mps.verify([steady.pid])
        ends = mps.stop_clients([crasher, steady])
    assert [(e.pid, e.outcome, e.returncode) for e in ends] == [
        (crasher.pid, "crashed", 3),
        (steady.pid, "terminated", -15),
    ]
    assert any(f"MPS client {crasher.pid} exited with status 3" in w for w in mps.info.warnings)
    assert mps.info.stopped == "quit"
    assert processes_with(mps.info.pipe_dir) == []


def test_clients_that_never_reach_the_daemon_fail_verification(
    sim_env: dict[str, str], tmp_path: Path
) -> None:
    # CUDA runs a client that cannot reach the daemon without MPS and says nothing.
    with _daemon(sim_env, tmp_path / "log") as mps:
        client = start_client(mps.client_env(sim_env), register=False)
        mps.track(client)
        with pytest.raises(MigperfError, match="MPS is not active") as err:
            mps.verify([client.pid], timeout_s=0.3)
        assert "CUDA_MPS_PIPE_DIRECTORY" in err.value.hint
        assert not mps.info.verified
    assert mps.info.clients[0]["outcome"] == "terminated"
    assert processes_with(mps.info.pipe_dir) == []


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("never-start", r"control pipe .* did not appear within 0\.5 s"),
        ("fail-start", r"exited with status 1: nvidia-cuda-mps-control: failed to start"),
        ("crash-after-start", r"exited right after starting|no longer running"),
        ("no-answer", r"does not answer `get_server_list` within 1 s"),
    ],
)
def test_a_daemon_that_does_not_come_up_is_an_error_and_leaves_nothing(
    sim_env: dict[str, str], fault: str, message: str
) -> None:
    mps = _daemon({**sim_env, FAULTS_ENV: fault}, start_timeout_s=0.5, command_timeout_s=1.0)
    with pytest.raises(MigperfError, match=message) as err:
        mps.start()
    assert err.value.hint
    assert mps.info.pipe_dir and processes_with(mps.info.pipe_dir) == []
    assert not Path(mps.info.pipe_dir).exists()
    if mps.info.daemon_pid is not None:
        assert not running(mps.info.daemon_pid)
    # The device is free again for a daemon that works.
    with _daemon(sim_env) as again:
        assert again.pid is not None


def test_a_daemon_that_ignores_quit_is_killed_by_pid(sim_env: dict[str, str]) -> None:
    with _daemon({**sim_env, FAULTS_ENV: "ignore-quit"}, quit_timeout_s=0.5) as mps:
        client = start_client(mps.client_env(sim_env))
        mps.track(client)
        mps.verify([client.pid])
        daemon, server = mps.pid, mps.info.server_pid
    assert mps.info.stopped == "killed"
    assert any("did not exit within 0.5 s of quit and was killed" in w for w in mps.info.warnings)
    assert daemon is not None and not running(daemon)
    assert server is not None and not running(server)
    assert processes_with(mps.info.pipe_dir) == []


def test_missing_control_program(sim_env: dict[str, str], tmp_path: Path) -> None:
    with pytest.raises(MigperfError, match="does not exist or is not executable") as err:
        MpsDaemon(0, control=str(tmp_path / "nvidia-cuda-mps-control"), env=sim_env).start()
    assert "MIGPERF_MPS_CONTROL" in err.value.hint
    with pytest.raises(MigperfError, match="nvidia-cuda-mps-control is not on PATH"):
        MpsDaemon(0, env={**sim_env, "PATH": str(tmp_path)}).start()


def test_control_from_environment_and_wrapper_on_path(
    sim_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**sim_env, "MIGPERF_MPS_CONTROL": f"{sys.executable} -m {MODULE}"}
    assert resolve_control(env=env) == [sys.executable, "-m", MODULE]
    bindir = tmp_path / "bin"
    write_wrapper(bindir)
    env = {**sim_env, "PATH": f"{bindir}{os.pathsep}{sim_env.get('PATH', '')}"}
    with MpsDaemon("1", env=env) as mps:  # the default name, found on PATH
        assert mps.info.control == [str(bindir / "nvidia-cuda-mps-control")]
        # A GPU index is renumbered 0 by the MPS server: clients must not keep it.
        assert "CUDA_VISIBLE_DEVICES" not in mps.client_env({"CUDA_VISIBLE_DEVICES": "1"})
        kept = mps.client_env({"CUDA_VISIBLE_DEVICES": ""}, pin_device=False)
        assert kept["CUDA_VISIBLE_DEVICES"] == ""
        assert mps.query("get_default_active_thread_percentage").strip() == "100.0"
    assert mps.info.stopped == "quit"


def test_one_daemon_per_mig_device(sim_env: dict[str, str], tmp_path: Path) -> None:
    with mps_daemons(
        [MIG_A, MIG_B, MIG_A], control=simulated_control(), env=sim_env, log_root=tmp_path
    ) as daemons:
        assert list(daemons) == [MIG_A, MIG_B]
        a, b = daemons[MIG_A], daemons[MIG_B]
        assert a.pipe_dir != b.pipe_dir and a.pid != b.pid
        assert running(a.pid or 0) and running(b.pid or 0)
        assert f"CUDA_VISIBLE_DEVICES={MIG_B}" in (b.log_dir / "control.log").read_text()
        with pytest.raises(UsageError, match="already runs in this process"):
            MpsDaemon(MIG_A, control=simulated_control(), env=sim_env).start()
    for d in (a, b):
        assert d.info.stopped == "quit" and processes_with(d.info.pipe_dir) == []


def test_limits_are_validated() -> None:
    assert format_thread_percentage(100) == "100" and format_thread_percentage(1) == "1"
    assert format_pinned_mem_limit(512) == "0=512M"
    for bad in (0, 0.5, 101, True, "50"):
        with pytest.raises(UsageError, match="from 1 to 100"):
            format_thread_percentage(bad)  # type: ignore[arg-type]
    for bad_mib in (0, -5, 1.5, True):
        with pytest.raises(UsageError, match="positive whole number"):
            format_pinned_mem_limit(bad_mib)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="not a GPU index"):
        MpsDaemon("gpu0")
    with pytest.raises(UsageError, match="from 1 to 100"):
        MpsDaemon(0, default_thread_percentage=150)


def test_simulated_control_program_alone(sim_env: dict[str, str], tmp_path: Path) -> None:
    env = {**sim_env, "PYTHONPATH": ROOT, "CUDA_MPS_PIPE_DIRECTORY": str(tmp_path)}
    cmd = [sys.executable, "-m", MODULE]
    nothing = subprocess.run(
        cmd, input="get_server_list\n", env=env, capture_output=True, text=True
    )
    assert nothing.returncode == 1
    assert "Cannot find MPS control daemon process" in nothing.stderr
    # A client that finds no daemon carries on without MPS, as CUDA does.
    assert register_client(tmp_path, os.getpid(), 50) is None
    del env["CUDA_MPS_PIPE_DIRECTORY"]
    refused = subprocess.run([*cmd, "-d"], env=env, capture_output=True, text=True)
    assert refused.returncode == 2 and "never uses the system-wide" in refused.stderr


def test_mps_for_run_sets_client_envs_verifies_and_stops(
    sim_env: dict[str, str], tmp_path: Path
) -> None:
    def job(device: str, client: int | None, pct: float | None = None) -> SimpleNamespace:
        member = SimpleNamespace(client=client, thread_percentage=pct, pinned_mem_limit_mib=None)
        return SimpleNamespace(
            device=device, env={**sim_env, "CUDA_VISIBLE_DEVICES": ""}, member=member
        )

    jobs = [job(MIG_A, 0, 50), job(MIG_A, 1, 50), job(MIG_B, 0), job("0", None)]
    mps_clients = [
        MpsClient(j.device, j.env, j.member.thread_percentage, j.member.pinned_mem_limit_mib)
        for j in jobs
        if j.member.client is not None
    ]
    nvml: Any = SimpleNamespace(simulated=True)
    with mps_for_run(nvml, mps_clients, run_key="run1", root=tmp_path) as out:
        assert set(out) == {MIG_A, MIG_B}
        assert jobs[0].env["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] == "50"
        assert jobs[0].env["CUDA_VISIBLE_DEVICES"] == ""  # a simulated slot stays on the CPU
        assert jobs[0].env["CUDA_MPS_PIPE_DIRECTORY"] == out[MIG_A]["pipe_dir"]
        assert "CUDA_MPS_PIPE_DIRECTORY" not in jobs[3].env  # not an MPS client
        clients = [start_client(j.env) for j in jobs[:2]]  # MIG_B's client never connects
        deadline = time.monotonic() + 15
        while not out[MIG_A]["verified"] and time.monotonic() < deadline:
            time.sleep(0.1)
        for c in clients:
            c.kill()
            c.wait()
    assert out[MIG_A]["verified"] and out[MIG_A]["client_count"] == 2
    assert out[MIG_A]["stopped"] == "quit" and out[MIG_B]["stopped"] == "quit"
    assert not out[MIG_B]["verified"]
    assert any("never seen under MPS" in w for w in out[MIG_B]["warnings"])
    assert (tmp_path / "mps" / "run1" / MIG_A / "commands.log").exists()
    for info in out.values():
        assert processes_with(info["pipe_dir"]) == []
