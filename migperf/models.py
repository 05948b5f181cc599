"""The two pydantic base classes every migperf schema builds on.

* :class:`FrozenModel`: an immutable value that crosses a boundary (a
  worker's result, a telemetry series). Unknown fields are ignored, so an old
  reader still loads a newer document.
* :class:`StrictModel`: user input (experiment and demand files). Immutable,
  and an unknown field is an error, so a misspelt key is reported with its
  file and line instead of being silently ignored.

Example::

    class LatencySpec(StrictModel):
        latency_ms: float
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["FrozenModel", "StrictModel"]


class FrozenModel(BaseModel):
    """An immutable pydantic model; unknown fields are ignored."""

    model_config = ConfigDict(frozen=True)


class StrictModel(BaseModel):
    """An immutable pydantic model for user input; unknown fields are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)
