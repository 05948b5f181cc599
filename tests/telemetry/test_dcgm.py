"""dcgm-exporter text: MIG rows keyed by GPU instance, whole-GPU fields once, both label spellings."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from migperf.errors import UsageError
from migperf.telemetry.dcgm import DcgmScraper, field_for, parse_exporter_text

DATA = Path(__file__).parent / "data"
A100 = "GPU-3f1c2b8e-5a10-4d2c-9b7e-0c1d2e3f4a5b"
H100_0 = "GPU-9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"
H100_1 = "GPU-0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"


def _text(name: str) -> str:
    return (DATA / name).read_text()


def test_mig_a100_rows_are_keyed_by_gpu_instance_and_whole_gpu_values_kept_once() -> None:
    snap = parse_exporter_text(_text("dcgm-exporter-a100-mig.txt"))
    assert set(snap.instances) == {(A100, 1), (A100, 5), (A100, 13)}  # GI ids past 9 too
    assert snap.profiles[(A100, 13)] == "1g.5gb" and snap.profiles[(A100, 1)] == "3g.20gb"
    # Profiling ratios become percent, per instance.
    assert snap.instances[(A100, 1)]["graphics_util_pct"] == pytest.approx(81.2345)
    assert snap.instances[(A100, 13)]["sm_util_pct"] == pytest.approx(19.98)
    assert snap.instances[(A100, 5)]["tensor_util_pct"] == 0.0
    assert snap.instances[(A100, 1)]["memory_used_mib"] == 6375
    # Power, energy, clocks, temperature: one value per GPU, not one per instance row.
    gpu = snap.gpus[A100]
    assert gpu["power_w"] == pytest.approx(215.342)
    assert gpu["energy_mj"] == 8123456789  # a counter family: samples named ..._total
    assert gpu["sm_clock_mhz"] == 1410 and gpu["temperature_c"] == 47
    assert "power_w" not in snap.instances[(A100, 1)]
    assert snap.repeats == 6 * 2  # six whole-GPU fields, repeated on two more rows each
    assert snap.conflicts == 0
    # The blank sentinel of older exporters is dropped, never a temperature.
    assert "memory_temperature_c" not in gpu and snap.blanks == 3
    assert snap.hostname == "dgx-a100-01"  # the old "Hostname" label
    assert snap.gpu_index[A100] == 0
    assert snap.value("DCGM_FI_DEV_POWER_USAGE", A100, gi_id=5) == pytest.approx(215.342)
    assert snap.value(1005, A100, gi_id=1) == pytest.approx(55.1)


def test_non_mig_gpus_are_whole_gpu_rows_with_new_label_and_field_names() -> None:
    snap = parse_exporter_text(_text("dcgm-exporter-h100-nomig.txt"))
    assert snap.instances == {}
    assert set(snap.gpus) == {H100_0, H100_1}
    g0 = snap.gpus[H100_0]
    assert g0["gpu_util_pct"] == 99 and g0["mem_util_pct"] == 64
    # DCGM 4.6 spelling of field 1001 maps to the same column as the classic one.
    assert g0["graphics_util_pct"] == pytest.approx(98.7)
    assert g0["pcie_tx_bytes_per_s"] == 123456789
    assert snap.gpus[H100_1]["power_w"] == pytest.approx(71.2)
    assert snap.hostname == "hgx-h100-07"
    assert snap.repeats == 0


def test_field_names_and_ids_resolve_to_one_field() -> None:
    old, new = (
        field_for("DCGM_FI_PROF_GR_ENGINE_ACTIVE"),
        field_for("DCGM_FI_PROF_GR_ENGINE_UTIL_RATIO"),
    )
    assert old is not None and old is new and old is field_for(1001)
    assert field_for("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION_total") is field_for(156)
    assert field_for("DCGM_FI_SOMETHING_NEW") is None


def test_unknown_fields_are_listed_and_garbage_is_a_usage_error() -> None:
    snap = parse_exporter_text('DCGM_FI_DEV_NEW_THING{gpu="0",UUID="GPU-x"} 3\n')
    assert snap.unknown_fields == ("DCGM_FI_DEV_NEW_THING",)
    with pytest.raises(UsageError, match="dcgm-exporter"):
        parse_exporter_text("this is { not prometheus text\n")


@pytest.fixture
def exporter() -> Iterator[str]:
    """A local HTTP server answering /metrics with the A100 fixture."""
    body = _text("dcgm-exporter-a100-mig.txt").encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/metrics"
    server.shutdown()
    server.server_close()


def test_scraper_builds_one_series_per_entity(exporter: str) -> None:
    with DcgmScraper(exporter, interval_s=0.05) as scraper:
        threading.Event().wait(0.2)
    assert scraper.scrapes >= 3 and scraper.errors() == []
    series = {(s.gi_id, s.scope): s for s in scraper.series()}
    assert set(series) == {
        (None, "whole_gpu"),
        (1, "gpu_instance"),
        (5, "gpu_instance"),
        (13, "gpu_instance"),
    }
    gpu = series[(None, "whole_gpu")]
    assert gpu.gpu_uuid == A100 and gpu.gpu_index == 0
    assert len(gpu.columns["t_unix_s"]) == scraper.scrapes
    assert gpu.columns["power_w"] == [pytest.approx(215.342)] * scraper.scrapes
    inst = series[(13, "gpu_instance")]
    assert inst.profile == "1g.5gb" and "power_w" not in inst.columns
    # A window keeps the scrapes inside it and one on each side.
    t = gpu.columns["t_unix_s"]
    mid = scraper.series(float(t[1]), float(t[1]))  # type: ignore[arg-type]
    assert len(mid[0].columns["t_unix_s"]) == 3


def test_an_exporter_that_does_not_answer_is_counted_not_raised() -> None:
    with DcgmScraper("http://127.0.0.1:9/metrics", interval_s=0.05, timeout_s=0.2) as scraper:
        threading.Event().wait(0.12)
    errors = scraper.errors()
    assert scraper.scrapes == 0 and len(errors) == 1 and errors[0].count >= 2
    assert errors[0].what == "dcgm" and "127.0.0.1:9" in errors[0].message
    assert scraper.series() == []


def test_a_url_that_is_not_http_is_refused() -> None:
    with pytest.raises(UsageError, match="not an http"):
        DcgmScraper("localhost:9400")


def test_the_shipped_counters_csv_names_only_fields_migperf_reads() -> None:
    csv = Path(__file__).parents[2] / "configs" / "dcgm" / "migperf-counters.csv"
    names = [
        line.split(",")[0].strip()
        for line in csv.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert all(field_for(n) is not None for n in names), names
    ids = {f.field_id for n in names if (f := field_for(n)) is not None}
    # The profiling fields the issue names, FB used, power and energy.
    assert {1001, 1002, 1003, 1004, 1005, 252, 155, 156} <= ids
