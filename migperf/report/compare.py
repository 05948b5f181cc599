"""``migperf compare``: did a change make anything slower, beyond noise?

Two sides are compared: two results stores (yesterday's and today's nightly
run), or two config hashes in one store. Runs are matched by what defines a
measurement, across repeats::

    gpu_name, layout, profile, workload, task, precision, batch_size, seq_len,
    model_args, scenario, sharing, role

(``role`` keeps a co-located job, its neighbours and its alone-baseline
apart). For each matched run and each of ``samples_per_s``,
``latency_p50_ms`` and ``latency_p99_ms`` the relative change of the mean is
tested with Welch's t-test (unequal variances):

* over the per-repeat values, when both sides have two or more repeats;
* otherwise over the raw latency samples of the runs (the ``samples`` table).
  Throughput is batch size over mean iteration time, so with one repeat its
  test is the latency samples' test too (not for scenario runs, whose
  throughput is set by the arrival rate: those stay untested).

A change is a *regression* when it goes the bad way (less throughput, more
latency) by more than the minimum effect ``threshold`` (relative, 0.05 = 5 %)
and its p-value is below ``alpha``. A run that finished ok on side A but has
no ok run on side B counts as a regression too (it broke). Runs found on one
side only are listed, never hidden; they do not fail the comparison.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from migperf.errors import UsageError
from migperf.report.data import (
    MIG_OFF,
    is_missing,
    load_report_data,
    read_samples,
    uses_seq_len,
)

if TYPE_CHECKING:
    import pandas as pd

#: Columns that identify a measurement across repeats.
MATCH_KEY = (
    "gpu_name",
    "layout",
    "profile",
    "workload",
    "task",
    "precision",
    "batch_size",
    "seq_len",
    "model_args",
    "scenario_json",
    "sharing",
    "role",
)

#: Metrics compared, and whether more is better.
METRICS: tuple[tuple[str, bool], ...] = (
    ("samples_per_s", True),
    ("latency_p50_ms", False),
    ("latency_p99_ms", False),
)


@dataclass(frozen=True)
class Side:
    """One side of a comparison: a store, or one config hash in a store."""

    path: Path
    config_hash: str | None = None
    experiment: str | None = None

    @property
    def label(self) -> str:
        """``results/a.db`` or ``results/migperf.db@1a2b3c4d (quickstart)``."""
        if self.config_hash is None:
            return str(self.path)
        return f"{self.path}@{self.config_hash}" + (
            f" ({self.experiment})" if self.experiment else ""
        )


@dataclass(frozen=True)
class MetricChange:
    """One metric of one matched run, A vs B.

    Attributes:
        run: The match key (column -> value).
        metric: ``samples_per_s``, ``latency_p50_ms`` or ``latency_p99_ms``.
        a_mean: Mean over A's repeats.
        b_mean: Mean over B's repeats.
        change: Relative change ``(b - a) / a`` (None when ``a`` is 0).
        a_repeats: Runs on side A.
        b_repeats: Runs on side B.
        p_value: Welch's t-test p-value (None: not testable).
        test: Which values were tested.
        verdict: ``regression``, ``improvement``, ``not significant``,
            ``within threshold``, ``same``, ``untested`` or ``n/a``.
    """

    run: dict[str, Any]
    metric: str
    a_mean: float
    b_mean: float
    change: float | None
    a_repeats: int
    b_repeats: int
    p_value: float | None
    test: str
    verdict: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the run's key is a readable label plus its columns)."""
        return {
            "run": run_label(self.run),
            "key": self.run,
            "metric": self.metric,
            "a_mean": self.a_mean,
            "b_mean": self.b_mean,
            "change": self.change,
            "a_repeats": self.a_repeats,
            "b_repeats": self.b_repeats,
            "p_value": self.p_value,
            "test": self.test,
            "verdict": self.verdict,
        }


@dataclass(frozen=True)
class Comparison:
    """The outcome of comparing side A (before) with side B (after).

    Attributes:
        a: Side A.
        b: Side B.
        threshold: Minimum relative effect that counts (0.05 = 5 %).
        alpha: Significance level.
        changes: One entry per (matched run, metric).
        only_a: Runs found on side A only (key plus statuses).
        only_b: Runs found on side B only.
        broken: Runs ok on side A with no ok run on side B (regressions).
        not_compared: Other matched runs without ok runs on both sides, or
            without a metric to compare, with why.
        partial: Matched runs compared over their ok repeats only, because
            some of their repeats did not finish ok (statuses and errors).
    """

    a: Side
    b: Side
    threshold: float
    alpha: float
    changes: tuple[MetricChange, ...]
    only_a: tuple[dict[str, Any], ...] = ()
    only_b: tuple[dict[str, Any], ...] = ()
    broken: tuple[dict[str, Any], ...] = ()
    not_compared: tuple[dict[str, Any], ...] = field(default_factory=tuple)
    partial: tuple[dict[str, Any], ...] = ()

    @property
    def regressions(self) -> list[MetricChange]:
        """Changes the bad way, beyond the threshold and significant."""
        return [c for c in self.changes if c.verdict == "regression"]

    @property
    def regressed(self) -> bool:
        """Whether the comparison should fail a CI gate (exit code 1)."""
        return bool(self.regressions or self.broken)

    @property
    def gpus(self) -> list[str]:
        """GPU names of the compared and listed runs."""
        keys = [c.run for c in self.changes]
        keys += [
            e["key"]
            for e in (*self.broken, *self.not_compared, *self.partial, *self.only_a, *self.only_b)
        ]
        return sorted({str(k["gpu_name"]) for k in keys if k.get("gpu_name")})

    @property
    def matched(self) -> int:
        """Runs (match keys) compared on at least one metric."""
        return len({run_label(c.run) for c in self.changes})

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``migperf compare --json``)."""
        return {
            "a": self.a.label,
            "b": self.b.label,
            "threshold": self.threshold,
            "alpha": self.alpha,
            "regressed": self.regressed,
            "matched_runs": self.matched,
            "regressions": len(self.regressions) + len(self.broken),
            "changes": [c.to_dict() for c in self.changes],
            "broken": list(self.broken),
            "only_a": list(self.only_a),
            "only_b": list(self.only_b),
            "not_compared": list(self.not_compared),
            "partial": list(self.partial),
        }


def run_label(key: dict[str, Any], *, gpu: bool = True) -> str:
    """``resnet18 infer fp32 bs 8 on 3g.40gb, layout 9,9`` for a match key.

    The sequence length is named for language models only; ``gpu=False``
    leaves the GPU's name out (when every run shares one GPU).
    """
    import json

    profile = MIG_OFF if is_missing(key.get("profile")) else key["profile"]
    seq = f" seq {key.get('seq_len')}" if uses_seq_len(key.get("workload")) else ""
    text = (
        f"{key.get('workload')} {key.get('task')} {key.get('precision')} "
        f"bs {key.get('batch_size')}{seq} on {profile}, layout {key.get('layout')}"
    )
    args = key.get("model_args")
    if args and args != "{}":
        text += f", {args}"
    scenario = key.get("scenario_json")
    if scenario:
        try:
            spec = json.loads(scenario)
            extra = f" {spec['target_qps']:g} qps" if spec.get("target_qps") is not None else ""
            text += f", {spec.get('name', 'scenario')}{extra}"
        except (ValueError, TypeError, KeyError):
            text += f", scenario {scenario}"
    if key.get("sharing") not in (None, "exclusive"):
        text += f", {key['sharing']}"
    if key.get("role") not in (None, "job"):
        text += f" ({key['role']})"
    name = key.get("gpu_name")
    return text + (f" [{name}]" if gpu and name else "")


# ------------------------------------------------------------------ sides


def _looks_like_path(text: str) -> bool:
    return "/" in text or "\\" in text or text.endswith((".db", ".sqlite", ".sqlite3"))


def resolve_sides(a: str, b: str, results: Path) -> tuple[Side, Side]:
    """Turn the two command-line arguments into sides.

    Two existing files are two stores; otherwise both are config hashes (or
    unique prefixes of them) in the store ``results``.

    Raises:
        UsageError: one argument is a file and the other is not, a path does not
            exist, there is no store to look hashes up in, or a hash matches no
            experiment or several.
    """
    pa, pb = Path(a), Path(b)
    if pa.is_file() and pb.is_file():
        return Side(pa), Side(pb)
    for text, p in ((a, pa), (b, pb)):
        if not p.is_file() and _looks_like_path(text):
            raise UsageError(
                f"no results store at {text}",
                hint="give two store files, or two config hashes with --results DB",
            )
    if pa.is_file() or pb.is_file():
        given, other = (a, b) if pa.is_file() else (b, a)
        raise UsageError(
            f"{given} is a results store but {other} is not",
            hint="give two store files, or two config hashes of one store (--results DB)",
        )
    if not results.is_file():
        raise UsageError(
            f"{a!r} and {b!r} are not files, and there is no results store at {results} "
            "to look them up in as config hashes",
            hint="pass two .db files, or --results DB with two config hashes "
            "(`migperf results list` shows them)",
        )
    from migperf.results.store import ResultsStore

    with ResultsStore(results, read_only=True) as store:
        rows = store.query(
            "SELECT DISTINCT config_hash, experiment FROM latest_runs ORDER BY config_hash"
        )
    known = [(str(r["config_hash"]), str(r["experiment"])) for r in rows]

    def side(prefix: str) -> Side:
        hits = sorted({(h, e) for h, e in known if h.lower().startswith(prefix.lower())})
        if len({h for h, _ in hits}) == 1:
            return Side(results, hits[0][0], hits[0][1])
        listed = ", ".join(f"{h} ({e})" for h, e in (hits or known)[:10])
        if not hits:
            raise UsageError(
                f"no experiment in {results} has a config hash starting with {prefix!r}",
                hint=f"config hashes there: {listed or 'none'}",
            )
        raise UsageError(
            f"config hash prefix {prefix!r} is ambiguous in {results}",
            hint=f"it matches {listed}; give more characters",
        )

    return side(a), side(b)


def _runs(side: Side) -> pd.DataFrame:
    filters = {"config_hash": [side.config_hash]} if side.config_hash else None
    return load_report_data(side.path, filters).runs


def _key(row: Any) -> tuple[Any, ...]:
    out: list[Any] = []
    for column in MATCH_KEY:
        value = row[column]
        if hasattr(value, "item"):  # numpy scalars, so keys are JSON-ready
            value = value.item()
        if is_missing(value):
            out.append(None)
        elif isinstance(value, float) and value.is_integer():
            out.append(int(value))
        else:
            out.append(value)
    return tuple(out)


def _index(runs: pd.DataFrame) -> dict[tuple[Any, ...], pd.DataFrame]:
    keys = [_key(row) for _, row in runs.iterrows()]
    out: dict[tuple[Any, ...], list[int]] = {}
    for i, k in enumerate(keys):
        out.setdefault(k, []).append(i)
    return {k: runs.iloc[rows] for k, rows in out.items()}


# ------------------------------------------------------------------ tests


def welch_p(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Two-sided p-value of Welch's t-test (None with fewer than two values a side).

    Two constant samples are certain: p = 1 when their values agree, 0 when not
    (the t statistic is undefined there, and scipy answers NaN).
    """
    if len(a) < 2 or len(b) < 2:
        return None
    import numpy as np
    from scipy import stats

    xa, xb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if xa.var(ddof=1) == 0 and xb.var(ddof=1) == 0:
        return 1.0 if xa.mean() == xb.mean() else 0.0
    p = float(stats.ttest_ind(xa, xb, equal_var=False).pvalue)
    return None if math.isnan(p) else p


def _relative(a: float, b: float) -> float | None:
    """``(b - a) / a``; None when ``a`` is 0 and ``b`` is not."""
    if a == 0:
        return 0.0 if b == 0 else None
    return (b - a) / a


def _verdict(
    change: float | None, higher_better: bool, p: float | None, threshold: float, alpha: float
) -> str:
    if change is None:
        return "n/a"
    if abs(change) <= threshold:
        return "same" if change == 0 else "within threshold"
    if p is None:
        return "untested"
    if p >= alpha:
        return "not significant"
    worse = change < 0 if higher_better else change > 0
    return "regression" if worse else "improvement"


def _statuses(rows: pd.DataFrame) -> dict[str, Any]:
    errors = sorted({str(e) for e in rows["error"] if not is_missing(e)})
    return {
        "statuses": sorted(str(s) for s in rows["status"]),
        "errors": errors,
    }


def compare_results(
    a: Side, b: Side, *, threshold: float = 0.05, alpha: float = 0.05
) -> Comparison:
    """Compare side A (before) with side B (after).

    Args:
        a: The baseline side.
        b: The side under test.
        threshold: Minimum relative effect that counts (0.05 = 5 %).
        alpha: Significance level of Welch's t-test.

    Raises:
        UsageError: ``threshold`` or ``alpha`` is out of range, or a side has no runs.
    """
    if not 0 <= threshold < 10:
        raise UsageError(
            f"--threshold {threshold:g} is not a relative effect",
            hint="use e.g. 0.05 for 5 %",
        )
    if not 0 < alpha < 1:
        raise UsageError(f"--alpha {alpha:g} is not in (0, 1)", hint="use e.g. 0.05")
    runs_a, runs_b = _runs(a), _runs(b)
    index_a, index_b = _index(runs_a), _index(runs_b)
    samples_a = samples_b = None
    changes: list[MetricChange] = []
    broken: list[dict[str, Any]] = []
    not_compared: list[dict[str, Any]] = []
    partial: list[dict[str, Any]] = []

    def entry(key: tuple[Any, ...], **extra: Any) -> dict[str, Any]:
        k = dict(zip(MATCH_KEY, key, strict=True))
        return {"run": run_label(k), "key": k, **extra}

    for key in sorted(
        set(index_a) & set(index_b), key=lambda k: run_label(dict(zip(MATCH_KEY, k, strict=True)))
    ):
        rows_a, rows_b = index_a[key], index_b[key]
        ok_a = rows_a[rows_a["status"] == "ok"]
        ok_b = rows_b[rows_b["status"] == "ok"]
        if ok_a.empty or ok_b.empty:
            if not ok_a.empty:
                broken.append(entry(key, a=_statuses(rows_a), b=_statuses(rows_b)))
            else:
                why = "no ok run on side A" + ("" if not ok_b.empty else " or side B")
                not_compared.append(entry(key, why=why, a=_statuses(rows_a), b=_statuses(rows_b)))
            continue
        run = dict(zip(MATCH_KEY, key, strict=True))
        if len(ok_a) < len(rows_a) or len(ok_b) < len(rows_b):
            partial.append(entry(key, a=_statuses(rows_a), b=_statuses(rows_b)))
        compared = 0
        for metric, higher_better in METRICS:
            if metric not in ok_a.columns or metric not in ok_b.columns:
                continue
            va = [float(v) for v in ok_a[metric] if not is_missing(v)]
            vb = [float(v) for v in ok_b[metric] if not is_missing(v)]
            if not va or not vb:
                continue
            mean_a, mean_b = sum(va) / len(va), sum(vb) / len(vb)
            change = _relative(mean_a, mean_b)
            p: float | None
            if len(va) >= 2 and len(vb) >= 2:
                p, test = welch_p(va, vb), f"Welch t-test over repeats ({len(va)} vs {len(vb)})"
            elif metric == "samples_per_s" and run.get("scenario_json"):
                p, test = (
                    None,
                    "none: one repeat, and a scenario's throughput has no per-sample values",
                )
            else:
                if samples_a is None:
                    samples_a = read_samples(a.path, [int(r) for r in runs_a["run_id"]])
                    samples_b = read_samples(b.path, [int(r) for r in runs_b["run_id"]])
                assert samples_b is not None
                sa = [x for r in ok_a["run_id"] for x in samples_a.get(int(r), [])]
                sb = [x for r in ok_b["run_id"] for x in samples_b.get(int(r), [])]
                p = welch_p(sa, sb)
                test = (
                    f"Welch t-test over raw latency samples ({len(sa)} vs {len(sb)})"
                    if p is not None
                    else "none: one repeat and no raw samples"
                )
            changes.append(
                MetricChange(
                    run=run,
                    metric=metric,
                    a_mean=mean_a,
                    b_mean=mean_b,
                    change=change,
                    a_repeats=len(va),
                    b_repeats=len(vb),
                    p_value=p,
                    test=test,
                    verdict=_verdict(change, higher_better, p, threshold, alpha),
                )
            )
            compared += 1
        if not compared:
            not_compared.append(entry(key, why="no throughput or latency numbers on both sides"))
    only_a = [
        entry(k, **_statuses(index_a[k])) for k in sorted(set(index_a) - set(index_b), key=str)
    ]
    only_b = [
        entry(k, **_statuses(index_b[k])) for k in sorted(set(index_b) - set(index_a), key=str)
    ]
    return Comparison(
        a=a,
        b=b,
        threshold=threshold,
        alpha=alpha,
        changes=tuple(changes),
        only_a=tuple(only_a),
        only_b=tuple(only_b),
        broken=tuple(broken),
        not_compared=tuple(not_compared),
        partial=tuple(partial),
    )
