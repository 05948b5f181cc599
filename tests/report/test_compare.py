"""``migperf compare``: the CI gate exits 1 on a real regression and 0 on noise."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from migperf.cli.main import app
from migperf.report.compare import Side, compare_results, welch_p
from tests.report.conftest import StoreWriter

PROFILES = (("3g.40gb", 3), ("1g.10gb", 1))


def _store(
    path: Path,
    *,
    seed: int,
    repeats: int = 3,
    slow: tuple[str, int] | None = None,
    factor: float = 0.8,
    config_hash: str = "feedc0de12345678",
    profiles: tuple[tuple[str, int], ...] = PROFILES,
    broken: tuple[str, int] | None = None,
) -> Path:
    """resnet50 on two profiles x batch 1, 8; ``slow`` runs at ``factor`` x the throughput."""
    w = StoreWriter(path, seed=seed, config_hash=config_hash)
    for profile, slices in profiles:
        for bs in (1, 8):
            for rep in range(repeats):
                if broken == (profile, bs):
                    w.run(
                        status="oom",
                        error="CUDA out of memory",
                        profile=profile,
                        layout=profile,
                        batch_size=bs,
                        repeat=rep,
                    )
                    continue
                scale = factor if slow == (profile, bs) else 1.0
                w.throughput_run(profile, slices, bs, repeat=rep, scale=scale, layout=profile)
    w.close()
    return path


def _compare(*args: str) -> tuple[int, dict[str, Any], str]:
    result = CliRunner().invoke(app, ["compare", *args, "--json"])
    data = json.loads(result.stdout) if result.exit_code in (0, 1) else {}
    return result.exit_code, data, result.output


def test_identical_runner_stores_pass(runner_store: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy.db"
    shutil.copy(runner_store, copy)
    code, data, _ = _compare(str(runner_store), str(copy))
    assert code == 0 and not data["regressed"]
    # 7g and 3g at batch 1 and 2 (the two 3g slots pool as repeats of one measurement).
    assert data["matched_runs"] == 4
    assert {c["verdict"] for c in data["changes"]} == {"same"}
    assert {c["metric"] for c in data["changes"]} == {
        "samples_per_s",
        "latency_p50_ms",
        "latency_p99_ms",
    }
    # The runs of the layout that failed on both sides are listed, not silently dropped.
    assert [e["why"] for e in data["not_compared"]] == ["no ok run on side A or side B"] * 2
    assert [e["key"]["layout"] for e in data["not_compared"]] == ["19", "19"]
    assert data["partial"] == [] and data["broken"] == []
    table = CliRunner().invoke(app, ["compare", str(runner_store), str(copy)])
    assert table.exit_code == 0 and "no regression" in table.output
    assert "matched but not compared: 2" in table.output


def test_runs_pooled_with_failed_repeats_are_flagged(tmp_path: Path) -> None:
    a = _store(tmp_path / "a.db", seed=11)
    b = tmp_path / "b.db"
    _store(b, seed=12)
    w = StoreWriter(b, seed=13, config_hash="feedc0de12345678")
    w.n = 1000
    w.run(
        status="crashed",
        error="worker exited with signal 11",
        profile="3g.40gb",
        layout="3g.40gb",
        batch_size=1,
        repeat=3,
    )
    w.close()
    code, data, _ = _compare(str(a), str(b))
    assert code == 0
    assert [e["b"]["statuses"] for e in data["partial"]] == [["crashed", "ok", "ok", "ok"]]
    assert data["partial"][0]["b"]["errors"] == ["worker exited with signal 11"]


def test_a_planted_20_percent_regression_fails_the_gate(tmp_path: Path) -> None:
    a = _store(tmp_path / "a.db", seed=1)
    b = _store(tmp_path / "b.db", seed=2, slow=("1g.10gb", 8), factor=0.8)
    code, data, _ = _compare(str(a), str(b))
    assert code == 1 and data["regressed"]
    bad = [c for c in data["changes"] if c["verdict"] == "regression"]
    assert {(c["key"]["profile"], c["key"]["batch_size"]) for c in bad} == {("1g.10gb", 8)}
    tp = next(c for c in bad if c["metric"] == "samples_per_s")
    assert -0.23 < tp["change"] < -0.17 and tp["p_value"] < 0.05
    assert tp["test"].startswith("Welch t-test over repeats (3 vs 3)")
    # Unchanged runs differ by noise only: never a regression.
    others = [c for c in data["changes"] if c["key"]["batch_size"] == 1]
    assert all(c["verdict"] != "regression" for c in others)
    # The human table says the same, in red.
    table = CliRunner().invoke(app, ["compare", str(a), str(b)])
    assert table.exit_code == 1 and f"{len(bad)} regression(s)" in table.output
    assert "1g.10gb" in table.output
    # A 30 % minimum effect lets the change through (-20 % throughput, +25 % latency).
    code, data, _ = _compare(str(a), str(b), "--threshold", "0.3")
    assert code == 0 and not data["regressed"]
    # Getting faster is an improvement, not a regression.
    code, data, _ = _compare(str(b), str(a))
    assert code == 0
    assert any(c["verdict"] == "improvement" for c in data["changes"])


def test_one_repeat_is_tested_over_the_raw_samples(tmp_path: Path) -> None:
    a = _store(tmp_path / "a.db", seed=3, repeats=1)
    b = _store(tmp_path / "b.db", seed=4, repeats=1, slow=("3g.40gb", 1), factor=0.8)
    code, data, _ = _compare(str(a), str(b))
    assert code == 1
    bad = [c for c in data["changes"] if c["verdict"] == "regression"]
    assert {c["metric"] for c in bad} >= {"samples_per_s", "latency_p50_ms"}
    assert all(c["test"] == "Welch t-test over raw latency samples (60 vs 60)" for c in bad)


def test_noise_beyond_the_threshold_is_not_significant() -> None:
    assert welch_p([100.0, 60.0, 140.0], [90.0, 50.0, 130.0]) > 0.5
    assert welch_p([1.0, 1.0], [1.0, 1.0]) == 1.0
    assert welch_p([1.0, 1.0], [2.0, 2.0]) == 0.0
    assert welch_p([1.0], [2.0, 3.0]) is None


def test_unmatched_and_broken_runs_are_listed(tmp_path: Path) -> None:
    a = _store(tmp_path / "a.db", seed=5, profiles=PROFILES)
    b = _store(
        tmp_path / "b.db",
        seed=6,
        profiles=(("3g.40gb", 3), ("7g.80gb", 7)),
        broken=("3g.40gb", 8),
    )
    code, data, _ = _compare(str(a), str(b))
    # 3g bs 8 was ok in A and ran out of memory in B: that breaks the gate.
    assert code == 1
    assert [e["key"]["batch_size"] for e in data["broken"]] == [8]
    assert data["broken"][0]["b"]["errors"] == ["CUDA out of memory"]
    assert {e["key"]["profile"] for e in data["only_a"]} == {"1g.10gb"}
    assert {e["key"]["profile"] for e in data["only_b"]} == {"7g.80gb"}
    table = CliRunner().invoke(app, ["compare", str(a), str(b)])
    assert "only in A: 2" in table.output and "only in B: 2" in table.output
    assert "ok in A, not ok in B" in table.output and "CUDA out of memory" in table.output


def test_config_hashes_in_one_store(tmp_path: Path) -> None:
    db = tmp_path / "one.db"
    _store(db, seed=7, config_hash="aaaa1111bbbb2222")
    _store(db, seed=8, config_hash="aaaa9999cccc3333", slow=("3g.40gb", 8), factor=0.8)
    code, data, _ = _compare("aaaa1", "aaaa9", "--results", str(db))
    assert code == 1 and data["a"].endswith("@aaaa1111bbbb2222 (synthetic)")
    # The Python API gives the same answer.
    c = compare_results(Side(db, "aaaa1111bbbb2222"), Side(db, "aaaa9999cccc3333"))
    assert c.regressed and {ch.run["profile"] for ch in c.regressions} == {"3g.40gb"}
    runner = CliRunner()
    result = runner.invoke(app, ["compare", "aaaa", "aaaa9", "--results", str(db)])
    assert result.exit_code == 2 and "ambiguous" in result.output
    assert "aaaa1111bbbb2222" in result.output
    result = runner.invoke(app, ["compare", "ffff", "aaaa9", "--results", str(db)])
    assert result.exit_code == 2 and "no experiment in" in result.output
    result = runner.invoke(app, ["compare", str(db), "aaaa9", "--results", str(db)])
    assert result.exit_code == 2 and "is a results store but aaaa9 is not" in result.output
    result = runner.invoke(app, ["compare", "x/none.db", str(db)])
    assert result.exit_code == 2 and "no results store at x/none.db" in result.output
    result = runner.invoke(app, ["compare", str(db), str(db), "--alpha", "2"])
    assert result.exit_code == 2 and "--alpha 2 is not in (0, 1)" in result.output
