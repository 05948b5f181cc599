"""Selecting, grouping and naming the run rows a figure draws.

Every family splits the report's frame of runs into one figure per
configuration (:func:`groups`) and names it the same way (:func:`what`,
:func:`slug`), so titles, captions and file names read alike across the report.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from migperf.report.data import ReportData, is_missing, profile_sort_key, uses_seq_len

if TYPE_CHECKING:
    import pandas as pd


def has(rows: pd.DataFrame, column: str) -> bool:
    """Whether ``column`` exists and holds at least one number.

    Args:
        rows: Runs.
        column: Column name.

    Returns:
        True when some row has a value in ``column``.
    """
    return column in rows.columns and bool(rows[column].notna().any())


def where(rows: pd.DataFrame, mask: Sequence[bool]) -> pd.DataFrame:
    """Rows where ``mask`` is true (a plain list, even an empty one, is a row mask here).

    Args:
        rows: Runs.
        mask: One flag per row.

    Returns:
        The flagged rows, in order.
    """
    return rows.iloc[[i for i, keep in enumerate(mask) if keep]]


def _sortable(value: Any) -> tuple[int, float, str]:
    # Numbers before text before missing, so batch 2 comes before batch 16.
    if is_missing(value):
        return (2, 0.0, "")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, float(value), "")
    return (1, 0.0, str(value))


def groups(rows: pd.DataFrame, keys: Sequence[str]) -> list[tuple[dict[str, Any], pd.DataFrame]]:
    """Split rows by the values of ``keys`` (None and NaN are one value), in a stable order.

    Args:
        rows: Runs.
        keys: Columns to group by.

    Returns:
        (column -> value, rows) per distinct combination, numbers in numeric order.
    """
    buckets: dict[tuple[Any, ...], list[int]] = {}
    for i, values in enumerate(zip(*(rows[k].tolist() for k in keys), strict=True)):
        key = tuple(None if is_missing(v) else v for v in values)
        buckets.setdefault(key, []).append(i)
    order = sorted(buckets, key=lambda k: tuple(_sortable(v) for v in k))
    return [(dict(zip(keys, k, strict=True)), rows.iloc[buckets[k]]) for k in order]


def _model_args(text: Any) -> str:
    if is_missing(text) or text in ("{}", ""):
        return ""
    import json

    try:
        args = json.loads(text)
    except ValueError:
        return str(text)
    return ", ".join(f"{k}={v}" for k, v in sorted(args.items()))


def what(key: dict[str, Any], workload: Any = None) -> str:
    """``bert-base infer fp32 (num_hidden_layers=2), seq 128`` for a group key.

    Args:
        key: Column -> value of a group (from :func:`groups`).
        workload: The workload when the key does not name it (a panel inside a
            figure of one workload): the sequence length is shown for language
            models only.

    Returns:
        The group's name for titles and captions.
    """
    parts = [str(key[k]) for k in ("workload", "task", "precision") if key.get(k) is not None]
    text = " ".join(parts)
    workload = key.get("workload", workload)
    args = _model_args(key.get("model_args"))
    if args:
        text += f" ({args})"
    for name, word in (
        ("batch_size", "batch"),
        ("seq_len", "seq"),
        ("scenario", "scenario"),
        ("target_qps", "target QPS"),
    ):
        if name == "seq_len" and not uses_seq_len(workload):
            continue
        if name in key and not is_missing(key[name]):
            value = key[name]
            shown = f"{value:g}" if isinstance(value, float) else str(value)
            text += f", {word} {shown}"
    return text.lstrip(", ")


def slug(*parts: Any) -> str:
    """A file stem and HTML anchor from the parts of a figure's name.

    Args:
        *parts: Family key and group values; None and empty parts are skipped.

    Returns:
        Lower-case letters, digits and dashes, at most 120 characters.
    """
    text = "-".join(str(p) for p in parts if p not in (None, ""))
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:120] or "plot"


def series_label(row_profile: str, sharing: Any, role: Any = None) -> str:
    """``3g.40gb · mps · alone``: a profile with its sharing mode and role.

    Args:
        row_profile: The run's profile label.
        sharing: The run's sharing mode (``exclusive`` is not shown).
        role: The run's role (``baseline`` is shown as "alone").

    Returns:
        The legend label of the run's series.
    """
    label = str(row_profile)
    if not is_missing(sharing) and sharing != "exclusive":
        label += f" · {sharing}"
    if role == "baseline":
        label += " · alone"
    return label


def profiles(rows: pd.DataFrame) -> list[str]:
    """The distinct profile labels of the rows, smallest slice first.

    Args:
        rows: Runs.

    Returns:
        Profile labels in size order.
    """
    return sorted({str(p) for p in rows["profile_label"]}, key=profile_sort_key)


def fmt(value: float) -> str:
    """A number as a tick or bar label: ``8``, ``0.125``, ``3.33``.

    Args:
        value: The number.

    Returns:
        Integers in full, anything else to three significant digits.
    """
    return f"{value:g}" if float(value).is_integer() else f"{value:.3g}"


def measured(data: ReportData) -> pd.DataFrame:
    """Successful exclusive throughput runs of measured jobs (the study's main figures).

    Args:
        data: The report's runs.

    Returns:
        Rows of ``ok`` runs that are jobs, exclusive and not a scenario.
    """
    runs = data.ok
    return runs[
        (runs["role"] == "job") & (runs["sharing"] == "exclusive") & runs["scenario"].isna()
    ]
