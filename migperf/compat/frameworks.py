"""What the compatibility matrix checks: the frameworks, the serving systems and their checks.

Each :class:`Framework` names the module whose import says it is installed,
the pip requirement that brings it (what a ``not installed`` row tells the
user to install), its checks in the order they run, and the probe function
table that runs them in a check process (:mod:`migperf.compat.probe`).

Checks (:data:`CHECKS`): ``import`` (import and version), ``devices`` (devices
visible with one device exposed: expect 1), ``infer`` (a small model's
inference), ``train`` (a few training steps), ``devices-two`` (what it sees and
uses with two devices exposed), ``data-parallel`` (across the two: DDP with
NCCL, ``tf.distribute.MirroredStrategy``, ``jax.pmap``), ``oom`` (an allocation
past the slice's memory ends in the framework's out-of-memory error), and for
serving systems ``start`` (the server comes up on the device) and ``query``
(one request answered, with the device it ran on).

Nothing here imports a framework: this module is read by the CLI and the runner.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "CHECKS",
    "FRAMEWORKS",
    "SERVING",
    "TWO_DEVICE_CHECKS",
    "Framework",
    "framework",
]

#: check -> what it shows (the README's and the table's wording).
CHECKS: dict[str, str] = {
    "import": "the framework imports; its version",
    "devices": "devices it sees with one device exposed (expect 1)",
    "infer": "a small model's inference on the device",
    "train": "a few training steps on the device",
    "devices-two": "devices it sees and uses with two devices exposed",
    "data-parallel": "data-parallel training across the two devices",
    "oom": "an allocation past the device's memory ends in the framework's OOM error",
    "start": "the server starts on the device",
    "query": "one request answered; the device it ran on",
}

#: Checks that run with two devices exposed (``CUDA_VISIBLE_DEVICES=A,B``).
TWO_DEVICE_CHECKS = frozenset({"devices-two", "data-parallel"})


@dataclass(frozen=True)
class Framework:
    """One column group of the matrix.

    Attributes:
        key: The name rows carry (``pytorch``, ``onnxruntime``, ...).
        module: The import whose absence means ``not installed``.
        install: The pip requirement (or the binary) that brings it.
        checks: Its checks, in the order they run.
        probe: ``module:NAME`` of the probe's check table (a dict check -> function).
        serving: A serving system rather than a framework.
        env: Variables its check processes get (e.g. JAX's preallocation off).
    """

    key: str
    module: str
    install: str
    checks: tuple[str, ...]
    probe: str
    serving: bool = False
    env: tuple[tuple[str, str], ...] = ()


_ALL = ("import", "devices", "infer", "train", "devices-two", "data-parallel", "oom")
_PROBES = "migperf.compat.probes"

#: The frameworks, in the order the matrix runs them.
FRAMEWORKS: tuple[Framework, ...] = (
    Framework(
        "pytorch", "torch", "torch (a migperf dependency)", _ALL, f"{_PROBES}.torch_probe:EAGER"
    ),
    Framework(
        "torch.compile",
        "torch",
        "torch (a migperf dependency) and a C compiler",
        ("import", "infer", "train"),
        f"{_PROBES}.torch_probe:COMPILED",
    ),
    Framework(
        "onnxruntime",
        "onnxruntime",
        'pip install "migperf[compat]" (CPU) or onnxruntime-gpu (CUDA execution provider)',
        ("import", "devices", "infer", "devices-two", "oom"),
        f"{_PROBES}.ort_probe:CHECKS",
    ),
    Framework(
        "jax",
        "jax",
        'pip install "migperf[compat]" (CPU) or "jax[cuda12]" (CUDA)',
        _ALL,
        f"{_PROBES}.jax_probe:CHECKS",
        # JAX takes 75 % of a device's memory up front; allocate on demand instead,
        # so the OOM check hits the slice's limit rather than JAX's own pool.
        env=(("XLA_PYTHON_CLIENT_PREALLOCATE", "false"),),
    ),
    Framework(
        "tensorflow",
        "tensorflow",
        'pip install tensorflow (CPU) or "tensorflow[and-cuda]" (CUDA)',
        _ALL,
        f"{_PROBES}.tf_probe:CHECKS",
        env=(("TF_CPP_MIN_LOG_LEVEL", "2"), ("TF_FORCE_GPU_ALLOW_GROWTH", "true")),
    ),
    Framework(
        "paddle",
        "paddle",
        "pip install paddlepaddle (CPU) or paddlepaddle-gpu (CUDA)",
        ("import", "devices", "infer", "train", "devices-two", "oom"),
        f"{_PROBES}.paddle_probe:CHECKS",
    ),
)

#: The serving systems: each starts a server pinned to the device and queries it once.
SERVING: tuple[Framework, ...] = (
    Framework(
        "http-torchscript",
        "torch",
        "torch (a migperf dependency)",
        ("start", "query"),
        f"{_PROBES}.http_probe:CHECKS",
        serving=True,
    ),
    Framework(
        "ray-serve",
        "ray.serve",
        'pip install "ray[serve]"',
        ("start", "query"),
        f"{_PROBES}.ray_probe:CHECKS",
        serving=True,
        # Ray would set CUDA_VISIBLE_DEVICES for its actors from its own GPU
        # count, which knows no MIG UUIDs: the replica keeps the one exposed here.
        env=(("RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES", "1"),),
    ),
    Framework(
        "triton",
        "tritonserver",
        "needs tritonserver on PATH (NVIDIA's Triton container)",
        ("start", "query"),
        f"{_PROBES}.triton_probe:CHECKS",
        serving=True,
    ),
)


def framework(key: str) -> Framework:
    """The framework or serving system called ``key``.

    Raises:
        KeyError: no such key.
    """
    for f in (*FRAMEWORKS, *SERVING):
        if f.key == key:
            return f
    raise KeyError(key)
