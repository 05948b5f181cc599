"""Interference of co-located jobs, computed from stored runs.

For every job of a co-located group (``params.group_id``: MIG slices run
together, MPS clients, time-sliced processes, a job with neighbors) this
finds the same job measured *alone* and computes the metrics of the
multi-program literature (Eyerman and Eeckhout, "System-level performance
metrics for multiprogram workloads", IEEE Micro 2008):

* normalized progress ``NP = throughput shared / throughput alone``, against
  the job alone on the *same slot* (``np_slot``: what sharing the device cost)
  and, when such a run exists, alone on the *whole GPU* (``np_gpu``: MIG
  off, or the full-size profile such as ``7g.80gb``);
* per group, system throughput ``STP = sum of NP`` and average normalized
  turnaround time ``ANTT = mean of 1 / NP`` (both over ``np_slot``; with
  ``np_gpu`` for every member, ``stp_gpu`` says how much of one whole GPU's
  work the group did);
* ``p99_inflation = p99 latency shared / p99 latency alone``.

"Alone" means a stored ``ok`` run of the same GPU model, workload, task,
precision, batch size, sequence length, model arguments and scenario, with no
group, on the same slot of the same layout (else on a slot of the same
profile anywhere); repeats are averaged. A job without a baseline gets NaN,
never a guess: run the experiment with ``baselines: true``.
"""

from __future__ import annotations

import json
import math
import re
from typing import TYPE_CHECKING, Any

from migperf.results.store import decode_params

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["COLUMNS", "interference_table"]

#: Columns of :func:`interference_table`'s frame.
COLUMNS = (
    "group_id",
    "run_id",
    "sharing",
    "role",
    "slot",
    "layout",
    "profile",
    "gpu_name",
    "workload",
    "task",
    "batch_size",
    "samples_per_s",
    "alone_samples_per_s",
    "np_slot",
    "np_gpu",
    "stp",
    "antt",
    "stp_gpu",
    "latency_p99_ms",
    "alone_latency_p99_ms",
    "p99_inflation",
    "group_size",
)

_SLICES = re.compile(r"^(?:(\d+)c\.)?(\d+)g\.")


def _slices(profile: Any) -> int | None:
    m = _SLICES.match(str(profile or ""))
    if not m:
        return None
    return int(m.group(1) or m.group(2))


def _full_slices(gpu_name: str) -> int:
    """Compute slices of the whole GPU (7 on A100/H100, 4 on A30)."""
    from migperf.nvml.catalog import MODELS

    for model in MODELS.values():
        if model.name.lower() == (gpu_name or "").lower():
            return model.compute_slices
    return 7


def _mean(values: list[float]) -> float:
    good = [v for v in values if v is not None and not math.isnan(v)]
    return sum(good) / len(good) if good else math.nan


def interference_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Interference metrics for every job of every co-located group.

    Args:
        frame: Stored runs, one row per run (``migperf.results.load(path,
            wide=True)``), with at least the run columns and ``samples_per_s``.

    Returns:
        One row per co-located job, columns :data:`COLUMNS`; empty when the
        frame has no co-located groups.
    """
    import pandas as pd

    if frame.empty or "samples_per_s" not in frame.columns:
        return pd.DataFrame(columns=list(COLUMNS))
    df = frame[frame["status"] == "ok"].copy()
    params = df["params"].map(decode_params)
    df["_group"] = params.map(lambda p: p.get("group_id"))
    df["_sharing"] = params.map(lambda p: p.get("sharing") or "exclusive")
    df["_role"] = params.map(lambda p: p.get("role") or "job")
    df["_slot"] = [
        str(p.get("slot") or (p.get("slots") or ["gpu"])[0]).split("/")[0] for p in params
    ]
    df["_slot_full"] = params.map(lambda p: p.get("slot"))
    df["_size"] = params.map(lambda p: p.get("group_size") or 1)
    df["_what"] = [
        json.dumps(
            [
                r.gpu_name,
                r.workload,
                r.task,
                r.precision,
                r.batch_size,
                r.seq_len,
                p.get("model_args") or {},
                {k: v for k, v in (p.get("scenario") or {}).items() if k != "log_dir"},
            ],
            sort_keys=True,
            default=str,
        )
        for r, p in zip(df.itertuples(), params, strict=True)
    ]
    p99 = df["latency_p99_ms"] if "latency_p99_ms" in df.columns else pd.Series(math.nan, df.index)
    df["_p99"] = p99
    alone = df[df["_group"].isna()]
    shared = df[df["_group"].notna()]
    if shared.empty:
        return pd.DataFrame(columns=list(COLUMNS))

    def baseline(row: Any, same_layout: bool) -> tuple[float, float]:
        cand = alone[alone["_what"] == row["_what"]]
        if same_layout:
            cand = cand[(cand["layout"] == row["layout"]) & (cand["_slot"] == row["_slot"])]
        else:
            cand = cand[cand["profile"].fillna("") == (row["profile"] or "")]
            if row["profile"] is None or (isinstance(row["profile"], float)):
                cand = cand[cand["_slot"] == row["_slot"]]
        return _mean(list(cand["samples_per_s"])), _mean(list(cand["_p99"]))

    def whole_gpu(row: Any) -> float:
        cand = alone[alone["_what"] == row["_what"]]
        full = _full_slices(str(row["gpu_name"]))
        mask = [
            (p is None or (isinstance(p, float) and math.isnan(p))) or _slices(p) == full
            for p in cand["profile"]
        ]
        return _mean([v for v, keep in zip(cand["samples_per_s"], mask, strict=True) if keep])

    rows: list[dict[str, Any]] = []
    for _, row in shared.iterrows():
        tp_alone, p99_alone = baseline(row, True)
        if math.isnan(tp_alone):
            tp_alone, p99_alone = baseline(row, False)
        tp = float(row["samples_per_s"]) if row["samples_per_s"] is not None else math.nan
        gpu_tp = whole_gpu(row)
        rows.append(
            {
                "group_id": row["_group"],
                "run_id": row["run_id"],
                "sharing": row["_sharing"],
                "role": row["_role"],
                "slot": row["_slot_full"],
                "layout": row["layout"],
                "profile": row["profile"],
                "gpu_name": row["gpu_name"],
                "workload": row["workload"],
                "task": row["task"],
                "batch_size": row["batch_size"],
                "samples_per_s": tp,
                "alone_samples_per_s": tp_alone,
                "np_slot": tp / tp_alone if tp_alone and not math.isnan(tp_alone) else math.nan,
                "np_gpu": tp / gpu_tp if gpu_tp and not math.isnan(gpu_tp) else math.nan,
                "latency_p99_ms": row["_p99"],
                "alone_latency_p99_ms": p99_alone,
                "p99_inflation": (
                    row["_p99"] / p99_alone
                    if p99_alone and not math.isnan(p99_alone) and row["_p99"] == row["_p99"]
                    else math.nan
                ),
                "group_size": row["_size"],
            }
        )
    out = pd.DataFrame(rows)
    for gid, members in out.groupby("group_id"):
        nps = [v for v in members["np_slot"] if not math.isnan(v)]
        complete = len(nps) == len(members)
        out.loc[members.index, "stp"] = sum(nps) if complete else math.nan
        out.loc[members.index, "antt"] = (
            sum(1.0 / v for v in nps) / len(nps) if complete and all(nps) else math.nan
        )
        gnps = [v for v in members["np_gpu"] if not math.isnan(v)]
        out.loc[members.index, "stp_gpu"] = sum(gnps) if len(gnps) == len(members) else math.nan
        del gid
    return out[list(COLUMNS)].reset_index(drop=True)
