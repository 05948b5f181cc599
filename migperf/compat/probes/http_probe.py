"""The serving baseline: a TorchScript model behind a plain HTTP server, queried once.

``start`` traces the model, starts :mod:`migperf.compat.probes.http_server`
with this process's environment (so the exposed device) and waits for its
port; ``query`` sends one request and reports the device the server ran on.
The server is stopped when the check process ends.
"""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import Any

from migperf.compat.probes.kit import Context, Probe, Skip, trim

__all__ = ["CHECKS", "post_json", "wait_for_port"]

_state: dict[str, Any] = {}


def _version() -> str:
    import torch

    return str(torch.__version__)


def wait_for_port(proc: subprocess.Popen[str], limit: float) -> int:
    """The ``PORT <n>`` line a server prints; raises when it exits or stays silent."""
    import selectors

    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
            break
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the server exited with code {proc.wait()} before listening")
        if line.startswith("PORT "):
            return int(line.split()[1])
    raise RuntimeError(f"the server did not listen within {limit:.0f} s")


def post_json(url: str, body: Any, timeout: float) -> Any:
    """POST JSON, the JSON reply (an HTTP error raises with the server's message)."""
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - 127.0.0.1 only
        return json.loads(resp.read())


def _stop() -> None:
    proc = _state.pop("proc", None)
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def check_start(ctx: Context) -> str:
    """Trace the model, start the server on the exposed device, wait for its port."""
    import torch

    if not torch.cuda.is_available() and not ctx.on_cpu():
        raise ctx.no_cuda("torch sees no CUDA device")
    tmp = tempfile.mkdtemp(prefix="migperf-serve-")
    path = os.path.join(tmp, "mlp.pt")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    torch.jit.trace(model.eval(), torch.randn(1, 64)).save(path)
    err = open(os.path.join(tmp, "server.err"), "w+")  # noqa: SIM115 - lives as long as the server
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "migperf.compat.probes.http_server", path],
        stdout=subprocess.PIPE,
        stderr=err,
        text=True,
    )
    _state["proc"] = proc
    atexit.register(_stop)
    try:
        port = wait_for_port(proc, max(10.0, ctx.timeout_s * 0.8))
    except RuntimeError as exc:
        err.seek(0)
        tail = " | ".join(ln for ln in err.read().splitlines()[-3:] if ln.strip())
        raise RuntimeError(f"{exc}: {trim(tail, 300)}" if tail else str(exc)) from None
    _state["port"] = port
    return f"TorchScript server (pid {proc.pid}) listening on 127.0.0.1:{port} after {time.monotonic() - t0:.1f} s"


def check_query(ctx: Context) -> str:
    """One request: the answer's shape and the device the server ran on."""
    port = _state.get("port")
    if port is None:
        raise Skip("the server did not start (see the start row)")
    t0 = time.perf_counter()
    reply = post_json(f"http://127.0.0.1:{port}/infer", {"inputs": [[0.5] * 64] * 4}, ctx.timeout_s)
    ms = (time.perf_counter() - t0) * 1000
    if "error" in reply:
        raise RuntimeError(f"the server answered an error: {reply['error']}")
    outputs = reply.get("outputs") or []
    if len(outputs) != 4 or len(outputs[0]) != 10:
        raise RuntimeError(f"unexpected answer: {trim(json.dumps(reply), 200)}")
    device = str(reply.get("device"))
    if device == "cpu" and not ctx.on_cpu():
        raise RuntimeError("the server ran on the CPU, not on the exposed device")
    return f"answered 4 rows in {ms:.0f} ms on {device}"


CHECKS = Probe(checks={"start": check_start, "query": check_query}, version=_version)
