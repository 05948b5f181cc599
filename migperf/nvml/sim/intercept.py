"""``import pynvml`` in another program, answered by the simulated driver.

``migperf --simulate SPEC sim exec -- COMMAND ...`` runs COMMAND with a
directory in front of ``PYTHONPATH`` that holds a one-file ``pynvml`` module
(:data:`SHIM_SOURCE`). In any Python process that inherits the environment
(COMMAND, and the Python processes it starts), ``import pynvml`` runs that
file: it loads nvidia-ml-py's real ``pynvml`` for the simulator to re-bind,
then puts the simulated module (:func:`migperf.nvml.sim.simulated_pynvml`)
in ``sys.modules["pynvml"]``, so the importer gets it. The machine is the one
``MIGPERF_SIM_PYNVML`` names, over the state directory ``MIGPERF_STATE_DIR``
names: the same state ``migperf --simulate SPEC`` uses, so a layout made with
``migperf mig apply`` is what the program sees.

The command runs as an argument list, never through a shell.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import types
from collections.abc import Sequence
from pathlib import Path

from migperf.errors import UsageError
from migperf.nvml.sim.state import parse_machine_spec
from migperf.paths import state_dir

#: The machine a shimmed ``import pynvml`` simulates (a ``--simulate`` value).
SPEC_ENV = "MIGPERF_SIM_PYNVML"

SHIM_SOURCE = '''\
"""Written by `migperf sim exec`: `import pynvml` gets migperf's simulated driver."""
import importlib.machinery
import importlib.util
import os
import sys


def _simulated():
    here = os.path.dirname(os.path.abspath(__file__))
    del sys.modules[__name__]
    path = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    spec = importlib.machinery.PathFinder.find_spec("pynvml", path)
    if spec is None or spec.loader is None:
        raise ImportError(
            "migperf sim exec: nvidia-ml-py (pynvml) is not installed for " + sys.executable
        )
    real = importlib.util.module_from_spec(spec)
    sys.modules["pynvml"] = real
    spec.loader.exec_module(real)
    try:
        from migperf.nvml.sim.intercept import module_from_env
    except ImportError as exc:
        raise ImportError(
            "migperf sim exec: %s cannot import migperf (%s); run the program with the "
            "Python migperf is installed in" % (sys.executable, exc)
        ) from exc
    return module_from_env()


sys.modules[__name__] = _simulated()
'''


def module_from_env() -> types.ModuleType:
    """The simulated ``pynvml`` for the machine ``MIGPERF_SIM_PYNVML`` names (the shim's call).

    Raises:
        ImportError: the variable is unset (the shim is on the path without ``sim exec``).
        UsageError: it names no valid machine.
    """
    spec = os.environ.get(SPEC_ENV, "").strip()
    if not spec:
        raise ImportError(
            f"migperf's pynvml shim is on the path but {SPEC_ENV} is unset; "
            "run the program with `migperf --simulate SPEC sim exec -- ...`"
        )
    from migperf.nvml.sim import simulated_pynvml

    return simulated_pynvml(spec)


def write_shim(directory: Path) -> Path:
    """Write the ``pynvml.py`` shim into ``directory``; returns its path."""
    path = directory / "pynvml.py"
    path.write_text(SHIM_SOURCE, encoding="utf-8")
    return path


def simulated_environment(
    spec: str, shim_dir: Path, *, root: Path | None = None, base: dict[str, str] | None = None
) -> dict[str, str]:
    """The environment in which ``import pynvml`` simulates ``spec``.

    Args:
        spec: A ``--simulate`` value.
        shim_dir: Where :func:`write_shim` wrote the shim.
        root: migperf state directory (default: :func:`migperf.paths.state_dir`).
        base: The environment to extend (default: this process's).
    """
    env = dict(os.environ if base is None else base)
    path = env.get("PYTHONPATH", "")
    env["PYTHONPATH"] = str(shim_dir) + (os.pathsep + path if path else "")
    env[SPEC_ENV] = spec
    # A migperf started inside sees the same machine.
    env["MIGPERF_SIMULATE"] = spec
    env["MIGPERF_STATE_DIR"] = str((root or state_dir()).expanduser().resolve())
    return env


def run_simulated(spec: str, command: Sequence[str], *, root: Path | None = None) -> int:
    """Run ``command`` with ``import pynvml`` answered by the simulated machine ``spec``.

    Args:
        spec: A ``--simulate`` value (``a100-80gb:2``).
        command: The program and its arguments; run without a shell.
        root: migperf state directory (default: :func:`migperf.paths.state_dir`).

    Returns:
        The command's exit code (128 + N when signal N ended it).

    Raises:
        UsageError: ``spec`` is invalid, ``command`` is empty or not found.
    """
    parse_machine_spec(spec)
    if not command:
        raise UsageError(
            "sim exec needs a command to run",
            hint="e.g. migperf --simulate a100-80gb sim exec -- nvitop --once",
        )
    program = command[0]
    if os.sep not in program and shutil.which(program) is None:
        raise UsageError(
            f"sim exec: command not found: {program}",
            hint="give a program on PATH or a path to one, e.g. -- python my_monitor.py",
        )
    with tempfile.TemporaryDirectory(prefix="migperf-sim-exec-") as tmp:
        write_shim(Path(tmp))
        env = simulated_environment(spec, Path(tmp), root=root)
        try:
            child = subprocess.Popen(list(command), env=env)
        except OSError as exc:
            raise UsageError(
                f"sim exec: cannot run {program}: {exc.strerror or exc}",
                hint="check the command and its permissions",
            ) from None
        try:
            code = child.wait()
        except KeyboardInterrupt:
            # migperf was told to stop (Ctrl-C, SIGTERM): so is the command.
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
            child.wait()
            raise
    return 128 - code if code < 0 else code
