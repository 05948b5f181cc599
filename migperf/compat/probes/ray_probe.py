"""Ray Serve: a deployment pinned to the exposed device, queried once over HTTP.

Ray sets ``CUDA_VISIBLE_DEVICES`` for its actors from its own GPU count, which
knows no MIG UUIDs; the runner starts this probe with
``RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES=1``, so the replica keeps the one
device the runner exposed, and the answer says which device it used.
"""

from __future__ import annotations

import atexit
import os
import socket
import time
from typing import Any

from migperf.compat.probes.http_probe import post_json
from migperf.compat.probes.kit import Context, Probe, Skip, trim

__all__ = ["CHECKS"]

_state: dict[str, Any] = {}


def _installed(ctx: Context) -> bool:
    try:
        import ray.serve  # noqa: F401 - the import is the test
    except ImportError:
        return False
    return True


def _version() -> str:
    import ray

    return str(ray.__version__)


def _stop() -> None:
    try:
        from ray import serve

        serve.shutdown()
    finally:
        import ray

        ray.shutdown()


class _Model:
    """The deployment's replica: an MLP on the first device it sees."""

    def __init__(self) -> None:
        import torch

        self.torch = torch
        self.device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
        torch.manual_seed(0)
        self.model = (
            torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
            .to(self.device)
            .eval()
        )
        name = torch.cuda.get_device_name(0) if self.device.type == "cuda" else ""
        self.label = f"cuda:0 ({name})" if name else "cpu"

    async def __call__(self, request: Any) -> dict[str, Any]:
        body = await request.json()
        x = self.torch.tensor(body["inputs"], dtype=self.torch.float32, device=self.device)
        with self.torch.no_grad():
            y = self.model(x)
        return {
            "outputs": y.cpu().tolist(),
            "device": self.label,
            "visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "pid": os.getpid(),
        }


def check_start(ctx: Context) -> str:
    """Start a local Ray, Serve on a free port, and the deployment."""
    import ray
    from ray import serve

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    t0 = time.monotonic()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    atexit.register(_stop)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    app = serve.deployment(name="migperf-compat", ray_actor_options={"num_cpus": 0.5})(_Model)
    serve.run(app.bind(), name="migperf-compat", route_prefix="/compat")
    _state["url"] = f"http://127.0.0.1:{port}/compat"
    return f"Serve deployment up on 127.0.0.1:{port} after {time.monotonic() - t0:.1f} s"


def check_query(ctx: Context) -> str:
    """One request: the replica's answer and the device it ran on."""
    url = _state.get("url")
    if url is None:
        raise Skip("Ray Serve did not start (see the start row)")
    t0 = time.perf_counter()
    reply = post_json(url, {"inputs": [[0.5] * 64] * 4}, ctx.timeout_s)
    ms = (time.perf_counter() - t0) * 1000
    outputs = reply.get("outputs") or []
    if len(outputs) != 4:
        raise RuntimeError(f"unexpected answer: {trim(str(reply), 200)}")
    device = str(reply.get("device"))
    if device == "cpu" and not ctx.on_cpu():
        raise RuntimeError(
            f"the replica ran on the CPU (its CUDA_VISIBLE_DEVICES={reply.get('visible')})"
        )
    return (
        f"answered in {ms:.0f} ms on {device}, replica pid {reply.get('pid')} with "
        f"CUDA_VISIBLE_DEVICES={reply.get('visible') or '(empty)'}"
    )


CHECKS = Probe(
    checks={"start": check_start, "query": check_query}, version=_version, installed=_installed
)
