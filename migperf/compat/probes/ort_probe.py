"""ONNX Runtime's checks: a tiny ONNX model built in process with ``onnx.helper``.

The CUDA execution provider is used when this build has it; ONNX Runtime
falls back to the CPU silently when CUDA cannot start, so the checks read the
session's providers back and a fallback is a failure. ONNX Runtime has no
device list: the devices a process sees are probed by opening a session on
device ids 0 and 1. It does not train; it has no data-parallel mode.
"""

from __future__ import annotations

import os
from typing import Any

from migperf.compat.probes.kit import (
    ONE_MIG_DEVICE,
    Context,
    ExpectedFail,
    Probe,
    describe,
    importable,
    trim,
)

__all__ = ["CHECKS", "tiny_model"]

_MIB = 1024 * 1024
_CUDA = "CUDAExecutionProvider"


def _version() -> str:
    import onnxruntime as ort

    return (
        f"{ort.__version__} ({'CUDA' if _CUDA in ort.get_available_providers() else 'CPU'} build)"
    )


def tiny_model() -> bytes:
    """A 2-layer MLP (MatMul, Add, Relu, MatMul) as ONNX bytes: [N, 64] -> [N, 10]."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((64, 128)).astype(np.float32), "w1"),
        numpy_helper.from_array(np.zeros(128, dtype=np.float32), "b1"),
        numpy_helper.from_array(rng.standard_normal((128, 10)).astype(np.float32), "w2"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("Add", ["h", "b1"], ["hb"]),
        helper.make_node("Relu", ["hb"], ["a"]),
        helper.make_node("MatMul", ["a", "w2"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "migperf-compat-mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by ONNX Runtime 1.14 and later
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def _has_cuda() -> bool:
    import onnxruntime as ort

    return _CUDA in ort.get_available_providers()


def _session(device_id: int | None) -> Any:
    """A session on CUDA device ``device_id``, or on the CPU for None."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if device_id is None:
        return ort.InferenceSession(tiny_model(), opts, providers=["CPUExecutionProvider"])
    sess = ort.InferenceSession(tiny_model(), opts, providers=[(_CUDA, {"device_id": device_id})])
    if sess.get_providers()[0] != _CUDA:
        raise RuntimeError(
            f"asked for {_CUDA} device {device_id}; the session runs on {sess.get_providers()}"
        )
    return sess


def _visible() -> str:
    return os.environ.get("CUDA_VISIBLE_DEVICES", "(unset)")


def check_import(ctx: Context) -> str:
    """Import onnxruntime and onnx; versions and execution providers."""
    import onnx
    import onnxruntime as ort

    return (
        f"onnxruntime {ort.__version__}, onnx {onnx.__version__}; providers "
        f"{', '.join(ort.get_available_providers())}"
    )


def _device_ids(up_to: int) -> tuple[list[int], str]:
    """Device ids a CUDA session opens on (0 .. up_to - 1), and the first refusal."""
    ok, refusal = [], ""
    for i in range(up_to):
        try:
            _session(i)
            ok.append(i)
        except Exception as exc:  # noqa: BLE001 - the refusal is what we report
            refusal = refusal or describe(exc)
    return ok, refusal


def check_devices(ctx: Context) -> str:
    """One device exposed: a session opens on device 0 and not on device 1."""
    if not _has_cuda():
        raise ctx.no_cuda(f"this onnxruntime has no {_CUDA}")
    ok, refusal = _device_ids(2)
    if ok != [0]:
        raise RuntimeError(
            f"sessions open on device ids {ok} with CUDA_VISIBLE_DEVICES={_visible()}; "
            f"expected [0]. {refusal}"
        )
    return f"sees 1 device: a session opens on device 0, device 1 is refused ({trim(refusal, 160)})"


def check_infer(ctx: Context) -> str:
    """The tiny model's inference, on CUDA or (simulator only) on the CPU."""
    import numpy as np

    if _has_cuda():
        sess = _session(0)
    elif ctx.on_cpu():
        sess = _session(None)
    else:
        raise ctx.no_cuda(f"this onnxruntime has no {_CUDA}")
    x = np.random.default_rng(1).standard_normal((32, 64)).astype(np.float32)
    (y,) = sess.run(["y"], {"x": x})
    if y.shape != (32, 10) or not np.isfinite(y).all():
        raise RuntimeError(f"unexpected output: shape {y.shape}")
    return f"MLP batch 32 on {sess.get_providers()[0]}"


def check_devices_two(ctx: Context) -> str:
    """Two devices exposed: on which device ids a session opens."""
    if not _has_cuda():
        raise ctx.no_cuda(f"this onnxruntime has no {_CUDA}")
    ok, refusal = _device_ids(2)
    seen = f"sessions open on device ids {ok} of 2 exposed ({_visible()})"
    if len(ok) == 2:
        return seen
    if ok == [0] and ctx.mig:
        raise ExpectedFail(f"{seen}; device 1: {trim(refusal, 200)}. {ONE_MIG_DEVICE}")
    raise RuntimeError(f"{seen}; expected [0, 1]. {refusal}")


def check_oom(ctx: Context) -> str:
    """An OrtValue larger than the device's memory is refused with ONNX Runtime's allocation error."""
    import numpy as np
    import onnxruntime as ort

    if not _has_cuda():
        raise ctx.no_cuda(f"this onnxruntime has no {_CUDA}")
    if not ctx.memory_mib:
        raise RuntimeError("the device's memory is unknown (NVML did not report it)")
    ask = int(ctx.memory_mib * _MIB * 1.25)
    try:
        value = ort.OrtValue.ortvalue_from_shape_and_type([ask], np.uint8, "cuda", 0)
    except Exception as exc:  # noqa: BLE001 - ONNX Runtime raises its own RuntimeException
        text = describe(exc)
        if "alloc" not in text.lower() and "memory" not in text.lower():
            raise
        return f"{ask // _MIB} MiB refused on a {ctx.memory_mib} MiB device: {trim(text, 300)}"
    del value
    raise RuntimeError(f"allocated {ask // _MIB} MiB on a {ctx.memory_mib} MiB device: no OOM")


def _installed(ctx: Context) -> bool:
    return importable("onnxruntime") and importable("onnx")


CHECKS = Probe(
    checks={
        "import": check_import,
        "devices": check_devices,
        "infer": check_infer,
        "devices-two": check_devices_two,
        "oom": check_oom,
    },
    version=_version,
    installed=_installed,
)
