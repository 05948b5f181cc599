"""Helpers for experiment tests: tiny, fast configs on the simulator."""

from __future__ import annotations

from pathlib import Path

import pytest

TINY = """
name: {name}
gpus: [0]
layouts: {layouts}
instances: {instances}
repeats: {repeats}
stop: {{warmup_iterations: 1, min_iterations: 3, min_duration_s: 0.0, max_duration_s: 5}}
timeout_s: {timeout}
jobs:
  - workload: gemm
    model_args: {{n: 32}}
    sweep: {{batch_size: {batch_sizes}}}
{extra}
"""


@pytest.fixture
def tiny_config(tmp_path: Path):  # type: ignore[no-untyped-def]
    def make(
        name: str = "tiny",
        layouts: str = '["0", "9,9"]',
        instances: str = "first",
        repeats: int = 1,
        timeout: float = 60,
        batch_sizes: str = "[1, 2]",
        extra: str = "",
    ) -> Path:
        path = tmp_path / f"{name}.yaml"
        path.write_text(
            TINY.format(
                name=name,
                layouts=layouts,
                instances=instances,
                repeats=repeats,
                timeout=timeout,
                batch_sizes=batch_sizes,
                extra=extra,
            )
        )
        return path

    return make
