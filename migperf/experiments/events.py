"""Progress events of an experiment, as plain data every executor emits alike.

The runner calls ``on_event(kind, **info)`` with its own objects (a
:class:`~migperf.experiments.sweep.RunPlan`, worker results). Executors hand
their callers the plain form from :func:`event_message` instead, the same on
this machine and on a cluster node, so one progress display serves both:

* ``started``: ``runs`` (to do), ``stored`` (done already, skipped).
* ``layout``: ``index``, ``total``, ``layout``, ``runs`` (to do).
* ``layout_failed``, ``restore_failed``: ``gpu``, ``error``.
* ``run_start``: ``key``, ``description``.
* ``run_done``: ``key``, ``description``, ``results`` (one
  ``{"status", "samples_per_s", "error", "role"}`` per worker; empty when the
  run failed before it measured), ``status`` and ``error`` (for those), and
  on a cluster ``done`` / ``total``.
* ``telemetry_off`` (``error``), ``telemetry_warning`` (``warning``),
  ``interrupted``, ``recovered`` (``path``), ``restored`` (``ok``, ``gpus``).
* A cluster adds ``node`` (a :class:`~migperf.experiments.cluster.assignment.ClusterNode`)
  to every event of a node, and ``nodes``, ``node_start``, ``node_lost``,
  ``requeued``, ``stopping``, ``forced``, ``node_done`` of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from migperf.experiments.sweep import RunPlan

__all__ = ["Event", "event_message", "plain_events"]

#: ``on_event(kind, **info)``.
Event = Callable[..., None]


def event_message(kind: str, info: Mapping[str, Any]) -> dict[str, Any]:
    """A runner event as plain JSON data: ``{"type": "event", "kind": kind, ...}``."""
    out: dict[str, Any] = {"type": "event", "kind": kind}
    run = info.get("run")
    roles: list[str] = []
    if isinstance(run, RunPlan):
        roles = ["neighbor" if m.role == "neighbor" else run.role for m in run.members]
    for name, value in info.items():
        if name == "run" and isinstance(value, RunPlan):
            out["key"] = value.run_key
            out["description"] = value.describe()
        elif name == "results":
            out["results"] = [
                {
                    "status": r.status,
                    "samples_per_s": r.throughput.samples_per_s if r.throughput else None,
                    "error": r.error.message if r.error else None,
                    "role": roles[i] if i < len(roles) else "job",
                }
                for i, r in enumerate(value)
            ]
        elif isinstance(value, (str, int, float, bool, type(None))):
            out[name] = value
        elif isinstance(value, (list, tuple)) and all(
            isinstance(v, (str, int, float)) for v in value
        ):
            out[name] = list(value)
    return out


def plain_events(on_event: Event) -> Event:
    """Wrap a plain-event callback so that the runner can call it with its objects."""

    def emit(kind: str, **info: Any) -> None:
        message = event_message(kind, info)
        message.pop("type")
        on_event(message.pop("kind"), **message)

    return emit
