"""benchmarks/loadgen_accuracy.py's own pieces: LoadGen's trace as it reads it, and its median run.

The benchmark judges the bridge (#18: server latency within 2 % of a FIFO
server fed LoadGen's schedule); these check that what it reads and reports
is what LoadGen wrote and what the runs measured.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tests.bench.sleep_sut import sleep_runner

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
try:
    from loadgen_accuracy import _median_run, _server_truth, loadgen_trace_samples
finally:
    sys.path.pop(0)


def test_the_trace_option_writes_loadgens_trace_with_each_samples_schedule(tmp_path: Path) -> None:
    runner = sleep_runner(
        tmp_path / "logs", {"name": "server", "target_qps": 200, "min_query_count": 50}
    )
    runner.loadgen_trace = True
    result, _, _ = runner.run_loadgen(runner.log_dir)
    samples = loadgen_trace_samples(runner.log_dir)
    assert len(samples) == result.sample_count
    scheduled = [s["scheduled"] for s in samples]
    assert scheduled == sorted(scheduled)  # issue order is schedule order
    assert all(s["issue_delay"] >= 0 and s["latency"] >= 0.5 for s in samples)


def test_the_fifo_truth_queues_a_query_that_arrives_while_the_server_is_busy() -> None:
    # 10 ms services; the second query arrives 4 ms after the first: it waits 6 ms.
    latencies, qps = _server_truth([0.0, 4.0, 30.0], [10.0, 10.0, 10.0])
    assert latencies == [10.0, 16.0, 10.0]
    assert qps == 2 * 1000.0 / 40.0  # (samples - 1) over the time to the last answer


def test_with_repeats_each_metric_reports_the_run_with_the_median_error_and_lists_every_run() -> (
    None
):
    runs = [
        {"case": "server", "metric": "p50 ms", "migperf": 10.3, "error": 0.030},
        {"case": "server", "metric": "p50 ms", "migperf": 10.1, "error": 0.010},
        {"case": "server", "metric": "p50 ms", "migperf": 10.2, "error": 0.020},
    ]
    row = _median_run(runs)
    assert row["migperf"] == 10.2 and row["error"] == 0.020
    assert row["runs_error"] == [0.030, 0.010, 0.020]  # in run order
    # An even count reports the lower median: always a run that happened.
    assert _median_run(runs[:2])["error"] == 0.010
    assert "runs_error" not in _median_run(runs[:1])
