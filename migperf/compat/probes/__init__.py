"""Check processes of the compatibility matrix: one module per framework or server.

Each ``*_probe`` module offers a :class:`~migperf.compat.probes.kit.Probe` (its
check table); ``python -m migperf.compat.probes MODULE:NAME CHECKS`` runs checks
in a process of their own and prints one JSON line per check. These modules
import the frameworks (torch, onnxruntime, jax, tensorflow, paddle, ray), and
only ever inside a check process the runner started, never in the CLI's.
"""

from __future__ import annotations

from migperf.compat.probes.kit import CONTEXT_ENV, Context, ExpectedFail, Probe, Skip

__all__ = ["CONTEXT_ENV", "Context", "ExpectedFail", "Probe", "Skip"]
