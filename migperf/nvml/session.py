"""The NVML session under the facade: opening, closing, calling, error translation.

:class:`NvmlSession` holds the pynvml-compatible module (nvidia-ml-py's
``pynvml`` or :mod:`migperf.nvml.sim`), initialises and releases it, and runs
every NVML call through :meth:`NvmlSession._call`, which turns ``NVMLError``
into a :class:`~migperf.errors.MigperfError` that names the operation, the GPU
and the reason, with a hint. The inventory (:mod:`migperf.nvml.inventory`), the
telemetry readings (:mod:`migperf.nvml.readings`) and the changes
(:class:`migperf.nvml.facade.Nvml`) build on it.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Callable
from typing import Any, TypeVar

from migperf import errors

#: The simulated GPU every command falls back to when no NVIDIA driver is found
#: (re-exported by :mod:`migperf.nvml.backend`).
FALLBACK_MODEL = "a100-40gb"

T = TypeVar("T")
S = TypeVar("S", bound="NvmlSession")


class NvmlSession:
    """An open (or openable) NVML library and the plumbing every NVML call goes through.

    Callers use :class:`~migperf.nvml.facade.Nvml`, which adds the queries,
    readings and changes; this base holds what they all share.

    Args:
        module: ``pynvml`` or a module with the same surface (the simulator).
        simulated: Whether ``module`` is the simulator; results say so.
        read_only: Refuse every call that would change a GPU.
        fallback_reason: Why a simulator stands in for a missing driver, if it does.
    """

    def __init__(
        self,
        module: types.ModuleType,
        *,
        simulated: bool,
        read_only: bool = False,
        fallback_reason: str | None = None,
    ) -> None:
        self.nvml = module
        self.simulated = simulated
        self.read_only = read_only
        self.fallback_reason = fallback_reason
        self._initialized = False
        # The GPU count cannot change while NVML is open.
        self._gpu_count: int | None = None

    # ---------------------------------------------------------------- set-up

    def init(self: S) -> S:
        """Initialise NVML (``nvmlInit``).

        Raises:
            NvmlUnavailableError: when the driver or library is missing.
        """
        if not self._initialized:
            self._call("initialise NVML", self.nvml.nvmlInit)
            self._initialized = True
        return self

    def shutdown(self) -> None:
        """Release NVML (``nvmlShutdown``); errors on the way out are ignored."""
        if self._initialized:
            self._initialized = False
            with contextlib.suppress(self.nvml.NVMLError):
                self.nvml.nvmlShutdown()

    def __enter__(self: S) -> S:
        return self.init()

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    @property
    def machine(self) -> str | None:
        """The simulated machine's name (``a100-80gb-x8``), or None on real hardware."""
        spec = getattr(self.nvml, "MACHINE", None)
        return spec.machine_name if spec is not None else None

    # ------------------------------------------------------------- plumbing

    def _call(self, what: str, fn: Callable[..., T], *args: Any) -> T:
        """Call an NVML function, turning NVMLError into a MigperfError about ``what``."""
        try:
            return fn(*args)
        except self.nvml.NVMLError as exc:
            raise self._translate(what, exc) from exc

    def _translate(self, what: str, exc: Any) -> errors.MigperfError:
        n = self.nvml
        reason = str(exc)
        msg = f"cannot {what}: {reason}"
        if isinstance(exc, (n.NVMLError_LibraryNotFound, n.NVMLError_DriverNotLoaded)):
            return errors.NvmlUnavailableError(
                f"cannot {what}: the NVIDIA driver is not available ({reason})",
                hint="install the NVIDIA driver (nvidia-smi must work), or use "
                f"`migperf --simulate {FALLBACK_MODEL} ...` to run on a simulated GPU",
            )
        if isinstance(exc, n.NVMLError_NoPermission):
            return errors.NvmlPermissionError(
                msg,
                hint="run as root, or grant the MIG config capability "
                "(/proc/driver/nvidia/capabilities/mig/config); the same call needs "
                "`sudo nvidia-smi mig ...`",
            )
        if isinstance(exc, n.NVMLError_InUse):
            return errors.GpuInUseError(
                msg,
                hint="stop the processes using it (see `nvidia-smi` or `migperf mig show`) "
                "and destroy its compute instances first, or pass --force where offered",
            )
        if isinstance(exc, n.NVMLError_InsufficientResources):
            return errors.InsufficientResourcesError(
                msg,
                hint="free the slices it needs (`migperf mig reset`), or pick a layout "
                "from `migperf mig layouts`",
            )
        if isinstance(exc, n.NVMLError_ResetRequired):
            return errors.ResetRequiredError(
                msg, hint="reset the GPU (`nvidia-smi --gpu-reset -i N`) or reboot"
            )
        if isinstance(exc, n.NVMLError_NotSupported):
            return errors.MigNotSupportedError(
                msg,
                hint="check that the GPU supports MIG and that MIG mode is enabled "
                "(`migperf gpus`; `nvidia-smi -i N -mig 1` enables it)",
            )
        if isinstance(exc, n.NVMLError_NotFound):
            return errors.GpuNotFoundError(msg, hint="list what exists with `migperf mig show`")
        if isinstance(exc, n.NVMLError_InvalidArgument):
            return errors.NvmlCallError(
                msg,
                hint="the instance may have been destroyed meanwhile; re-run `migperf mig show`",
            )
        return errors.NvmlCallError(msg, hint="check `nvidia-smi` and the kernel log (dmesg)")

    def require_writable(self, what: str) -> None:
        """Raise ReadOnlyError when read-only mode is on; ``what`` names the refused change."""
        if self.read_only:
            raise errors.ReadOnlyError(
                f"refusing to {what}: migperf is in read-only mode",
                hint="drop --read-only / unset MIGPERF_READ_ONLY to allow changes to the GPU",
            )

    def _handle(self, gpu_index: int) -> Any:
        count = self.gpu_count()
        if not 0 <= gpu_index < count:
            raise errors.GpuNotFoundError(
                f"GPU {gpu_index} does not exist: this machine has {count} GPU(s)"
                + (f" (0-{count - 1})" if count else ""),
                hint="list them with `migperf gpus`",
            )
        return self._call(
            f"get a handle for GPU {gpu_index}", self.nvml.nvmlDeviceGetHandleByIndex, gpu_index
        )

    def _gi_handle(self, gpu_index: int, gi_id: int) -> Any:
        h = self._handle(gpu_index)
        return self._call(
            f"find GPU instance {gi_id} on GPU {gpu_index}",
            self.nvml.nvmlDeviceGetGpuInstanceById,
            h,
            gi_id,
        )

    # --------------------------------------------------------------- system

    def driver_version(self) -> str:
        """The driver version (``nvidia-smi --query-gpu=driver_version``)."""
        return self._call("read the driver version", self.nvml.nvmlSystemGetDriverVersion)

    def cuda_driver_version(self) -> int | None:
        """The CUDA version the driver supports, e.g. 13000, or None if unknown."""
        try:
            return int(self.nvml.nvmlSystemGetCudaDriverVersion())
        except self.nvml.NVMLError:
            return None

    def gpu_count(self) -> int:
        """Number of physical GPUs (``nvidia-smi -L`` without the MIG lines)."""
        if self._gpu_count is None:
            self._gpu_count = int(self._call("count GPUs", self.nvml.nvmlDeviceGetCount))
        return self._gpu_count
