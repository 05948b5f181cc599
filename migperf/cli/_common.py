"""What every CLI command shares: global options, output helpers, error display."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

import typer
from typer.core import TyperCommand, TyperGroup, TyperOption

from migperf.errors import MigperfError, UsageError

if TYPE_CHECKING:
    from rich.console import Console

    from migperf.nvml.facade import Nvml

#: The ``--results`` option every command that reads or writes the store shares.
ResultsOption = Annotated[
    Path, typer.Option("--results", help="SQLite results store.", envvar="MIGPERF_RESULTS")
]
DEFAULT_RESULTS = Path("results") / "migperf.db"


@dataclass
class CliState:
    """Global options, kept on the click context (``ctx.obj``)."""

    simulate: str | None = None
    read_only: bool | None = None


def state(ctx: typer.Context) -> CliState:
    """The global options of this invocation."""
    root = ctx.find_root()
    if not isinstance(root.obj, CliState):
        root.obj = CliState()
    return root.obj


def stdout() -> Console:
    """A rich console on stdout (tables for people)."""
    from rich.console import Console

    console = Console(highlight=False)
    if not console.is_terminal:
        # Piped output (logs, CI, `| less`) should not truncate UUIDs and
        # profile names to an imaginary 80-column terminal; COLUMNS still wins.
        columns = os.environ.get("COLUMNS", "")
        width = int(columns) if columns.isascii() and columns.isdigit() else 200
        console = Console(highlight=False, width=max(40, width))
    return console


def stderr() -> Console:
    """A rich console on stderr (notes, progress, errors)."""
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def _strict(value: Any) -> Any:
    """NaN and infinities as null: JSON has no such numbers, and strict parsers refuse them."""
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    return value


def print_json(data: Any) -> None:
    """Machine-readable output: strict JSON on stdout (no NaN), nothing else."""
    sys.stdout.write(json.dumps(_strict(data), indent=2, allow_nan=False, default=str) + "\n")


def open_for_reading(ctx: typer.Context, fallback: str | None = None) -> Nvml:
    """NVML for a read-only command: falls back to a simulated GPU when no driver is found.

    ``fallback``: the simulated machine to use then (default
    :data:`migperf.nvml.FALLBACK_MODEL`; an experiment's own, see
    :func:`migperf.experiments.fallback.simulated_machine_for`).
    """
    from migperf.nvml import open_nvml

    st = state(ctx)
    nvml = open_nvml(st.simulate, allow_fallback=True, read_only=st.read_only, fallback=fallback)
    if nvml.fallback_reason:
        stderr().print(f"NOTE: {nvml.fallback_reason}. Every result is marked simulated.")
    return nvml


def subcommand(ctx: typer.Context) -> str:
    """``mig apply`` for ``migperf mig apply``, however migperf was started (``python -m migperf``)."""
    root = ctx.find_root().command_path
    return ctx.command_path[len(root) :].strip() or "this command"


def open_for_changes(ctx: typer.Context) -> Nvml:
    """NVML for a command that changes a GPU: never falls back to the simulator.

    In read-only mode the command is refused here, before it looks at anything.
    """
    from migperf.errors import ReadOnlyError
    from migperf.nvml import env_read_only, open_nvml

    st = state(ctx)
    if st.read_only or (st.read_only is None and env_read_only()):
        command = subcommand(ctx)
        raise ReadOnlyError(
            f"refusing `migperf {command}`: read-only mode is on (--read-only or MIGPERF_READ_ONLY)",
            hint="this command changes the GPU; run it without --read-only, or use --dry-run to see the plan",
        )
    from migperf.errors import NvmlUnavailableError
    from migperf.nvml import FALLBACK_MODEL

    try:
        return open_nvml(st.simulate, allow_fallback=False, read_only=st.read_only)
    except NvmlUnavailableError as exc:
        # Never change a simulated GPU in place of a real one the user may think
        # they have: name the exact --simulate that acts on the machine the
        # read-only commands showed.
        command = subcommand(ctx)
        raise NvmlUnavailableError(
            f"{exc.message}; `migperf {command}` changes a GPU, so it does not fall back to a simulated one",
            hint=f"to change the simulated {FALLBACK_MODEL} that `migperf gpus` shows here, run "
            f"`migperf --simulate {FALLBACK_MODEL} {command} ...`; on a GPU node, install the NVIDIA "
            "driver (nvidia-smi must work)",
        ) from exc


def simulate_or_fallback(ctx: typer.Context, device: str | None) -> str | None:
    """The simulated machine a benchmark on ``device`` uses: ``--simulate``, or the fallback.

    With no ``--simulate`` and no NVIDIA driver, a GPU device (an index or a
    MIG UUID) means the same simulated GPU every other command falls back to;
    the choice is printed and kept on the context so telemetry agrees.
    """
    import os

    from migperf.nvml import FALLBACK_MODEL, SIMULATE_ENV

    st = state(ctx)
    spec = st.simulate or os.environ.get(SIMULATE_ENV) or None
    if spec or (device or "").strip().lower() in ("", "cpu", "auto"):
        return spec  # auto and cpu measure this host's CPU, honestly not a GPU
    from migperf.errors import NvmlUnavailableError
    from migperf.nvml import open_nvml

    try:
        open_nvml(None, allow_fallback=False, read_only=True).shutdown()
        return None
    except NvmlUnavailableError as exc:
        stderr().print(
            f"NOTE: {exc.message}; using a simulated {FALLBACK_MODEL} instead "
            f"(as `--simulate {FALLBACK_MODEL}` would).",
            soft_wrap=True,
            markup=False,
        )
        st.simulate = FALLBACK_MODEL
        return FALLBACK_MODEL


def report_error(exc: MigperfError) -> None:
    """Print a MigperfError as ``ERROR: ...`` and ``HINT: ...`` on stderr."""
    from rich.markup import escape

    err = stderr()
    # Messages quote config text (`layouts: [current]`, `migperf[ray]`): not markup.
    err.print(f"[bold red]ERROR:[/] {escape(exc.message)}", markup=True, soft_wrap=True)
    if exc.hint:
        err.print(f"[bold]HINT:[/] {escape(exc.hint)}", markup=True, soft_wrap=True)


#: click's UsageError as typer ships it (typer may vendor its own click): the base
#: of every command-line mistake (unknown option or command, bad value).
CLICK_USAGE_ERROR: type[Exception] = next(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError"
)


class PlainOption(TyperOption):
    """An optional, single-valued ``str`` or ``bool`` option whose value is used as given.

    A value that is already of the option's type (a string from the command
    line or the environment, a flag's bool) or ``None`` (not given) has nothing
    to convert; typer would still build a pydantic TypeAdapter for it, and
    import pydantic (~40 ms), before even ``migperf gpus --help`` can answer.
    Any other value goes through typer's coercion as before.
    """

    @classmethod
    def adopt(cls, param: Any) -> None:
        """Make ``param`` a PlainOption if it is a plain typer option of one ``str`` or ``bool``."""
        # Only typer releases that convert through pydantic have ``type_descriptor``
        # (0.2x); older ones (0.12-0.1x, e.g. on GPU images) need no help, and
        # must not be broken by looking for it.
        descriptor = getattr(param, "type_descriptor", None)
        if (
            type(param) is TyperOption
            and getattr(descriptor, "annotation", None) in (str, bool)
            and not (
                getattr(param, "required", True)
                or getattr(param, "multiple", True)
                or getattr(param, "nargs", 0) != 1
            )
        ):
            param.__class__ = cls

    def process_value(self, ctx: Any, value: Any) -> Any:
        if value is not None and not isinstance(value, self.type_descriptor.annotation):
            return super().process_value(ctx, value)
        return value if self.callback is None else self.callback(ctx, self, value)


@dataclass(frozen=True)
class LazyCommand:
    """A command of a :class:`MigperfGroup` whose module is imported only when the command is used.

    ``target`` is ``"package.module:attribute"``: a :class:`typer.Typer` (a
    command group) or a command function. ``short_help`` is its line in the
    group's ``--help``, shown without importing it; a test checks it against
    the real command's.
    """

    target: str
    short_help: str


class MigperfGroup(TyperGroup):
    """Top-level command group: the one place library errors and stop signals become exit codes.

    SIGTERM and SIGHUP stop a command the way Ctrl-C does (a layout change in
    flight is rolled back, a run restores its layouts), and the exit code says
    which signal it was: 128 + its number, as a shell reports it.

    Commands named in :attr:`lazy_commands` are imported on first use
    (:meth:`get_command`), so ``migperf --help`` and a command that needs one
    module do not import every other command's module (and what it imports).
    """

    #: Name -> :class:`LazyCommand`, in the order ``--help`` lists them; commands
    #: added to the group directly come first when used, and are listed after these.
    lazy_commands: ClassVar[Mapping[str, LazyCommand]] = {}

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        # The group's own options are processed before any command runs, even
        # `migperf gpus --help`: no pydantic for them (PlainOption).
        for param in self.params:
            PlainOption.adopt(param)

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)
        PlainOption.adopt(option)
        return option

    def list_commands(self, ctx: Any) -> list[str]:
        """Every command's name, the lazy ones included, without importing any."""
        return [*self.lazy_commands, *(n for n in self.commands if n not in self.lazy_commands)]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        """The command ``cmd_name``: built from its module, imported now, if it is a lazy one."""
        command = self.commands.get(cmd_name)
        lazy = self.lazy_commands.get(cmd_name)
        if command is None and lazy is not None:
            command = self._load(cmd_name, lazy)
            self.commands[cmd_name] = command
        return command

    def _load(self, name: str, lazy: LazyCommand) -> Any:
        import importlib

        module, _, attribute = lazy.target.partition(":")
        target = getattr(importlib.import_module(module), attribute)
        # typer builds the click command, with this group's settings, as
        # add_typer / command on the group's own app would have.
        # Settings an older typer (0.12-0.15, e.g. on GPU images) lacks are not passed.
        settings = {
            key: getattr(self, key)
            for key in ("rich_markup_mode", "suggest_commands")
            if hasattr(self, key)
        }
        holder = typer.Typer(add_completion=False, **settings)
        if isinstance(target, typer.Typer):
            holder.add_typer(target, name=name)
        else:
            holder.command(name)(target)
        return typer.main.get_group(holder).commands[name]

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        """The ``Commands:`` section, as click writes it; a lazy command's line is its ``short_help``."""
        rows: list[tuple[str, Any]] = []
        for name in self.list_commands(ctx):
            command = self.commands.get(name)
            if command is None:
                # A stand-in that shortens the line exactly as the real command would.
                command = TyperCommand(name=name, help=self.lazy_commands[name].short_help)
            if not command.hidden:
                rows.append((name, command))
        if rows:
            limit = formatter.width - 6 - max(len(name) for name, _ in rows)
            with formatter.section("Commands"):
                formatter.write_dl([(name, c.get_short_help_str(limit)) for name, c in rows])

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        """The command ``args[0]`` names; a mistyped one is answered with the close names, lazy ones included."""
        try:
            return super().resolve_command(ctx, args)
        except CLICK_USAGE_ERROR as exc:
            message = str(getattr(exc, "message", ""))
            if getattr(self, "suggest_commands", True) and args and message.startswith("No such command"):
                from difflib import get_close_matches

                matches = get_close_matches(args[0], self.list_commands(ctx))
                if matches:
                    head = message.split(" Did you mean")[0].rstrip(".")
                    suggestions = ", ".join(repr(m) for m in matches)
                    exc.message = f"{head}. Did you mean {suggestions}?"  # type: ignore[attr-defined]
            raise

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        """The top-level options; a mistake in them is reported like any other."""
        try:
            return list(super().parse_args(ctx, args))
        except CLICK_USAGE_ERROR as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":
                raise  # no arguments: the help, as click shows it
            message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
            report_error(UsageError(message, hint="see `migperf --help`"))
            raise typer.Exit(2) from None

    def invoke(self, ctx: Any) -> Any:
        import signal

        from migperf.procs import signals_interrupt

        stopped: list[int] = []
        try:
            with signals_interrupt(stopped):
                return super().invoke(ctx)
        except MigperfError as exc:
            report_error(exc)
            raise typer.Exit(exc.exit_code) from None
        except CLICK_USAGE_ERROR as exc:
            # Usage mistakes get the same ERROR/HINT form as every other error.
            if type(exc).__name__ == "NoArgsIsHelpError":
                raise  # no arguments: the help, as click shows it
            ctx_of = getattr(exc, "ctx", None)
            path = ctx_of.command_path if ctx_of is not None else "migperf"
            message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
            report_error(UsageError(message, hint=f"see `{path} --help`"))
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            signum = stopped[0] if stopped else int(signal.SIGINT)
            stderr().print(
                f"migperf stopped ({signal.Signals(signum).name}); a layout change in flight "
                "was rolled back",
                markup=False,
            )
            raise typer.Exit(128 + signum) from None
