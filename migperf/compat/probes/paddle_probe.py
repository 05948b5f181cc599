"""PaddlePaddle's checks: dygraph inference and training, device count, the OOM error.

Paddle's multi-process data-parallel needs its own launcher
(``python -m paddle.distributed.launch``); the matrix records what a process
sees with two devices exposed instead.
"""

from __future__ import annotations

import os
from typing import Any

from migperf.compat.probes.kit import (
    Context,
    Probe,
    describe,
    loss_fell,
    trim,
    two_devices,
)

__all__ = ["CHECKS"]

_MIB = 1024 * 1024


def _version() -> str:
    import paddle

    cuda = paddle.version.cuda() if paddle.device.is_compiled_with_cuda() else None
    return f"{paddle.__version__} (CUDA {cuda})" if cuda else f"{paddle.__version__} (CPU build)"


def _gpu_count() -> int:
    import paddle

    if not paddle.device.is_compiled_with_cuda():
        return 0
    return int(paddle.device.cuda.device_count())


def _device(ctx: Context) -> str:
    import paddle

    if _gpu_count():
        paddle.device.set_device("gpu:0")
        return "gpu:0"
    if ctx.on_cpu():
        paddle.device.set_device("cpu")
        return "cpu"
    raise ctx.no_cuda(f"paddle {_version()} sees no GPU")


def _model() -> Any:
    import paddle

    paddle.seed(0)
    return paddle.nn.Sequential(
        paddle.nn.Linear(64, 128), paddle.nn.ReLU(), paddle.nn.Linear(128, 10)
    )


def _batch() -> tuple[Any, Any]:
    import numpy as np
    import paddle

    rng = np.random.default_rng(1)
    x = paddle.to_tensor(rng.standard_normal((32, 64)).astype("float32"))
    y = paddle.to_tensor(rng.integers(0, 10, 32).astype("int64"))
    return x, y


def check_import(ctx: Context) -> str:
    """Import paddle; its version and CUDA build."""
    return f"paddle {_version()}"


def check_devices(ctx: Context) -> str:
    """One device exposed: Paddle must count exactly one GPU."""
    n = _gpu_count()
    if not n:
        raise ctx.no_cuda(f"paddle {_version()} sees no GPU")
    if n != 1:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "(unset)")
        raise RuntimeError(f"sees {n} GPUs; expected 1 with CUDA_VISIBLE_DEVICES={visible}")
    import paddle

    return f"sees 1 GPU: {paddle.device.cuda.get_device_name(0)}"


def check_infer(ctx: Context) -> str:
    """A dygraph MLP's forward pass on the device."""
    import paddle

    device = _device(ctx)
    x, _ = _batch()
    with paddle.no_grad():
        out = _model()(x)
    if tuple(out.shape) != (32, 10) or not bool(paddle.isfinite(out).all()):
        raise RuntimeError(f"unexpected output: shape {tuple(out.shape)}")
    return f"MLP batch 32 on {device}"


def check_train(ctx: Context, steps: int = 5) -> str:
    """A few SGD steps; the loss must fall."""
    import paddle

    device = _device(ctx)
    model = _model()
    opt = paddle.optimizer.SGD(learning_rate=0.1, parameters=model.parameters())
    x, y = _batch()
    losses = []
    for _ in range(steps):
        loss = paddle.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.clear_grad()
        losses.append(float(loss))
    return loss_fell(losses, device)


def check_devices_two(ctx: Context) -> str:
    """Two devices exposed: how many GPUs Paddle counts."""
    n = _gpu_count()
    if not n:
        raise ctx.no_cuda(f"paddle {_version()} sees no GPU")
    seen = f"sees {n} of {len(ctx.devices)} exposed"
    return two_devices(ctx, seen, n)


def check_oom(ctx: Context) -> str:
    """A tensor larger than the device's memory ends in Paddle's out-of-memory error."""
    import paddle

    if not _gpu_count():
        raise ctx.no_cuda(f"paddle {_version()} sees no GPU")
    if not ctx.memory_mib:
        raise RuntimeError("the device's memory is unknown (NVML did not report it)")
    paddle.device.set_device("gpu:0")
    ask = int(ctx.memory_mib * _MIB * 1.25)
    try:
        block = paddle.zeros([ask], dtype="uint8")
    except (MemoryError, RuntimeError, OSError) as exc:
        text = describe(exc)
        if "memory" not in text.lower() and "resourceexhausted" not in text.lower():
            raise
        return f"{ask // _MIB} MiB refused on a {ctx.memory_mib} MiB device: {trim(text, 300)}"
    del block
    raise RuntimeError(f"allocated {ask // _MIB} MiB on a {ctx.memory_mib} MiB device: no OOM")


CHECKS = Probe(
    checks={
        "import": check_import,
        "devices": check_devices,
        "infer": check_infer,
        "train": check_train,
        "devices-two": check_devices_two,
        "oom": check_oom,
    },
    version=_version,
)
