"""One built model kept per worker process, so a warm worker builds it once for many runs.

A warm worker (:mod:`migperf.bench.warm`) serves consecutive runs on one
device. Runs that differ only in what feeds the model (batch size, sequence
length, scenario, repeat) share its weights: :func:`cached_model` returns the
model built by an earlier run when the key (workload, effective
configuration, device) is the same, and builds it otherwise, dropping the
previous one first, so a process never holds two models. In a fresh worker
(one process per run) the cache only ever sees one run.

Nothing here imports torch; the build function does.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Hashable
from typing import Any

__all__ = ["cache_hits", "cached_model", "clear_models", "keep_only"]

_ENTRY: list[Any] = []  # [key, model] or empty
_HITS = [0]


def cached_model(key: Hashable, build: Callable[[], Any]) -> Any:
    """The model for ``key``: the one an earlier run of this process built, else ``build()``.

    Args:
        key: What makes two models the same (workload, configuration, device).
        build: Builds the model on its device.

    Returns:
        The model (the caller sets its train/eval mode, as every run does).
    """
    if _ENTRY and _ENTRY[0] == key:
        _HITS[0] += 1
        return _ENTRY[1]
    clear_models()
    model = build()
    _ENTRY[:] = [key, model]
    return model


def cache_hits() -> int:
    """How many :func:`cached_model` calls of this process reused a model (built nothing)."""
    return _HITS[0]


def keep_only(workload: str) -> None:
    """Drop the kept model unless it is ``workload``'s (a run of another workload needs the memory)."""
    if _ENTRY and not (isinstance(_ENTRY[0], tuple) and _ENTRY[0][:1] == (workload,)):
        clear_models()


def clear_models() -> None:
    """Drop the kept model (before a different one is built, or when the worker retires).

    Its memory is free when this returns (an emulated slice's limit counts
    it): the collection frees its cycles too (the model is never frozen, see
    :func:`migperf.bench.worker_kit.freeze_imports`).
    """
    had = bool(_ENTRY)
    _ENTRY.clear()
    if had:
        gc.collect()
