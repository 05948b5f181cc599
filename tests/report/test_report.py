"""``migperf report``: files, plots, tables, watermark, filters, and what fails loudly."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from migperf.cli.main import app
from migperf.errors import UsageError
from migperf.nvml.catalog import SIM_DRIVER_VERSION
from migperf.report import build_report
from migperf.report.data import compute_slices, full_gpu_slices, load_report_data, parse_filters
from migperf.report.plots import WATERMARK, WATERMARK_GID
from migperf.results.store import ResultsStore
from tests.report.conftest import StoreWriter

FAMILY_TITLES = (
    "Latency and throughput vs batch size",
    "Latency and throughput vs sequence length",
    "Scaling across MIG profiles",
    "GPU activity, memory and energy per profile",
    "Latency CDF",
    "p99 latency vs arrival rate",
    "Co-located jobs: normalized progress and STP",
    "Max QPS under the SLO per profile",
)


def _png_colours(path: Path) -> int:
    import matplotlib.image as mpimg
    import numpy as np

    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 300
    rgb = (img[..., :3] * 255).astype(np.uint32)
    return len(np.unique((rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]))


def _figures(html: str) -> list[str]:
    return re.findall(r'<figure class="plot" id="[^"]+"><h3>([^<]+)</h3>', html)


# ------------------------------------------------------------ real runner


def test_report_of_a_simulated_runner_store(runner_report: Any) -> None:
    out = runner_report.out_dir
    html = (out / "index.html").read_text()
    md = (out / "report.md").read_text()
    titles = _figures(html)
    # gemm on 7g and 3g at batch sizes 1 and 2: the study's main figures are all there.
    for family in (
        "Latency and throughput vs batch size: gemm infer fp32 (n=32)",
        "Scaling across MIG profiles: gemm infer fp32 (n=32)",
        "GPU activity, memory and energy per profile: gemm infer fp32 (n=32)",
        "Latency CDF: gemm infer fp32 (n=32)",
    ):
        assert family in titles, titles
    assert runner_report.plot_count == len(titles) == 4
    # Every plot is a decodable PNG with real content, and an SVG with the same title.
    for title, slug in zip(
        titles, re.findall(r'<figure class="plot" id="([^"]+)">', html), strict=True
    ):
        png, svg = out / "plots" / f"{slug}.png", out / "plots" / f"{slug}.svg"
        assert _png_colours(png) > 50
        text = svg.read_text()
        # The title may wrap to the figure's width: every word of it is text in the SVG.
        assert text.lstrip().startswith("<?xml")
        assert all(word in text for word in title.replace("(", " ").replace(")", " ").split())
        # Simulated runs are watermarked on every axes, in the SVG and so in the page.
        assert WATERMARK in text and WATERMARK_GID in text
    assert html.count(WATERMARK) >= 4 and "SIMULATED" in html and "SIMULATED" in md
    # The p50/p99 panels exist (400 iterations are enough for a p99).
    assert "p99 latency (ms)" in html and "p50 latency (ms)" in html
    # Provenance on every plot: GPU, driver, migperf version.
    footer = f"GPU NVIDIA A100-SXM4-80GB (simulated) · driver {SIM_DRIVER_VERSION} · migperf "
    assert html.count(footer) >= 8
    # The runs of the layout that failed to apply are listed with the runner's reason.
    failures = html.split('id="failures"')[1].split("</section>")[0]
    assert failures.count("<td>layout_failed</td>") == 2
    assert "applying layout &#x27;19&#x27; failed" in failures and "rolled back" in failures
    md_failures = md.split("## Failed and skipped runs")[1].split("## All runs")[0]
    assert md_failures.count("| layout_failed |") == 2 and "Unknown Error" in md_failures
    assert runner_report.runs == 8 and runner_report.not_ok == 2


def test_runner_report_tables_carry_confidence_intervals(runner_report: Any) -> None:
    md = (runner_report.out_dir / "report.md").read_text()
    rows = [
        line
        for line in md.splitlines()
        if line.startswith("| ") and re.search(r"\| ok( \(unstable\))? \|", line)
    ]
    assert len(rows) == 6
    # "mean [low, high]" for every ok run, with low <= mean <= high.
    for row in rows:
        m = re.search(r"\| ([\d.e+-]+) \[([\d.e+-]+), ([\d.e+-]+)\] \|", row)
        assert m, row
        mean, low, high = (float(x) for x in m.groups())
        assert low <= mean <= high


# ------------------------------------------------------------ every plot


def test_a_rich_store_draws_every_plot_family(rich_report: Any) -> None:
    html = (rich_report.out_dir / "index.html").read_text()
    titles = _figures(html)
    for family in FAMILY_TITLES:
        assert any(t.startswith(family) for t in titles), (family, titles)
    for family in rich_report.families:
        assert family.plots and family.missing is None, family.key
    # Not simulated: no watermark anywhere.
    assert WATERMARK not in html and "SIMULATED" not in html
    for f in rich_report.plot_files:
        if f.suffix == ".svg":
            assert WATERMARK_GID not in f.read_text()
    assert "GPU NVIDIA H100 80GB HBM3 · driver 570.86.15 · migperf 0.1.0" in html
    # Self-contained: every plot inline, nothing fetched from anywhere.
    assert html.count("<svg") == len(titles) == rich_report.plot_count
    assert not re.search(r'(src|href)="(https?:)?//', html)
    assert "<img" not in html and "<link" not in html


def test_scaling_normalizes_to_the_full_gpu_and_per_slice(rich_report: Any) -> None:
    svg = next(
        f for f in rich_report.plot_files if f.name == "scaling-resnet50-infer-fp32.svg"
    ).read_text()
    # MIG off is the reference; x labels carry the slice count derived from the profile name.
    assert "throughput / MIG off" in svg and "per compute slice / MIG off" in svg
    for label in ("1g.10gb", "(1 slice)", "3g.40gb", "(3 slices)", "MIG off", "(7 slices)"):
        assert label in svg, label


def test_interference_and_capacity_plots_say_what_they_left_out(rich_report: Any) -> None:
    fams = {f.key: f for f in rich_report.families}
    # The server-scenario groups had no baseline: noted, not drawn as zero.
    assert any("without a baseline" in n for n in fams["interference"].notes)
    svg = fams["interference"].plots[0].svg
    assert "normalized progress" in svg and "STP" in svg
    # 1g missed the SLO even at the lowest rate: an empty bar marked "missed".
    cap = fams["capacity"].plots[0].svg
    assert "missed" in cap and "p99 ≤ 10 ms" in fams["capacity"].plots[0].caption


def test_failures_are_listed_with_their_reasons(rich_report: Any) -> None:
    html = (rich_report.out_dir / "index.html").read_text()
    failures = html.split('id="failures"')[1].split("</section>")[0]
    for status, reason in (
        ("oom", "CUDA out of memory. Tried to allocate 20.00 GiB"),
        ("skipped", "batch size 64 already ran out of memory"),
        ("crashed", "worker exited with signal 11 (SIGSEGV)"),
        ("layout_failed", "creating 3g.40gb failed: In use; rolled back"),
    ):
        assert f"<td>{status}</td>" in failures and reason in failures, status
    md = (rich_report.out_dir / "report.md").read_text()
    assert "worker exited with signal 11 (SIGSEGV)" in md
    assert "4 run(s) did not finish ok" in html


def test_a_store_of_failures_only_still_gives_a_report(tmp_path: Path) -> None:
    w = StoreWriter(tmp_path / "bad.db", simulated=True)
    w.run(status="crashed", error="worker exited with signal 9 (SIGKILL)")
    w.run(status="timeout", error=None)
    w.close()
    report = build_report(tmp_path / "bad.db", tmp_path / "out")
    html = report.html_path.read_text()
    assert report.plot_count == 0 and report.not_ok == 2
    assert "worker exited with signal 9 (SIGKILL)" in html
    assert "(no reason recorded)" in html
    # Each empty section says why it is empty.
    assert html.count('class="missing">No plot:') == len(report.families)


# ---------------------------------------------------------------- filters


def test_filters_select_runs_and_bad_filters_are_refused(rich_store: Path) -> None:
    data = load_report_data(rich_store, parse_filters(["workload=bert-base"]))
    assert set(data.runs["workload"]) == {"bert-base"} and len(data.runs) == 7
    data = load_report_data(rich_store, parse_filters(["profile=1g.10gb", "profile=None"]))
    assert set(data.runs["profile_label"]) == {"1g.10gb", "MIG off"}
    data = load_report_data(rich_store, parse_filters(["sharing=mps", "batch_size=1"]))
    assert set(data.runs["sharing"]) == {"mps"} and len(data.runs) == 3
    with pytest.raises(UsageError, match="cannot filter on 'colour'"):
        parse_filters(["colour=red"])
    with pytest.raises(UsageError, match="not key=value"):
        parse_filters(["workload"])
    with pytest.raises(UsageError, match="no run in .* matches --filter workload=vgg") as info:
        load_report_data(rich_store, {"workload": ["vgg"]})
    assert "resnet50" in info.value.hint


def test_slices_come_from_the_profile_name() -> None:
    assert compute_slices("3g.40gb", None) == 3
    assert compute_slices("1c.7g.80gb", None) == 1
    assert compute_slices("1g.12gb+me", None) == 1
    assert compute_slices(None, "NVIDIA A100-SXM4-80GB") == 7
    assert compute_slices(None, "NVIDIA A30") == 4
    assert full_gpu_slices("NVIDIA H100 80GB HBM3") == 7
    assert compute_slices("gpu", None) is None


# -------------------------------------------------------------------- CLI


def test_cli_writes_the_report_next_to_the_store(runner_store: Path, tmp_path: Path) -> None:
    import shutil

    db = tmp_path / "results" / "migperf.db"
    db.parent.mkdir()
    shutil.copy(runner_store, db)
    out = tmp_path / "results" / "report"
    # An earlier report, written by a migperf from before the .migperf-report marker.
    (out / "plots").mkdir(parents=True)
    (out / "plots" / "batch-old-experiment.png").write_bytes(b"stale")
    (out / "index.html").write_text("<html><head><title>migperf report: old.db</title></head>")
    result = CliRunner().invoke(app, ["report", "--results", str(db), "--filter", "batch_size=2"])
    assert result.exit_code == 0, result.output
    # A plot of an earlier report in the same folder does not linger as if current.
    assert not (out / "plots" / "batch-old-experiment.png").exists()
    assert (out / ".migperf-report").is_file()
    assert (out / "index.html").is_file() and (out / "report.md").is_file()
    assert "SIMULATED" in result.output and "not ok" in result.output
    html = (out / "index.html").read_text()
    assert "batch_size=2" in html and "Scaling across MIG profiles" in html


def test_cli_errors_name_the_problem(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["report", "--results", str(tmp_path / "none.db")])
    assert result.exit_code == 2 and "no results store at" in result.output
    ResultsStore(tmp_path / "empty.db").close()
    result = runner.invoke(app, ["report", "--results", str(tmp_path / "empty.db")])
    assert result.exit_code == 2 and "holds no runs" in result.output
    assert not (tmp_path / "report").exists()


def test_the_cli_does_not_import_matplotlib_or_scipy_to_start() -> None:
    code = (
        "import sys, migperf.cli.main; "
        "print(sorted(m for m in ('matplotlib', 'scipy', 'pandas', 'numpy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_long_titles_wrap_to_the_figure_and_missing_panels_say_why(runner_report: Any) -> None:
    # #24: a CDF title was cut off on both sides; an activity panel vanished silently.
    from migperf.report.plots.canvas import fit_text

    long = "Latency CDF: " + ", ".join(f"workload-{i} infer fp32 batch 8" for i in range(6))
    lines = fit_text(long, 10.0, 12).splitlines()
    assert len(lines) > 1 and all(len(x) <= 10 * 72 / (12 * 0.6) for x in lines)
    assert " ".join(lines) == long
    md = (runner_report.out_dir / "report.md").read_text()
    # A simulated A100 has no GPM and no DCGM here: the activity panel is absent, with the reason.
    assert "GPU activity (%) is not drawn: no run has activity numbers" in md
