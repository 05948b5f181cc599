"""``migperf run --executor ray[:ADDRESS]``: the sweep on every node of a cluster.

The plan, the per-node progress and the summary on stderr; the library
(:mod:`migperf.experiments.ray_executor`) does the work. ``migperf run``
calls :func:`run_on_cluster` for any executor other than ``local``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer

from migperf.cli._common import state, stderr, stdout


def run_on_cluster(
    ctx: typer.Context,
    cfg: Any,
    config: Path,
    executor: Any,
    results: Path,
    *,
    resume: bool,
    dry_run: bool,
) -> None:
    """Plan on every node, print the plan, run it, print what happened.

    Raises:
        typer.Exit: 130 when interrupted.
    """
    from migperf.errors import ReadOnlyError
    from migperf.experiments.executor import open_executor
    from migperf.experiments.plan import CURRENT
    from migperf.results.store import ResultsStore

    st = state(ctx)
    err = stderr()
    with open_executor(executor, simulate=st.simulate, read_only=st.read_only) as ex:
        plan = ex.plan(cfg, str(config))
        nodes = plan.nodes
        simulated = [n for n in nodes.values() if n.simulated]
        sim = (
            f"; {len(simulated)} of them SIMULATED (workloads run on the CPU; results marked simulated)"
            if simulated
            else ""
        )
        models = ", ".join(f"{m}: {len(ids)} node(s)" for m, ids in plan.models().items())
        err.print(
            f"{cfg.name}: {len(plan.runs)} run(s) on {len(nodes)} node(s) of the Ray cluster "
            f"({models}){sim}; estimated {plan.estimated_duration_s() / 60:.1f} min",
            soft_wrap=True,
        )
        if dry_run:
            _print_plan(plan)
            return
        changes = any(layout.strip().lower() != CURRENT for layout in cfg.layouts)
        if changes and st.read_only and len(simulated) < len(nodes):
            raise ReadOnlyError(
                f"refusing to run {config}: it changes MIG layouts and read-only mode is on",
                hint="use `layouts: [current]` to measure the GPUs as they are, or drop --read-only",
            )
        with ResultsStore(results) as store:
            report = ex.run(plan, store, resume=resume, on_event=_ClusterProgress())
    for node in getattr(report, "nodes", []):
        where = f"node {node['node_id'][:12]} ({node['host']}, {node['model']})"
        if node["lost"]:
            state_text = "[red]LOST[/]: its journal restores its layouts at its next run"
        elif node["restored"] is None:
            state_text = "nothing to do"
        else:
            state_text = "layouts restored" if node["restored"] else "[red]layouts NOT restored[/]"
        err.print(
            f"  {where}: {node['stored']} ok, {node['failed']} failed; {state_text}",
            soft_wrap=True,
        )
    err.print(
        f"{'INTERRUPTED: ' if report.interrupted else ''}{report.stored} run(s) stored ok, "
        f"{report.failed} failed or skipped, {report.skipped_existing} already stored; results in "
        f"{results}. Wall {report.wall_s:.1f} s; measuring took {report.time_s['measure']:.1f} "
        f"node-seconds. Layouts {'restored on every node' if report.restored else 'NOT restored everywhere'}.",
        soft_wrap=True,
    )
    if report.interrupted:
        raise typer.Exit(130)


def _print_plan(plan: Any) -> None:
    console = stdout()
    for nid, keys in plan.assignment.items():
        node = plan.nodes[nid]
        console.print(f"{node.name}, {node.model}: {len(keys)} run(s)", markup=False)
        for key in keys:
            # Descriptions carry "[mps]", "[baseline]": not markup.
            console.print(f"  {plan.runs[key].description}", markup=False)
    idle = [n for nid, n in plan.nodes.items() if nid not in plan.assignment]
    for node in idle:
        console.print(f"{node.name}, {node.model}: nothing to run", markup=False)


class _ClusterProgress:
    """Progress on stderr, one line per event, prefixed by its node."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.err = stderr()

    def __call__(self, kind: str, **info: Any) -> None:
        from rich.markup import escape

        node = info.get("node")
        tag = escape(f"[{node.name}] ") if node is not None else ""
        info = {k: escape(v) if isinstance(v, str) else v for k, v in info.items()}
        say = self.err.print
        if kind == "nodes":
            for n in info["nodes"]:
                say(escape(f"[{n.name}] {n.model}{' (simulated)' if n.simulated else ''}"))
        elif kind == "node_start":
            what = f"{info['runs']} run(s)" if info["runs"] else "restoring from its journal"
            say(f"{tag}started: {what} (runner pid {info['pid']})")
        elif kind == "layout" and info.get("runs"):
            say(f"{tag}layout {info['index'] + 1}/{info['total']}: {info['layout']}")
        elif kind == "layout_failed":
            say(f"{tag}[red]layout failed on GPU {info['gpu']}[/]: {info['error']}", soft_wrap=True)
        elif kind == "run_done":
            elapsed = time.monotonic() - self.t0
            left = elapsed / info["done"] * (info["total"] - info["done"])
            tp = info.get("samples_per_s")
            metric = f"{tp:.1f} samples/s" if tp else (info.get("error") or "")
            say(
                f"{tag}run {info['done']}/{info['total']} {info['status']}: "
                f"{info['description']}: {metric} (~{left:.0f} s left)",
                soft_wrap=True,
            )
        elif kind == "node_lost":
            say(f"[red]{info['error']}[/] ({info['runs_left']} run(s) left)", soft_wrap=True)
        elif kind == "requeued":
            say(f"{tag}takes {info['runs']} run(s) of {escape(info['source'].name)}")
        elif kind == "restore_failed":
            say(
                f"{tag}[red]restoring GPU {info['gpu']} failed[/]: {info['error']}; "
                "run `migperf mig restore` on that node",
                soft_wrap=True,
            )
        elif kind == "recovered":
            say(f"{tag}found the journal of an interrupted run: its layouts will be restored")
        elif kind == "interrupted" and node is not None:
            say(f"{tag}stopped")
        elif kind == "interrupted":
            say(
                "[yellow]interrupted: stopping every node and restoring it; finished runs are stored[/]"
            )
        elif kind == "restored" and node is not None and info.get("gpus"):
            gpus = ", ".join(map(str, info["gpus"]))
            ok = "restored" if info.get("ok") else "[red]NOT restored[/]"
            say(f"{tag}layouts {ok} on GPU {gpus}")
        elif kind == "forced":
            say(
                "[red]not waiting for the nodes' last results; closing them (each restores its "
                "layouts; Ctrl-C again kills them, and each node's journal restores it at its "
                "next run)[/]"
            )
