"""Microbenchmarks of a slice's raw capacity: GEMM throughput and memory bandwidth.

* ``gemm``: ``batch_size`` square ``n x n`` matrix products per step (one
  ``torch.matmul`` into a preallocated output; a batched GEMM when
  ``batch_size > 1``), in the spec's precision as the tensors' dtype. Work per
  step is ``2 * n**3 * batch_size`` FLOP, reported as TFLOP/s.
* ``memcpy``: ``batch_size`` device-to-device copies of a ``size_mib`` buffer
  per step (``dst.copy_(src)``). Bytes per step count the read and the write,
  ``2 * size * batch_size``, as CUDA's ``bandwidthTest`` does for
  device-to-device copies; reported as GB/s (10^9 bytes).

Both support only the ``infer`` task: there is nothing to train.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

from migperf.bench.workloads.base import (
    PreparedWorkload,
    Workload,
    executed_precision,
    precision_note,
    split_model_args,
)
from migperf.errors import UsageError

__all__ = ["Gemm", "Memcpy"]

_MIB = 1024 * 1024


class _Micro(Workload):
    FAMILY: ClassVar[str] = "micro"
    TASKS: ClassVar[tuple[str, ...]] = ("infer",)

    def _args(self) -> dict[str, Any]:
        if self.spec.compile:
            raise UsageError(
                f"{self.NAME} is a microbenchmark of one library call; --compile does not apply",
                hint="drop --compile",
            )
        wargs, _ = split_model_args(self.NAME, self.spec.model_args, self.WORKLOAD_ARGS, None)
        return wargs


class Gemm(_Micro):
    """Square matrix multiplication throughput (TFLOP/s)."""

    NAME: ClassVar[str] = "gemm"
    DESCRIPTION: ClassVar[str] = "square matrix multiply n x n (model arg n, default 4096), TFLOP/s"
    WORKLOAD_ARGS: ClassVar[Mapping[str, Any]] = {"n": 4096}

    def prepare(self) -> PreparedWorkload:
        """Allocate the operands on the device.

        Raises:
            UsageError: For an unknown argument or a non-positive ``n``.
        """
        import torch

        n = int(self._args()["n"])
        if n < 1:
            raise UsageError(f"gemm: model arg n={n} must be positive")
        precision = executed_precision(self.spec.precision, self.device)
        dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
        b = self.spec.batch_size
        shape = (n, n) if b == 1 else (b, n, n)
        g = torch.Generator(device="cpu").manual_seed(self.spec.seed)
        a = torch.randn(shape, generator=g).to(device=self.device, dtype=dtype)
        bm = torch.randn(shape, generator=g).to(device=self.device, dtype=dtype)
        out = torch.empty(shape, device=self.device, dtype=dtype)

        def step(mark: Callable[[], None]) -> None:
            torch.matmul(a, bm, out=out)

        def infer_batch(indices: Sequence[int]) -> None:
            if a.dim() == 2:
                for _ in indices:
                    torch.matmul(a, bm, out=out)
                return
            idx = torch.tensor(indices, dtype=torch.long).to(self.device, non_blocking=True)
            torch.matmul(a.index_select(0, idx), bm.index_select(0, idx))

        return PreparedWorkload(
            step=step,
            phases=("gemm",),
            samples_per_step=b,
            flop_per_step=2.0 * n**3 * b,
            config={"n": n, "dtype": str(dtype).removeprefix("torch."), "batch": b},
            notes=[n for n in (precision_note(self.spec.precision, precision),) if n],
            infer_batch=infer_batch,
            precision=precision,
        )


class Memcpy(_Micro):
    """Device-to-device copy bandwidth (GB/s)."""

    NAME: ClassVar[str] = "memcpy"
    DESCRIPTION: ClassVar[str] = "device-to-device copy of size_mib (default 256) MiB, GB/s"
    WORKLOAD_ARGS: ClassVar[Mapping[str, Any]] = {"size_mib": 256.0}

    def prepare(self) -> PreparedWorkload:
        """Allocate the source and destination buffers on the device.

        Raises:
            UsageError: For an unknown argument or a buffer under one byte.
        """
        import torch

        size = int(float(self._args()["size_mib"]) * _MIB)
        if size < 1:
            raise UsageError("memcpy: model arg size_mib must give at least one byte")
        src = torch.ones(size, dtype=torch.uint8, device=self.device)
        dst = torch.empty(size, dtype=torch.uint8, device=self.device)
        copies = self.spec.batch_size

        def step(mark: Callable[[], None]) -> None:
            for _ in range(copies):
                dst.copy_(src)

        return PreparedWorkload(
            step=step,
            phases=("copy",),
            samples_per_step=copies,
            bytes_per_step=2.0 * size * copies,
            config={"size_bytes": size, "copies_per_step": copies},
        )
