"""The migperf agent on one node of a Ray cluster.

A :class:`NodeAgent` is a Ray actor pinned to its node. It describes the node
and plans the experiment there (:func:`~migperf.experiments.cluster.node.describe_node`),
runs one batch of runs at a time in a child process
(``python -m migperf.experiments.cluster.node``), keeps that process's
output until the driver polls it, and stops the runner (which restores the
node) when the driver stops polling.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

from migperf.errors import MigperfError
from migperf.experiments.cluster.node import MODULE, describe_node

__all__ = ["NodeAgent"]

# Variables Ray sets for each worker process; the node runner gets the node's own values.
_RAY_WORKER_ENV = ("OMP_NUM_THREADS", "CUDA_VISIBLE_DEVICES")


def _node_env() -> dict[str, str]:
    """This process's environment with the node's values of what Ray sets per worker.

    Ray gives each worker ``OMP_NUM_THREADS`` (1 for an actor without CPUs)
    and ``CUDA_VISIBLE_DEVICES`` (its GPU share); the runner and its workers
    should see the node as ``ray start`` saw it, as a local ``migperf run``
    would. The raylet (the agent's parent) has that environment.
    """
    env = dict(os.environ)
    try:
        with open(f"/proc/{os.getppid()}/environ", "rb") as fh:
            raw = fh.read()
    except OSError:
        return env
    node = dict(
        item.decode(errors="replace").split("=", 1) for item in raw.split(b"\0") if b"=" in item
    )
    for name in _RAY_WORKER_ENV:
        if name in node:
            env[name] = node[name]
        else:
            env.pop(name, None)
    return env


def _node_niceness() -> int | None:
    """The scheduling priority of the raylet (the agent's parent); Ray lowers its workers' to 15."""
    try:
        return os.getpriority(os.PRIO_PROCESS, os.getppid())
    except OSError:
        return None


class NodeAgent:
    """The migperf agent on one node (a Ray actor; see the module docstring).

    Every method returns plain data. One batch of runs at a time runs in a
    child process (:mod:`migperf.experiments.cluster.node`); its output is
    kept here until :meth:`poll` collects it.

    Args:
        heartbeat_timeout_s: Stop the runner and exit when the driver has not
            polled for this long (it is gone).
    """

    def __init__(self, heartbeat_timeout_s: float = 30.0) -> None:
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self._cond = threading.Condition()
        self._items: list[dict[str, Any]] = []
        self._proc: subprocess.Popen[str] | None = None
        self._readers: list[threading.Thread] = []
        self._stderr: collections.deque[str] = collections.deque(maxlen=20)
        self._last_poll = time.monotonic()
        self._closed = False
        threading.Thread(target=self._watch_driver, name="migperf-heartbeat", daemon=True).start()

    # ------------------------------------------------------------ driver calls

    def describe(
        self,
        config: dict[str, Any],
        simulate: str | None,
        read_only: bool | None,
        source: str = "config",
        dry_run: bool = True,
    ) -> dict[str, Any]:
        """This node, its GPUs and its plan of the experiment (see :func:`describe_node`)."""
        import ray

        self._last_poll = time.monotonic()
        info = describe_node(
            config, simulate=simulate, read_only=read_only, source=source, dry_run=dry_run
        )
        info["node_id"] = ray.get_runtime_context().get_node_id()
        return info

    def start(
        self,
        config: dict[str, Any],
        keys: dict[str, str],
        simulate: str | None,
        read_only: bool | None,
    ) -> int:
        """Start running a batch (planned key -> key to store under); returns the runner's pid.

        Raises:
            MigperfError: a batch is still running.
        """
        self._last_poll = time.monotonic()
        with self._cond:
            if self._proc is not None and self._proc.poll() is None:
                raise MigperfError(f"a batch is still running (pid {self._proc.pid})")
            self._stderr.clear()
            proc = subprocess.Popen(
                [sys.executable, "-m", MODULE],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=_node_env(),
                text=True,
                encoding="utf-8",
                errors="replace",
                start_new_session=True,
            )
            self._proc = proc
        request = {
            "config": config,
            "keys": keys,
            "simulate": simulate,
            "read_only": read_only,
            "niceness": _node_niceness(),
        }
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(request) + "\n")
        proc.stdin.flush()
        self._readers = [
            threading.Thread(target=self._read_stdout, args=(proc,), daemon=True),
            threading.Thread(target=self._read_stderr, args=(proc,), daemon=True),
        ]
        for t in self._readers:
            t.start()
        return proc.pid

    def poll(self, wait_s: float = 0.5) -> dict[str, Any]:
        """What the runner sent since the last poll (waits up to ``wait_s`` for something).

        Each poll is also the driver's heartbeat.
        """
        self._last_poll = time.monotonic()
        with self._cond:
            if not self._items:
                # Also when idle: the driver polls every agent as its heartbeat.
                self._cond.wait(wait_s)
            proc = self._proc
            finished = proc is not None and not self._running()
            items, self._items = self._items, []
            return {
                "items": items,
                "running": proc is not None and not finished,
                "pid": proc.pid if proc is not None else None,
                "exit_code": proc.returncode if finished and proc is not None else None,
                "stderr_tail": list(self._stderr) if finished else [],
            }

    def stop(self) -> bool:
        """Ask the runner to stop (SIGTERM: current run aborted, the node restored).

        Returns:
            Whether a runner was running.
        """
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        return True

    def close(self, timeout_s: float = 120.0) -> dict[str, Any]:
        """Stop the runner, wait for its restore, and kill it by pid if it does not end.

        Returns:
            ``{"agent_pid", "runner_pid", "exit_code", "killed", "items"}``;
            ``items`` is what the runner sent that no poll collected.
        """
        self._closed = True
        proc = self._proc
        killed = False
        if proc is not None and proc.poll() is None:
            self.stop()
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                killed = True
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for t in self._readers:
            t.join(timeout=5.0)
        with self._cond:
            items, self._items = self._items, []
        return {
            "agent_pid": os.getpid(),
            "runner_pid": proc.pid if proc is not None else None,
            "exit_code": proc.returncode if proc is not None else None,
            "killed": killed,
            "items": items,
        }

    # ------------------------------------------------------------ internals

    def _running(self) -> bool:
        proc = self._proc
        if proc is None:
            return False
        return proc.poll() is None or any(t.is_alive() for t in self._readers)

    def _read_stdout(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                item = json.loads(line)
            except ValueError:
                item = {"type": "noise", "line": line.rstrip()[:500]}
            with self._cond:
                self._items.append(item)
                self._cond.notify_all()
        proc.wait()
        with self._cond:
            self._cond.notify_all()

    def _read_stderr(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            self._stderr.append(line.rstrip()[:500])

    def _watch_driver(self) -> None:
        while not self._closed:
            time.sleep(min(1.0, self.heartbeat_timeout_s / 4))
            if self._closed or time.monotonic() - self._last_poll < self.heartbeat_timeout_s:
                continue
            logging.getLogger(__name__).warning(
                "no poll from the migperf driver for %g s: stopping the runner "
                "(it restores the node) and exiting",
                self.heartbeat_timeout_s,
            )
            self.close()
            os._exit(0)
