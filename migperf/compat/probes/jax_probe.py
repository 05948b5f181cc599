"""JAX's checks: jit inference and training, ``jax.pmap`` across devices, the OOM error.

The runner starts JAX with ``XLA_PYTHON_CLIENT_PREALLOCATE=false``, so memory
is taken on demand and the OOM check meets the device's limit, not JAX's pool.
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
    import jax
    import jaxlib

    return f"{jax.__version__} (jaxlib {jaxlib.__version__}, backend {jax.default_backend()})"


def _gpus() -> list[Any]:
    import jax

    return [d for d in jax.devices() if d.platform in ("gpu", "cuda", "rocm")]


def _device(ctx: Context) -> Any:
    import jax

    gpus = _gpus()
    if gpus:
        return gpus[0]
    if ctx.on_cpu():
        return jax.devices("cpu")[0]
    raise ctx.no_cuda(f"jax {_version()} sees no GPU")


def _params(key: Any) -> dict[str, Any]:
    import jax

    k1, k2 = jax.random.split(key)
    return {
        "w1": jax.random.normal(k1, (64, 128)) * 0.1,
        "w2": jax.random.normal(k2, (128, 10)) * 0.1,
    }


def _forward(params: dict[str, Any], x: Any) -> Any:
    import jax.numpy as jnp

    return jnp.maximum(x @ params["w1"], 0.0) @ params["w2"]


def _loss(params: dict[str, Any], x: Any, y: Any) -> Any:
    import jax
    import jax.numpy as jnp

    logits = _forward(params, x)
    return -jnp.mean(jnp.sum(jax.nn.one_hot(y, 10) * jax.nn.log_softmax(logits), axis=-1))


def _batch(device: Any) -> tuple[Any, Any]:
    import jax

    kx, ky = jax.random.split(jax.random.PRNGKey(1))
    x = jax.random.normal(kx, (32, 64))
    y = jax.random.randint(ky, (32,), 0, 10)
    return jax.device_put(x, device), jax.device_put(y, device)


def check_import(ctx: Context) -> str:
    """Import jax; versions and the default backend."""
    import jax

    return f"jax {_version()}; devices {', '.join(str(d) for d in jax.devices())}"


def check_devices(ctx: Context) -> str:
    """One device exposed: JAX must see exactly one GPU."""
    gpus = _gpus()
    if not gpus:
        raise ctx.no_cuda(f"jax {_version()} sees no GPU")
    seen = f"sees {len(gpus)} GPU(s): {', '.join(getattr(d, 'device_kind', str(d)) for d in gpus)}"
    if len(gpus) != 1:
        raise RuntimeError(f"{seen}; expected 1 with CUDA_VISIBLE_DEVICES={_visible()}")
    return seen


def _visible() -> str:
    return os.environ.get("CUDA_VISIBLE_DEVICES", "(unset)")


def check_infer(ctx: Context) -> str:
    """A jitted MLP forward pass on the device."""
    import jax
    import jax.numpy as jnp

    device = _device(ctx)
    params = jax.device_put(_params(jax.random.PRNGKey(0)), device)
    x, _ = _batch(device)
    out = jax.jit(_forward)(params, x).block_until_ready()
    if out.shape != (32, 10) or not bool(jnp.isfinite(out).all()):
        raise RuntimeError(f"unexpected output: shape {out.shape}")
    return f"MLP batch 32 on {device} (jit)"


def check_train(ctx: Context, steps: int = 5) -> str:
    """A few jitted SGD steps; the loss must fall."""
    import jax

    device = _device(ctx)
    params = jax.device_put(_params(jax.random.PRNGKey(0)), device)
    x, y = _batch(device)

    @jax.jit
    def step(p: Any) -> tuple[Any, Any]:
        loss, grads = jax.value_and_grad(_loss)(p, x, y)
        return jax.tree_util.tree_map(lambda w, g: w - 0.1 * g, p, grads), loss

    losses = []
    for _ in range(steps):
        params, loss = step(params)
        losses.append(float(loss))
    return loss_fell(losses, device)


def check_devices_two(ctx: Context) -> str:
    """Two devices exposed: how many GPUs JAX sees, and its default one."""
    gpus = _gpus()
    if not gpus:
        raise ctx.no_cuda(f"jax {_version()} sees no GPU")
    seen = f"sees {len(gpus)} of {len(ctx.devices)} exposed; default device {gpus[0]}"
    return two_devices(ctx, seen, len(gpus))


def check_data_parallel(ctx: Context) -> str:
    """``jax.pmap`` of a training step with ``pmean`` across the visible GPUs."""
    import jax
    import jax.numpy as jnp

    gpus = _gpus()
    if not gpus:
        raise ctx.no_cuda(f"jax {_version()} sees no GPU")
    if len(gpus) < 2:
        text = f"jax.pmap has {len(gpus)} device to map over with {len(ctx.devices)} exposed"
        if ctx.mig:
            raise ExpectedFail(
                f"{text}. NVIDIA: one MIG device per CUDA process, and data-parallel training "
                "across MIG devices is not supported; see docs/reference/mig-compat.md"
            )
        raise RuntimeError(text)
    n = len(gpus)
    params = _params(jax.random.PRNGKey(0))
    x, y = _batch(gpus[0])
    xs, ys = x[: 32 // n * n].reshape(n, -1, 64), y[: 32 // n * n].reshape(n, -1)

    def step(p: Any, xb: Any, yb: Any) -> Any:
        grads = jax.grad(_loss)(p, xb, yb)
        return jax.lax.pmean(grads, "d")

    grads = jax.pmap(step, axis_name="d", in_axes=(None, 0, 0), devices=gpus)(params, xs, ys)
    same = bool(jnp.allclose(grads["w1"][0], grads["w1"][-1]))
    if not same:
        raise RuntimeError("pmean gave different gradients on the devices")
    return f"jax.pmap over {n} devices: gradients all-reduced (pmean) and equal"


def check_oom(ctx: Context) -> str:
    """An array larger than the device's memory ends in XLA's RESOURCE_EXHAUSTED."""
    import jax
    import jax.numpy as jnp

    gpus = _gpus()
    if not gpus:
        raise ctx.no_cuda(f"jax {_version()} sees no GPU")
    stats = gpus[0].memory_stats() or {}
    limit = int(stats.get("bytes_limit") or 0)
    ask = int(max(limit, (ctx.memory_mib or 0) * _MIB) * 1.25)
    if not ask:
        raise RuntimeError("the device's memory is unknown (NVML and JAX did not report it)")
    try:
        block = jax.device_put(jnp.zeros((ask,), dtype=jnp.uint8), gpus[0]).block_until_ready()
    except Exception as exc:  # noqa: BLE001 - XlaRuntimeError lives in a jaxlib module that moves
        text = describe(exc)
        if "RESOURCE_EXHAUSTED" not in text and "out of memory" not in text.lower():
            raise
        return f"{ask // _MIB} MiB refused (JAX limit {limit // _MIB} MiB): {trim(text, 300)}"
    del block
    raise RuntimeError(f"allocated {ask // _MIB} MiB on the device: no OOM")


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
