"""Stored results as pandas DataFrames, and exports.

:func:`load` returns a *tidy* frame: one row per (run, metric), with the run's
columns (experiment, GPU, layout, profile, workload, batch size, status, ...)
repeated on each row, and ``metric``, ``value``, ``unit``. Failed runs appear
once with ``metric`` empty, so they are never silently dropped. ``wide=True``
pivots to one row per run with one column per metric.

A run measured more than once has one row per attempt in the store; both
functions give each run's latest attempt unless ``all_attempts=True``, and
the ``attempt`` column says which one a row is. Both open the store
read-only: reading never creates, upgrades or changes it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from migperf.errors import UsageError
from migperf.results.schema import V1_RUN_COLUMNS
from migperf.results.store import ResultsStore

if TYPE_CHECKING:
    import pandas as pd

#: The runs columns a frame carries: every stored column up to ``params``, with the attempt.
RUN_COLUMNS = (
    *V1_RUN_COLUMNS[:2],
    "attempt",
    *V1_RUN_COLUMNS[2 : V1_RUN_COLUMNS.index("params") + 1],
)


def load(
    path: Path | str, *, wide: bool = False, all_attempts: bool = False, **filters: Any
) -> pd.DataFrame:
    """Results of a store as a DataFrame.

    Args:
        path: The SQLite store (opened read-only).
        wide: One row per run, one column per metric (instead of tidy rows).
        all_attempts: Every stored attempt of each run, instead of its latest one.
        **filters: Equality filters on run columns, e.g. ``workload="resnet50"``,
            ``status="ok"``, ``profile="1g.10gb"``; a list value means "any of".
            Filters apply after the latest attempt is chosen: ``status="ok"``
            gives the runs whose latest attempt is ok.

    Raises:
        UsageError: a filter names an unknown column, or the store does not exist.
        MigperfError: the file is not a migperf store, or is from a newer migperf.
    """
    import pandas as pd

    p = Path(path)
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
        f"FROM {'runs' if all_attempts else 'latest_runs'} r "
        "LEFT JOIN metrics m ON m.run_id = r.run_id"
        + (" WHERE " + " AND ".join(where) if where else "")
        + " ORDER BY r.run_id, m.name"
    )
    with ResultsStore(p, read_only=True) as store:
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


#: File extensions and the export format each one means.
EXPORT_SUFFIXES = {".csv": "csv", ".json": "json", ".parquet": "parquet", ".pq": "parquet"}


def export_format(out: Path | str, fmt: str | None) -> str:
    """The export format for ``out``: ``fmt`` if given, else the one its extension names.

    Raises:
        UsageError: the extension names no format and none was given, or it
            names a different one than ``fmt`` (``out.json`` with ``--format csv``
            would write CSV into a file every tool opens as JSON).
    """
    suffix = Path(out).suffix.lower()
    implied = EXPORT_SUFFIXES.get(suffix)
    if fmt is None:
        if implied is None:
            raise UsageError(
                f"cannot tell the export format of {out} from its extension"
                + (f" ({suffix} is not one migperf writes)" if suffix else ""),
                hint="name the file .csv, .json or .parquet, or pass --format csv|json|parquet",
            )
        return implied
    fmt = fmt.lower()
    if fmt not in ("csv", "json", "parquet"):
        raise UsageError(f"unknown export format {fmt!r}", hint="use csv, parquet or json")
    if implied is not None and implied != fmt:
        raise UsageError(
            f"--format {fmt} but {out} is named as a {implied} file",
            hint=f"name the file {'.' + fmt}, or drop --format to write {implied}",
        )
    return fmt


def export(
    path: Path | str,
    out: Path,
    fmt: str | None = None,
    *,
    wide: bool = True,
    all_attempts: bool = False,
    **filters: Any,
) -> int:
    """Write the results to ``out`` as csv, parquet or json; returns the row count.

    The format is ``fmt``, or the one ``out``'s extension names (see
    :func:`export_format`).

    The file is written next to ``out`` under a temporary name and renamed into
    place, so a failed export leaves nothing behind and never half-overwrites
    an earlier file. Each run's latest attempt unless ``all_attempts``.

    Raises:
        UsageError: unknown format, parquet without pyarrow installed, ``out`` is
            a folder, its folder does not exist, or it cannot be written there.
        MigperfError: the store cannot be read (see :func:`load`).
    """
    out = Path(out)
    check_output_file(out)
    fmt = export_format(out, fmt)
    frame = load(path, wide=wide, all_attempts=all_attempts, **filters)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        if fmt == "csv":
            frame.to_csv(tmp, index=False)
        elif fmt == "json":
            frame.to_json(tmp, orient="records", indent=1)
        else:
            try:
                frame.to_parquet(tmp, index=False)
            except ImportError:
                raise UsageError(
                    "parquet export needs pyarrow", hint="pip install pyarrow, or use --format csv"
                ) from None
        os.replace(tmp, out)
    except OSError as exc:
        raise UsageError(
            f"cannot write {out}: {exc.strerror or exc}",
            hint="choose a file in a folder you can write to",
        ) from None
    finally:
        tmp.unlink(missing_ok=True)
    return len(frame)


def check_output_file(out: Path) -> None:
    """Refuse an output file path that cannot be written, before any work is done.

    Raises:
        UsageError: ``out`` is a folder, its folder is missing (or is a file),
            or that folder is not writable.
    """
    if out.is_dir():
        raise UsageError(
            f"cannot export to {out}: it is a folder",
            hint=f"give a file name, e.g. {out / 'results.csv'}",
        )
    parent = out.parent
    if not parent.exists():
        raise UsageError(
            f"cannot export to {out}: its folder {parent} does not exist",
            hint=f"create it first (mkdir -p {parent}), or choose another path",
        )
    if not parent.is_dir():
        raise UsageError(
            f"cannot export to {out}: {parent} is a file, not a folder",
            hint="choose a path in an existing folder",
        )
    if not os.access(parent, os.W_OK | os.X_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise UsageError(
            f"cannot export to {out}: {parent if not out.exists() else out} is not writable",
            hint="choose a file in a folder you can write to",
        )
