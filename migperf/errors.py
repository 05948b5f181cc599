"""The MigperfError hierarchy.

Every error migperf raises on purpose is a :class:`MigperfError`. Each carries a
one-line ``message`` (what failed, on what, and why) and a ``hint`` (what to do
next, with the ``nvidia-smi`` equivalent when there is one). The CLI prints
them as ``ERROR: ...`` / ``HINT: ...`` and exits with ``exit_code``; library
code never prints.
"""

from __future__ import annotations


class MigperfError(Exception):
    """Base class of every error migperf reports to a user.

    Args:
        message: What failed, on what, and why.
        hint: What the user can do about it. May be empty.
    """

    #: Process exit code the CLI uses for this error.
    exit_code: int = 1

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(MigperfError):
    """The user's input (an option, a layout string, a config file) is invalid."""

    exit_code = 2


class ConfigError(UsageError):
    """A configuration file is malformed or fails validation."""


class NvmlUnavailableError(MigperfError):
    """NVML could not be loaded or initialised (no driver, no library)."""


class GpuNotFoundError(MigperfError):
    """A GPU, GPU instance, compute instance or MIG device does not exist."""


class MigNotSupportedError(MigperfError):
    """The GPU does not support MIG, or MIG mode is not enabled for the call."""


class NvmlPermissionError(MigperfError):
    """The caller lacks the privilege NVML requires (root or the mig/config capability)."""


class GpuInUseError(MigperfError):
    """The GPU or instance is held by running processes or other instances."""


class InsufficientResourcesError(MigperfError):
    """The requested instance does not fit in the GPU's free slices or engines."""


class ResetRequiredError(MigperfError):
    """A MIG mode change is pending and needs a GPU reset or reboot."""


class NvmlCallError(MigperfError):
    """An NVML call failed for a reason migperf has no more specific class for."""


class ReadOnlyError(MigperfError):
    """A command that changes a GPU was refused because read-only mode is on."""


class LockHeldError(MigperfError):
    """Another migperf process holds the per-GPU lock."""
