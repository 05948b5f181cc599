"""Stored results as pandas DataFrames, and exports.

:func:`load` returns a *tidy* frame: one row per (run, metric), with the run's
columns (experiment, GPU, layout, profile, workload, batch size, status, ...)
repeated on each row, and ``metric``, ``value``, ``unit``. Failed runs appear
once with ``metric`` empty, so they are never silently dropped. ``wide=True``
pivots to one row per run with one column per metric.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from migperf.errors import UsageError
from migperf.results.store import ResultsStore

if TYPE_CHECKING:
    import pandas as pd

RUN_COLUMNS = (
    "run_id",
    "run_key",
    "experiment",
    "config_hash",
    "started_unix",
    "finished_unix",
    "status",
    "error",
    "gpu_index",
    "gpu_name",
    "gpu_uuid",
    "driver_version",
    "layout",
    "profile",
    "mig_uuid",
    "device",
    "device_kind",
    "simulated",
    "workload",
    "task",
    "precision",
    "batch_size",
    "seq_len",
    "repeat",
    "params",
)


def load(path: Path | str, *, wide: bool = False, **filters: Any) -> pd.DataFrame:
    """Results of a store as a DataFrame.

    Args:
        path: The SQLite store.
        wide: One row per run, one column per metric (instead of tidy rows).
        **filters: Equality filters on run columns, e.g. ``workload="resnet50"``,
            ``status="ok"``, ``profile="1g.10gb"``; a list value means "any of".

    Raises:
        UsageError: a filter names an unknown column, or the store does not exist.
    """
    import pandas as pd

    p = Path(path)
    if not p.exists():
        raise UsageError(
            f"no results store at {p}",
            hint="run an experiment first (`migperf run CONFIG`), or pass --results",
        )
    where: list[str] = []
    params: list[Any] = []
    for key, value in filters.items():
        if key not in RUN_COLUMNS:
            raise UsageError(
                f"cannot filter on {key!r}", hint="filter on: " + ", ".join(RUN_COLUMNS)
            )
        values = value if isinstance(value, (list, tuple, set)) else [value]
        where.append(f"r.{key} IN ({','.join('?' * len(values))})")
        params.extend(values)
    sql = (
        "SELECT "
        + ", ".join(f"r.{c}" for c in RUN_COLUMNS)
        + ", m.name AS metric, m.value, m.unit "
        "FROM runs r LEFT JOIN metrics m ON m.run_id = r.run_id"
        + (" WHERE " + " AND ".join(where) if where else "")
        + " ORDER BY r.run_id, m.name"
    )
    with ResultsStore(p) as store:
        rows = store.query(sql, tuple(params))
    frame = pd.DataFrame([dict(r) for r in rows], columns=[*RUN_COLUMNS, "metric", "value", "unit"])
    frame["simulated"] = frame["simulated"].astype(bool)
    if not wide:
        return frame
    runs = frame[list(RUN_COLUMNS)].drop_duplicates("run_id").set_index("run_id")
    metrics = frame.dropna(subset=["metric"]).pivot(
        index="run_id", columns="metric", values="value"
    )
    return runs.join(metrics).reset_index()


def export(path: Path | str, out: Path, fmt: str, *, wide: bool = True, **filters: Any) -> int:
    """Write the results to ``out`` as csv, parquet or json; returns the row count.

    Raises:
        UsageError: unknown format, or parquet without pyarrow installed.
    """
    frame = load(path, wide=wide, **filters)
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        frame.to_csv(out, index=False)
    elif fmt == "json":
        frame.to_json(out, orient="records", indent=1)
    elif fmt == "parquet":
        try:
            frame.to_parquet(out, index=False)
        except ImportError:
            raise UsageError(
                "parquet export needs pyarrow", hint="pip install pyarrow, or use --format csv"
            ) from None
    else:
        raise UsageError(f"unknown export format {fmt!r}", hint="use csv, parquet or json")
    return len(frame)
