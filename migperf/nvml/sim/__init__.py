"""A simulated NVML that is a drop-in for nvidia-ml-py's ``pynvml`` module.

:func:`simulated_pynvml` returns a module object with every public name of
``pynvml``: the same constants, ctypes structs and exception classes (the very
same objects, so ``except pynvml.NVMLError_InUse`` catches simulated errors),
and the same functions. The functions are pynvml's own wrapper code re-bound
to a namespace whose ``nvmlLib`` is :class:`~migperf.nvml.sim.lib.SimNvmlLib`
instead of ``libnvidia-ml.so.1``. So the simulation reproduces pynvml's exact
call surface, including its quirks (``nvmlDeviceIsMigDeviceHandle`` returning a
``c_uint``, two-call placement buffers, versioned structs), and migperf's NVML
facade runs the same code path against it as against a real driver.

Example::

    nvml = simulated_pynvml("a100-80gb:8")
    nvml.nvmlInit()
    h = nvml.nvmlDeviceGetHandleByIndex(0)
    nvml.nvmlDeviceGetName(h)  # 'NVIDIA A100-SXM4-80GB'

Other programs use it without changing a line: :func:`patched` makes
``import pynvml`` in this process give the simulator,
:mod:`~migperf.nvml.sim.intercept` does it for another process
(``migperf --simulate SPEC sim exec -- COMMAND``), and
:mod:`~migperf.nvml.sim.pytest_plugin` gives each test its own machine
(the ``simulated_gpus`` fixture).
"""

from __future__ import annotations

import functools
import sys
import threading
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pynvml

from migperf.nvml.sim.lib import SimNvmlLib
from migperf.nvml.sim.state import MachineSpec, MachineState, parse_machine_spec

__all__ = [
    "MachineSpec",
    "MachineState",
    "SimNvmlLib",
    "parse_machine_spec",
    "patched",
    "simulated_pynvml",
]

# Real drivers give these codes strings through nvmlErrorString; pynvml has no
# built-in text for them, so without a library str() would read "NVML Error
# with code 19". Teach the shared table the driver's words (docs/reference/mig-facts.md 8.7).
pynvml.NVMLError._errcode_to_string.setdefault(pynvml.NVML_ERROR_IN_USE, "In use by another client")
pynvml.NVMLError._errcode_to_string.setdefault(
    pynvml.NVML_ERROR_INSUFFICIENT_RESOURCES, "Insufficient Resources"
)

_cache: dict[tuple[str, str], types.ModuleType] = {}
_cache_lock = threading.Lock()


def _rebind(func: Any, namespace: dict[str, Any]) -> Any:
    """A copy of a pynvml function whose globals are ``namespace``."""
    inner = getattr(func, "__wrapped__", None)
    if inner is not None and func.__closure__:
        # A decorated wrapper (convertStrBytes, throwOnVersionMismatch): rebuild
        # the inner function, then re-apply the same decorator around it.
        new_inner = _rebind(inner, namespace)
        for decorator_name in ("convertStrBytes", "throwOnVersionMismatch"):
            decorator = getattr(pynvml, decorator_name, None)
            if decorator is not None and decorator(inner).__code__ is func.__code__:
                return decorator(new_inner)
        return func
    if func.__closure__:
        return func
    new = types.FunctionType(func.__code__, namespace, func.__name__, func.__defaults__)
    new.__kwdefaults__ = func.__kwdefaults__
    new.__doc__ = func.__doc__
    new.__qualname__ = func.__qualname__
    new.__module__ = namespace["__name__"]
    return functools.update_wrapper(new, func, assigned=("__doc__",), updated=())


def _own_code(func: Any) -> Any:
    """pynvml's own function behind a monkey-patch of it.

    gpustat, for one, replaces ``pynvml._nvmlGetFunctionPointer`` with a
    ``functools.wraps`` wrapper that looks like pynvml's but reads its own
    module's globals; the simulated module re-binds the original under it.
    """
    own = func
    while own is not None and getattr(own, "__code__", None) is not None:
        if own.__code__.co_filename == pynvml.__file__:
            return own
        own = getattr(own, "__wrapped__", None)
    return func


def build_module(spec: MachineSpec, root: Path | None = None) -> types.ModuleType:
    """Build a fresh pynvml-compatible module for one simulated machine."""
    module = types.ModuleType(f"migperf.nvml.sim[{spec.machine_name}]")
    ns = module.__dict__
    for name, value in vars(pynvml).items():
        if name in ("__name__", "__loader__", "__spec__", "__file__", "__cached__"):
            continue
        ns[name] = value
    for name, value in vars(pynvml).items():
        if isinstance(value, types.FunctionType) and value.__module__ == pynvml.__name__:
            ns[name] = _rebind(_own_code(value), ns)
    lib = SimNvmlLib(MachineState(spec, root))
    ns["nvmlLib"] = lib
    ns["_nvmlGetFunctionPointer_cache"] = {}
    ns["_nvmlLib_refcount"] = 0
    ns["libLoadLock"] = threading.Lock()
    ns["SIMULATED"] = True
    ns["MACHINE"] = spec
    ns["sim_lib"] = lib
    return module


def simulated_pynvml(spec: str | MachineSpec, root: Path | None = None) -> types.ModuleType:
    """The pynvml-compatible module for a simulated machine (cached per process).

    Args:
        spec: A ``--simulate`` value such as ``"a100-80gb:8"`` or a parsed spec.
        root: migperf state directory (default: :func:`migperf.paths.state_dir`).

    Raises:
        UsageError: when ``spec`` names an unknown model or option.
    """
    parsed = parse_machine_spec(spec) if isinstance(spec, str) else spec
    key = (parsed.machine_name, str(root))
    with _cache_lock:
        module = _cache.get(key)
        if module is None:
            module = build_module(parsed, root)
            _cache[key] = module
        return module


def clear_cache() -> None:
    """Forget cached simulated modules (tests that change the state directory)."""
    with _cache_lock:
        _cache.clear()


@contextmanager
def patched(spec: str | MachineSpec, root: Path | None = None) -> Iterator[types.ModuleType]:
    """Make ``import pynvml`` in this process give a simulated machine, inside the block.

    ``sys.modules["pynvml"]`` is the simulated module (:func:`simulated_pynvml`)
    until the block ends, then whatever it was before. Code that imports
    pynvml inside the block gets the simulator; a module that imported it
    earlier keeps its reference to the real one (import it inside the block,
    or reload it).

    Example::

        with patched("a100-80gb:2") as pynvml:
            import my_monitor           # its `import pynvml` gets the simulator
            my_monitor.report()

    Args:
        spec: A ``--simulate`` value such as ``"a100-80gb:2"`` or a parsed spec.
        root: migperf state directory (default: :func:`migperf.paths.state_dir`).

    Raises:
        UsageError: when ``spec`` names an unknown model or option.
    """
    module = simulated_pynvml(spec, root)
    missing = object()
    before = sys.modules.get("pynvml", missing)
    sys.modules["pynvml"] = module
    try:
        yield module
    finally:
        if before is missing:
            sys.modules.pop("pynvml", None)
        else:
            sys.modules["pynvml"] = before  # type: ignore[assignment]
