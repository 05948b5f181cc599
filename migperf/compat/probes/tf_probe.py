"""TensorFlow's checks: Keras inference and training, ``MirroredStrategy``, the OOM error.

The runner starts TensorFlow with ``TF_FORCE_GPU_ALLOW_GROWTH=true``, so it
takes memory on demand and the OOM check meets the device's limit.
"""

from __future__ import annotations

import os
from typing import Any

from migperf.compat.probes.kit import (
    Context,
    ExpectedFail,
    Probe,
    describe,
    loss_fell,
    trim,
    two_devices,
)

__all__ = ["CHECKS"]

_MIB = 1024 * 1024


def _version() -> str:
    import tensorflow as tf

    build = tf.sysconfig.get_build_info()
    cuda = build.get("cuda_version")
    return f"{tf.__version__} (CUDA {cuda})" if cuda else f"{tf.__version__} (CPU build)"


def _gpus() -> list[Any]:
    import tensorflow as tf

    return list(tf.config.list_logical_devices("GPU"))


def _device(ctx: Context) -> str:
    gpus = _gpus()
    if gpus:
        return str(gpus[0].name)
    if ctx.on_cpu():
        return "/CPU:0"
    raise ctx.no_cuda(f"tensorflow {_version()} sees no GPU")


def _model() -> Any:
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    return tf.keras.Sequential(
        [
            tf.keras.Input((64,)),
            tf.keras.layers.Dense(128, activation="relu"),
            tf.keras.layers.Dense(10),
        ]
    )


def _batch() -> tuple[Any, Any]:
    import numpy as np

    rng = np.random.default_rng(1)
    return rng.standard_normal((32, 64)).astype("float32"), rng.integers(0, 10, 32)


def check_import(ctx: Context) -> str:
    """Import tensorflow; its version and CUDA build."""
    import tensorflow as tf

    return f"tensorflow {_version()}; physical GPUs {len(tf.config.list_physical_devices('GPU'))}"


def check_devices(ctx: Context) -> str:
    """One device exposed: TensorFlow must see exactly one GPU."""
    gpus = _gpus()
    if not gpus:
        raise ctx.no_cuda(f"tensorflow {_version()} sees no GPU")
    seen = f"sees {len(gpus)} GPU(s): {', '.join(d.name for d in gpus)}"
    if len(gpus) != 1:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "(unset)")
        raise RuntimeError(f"{seen}; expected 1 with CUDA_VISIBLE_DEVICES={visible}")
    return seen


def check_infer(ctx: Context) -> str:
    """A Keras MLP's forward pass on the device."""
    import numpy as np
    import tensorflow as tf

    device = _device(ctx)
    x, _ = _batch()
    with tf.device(device):
        out = _model()(x, training=False).numpy()
    if out.shape != (32, 10) or not np.isfinite(out).all():
        raise RuntimeError(f"unexpected output: shape {out.shape}")
    return f"MLP batch 32 on {device}"


def check_train(ctx: Context, steps: int = 5) -> str:
    """A few SGD steps with ``GradientTape``; the loss must fall."""
    import tensorflow as tf

    device = _device(ctx)
    x, y = _batch()
    with tf.device(device):
        model = _model()
        opt = tf.keras.optimizers.SGD(0.1)
        lossf = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        losses = []
        for _ in range(steps):
            with tf.GradientTape() as tape:
                loss = lossf(y, model(x, training=True))
            opt.apply_gradients(
                zip(
                    tape.gradient(loss, model.trainable_variables),
                    model.trainable_variables,
                    strict=True,
                )
            )
            losses.append(float(loss))
    return loss_fell(losses, device)


def check_devices_two(ctx: Context) -> str:
    """Two devices exposed: how many GPUs TensorFlow sees."""
    gpus = _gpus()
    if not gpus:
        raise ctx.no_cuda(f"tensorflow {_version()} sees no GPU")
    seen = f"sees {len(gpus)} of {len(ctx.devices)} exposed: {', '.join(d.name for d in gpus)}"
    return two_devices(ctx, seen, len(gpus))


def check_data_parallel(ctx: Context) -> str:
    """``tf.distribute.MirroredStrategy`` over the visible GPUs: replicas and one step."""
    import tensorflow as tf

    gpus = _gpus()
    if not gpus:
        raise ctx.no_cuda(f"tensorflow {_version()} sees no GPU")
    strategy = tf.distribute.MirroredStrategy([d.name for d in gpus])
    replicas = int(strategy.num_replicas_in_sync)
    if replicas < 2:
        text = f"MirroredStrategy has {replicas} replica with {len(ctx.devices)} devices exposed"
        if ctx.mig:
            raise ExpectedFail(
                f"{text}. NVIDIA: one MIG device per CUDA process; data-parallel training across "
                "MIG devices is not supported; see docs/reference/mig-compat.md"
            )
        raise RuntimeError(text)
    x, y = _batch()
    with strategy.scope():
        model = _model()
        model.compile(
            optimizer="sgd", loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        )
    try:
        history = model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    except Exception as exc:
        if ctx.mig:
            raise ExpectedFail(
                f"{describe(exc)}. NVIDIA: NCCL is not supported with MIG; see "
                "docs/reference/mig-compat.md"
            ) from None
        raise
    return (
        f"MirroredStrategy: {replicas} replicas, one epoch, loss {history.history['loss'][-1]:.3f}"
    )


def check_oom(ctx: Context) -> str:
    """A tensor larger than the device's memory ends in ``ResourceExhaustedError``."""
    import tensorflow as tf

    gpus = _gpus()
    if not gpus:
        raise ctx.no_cuda(f"tensorflow {_version()} sees no GPU")
    if not ctx.memory_mib:
        raise RuntimeError("the device's memory is unknown (NVML did not report it)")
    ask = int(ctx.memory_mib * _MIB * 1.25)
    try:
        with tf.device(gpus[0].name):
            block = tf.zeros([ask], dtype=tf.uint8)
            _ = block.numpy()[:1]
    except tf.errors.ResourceExhaustedError as exc:
        return f"{ask // _MIB} MiB refused on a {ctx.memory_mib} MiB device: {trim(describe(exc), 300)}"
    raise RuntimeError(f"allocated {ask // _MIB} MiB on a {ctx.memory_mib} MiB device: no OOM")


CHECKS = Probe(
    checks={
        "import": check_import,
        "devices": check_devices,
        "infer": check_infer,
        "train": check_train,
        "devices-two": check_devices_two,
        "data-parallel": check_data_parallel,
        "oom": check_oom,
    },
    version=_version,
)
