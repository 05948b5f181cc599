"""Triton Inference Server: one server on the exposed device with an ONNX model, queried once.

Runs only where a ``tritonserver`` binary is on ``PATH`` (NVIDIA's container).
The model is :func:`migperf.compat.probes.ort_probe.tiny_model` in a model
repository written for the run, with a ``KIND_GPU`` instance (``KIND_CPU`` on
the simulator). The query uses ``tritonclient`` when it is installed, else
the same KServe v2 JSON request over plain HTTP.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from typing import Any

from migperf.compat.probes.http_probe import post_json
from migperf.compat.probes.kit import Context, Probe, Skip, importable, trim

__all__ = ["CHECKS"]

_state: dict[str, Any] = {}

_CONFIG = """name: "mlp"
platform: "onnxruntime_onnx"
max_batch_size: 0
input [ {{ name: "x" data_type: TYPE_FP32 dims: [ -1, 64 ] }} ]
output [ {{ name: "y" data_type: TYPE_FP32 dims: [ -1, 10 ] }} ]
instance_group [ {{ kind: {kind} count: 1 {gpus}}} ]
"""


def _installed(ctx: Context) -> bool:
    return shutil.which("tritonserver") is not None


def _version() -> str:
    out = subprocess.run(
        ["tritonserver", "--version"], capture_output=True, text=True, timeout=30
    ).stdout
    return trim(out.strip().splitlines()[-1] if out.strip() else "unknown", 80)


def _ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def _stop() -> None:
    proc = _state.pop("proc", None)
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def _on_gpu() -> bool:
    return bool(os.environ.get("CUDA_VISIBLE_DEVICES"))


def check_start(ctx: Context) -> str:
    """Write the model repository, start tritonserver, wait until it is ready."""
    if not importable("onnx"):
        raise Skip('the ONNX model needs onnx: pip install "migperf[compat]"')
    if not _on_gpu() and not ctx.on_cpu():
        raise ctx.no_cuda("no device exposed to tritonserver")
    from migperf.compat.probes.ort_probe import tiny_model

    repo = tempfile.mkdtemp(prefix="migperf-triton-")
    version_dir = os.path.join(repo, "mlp", "1")
    os.makedirs(version_dir)
    with open(os.path.join(version_dir, "model.onnx"), "wb") as f:
        f.write(tiny_model())
    kind, gpus = ("KIND_GPU", "gpus: [ 0 ] ") if _on_gpu() else ("KIND_CPU", "")
    with open(os.path.join(repo, "mlp", "config.pbtxt"), "w") as f:
        f.write(_CONFIG.format(kind=kind, gpus=gpus))
    http, grpc, metrics = _ports(3)
    log = open(os.path.join(repo, "server.log"), "w+")  # noqa: SIM115 - lives as long as the server
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [
            "tritonserver",
            f"--model-repository={repo}",
            f"--http-port={http}",
            f"--grpc-port={grpc}",
            f"--metrics-port={metrics}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    _state["proc"] = proc
    atexit.register(_stop)
    deadline = t0 + max(20.0, ctx.timeout_s * 0.8)
    url = f"http://127.0.0.1:{http}"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            tail = " | ".join(ln for ln in log.read().splitlines()[-3:] if ln.strip())
            raise RuntimeError(
                f"tritonserver exited with code {proc.returncode}: {trim(tail, 400)}"
            )
        try:
            with urllib.request.urlopen(f"{url}/v2/models/mlp/ready", timeout=2) as resp:  # noqa: S310
                if resp.status == 200:
                    break
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    else:
        raise RuntimeError(f"tritonserver was not ready within {deadline - t0:.0f} s")
    _state.update(url=url, http=http, kind=kind)
    return f"tritonserver (pid {proc.pid}) ready on 127.0.0.1:{http} after {time.monotonic() - t0:.1f} s, model instance {kind}"


def _infer(url: str, http: int, timeout: float) -> tuple[list[float], str]:
    rows = [[0.5] * 64] * 4
    if importable("tritonclient.http"):
        import numpy as np
        import tritonclient.http as client

        c = client.InferenceServerClient(f"127.0.0.1:{http}", network_timeout=timeout)
        inp = client.InferInput("x", [4, 64], "FP32")
        inp.set_data_from_numpy(np.asarray(rows, dtype=np.float32))
        out = c.infer("mlp", [inp]).as_numpy("y")
        return [float(v) for v in out.reshape(-1)], "tritonclient"
    body = {"inputs": [{"name": "x", "shape": [4, 64], "datatype": "FP32", "data": sum(rows, [])}]}
    reply = post_json(f"{url}/v2/models/mlp/infer", body, timeout)
    return [float(v) for v in reply["outputs"][0]["data"]], "KServe v2 JSON over HTTP"


def check_query(ctx: Context) -> str:
    """One inference request; the model instance's kind and the device exposed to the server."""
    url = _state.get("url")
    if url is None:
        raise Skip("tritonserver did not start (see the start row)")
    t0 = time.perf_counter()
    values, how = _infer(url, int(_state["http"]), ctx.timeout_s)
    ms = (time.perf_counter() - t0) * 1000
    if len(values) != 40:
        raise RuntimeError(f"unexpected answer: {len(values)} values, expected 40")
    with urllib.request.urlopen(f"{url}/v2/models/mlp/config", timeout=10) as resp:  # noqa: S310
        config = json.loads(resp.read())
    kinds = [g.get("kind") for g in config.get("instance_group") or []]
    where = os.environ.get("CUDA_VISIBLE_DEVICES") or "the CPU"
    return f"answered in {ms:.0f} ms ({how}); instances {kinds} on {where}"


CHECKS = Probe(
    checks={"start": check_start, "query": check_query}, version=_version, installed=_installed
)
