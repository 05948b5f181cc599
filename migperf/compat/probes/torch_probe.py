"""PyTorch's checks, eager (:data:`EAGER`) and ``torch.compile`` (:data:`COMPILED`).

Runs in a check process. Data-parallel starts two rank processes
(:mod:`migperf.compat.probes.torch_ddp`), one per device, each with only its
own device exposed, and joins them with NCCL: how DDP runs on MIG devices,
if it runs at all (NVIDIA: NCCL is not supported with MIG).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from typing import Any

from migperf.compat.probes.kit import Context, ExpectedFail, Probe, loss_fell, trim, two_devices

__all__ = ["COMPILED", "EAGER"]

_MIB = 1024 * 1024


def _version() -> str:
    import torch

    cuda = torch.version.cuda
    return f"{torch.__version__} (CUDA {cuda})" if cuda else f"{torch.__version__} (CPU build)"


def _device(ctx: Context) -> Any:
    """cuda:0 when CUDA works; the CPU on the simulator; else ``skipped: no CUDA``."""
    import torch

    if torch.cuda.is_available():
        return torch.device("cuda", 0)
    if ctx.on_cpu():
        return torch.device("cpu")
    raise ctx.no_cuda(f"torch {_version()} sees no CUDA device")


def _where(device: Any) -> str:
    import torch

    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return "cpu"


def _model() -> Any:
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))


def _batch(device: Any) -> tuple[Any, Any]:
    import torch

    g = torch.Generator().manual_seed(1)
    x = torch.randn(32, 64, generator=g)
    y = torch.randint(0, 10, (32,), generator=g)
    return x.to(device), y.to(device)


def check_import(ctx: Context) -> str:
    """Import torch; its version, CUDA build and cuDNN."""
    import torch

    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return f"torch {_version()}" + (f", cuDNN {cudnn}" if cudnn else "")


def check_devices(ctx: Context) -> str:
    """One device exposed: torch must see exactly one."""
    import torch

    n = torch.cuda.device_count()
    if not torch.cuda.is_available():
        raise ctx.no_cuda(f"torch sees {n} CUDA device(s)")
    props = torch.cuda.get_device_properties(0)
    seen = f"sees {n} device(s): {props.name}, {props.total_memory // _MIB} MiB, {props.multi_processor_count} SMs"
    if n != 1:
        raise RuntimeError(f"{seen}; expected 1 with CUDA_VISIBLE_DEVICES={_visible()}")
    return seen


def _visible() -> str:
    return os.environ.get("CUDA_VISIBLE_DEVICES", "(unset)")


def _infer(ctx: Context, compiled: bool) -> str:
    import torch

    device = _device(ctx)
    model = _model().to(device).eval()
    x, _ = _batch(device)
    run = torch.compile(model) if compiled else model
    with torch.no_grad():
        out = run(x)
        if compiled and not torch.allclose(out, model(x), atol=1e-4, rtol=1e-4):
            raise RuntimeError("the compiled model's output differs from eager's")
    if device.type == "cuda":
        torch.cuda.synchronize()
    if tuple(out.shape) != (32, 10) or not bool(torch.isfinite(out).all()):
        raise RuntimeError(f"unexpected output: shape {tuple(out.shape)}")
    return f"MLP batch 32 on {_where(device)}" + (" (compiled, inductor)" if compiled else "")


def _train(ctx: Context, compiled: bool, steps: int = 5) -> str:
    import torch

    device = _device(ctx)
    model = _model().to(device).train()
    run = torch.compile(model) if compiled else model
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = _batch(device)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(run(x), y)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return loss_fell(losses, _where(device))


def check_devices_two(ctx: Context) -> str:
    """Two devices exposed: how many torch sees, and which one it uses."""
    import torch

    if not torch.cuda.is_available():
        raise ctx.no_cuda(f"torch sees {torch.cuda.device_count()} CUDA device(s)")
    n = torch.cuda.device_count()
    names = [torch.cuda.get_device_name(i) for i in range(n)]
    used = _uuid(0)
    seen = f"sees {n} of {len(ctx.devices)} exposed: {', '.join(names)}; cuda:0 is {used}"
    return two_devices(ctx, seen, n)


def _uuid(index: int) -> str:
    import torch

    props = torch.cuda.get_device_properties(index)
    uuid = getattr(props, "uuid", None)
    if uuid is None:
        return props.name
    text = str(uuid)
    for exposed in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(","):
        if exposed.strip().endswith(text):
            return exposed.strip()
    return f"{props.name} (UUID {text})"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def check_data_parallel(ctx: Context) -> str:
    """DDP with NCCL across the two devices: one rank process per device."""
    import torch

    if not torch.cuda.is_available():
        raise ctx.no_cuda("torch sees no CUDA device")
    if len(ctx.devices) < 2:
        raise RuntimeError("data-parallel needs two exposed devices")
    port = _free_port()
    procs = []
    with tempfile.TemporaryDirectory(prefix="migperf-ddp-") as tmp:
        for rank, device in enumerate(ctx.devices[:2]):
            env = {
                **os.environ,
                "CUDA_VISIBLE_DEVICES": device,
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(port),
                "RANK": str(rank),
                "WORLD_SIZE": "2",
            }
            err = open(os.path.join(tmp, f"rank{rank}.err"), "w+")  # noqa: SIM115 - closed below
            procs.append(
                (
                    subprocess.Popen(
                        [sys.executable, "-m", "migperf.compat.probes.torch_ddp"],
                        env=env,
                        stdout=subprocess.PIPE,
                        stderr=err,
                        text=True,
                    ),
                    err,
                )
            )
        limit = max(10.0, ctx.timeout_s * 0.8)
        outcomes = []
        for proc, err in procs:
            try:
                out, _ = proc.communicate(timeout=limit)
                err.seek(0)
                outcomes.append((proc.returncode, out.strip(), err.read()))
            except subprocess.TimeoutExpired:
                for p, _ in procs:
                    p.kill()
                outcomes.append(
                    (None, "", f"the rank did not finish in {limit:.0f} s (NCCL hang?)")
                )
            finally:
                err.close()
    if all(rc == 0 for rc, _, _ in outcomes):
        return f"2 ranks ({', '.join(ctx.devices[:2])}): " + "; ".join(o for _, o, _ in outcomes)
    rc, _, text = next(o for o in outcomes if o[0] != 0)
    lines = [ln for ln in text.splitlines() if ln.strip()]
    error = trim(" | ".join(lines[-3:]) or f"exit code {rc}")
    if ctx.mig:
        raise ExpectedFail(
            f"{error}. NVIDIA: NCCL is not supported with MIG, and there is no GPU-to-GPU P2P "
            "in MIG mode; see docs/reference/mig-compat.md"
        )
    raise RuntimeError(error)


def check_oom(ctx: Context) -> str:
    """Allocate more than the device holds: torch's OutOfMemoryError, and the limit holds."""
    import torch

    if not torch.cuda.is_available():
        raise ctx.no_cuda("torch sees no CUDA device")
    total = torch.cuda.get_device_properties(0).total_memory
    slice_bytes = (ctx.memory_mib or 0) * _MIB
    ask = int(max(total, slice_bytes) * 1.25)
    try:
        block = torch.empty(ask, dtype=torch.uint8, device="cuda")
    except torch.cuda.OutOfMemoryError as exc:
        first = trim(str(exc), 300)
        note = f"{ask // _MIB} MiB refused on a {total // _MIB} MiB device: torch.OutOfMemoryError: {first}"
        if slice_bytes and total > slice_bytes * 1.05:
            raise RuntimeError(
                f"torch reports {total // _MIB} MiB, more than the slice's {ctx.memory_mib} MiB"
            ) from None
        return note
    del block
    raise RuntimeError(f"allocated {ask // _MIB} MiB on a {total // _MIB} MiB device: no OOM")


def check_compile_import(ctx: Context) -> str:
    """torch.compile's prerequisites: inductor, a C compiler (CPU), Triton (CUDA)."""
    import torch

    cc = shutil.which(os.environ.get("CC", "")) or shutil.which("cc") or shutil.which("gcc")
    parts = [f"torch {_version()}", f"C compiler {cc or 'none'}"]
    if torch.cuda.is_available():
        try:
            import triton

            parts.append(f"triton {triton.__version__}")
        except ImportError:
            parts.append("triton not installed")
    return ", ".join(parts)


EAGER = Probe(
    checks={
        "import": check_import,
        "devices": check_devices,
        "infer": lambda ctx: _infer(ctx, compiled=False),
        "train": lambda ctx: _train(ctx, compiled=False),
        "devices-two": check_devices_two,
        "data-parallel": check_data_parallel,
        "oom": check_oom,
    },
    version=_version,
)

COMPILED = Probe(
    checks={
        "import": check_compile_import,
        "infer": lambda ctx: _infer(ctx, compiled=True),
        "train": lambda ctx: _train(ctx, compiled=True, steps=3),
    },
    version=_version,
)
