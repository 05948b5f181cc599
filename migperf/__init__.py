"""migperf: benchmark deep-learning training and inference on NVIDIA MIG partitions."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
