"""Read MLPerf LoadGen's logs of one run and say what they mean in one sentence.

LoadGen writes, into its output directory:

* ``mlperf_log_detail.txt``: one ``:::MLLOG {json}`` line per fact (every
  setting, the verdict and each of its checks, every latency percentile in
  nanoseconds, errors and warnings flagged in ``metadata``);
* ``mlperf_log_summary.txt``: the same verdict and numbers for people.

The numbers here come from the detail log (full precision, stable keys); the
summary supplies the headline percentile line of single- and multi-stream
and is kept as LoadGen's own record. :func:`verdict_sentence` turns LoadGen's
VALID/INVALID and its checks into one plain sentence with every reason
("INVALID: p99 = 71 ms exceeds the 50 ms target at 200 QPS").
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from migperf.bench.scenario_result import EarlyStoppingResult, LatencyPercentiles, ScenarioResult
from migperf.bench.scenario_spec import REPORTED_PERCENTILES, ScenarioSpec
from migperf.errors import MigperfError

__all__ = [
    "DETAIL_FILE",
    "SUMMARY_FILE",
    "DetailLog",
    "LoadGenLogError",
    "format_ms",
    "format_qps",
    "parse_early_stopping",
    "parse_loadgen_logs",
    "read_detail_log",
    "read_summary",
    "verdict_sentence",
]

SUMMARY_FILE = "mlperf_log_summary.txt"
DETAIL_FILE = "mlperf_log_detail.txt"

_MLLOG = ":::MLLOG "
_NS_PER_MS = 1e6


class LoadGenLogError(MigperfError):
    """LoadGen's logs of a run are missing or unreadable."""


@dataclass(frozen=True)
class DetailLog:
    """The facts of ``mlperf_log_detail.txt``.

    Attributes:
        values: Each key's value (the last one logged).
        errors: Values of the entries LoadGen flagged as errors.
        warnings: Values of the entries LoadGen flagged as warnings.
    """

    values: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def get(self, key: str, default: Any = None) -> Any:
        """The value of ``key``, or ``default``."""
        return self.values.get(key, default)


def read_detail_log(path: Path | str) -> DetailLog:
    """Parse ``mlperf_log_detail.txt``.

    Raises:
        LoadGenLogError: When the file cannot be read.
    """
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise LoadGenLogError(
            f"cannot read LoadGen's detail log {path}: {exc.strerror or exc}",
            hint="LoadGen writes it when a test ends; a run that crashed inside LoadGen leaves none",
        ) from None
    log = DetailLog()
    for line in text.splitlines():
        start = line.find(_MLLOG)
        if start < 0:
            continue
        try:
            entry = json.loads(line[start + len(_MLLOG) :])
        except ValueError:
            continue
        if not isinstance(entry, dict) or "key" not in entry:
            continue
        key, value = str(entry["key"]), entry.get("value")
        log.values[key] = value
        meta = entry.get("metadata") or {}
        if meta.get("is_error"):
            log.errors.append(_one_line(value))
        elif meta.get("is_warning"):
            log.warnings.append(_one_line(value))
    return log


def read_summary(path: Path | str) -> dict[str, str]:
    """Parse ``mlperf_log_summary.txt`` into ``{label: value}`` (the first of repeated labels).

    Raises:
        LoadGenLogError: When the file cannot be read.
    """
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise LoadGenLogError(
            f"cannot read LoadGen's summary {path}: {exc.strerror or exc}",
            hint="LoadGen writes it when a test ends; a run that crashed inside LoadGen leaves none",
        ) from None
    out: dict[str, str] = {}
    for line in text.splitlines():
        label, sep, value = line.partition(":")
        if not sep or line.startswith(" "):
            continue
        out.setdefault(" ".join(label.split()), value.strip())
    return out


def _one_line(value: Any) -> str:
    return " ".join(str(value).split())


def format_ms(value: float | None) -> str:
    """A latency for a sentence: ``71``, ``12.3``, ``0.512``, ``1,234``."""
    if value is None:
        return "n/a"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def format_qps(value: float | None) -> str:
    """A rate for a sentence: ``200``, ``12.5``, ``1,234``."""
    return format_ms(value)


def _label(percentile: float | None) -> str:
    return "the target percentile" if percentile is None else f"p{percentile:g}"


_SERVER_MORE = re.compile(r"Would need to run at least (\d+) more queries")
_STREAM_MORE = re.compile(r"Only processed (\d+) queries\.\s*\*?\s*Need to process at least (\d+)")
_ESTIMATE = re.compile(r"Early stopping ([\d.]+)th percentile estimate: (\d+)")


def parse_early_stopping(text: str, met: bool | None) -> EarlyStoppingResult:
    """LoadGen's early-stopping result text as data.

    Args:
        text: ``early_stopping_result`` from the detail log.
        met: ``early_stopping_met`` from the detail log.

    Returns:
        Whether it passed, the percentile estimate and the queries it was short of.
    """
    flat = _one_line(text)
    more: int | None = None
    m = _SERVER_MORE.search(flat)
    if m:
        more = int(m.group(1))
    else:
        m = _STREAM_MORE.search(flat)
        if m:
            more = max(0, int(m.group(2)) - int(m.group(1)))
    percentile = estimate = None
    e = _ESTIMATE.search(flat)
    if e:
        percentile = float(e.group(1))
        estimate = int(e.group(2)) / _NS_PER_MS
    return EarlyStoppingResult(
        met=met, percentile=percentile, estimate_ms=estimate, more_queries_needed=more, text=flat
    )


def _latencies(log: DetailLog, infix: str = "") -> LatencyPercentiles:
    """Per-sample (``infix=""``) or per-query (``infix="query_"``) latency statistics in ms."""

    def ms(key: str) -> float | None:
        v = log.get(key)
        return float(v) / _NS_PER_MS if isinstance(v, (int, float)) else None

    fields: dict[str, float | None] = {
        "min": ms(f"result_min_{infix}latency_ns"),
        "max": ms(f"result_max_{infix}latency_ns"),
        "mean": ms(f"result_mean_{infix}latency_ns"),
    }
    per = "per_query_" if infix else ""
    for q in REPORTED_PERCENTILES:
        name = "p" + f"{q:g}".replace(".", "_")
        fields[name] = ms(f"result_{q:.2f}_percentile_{per}latency_ns")
    return LatencyPercentiles(**fields)


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _end_reason(log: DetailLog) -> str | None:
    for text in log.errors:
        if "Ending early" in text:
            return text[text.index("Ending early") :]
    return None


def parse_loadgen_logs(
    log_dir: Path | str, spec: ScenarioSpec, *, target_qps: float | None = None
) -> ScenarioResult:
    """Turn LoadGen's logs of one run into a :class:`ScenarioResult`.

    Args:
        log_dir: LoadGen's output directory of the run.
        spec: The scenario that was run (for the latency target).
        target_qps: The server rate that was asked for (the spec's, or the
            search's trial rate).

    Returns:
        The parsed result; batching statistics, seeds and timings are the caller's to add.

    Raises:
        LoadGenLogError: When the detail log is missing.
    """
    d = Path(log_dir)
    log = read_detail_log(d / DETAIL_FILE)
    summary = read_summary(d / SUMMARY_FILE) if (d / SUMMARY_FILE).exists() else {}
    name = spec.name
    checks: dict[str, bool] = {}
    for key, check in (
        ("result_perf_constraints_met", "perf_constraints_met"),
        ("result_min_duration_met", "min_duration_met"),
        ("result_min_queries_met", "min_queries_met"),
        ("early_stopping_met", "early_stopping_met"),
    ):
        value = log.get(key)
        if isinstance(value, bool):
            checks[check] = value
    validity = log.get("result_validity")
    valid = validity == "VALID" if isinstance(validity, str) else None

    percentile = spec.effective_percentile
    latency = _latencies(log)
    query_latency = _latencies(log, "query_") if name == "multi-stream" else None
    headline = query_latency if query_latency is not None else latency
    target_latency = headline.at(percentile) if percentile is not None else None
    if target_latency is None and percentile is not None:
        # The summary's headline line: "90.0th percentile latency (ns) : 2225724".
        raw = summary.get(f"{percentile:.1f}th percentile latency (ns)")
        if raw is not None and raw.strip().isdigit():
            target_latency = int(raw) / _NS_PER_MS

    es_text = log.get("early_stopping_result")
    early = (
        parse_early_stopping(es_text, checks.get("early_stopping_met"))
        if isinstance(es_text, str) and name != "offline"
        else None
    )
    if early is not None and early.percentile is None:
        early = early.model_copy(update={"percentile": percentile})

    completed: float | None
    without = None
    scheduled = None
    if name == "server":
        completed = _float(log.get("result_completed_samples_per_sec"))
        scheduled = _float(log.get("result_scheduled_samples_per_sec"))
    elif name == "offline":
        completed = _float(log.get("result_samples_per_second"))
    elif name == "single-stream":
        completed = _float(log.get("result_qps_with_loadgen_overhead"))
        without = _float(log.get("result_qps_without_loadgen_overhead"))
    else:
        completed = None  # LoadGen reports no rate for multi-stream; the caller counts one.

    settings = {
        k.removeprefix("effective_"): v for k, v in log.values.items() if k.startswith("effective_")
    }
    queries = _int(log.get("result_query_count"))
    spq = _int(settings.get("samples_per_query"))
    slo_ms = spec.effective_latency_target_ms
    slo_met = None if slo_ms is None or target_latency is None else bool(target_latency <= slo_ms)
    warnings = list(log.warnings)
    shown = summary.get("Result is")
    if shown in ("VALID", "INVALID") and isinstance(validity, str) and shown != validity:
        # The summary leaves min_queries_met out of its verdict unless a maximum
        # duration is enforced; the detail log (what submission checkers read) does not.
        warnings.append(
            f"LoadGen's summary says {shown} but its detail log says {validity}; "
            "migperf reports the detail log's verdict"
        )
    version = log.get("loadgen_version")
    result = ScenarioResult(
        scenario=name,
        generator="mlperf_loadgen",
        loadgen_version=str(version).split(" @")[0] if version is not None else None,
        loadgen_scenario=str(log.get("effective_scenario") or spec.loadgen_scenario),
        valid=valid,
        verdict="",
        checks=checks,
        slo_met=slo_met,
        target_qps=target_qps if name == "server" else None,
        scheduled_qps=scheduled,
        completed_qps=completed,
        qps_without_overhead=without,
        latency_target_ms=slo_ms,
        latency_percentile=percentile,
        target_percentile_latency_ms=target_latency,
        latency_ms=latency,
        query_latency_ms=query_latency,
        early_stopping=early,
        query_count=queries,
        samples_per_query=spq,
        sample_count=(queries * spq) if queries is not None and spq is not None else None,
        overlatency_query_count=_int(log.get("result_overlatency_query_count")),
        end_reason=_end_reason(log)
        or (
            "minimum duration and query count met"
            if checks.get("min_duration_met") and checks.get("min_queries_met")
            else None
        ),
        loadgen_errors=list(log.errors),
        loadgen_warnings=warnings,
        settings=settings,
        log_dir=str(d),
        log_files=sorted(p.name for p in d.iterdir() if p.is_file()),
    )
    verdict, reasons = verdict_sentence(result, min_duration_s=_min_duration_s(settings))
    return result.model_copy(update={"verdict": verdict, "invalid_reasons": reasons})


def _min_duration_s(settings: dict[str, Any]) -> float | None:
    v = _float(settings.get("min_duration_ms"))
    return v / 1000.0 if v is not None else None


def verdict_sentence(
    r: ScenarioResult, *, min_duration_s: float | None = None
) -> tuple[str, list[str]]:
    """LoadGen's verdict and every reason for it, in one sentence a person understands.

    Args:
        r: The parsed result (its ``verdict`` is ignored).
        min_duration_s: LoadGen's minimum duration, for the reason when it was not met.

    Returns:
        ``(sentence, invalid reasons)``; e.g. ``"INVALID: p99 = 71 ms exceeds
        the 50 ms target at 200 QPS"``, ``"VALID: p99 = 12 ms is within the
        50 ms target at 200 QPS (1,024 queries)"``.
    """
    label = _label(r.latency_percentile)
    lat = r.target_percentile_latency_ms
    target = r.latency_target_ms
    qps = r.target_qps
    if r.generator == "closed_loop":
        return _closed_loop_sentence(r), []

    reasons: list[str] = []
    checks = r.checks
    if checks.get("perf_constraints_met") is False:
        reasons.append(
            f"{label} = {format_ms(lat)} ms exceeds the {format_ms(target)} ms target"
            + (f" at {format_qps(qps)} QPS" if qps is not None else "")
        )
    es = r.early_stopping
    if checks.get("early_stopping_met") is False:
        if es is not None and es.more_queries_needed is not None:
            reasons.append(
                f"needs at least {es.more_queries_needed:,} more queries to bound {label}"
                + (
                    " (and only if every further query is within the target)"
                    if r.scenario == "server"
                    else ""
                )
            )
        else:
            reasons.append(f"too few queries to bound {label} (LoadGen's early-stopping test)")
    if checks.get("min_duration_met") is False:
        reasons.append(_min_duration_reason(r, min_duration_s))
    if checks.get("min_queries_met") is False:
        minimum = r.settings.get("min_query_count")
        reasons.append(
            f"issued {r.query_count if r.query_count is not None else 'too few'} queries, "
            f"under the minimum of {minimum}"
        )
    for err in r.loadgen_errors:
        reason = _error_reason(err)
        if "ran out of pre-generated queries" in reason and any(
            "ran out of pre-generated queries" in earlier for earlier in reasons
        ):
            continue
        reasons.append(reason)
    if r.valid is False and not reasons:
        reasons.append("LoadGen gave no reason; see its detail log")

    if r.valid is False:
        return "INVALID: " + "; ".join(reasons), reasons
    if r.valid is None:
        return "UNKNOWN: LoadGen's detail log has no verdict", reasons
    return "VALID: " + _valid_body(r, label, lat, target, qps), reasons


def _valid_body(
    r: ScenarioResult, label: str, lat: float | None, target: float | None, qps: float | None
) -> str:
    n = f"{r.query_count:,}" if r.query_count is not None else "?"
    if r.scenario == "server":
        return (
            f"{label} = {format_ms(lat)} ms is within the {format_ms(target)} ms target "
            f"at {format_qps(qps)} QPS ({n} queries)"
        )
    if r.scenario == "offline":
        samples = f"{r.sample_count:,}" if r.sample_count is not None else "?"
        return f"{format_qps(r.completed_qps)} samples/s over {samples} samples"
    if r.scenario == "multi-stream":
        body = (
            f"{label} query latency = {format_ms(lat)} ms over {n} queries "
            f"of {r.samples_per_query} samples"
        )
    else:
        body = f"{label} = {format_ms(lat)} ms over {n} queries"
    return body + _slo_clause(r, label, lat, target)


def _slo_clause(r: ScenarioResult, label: str, lat: float | None, target: float | None) -> str:
    if target is None or r.slo_met is None:
        return ""
    verb = "within" if r.slo_met else "over"
    return f"; {label} is {verb} the {format_ms(target)} ms target (migperf's check, not LoadGen's)"


def _closed_loop_sentence(r: ScenarioResult) -> str:
    label = _label(r.latency_percentile)
    lat = r.target_percentile_latency_ms
    body = (
        f"closed loop at concurrency {r.concurrency} (not LoadGen; no validity): "
        f"{label} = {format_ms(lat)} ms, {format_qps(r.completed_qps)} samples/s "
        f"over {r.query_count:,} requests"
        if r.query_count is not None
        else f"closed loop at concurrency {r.concurrency}: no request completed"
    )
    if r.latency_target_ms is not None and r.slo_met is not None:
        verb = "within" if r.slo_met else "over"
        body += f"; {label} is {verb} the {format_ms(r.latency_target_ms)} ms target"
    return body


def _min_duration_reason(r: ScenarioResult, min_duration_s: float | None) -> str:
    need = (
        f"the {min_duration_s:g} s minimum duration" if min_duration_s else "the minimum duration"
    )
    if r.scenario == "offline":
        expected = r.settings.get("target_qps")
        return (
            f"the single offline query finished before {need}: LoadGen sized it for "
            f"{format_qps(_float(expected))} samples/s but the system did "
            f"{format_qps(r.completed_qps)}; raise the expected QPS"
        )
    if r.scenario in ("single-stream", "multi-stream"):
        return (
            f"LoadGen ran out of pre-generated queries before {need}: "
            "lower the expected latency (--expected-latency-ms) so it generates more"
        )
    return f"the run ended before {need}"


_OUTSTANDING = re.compile(r"issued (\d+) outstanding (\d+)")


def _error_reason(err: str) -> str:
    text = re.sub(r"^IssueQueryThread \d+ ", "", err)
    if "Too many outstanding queries" in text:
        m = _OUTSTANDING.search(text)
        extra = f" ({m.group(2)} of {m.group(1)} issued)" if m else ""
        return f"LoadGen stopped early: too many queries outstanding{extra}; the system fell behind the arrival rate"
    if "Max query count reached" in text:
        return "LoadGen stopped early at the maximum query count"
    if "Max test duration reached" in text:
        return "LoadGen stopped early at the maximum duration"
    if "Ran out of generated queries" in text:
        return (
            "LoadGen ran out of pre-generated queries; the expected latency or QPS it was "
            "given was off"
        )
    return f"LoadGen error: {text}"
