"""The dcgm-exporter scraper reads a bounded answer: a huge or endless body is an error, not memory."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from migperf.errors import UsageError
from migperf.telemetry.dcgm import (
    MAX_RESPONSE_BYTES,
    DcgmScraper,
    fetch_metrics,
    parse_exporter_text,
)

SAMPLE = (Path(__file__).parent / "data" / "dcgm-exporter-a100-mig.txt").read_bytes()
LIMIT = 64 * 1024  # the tests lower the limit; the logic is the same at 16 MiB


@pytest.fixture
def server() -> Iterator[str]:
    """A local server: /ok (the fixture), /big (declared too big), /endless (no length, no end)."""
    stop = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            if self.path == "/ok":
                self.send_header("Content-Length", str(len(SAMPLE)))
                self.end_headers()
                self.wfile.write(SAMPLE)
                return
            if self.path == "/big":
                self.send_header("Content-Length", str(MAX_RESPONSE_BYTES * 4))
                self.end_headers()
                self.wfile.write(b"# x\n" * 1024)
                return
            # No Content-Length: the body ends only when the connection does.
            self.end_headers()
            chunk = b"# padding padding padding\n" * 4096
            try:
                while not stop.is_set():
                    self.wfile.write(chunk)
            except OSError:
                return  # the client stopped reading and closed

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    stop.set()
    httpd.shutdown()
    httpd.server_close()


def test_a_normal_answer_is_read(server: str) -> None:
    text = fetch_metrics(f"{server}/ok", 5.0, max_bytes=LIMIT)
    assert parse_exporter_text(text).instances


def test_an_endless_body_stops_at_the_limit(server: str) -> None:
    with pytest.raises(UsageError, match=f"larger than the {LIMIT:,} bytes"):
        fetch_metrics(f"{server}/endless", 5.0, max_bytes=LIMIT)
    # The default limit too: it reads 16 MiB and stops, it does not grow without end.
    with pytest.raises(UsageError, match="larger than the 16,777,216 bytes"):
        fetch_metrics(f"{server}/endless", 30.0)


def test_a_declared_huge_body_is_refused_before_reading(server: str) -> None:
    with pytest.raises(UsageError, match=f"is {MAX_RESPONSE_BYTES * 4:,} bytes, more than"):
        fetch_metrics(f"{server}/big", 5.0)


def test_the_scraper_counts_an_oversized_answer_as_a_failed_scrape(server: str) -> None:
    scraper = DcgmScraper(f"{server}/endless", timeout_s=30.0)
    assert scraper.scrape_now() is None
    [error] = scraper.errors()
    assert "larger than the 16,777,216 bytes" in error.message and error.count == 1


def test_unicode_digit_labels_are_not_indexes() -> None:
    text = (
        "# TYPE DCGM_FI_DEV_GPU_TEMP gauge\n"
        'DCGM_FI_DEV_GPU_TEMP{gpu="٣",UUID="GPU-x",GPU_I_ID="٣"} 40\n'
    )
    snap = parse_exporter_text(text)
    assert snap.gpu_index == {"GPU-x": None}
    assert snap.gpus["GPU-x"]["temperature_c"] == 40 and not snap.instances
