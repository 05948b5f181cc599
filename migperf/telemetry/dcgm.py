"""Read a running dcgm-exporter: per-GPU-instance profiling metrics on any MIG GPU.

NVML gives no per-slice activity on Ampere (A100, A30) and only GPM on
Hopper; DCGM's profiling fields (``DCGM_FI_PROF_*``) cover both. DCGM has
no pip-installable bindings, so migperf scrapes NVIDIA's dcgm-exporter
(``--dcgm-url http://host:9400/metrics``) and parses its Prometheus text with
``prometheus_client.parser``.

What the exporter emits (docs/reference/telemetry-and-sharing.md 1.4): with MIG enabled,
one row per GPU instance (labels ``GPU_I_ID``, the NVML GPU-instance id, and
``GPU_I_PROFILE``), never a row for the bare GPU; whole-GPU fields (power,
energy, clocks, temperature) are repeated with the same value on every
instance row. The parser keeps those once per GPU (keyed by the parent's
``UUID``), so summing instance rows never over-counts. Both ``Hostname``
(before May 2026) and ``hostname`` labels are read; DCGM's "blank" sentinels
are dropped; fields are keyed by numeric DCGM field id, since DCGM 4.6
renamed the symbols (both spellings are recognised).

Start the exporter with ``configs/dcgm/migperf-counters.csv`` and a 1 s
collect interval (``-c 1000``; the default 30 s is too coarse for a run);
see docs/telemetry.md.
"""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from migperf.errors import UsageError
from migperf.telemetry.model import Column, DcgmSeries, SamplerError

__all__ = [
    "DEFAULT_DCGM_INTERVAL_S",
    "FIELDS",
    "MAX_RESPONSE_BYTES",
    "DcgmField",
    "DcgmScraper",
    "DcgmSnapshot",
    "fetch_metrics",
    "field_for",
    "parse_exporter_text",
]

#: How often the scraper asks the exporter; match the exporter's ``-c`` (ms).
DEFAULT_DCGM_INTERVAL_S = 1.0

#: Largest ``/metrics`` body read. dcgm-exporter sends about 5 KiB per GPU
#: instance (some 300 KiB for 8 GPUs of 7 slices); a bigger answer is not an
#: exporter, and reading it whole every second would grow without bound.
MAX_RESPONSE_BYTES = 16 * 1024 * 1024
_CHUNK = 1024 * 1024

Level = Literal["gpu", "gpu_i", "gpu_ci"]


@dataclass(frozen=True)
class DcgmField:
    """A DCGM field migperf reads.

    Attributes:
        field_id: DCGM's numeric field id (stable across renames).
        names: Exporter metric names: the classic symbol first, then the DCGM 4.6 one.
        column: migperf's column name (units in the name).
        level: DCGM entity level: ``gpu`` fields are whole-GPU values that the
            exporter repeats on each GPU-instance row; ``gpu_i`` / ``gpu_ci``
            fields are per instance.
        scale: Multiplier from DCGM's unit to the column's (ratios to percent).
    """

    field_id: int
    names: tuple[str, ...]
    column: str
    level: Level
    scale: float = 1.0


#: Fields migperf understands (IDs and levels from DCGM ``dcgm_fields.cpp``).
FIELDS: tuple[DcgmField, ...] = (
    DcgmField(
        1001,
        ("DCGM_FI_PROF_GR_ENGINE_ACTIVE", "DCGM_FI_PROF_GR_ENGINE_UTIL_RATIO"),
        "graphics_util_pct",
        "gpu_ci",
        100.0,
    ),
    DcgmField(
        1002,
        ("DCGM_FI_PROF_SM_ACTIVE", "DCGM_FI_PROF_SM_UTIL_RATIO"),
        "sm_util_pct",
        "gpu_ci",
        100.0,
    ),
    DcgmField(
        1003,
        ("DCGM_FI_PROF_SM_OCCUPANCY", "DCGM_FI_PROF_SM_OCCUPANCY_RATIO"),
        "sm_occupancy_pct",
        "gpu_ci",
        100.0,
    ),
    DcgmField(
        1004,
        ("DCGM_FI_PROF_PIPE_TENSOR_ACTIVE", "DCGM_FI_PROF_TENSOR_UTIL_RATIO"),
        "tensor_util_pct",
        "gpu_ci",
        100.0,
    ),
    DcgmField(
        1005,
        ("DCGM_FI_PROF_DRAM_ACTIVE", "DCGM_FI_PROF_DRAM_UTIL_RATIO"),
        "dram_bw_util_pct",
        "gpu_i",
        100.0,
    ),
    DcgmField(
        1006,
        ("DCGM_FI_PROF_PIPE_FP64_ACTIVE", "DCGM_FI_PROF_PIPE_FP64_UTIL_RATIO"),
        "fp64_util_pct",
        "gpu_ci",
        100.0,
    ),
    DcgmField(
        1007,
        ("DCGM_FI_PROF_PIPE_FP32_ACTIVE", "DCGM_FI_PROF_PIPE_FP32_UTIL_RATIO"),
        "fp32_util_pct",
        "gpu_ci",
        100.0,
    ),
    DcgmField(
        1008,
        ("DCGM_FI_PROF_PIPE_FP16_ACTIVE", "DCGM_FI_PROF_PIPE_FP16_UTIL_RATIO"),
        "fp16_util_pct",
        "gpu_ci",
        100.0,
    ),
    DcgmField(1009, ("DCGM_FI_PROF_PCIE_TX_BYTES",), "pcie_tx_bytes_per_s", "gpu"),
    DcgmField(1010, ("DCGM_FI_PROF_PCIE_RX_BYTES",), "pcie_rx_bytes_per_s", "gpu"),
    DcgmField(1011, ("DCGM_FI_PROF_NVLINK_TX_BYTES",), "nvlink_tx_bytes_per_s", "gpu"),
    DcgmField(1012, ("DCGM_FI_PROF_NVLINK_RX_BYTES",), "nvlink_rx_bytes_per_s", "gpu"),
    DcgmField(250, ("DCGM_FI_DEV_FB_TOTAL",), "memory_total_mib", "gpu_ci"),
    DcgmField(251, ("DCGM_FI_DEV_FB_FREE",), "memory_free_mib", "gpu_ci"),
    DcgmField(252, ("DCGM_FI_DEV_FB_USED",), "memory_used_mib", "gpu_ci"),
    DcgmField(155, ("DCGM_FI_DEV_POWER_USAGE", "DCGM_FI_DEV_BOARD_POWER_WATTS"), "power_w", "gpu"),
    DcgmField(
        157,
        ("DCGM_FI_DEV_POWER_USAGE_INSTANT", "DCGM_FI_DEV_BOARD_POWER_RAW_WATTS"),
        "power_instant_w",
        "gpu",
    ),
    DcgmField(156, ("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",), "energy_mj", "gpu"),
    DcgmField(203, ("DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_GPU_UTIL_RATIO"), "gpu_util_pct", "gpu"),
    DcgmField(204, ("DCGM_FI_DEV_MEM_COPY_UTIL",), "mem_util_pct", "gpu"),
    DcgmField(100, ("DCGM_FI_DEV_SM_CLOCK",), "sm_clock_mhz", "gpu"),
    DcgmField(101, ("DCGM_FI_DEV_MEM_CLOCK",), "mem_clock_mhz", "gpu"),
    DcgmField(
        150, ("DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_GPU_TEMP_CELSIUS"), "temperature_c", "gpu"
    ),
    DcgmField(140, ("DCGM_FI_DEV_MEMORY_TEMP",), "memory_temperature_c", "gpu"),
    DcgmField(230, ("DCGM_FI_DEV_XID_ERRORS",), "xid_errors", "gpu"),
)

_BY_NAME = {name: f for f in FIELDS for name in f.names}
_BY_ID = {f.field_id: f for f in FIELDS}

# DCGM "blank" sentinels (dcgm_structs.h): DCGM_INT64_BLANK = 0x7ffffffffffffff0
# and up (NOT_FOUND, NOT_SUPPORTED, NOT_PERMISSIONED); DCGM_FP64_BLANK = 140737488355328.0
# and up. Older exporters printed them as values.
_INT64_BLANK = 9223372036854775792.0
_FP64_BLANK = 140737488355328.0


def field_for(name_or_id: str | int) -> DcgmField | None:
    """The field for an exporter metric name (either spelling) or numeric id."""
    if isinstance(name_or_id, int):
        return _BY_ID.get(name_or_id)
    return _BY_NAME.get(name_or_id) or _BY_NAME.get(name_or_id.removesuffix("_total"))


def _is_blank(value: float) -> bool:
    return value >= _INT64_BLANK or _FP64_BLANK <= value < _FP64_BLANK + 16


@dataclass(frozen=True)
class DcgmSnapshot:
    """One scrape, keyed by GPU and GPU instance.

    GPUs are keyed by the parent GPU's UUID (``UUID`` / ``uuid`` label), or
    ``gpu<N>`` when the exporter gives no UUID.

    Attributes:
        gpus: GPU key to whole-GPU values (column name to value), one per
            field however many GPU-instance rows repeated it. On a GPU
            without MIG every field is here.
        instances: ``(GPU key, GPU_I_ID)`` to per-instance values.
        gpu_index: GPU key to the exporter's ``gpu`` label.
        profiles: ``(GPU key, GPU_I_ID)`` to ``GPU_I_PROFILE``.
        hostname: The ``hostname`` / ``Hostname`` label, if present.
        blanks: Values dropped as DCGM blank sentinels.
        repeats: Whole-GPU values dropped as repeats on further instance rows.
        conflicts: Repeats that disagreed with the first value (kept first).
        unknown_fields: Metric families migperf does not map.
    """

    gpus: dict[str, dict[str, float]] = field(default_factory=dict)
    instances: dict[tuple[str, int], dict[str, float]] = field(default_factory=dict)
    gpu_index: dict[str, int | None] = field(default_factory=dict)
    profiles: dict[tuple[str, int], str | None] = field(default_factory=dict)
    hostname: str | None = None
    blanks: int = 0
    repeats: int = 0
    conflicts: int = 0
    unknown_fields: tuple[str, ...] = ()

    def value(self, name_or_id: str | int, gpu: str, gi_id: int | None = None) -> float | None:
        """One value: a field (name, id or column) of a GPU, or of one of its GPU instances.

        A whole-GPU field asked for on an instance answers the GPU's value.
        """
        f = field_for(name_or_id)
        column = f.column if f is not None else str(name_or_id)
        if gi_id is not None and (f is None or f.level != "gpu"):
            return self.instances.get((gpu, gi_id), {}).get(column)
        return self.gpus.get(gpu, {}).get(column)


def parse_exporter_text(text: str) -> DcgmSnapshot:
    """Parse dcgm-exporter's ``/metrics`` text.

    Raises:
        UsageError: when the text is not Prometheus exposition format.
    """
    from prometheus_client.parser import text_string_to_metric_families

    gpus: dict[str, dict[str, float]] = {}
    instances: dict[tuple[str, int], dict[str, float]] = {}
    gpu_index: dict[str, int | None] = {}
    profiles: dict[tuple[str, int], str | None] = {}
    hostname = None
    blanks = repeats = conflicts = 0
    unknown: list[str] = []
    try:
        families = list(text_string_to_metric_families(text))
    except ValueError as exc:
        raise UsageError(
            f"cannot parse dcgm-exporter output: {exc}",
            hint="--dcgm-url must point at dcgm-exporter's /metrics (e.g. http://localhost:9400/metrics)",
        ) from None
    for fam in families:
        # Counters' samples are named <family>_total by the parser; match the family.
        f = field_for(fam.name)
        if f is None:
            if fam.name.startswith("DCGM_FI_") and fam.name not in unknown:
                unknown.append(fam.name)
            continue
        for s in fam.samples:
            if s.name not in (fam.name, fam.name + "_total"):
                continue  # _created and the like
            labels = s.labels
            uuid = labels.get("UUID") or labels.get("uuid")
            gpu_label = labels.get("gpu")
            # isascii: str.isdigit() takes "٣", and int() would read it as 3.
            index = int(gpu_label) if gpu_label and _small_number(gpu_label) else None
            key = uuid or f"gpu{index if index is not None else '?'}"
            gpu_index.setdefault(key, index)
            hostname = hostname or labels.get("hostname") or labels.get("Hostname")
            gi_text = labels.get("GPU_I_ID", "")
            gi = int(gi_text) if _small_number(gi_text) else None
            value = float(s.value)
            if _is_blank(value):
                blanks += 1
                continue
            value *= f.scale
            if gi is not None:
                profiles.setdefault((key, gi), labels.get("GPU_I_PROFILE") or None)
            if gi is None or f.level == "gpu":
                target = gpus.setdefault(key, {})
                if f.column in target:
                    repeats += 1
                    conflicts += target[f.column] != value
                    continue
                target[f.column] = value
            else:
                inst = instances.setdefault((key, gi), {})
                if f.column in inst:
                    conflicts += inst[f.column] != value
                    continue
                inst[f.column] = value
    return DcgmSnapshot(
        gpus=gpus,
        instances=instances,
        gpu_index=gpu_index,
        profiles=profiles,
        hostname=hostname,
        blanks=blanks,
        repeats=repeats,
        conflicts=conflicts,
        unknown_fields=tuple(unknown),
    )


def _small_number(text: str | None) -> bool:
    """Whether a label is a plain ASCII number short enough to be an index."""
    return text is not None and text.isascii() and text.isdigit() and len(text) <= 9


def fetch_metrics(url: str, timeout_s: float, *, max_bytes: int = MAX_RESPONSE_BYTES) -> str:
    """GET ``url`` and return the body as text, reading at most ``max_bytes``.

    Args:
        url: dcgm-exporter's metrics URL.
        timeout_s: Timeout of each network operation, and of the whole read.
        max_bytes: Largest body accepted.

    Raises:
        UsageError: the body is larger than ``max_bytes`` (refused from its
            Content-Length, or as soon as the read passes the limit) or takes
            longer than ``timeout_s`` to arrive.
        OSError: the request failed (``urllib.error.URLError`` is one).
    """
    deadline = time.monotonic() + timeout_s
    hint = "--dcgm-url must point at dcgm-exporter's /metrics (e.g. http://localhost:9400/metrics)"
    with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310 - user-given URL
        length = resp.headers.get("Content-Length", "")
        if _small_number(length) and int(length) > max_bytes:
            raise UsageError(
                f"the response is {int(length):,} bytes, more than the "
                f"{max_bytes:,} bytes a dcgm-exporter answer may have",
                hint=hint,
            )
        parts: list[bytes] = []
        size = 0
        while True:
            # Chunked reads: an endless or huge body stops at the limit, not at
            # the end of memory, and a trickle stops at the deadline.
            chunk: bytes = resp.read(min(_CHUNK, max_bytes + 1 - size))
            if not chunk:
                break
            parts.append(chunk)
            size += len(chunk)
            if size > max_bytes:
                raise UsageError(
                    f"the response is larger than the {max_bytes:,} bytes a dcgm-exporter "
                    "answer may have; stopped reading",
                    hint=hint,
                )
            if time.monotonic() > deadline:
                raise UsageError(
                    f"the response took longer than {timeout_s:g} s to arrive", hint=hint
                )
    return b"".join(parts).decode("utf-8", "replace")


class DcgmScraper:
    """Scrape dcgm-exporter in a background thread; read series per entity afterwards.

    Failures (exporter down, bad text) are counted, never raised.

    Args:
        url: dcgm-exporter's metrics URL (``http://host:9400/metrics``).
        interval_s: Time between scrapes.
        timeout_s: Timeout of one request.
        fetch: ``fetch(url, timeout_s) -> text``; urllib by default (tests swap it).

    Raises:
        UsageError: when ``url`` is not an http(s) URL.
    """

    def __init__(
        self,
        url: str,
        *,
        interval_s: float = DEFAULT_DCGM_INTERVAL_S,
        timeout_s: float = 2.0,
        fetch: Callable[[str, float], str] | None = None,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise UsageError(
                f"--dcgm-url {url!r} is not an http(s) URL",
                hint="e.g. --dcgm-url http://localhost:9400/metrics",
            )
        if not interval_s > 0:
            raise UsageError(f"DCGM scrape interval must be positive, got {interval_s:g} s")
        self.url = url
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self._fetch = fetch or fetch_metrics
        self._snapshots: list[tuple[float, DcgmSnapshot]] = []
        self._errors: dict[str, list[float]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._mono0 = time.monotonic()
        self._unix0 = time.time()

    def __enter__(self) -> DcgmScraper:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> DcgmScraper:
        """Scrape once now, then every ``interval_s`` in a thread."""
        if self._thread is None:
            self.scrape_now()
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._loop, name="migperf-dcgm-scraper", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread and scrape once more."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(timeout=self.timeout_s + 5.0)
        self._thread = None
        self.scrape_now()

    def _loop(self) -> None:
        next_t = time.monotonic() + self.interval_s
        while not self._stop.wait(max(0.0, next_t - time.monotonic())):
            self.scrape_now()
            next_t = max(next_t + self.interval_s, time.monotonic())

    def scrape_now(self) -> DcgmSnapshot | None:
        """Scrape once; the snapshot, or None when the scrape failed (counted)."""
        t0 = time.monotonic()
        try:
            text = self._fetch(self.url, self.timeout_s)
            snap = parse_exporter_text(text)
        except (OSError, urllib.error.URLError, UsageError, ValueError) as exc:
            msg = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
            self._record_error(f"{self.url}: {msg}", self._unix(t0))
            return None
        t = self._unix((t0 + time.monotonic()) / 2)
        with self._lock:
            self._snapshots.append((t, snap))
        return snap

    def _unix(self, mono: float) -> float:
        return self._unix0 + (mono - self._mono0)

    def _record_error(self, message: str, t: float) -> None:
        with self._lock:
            e = self._errors.get(message)
            if e is None:
                self._errors[message] = [1, t, t]
            else:
                e[0] += 1
                e[2] = t

    @property
    def scrapes(self) -> int:
        """Successful scrapes so far."""
        return len(self._snapshots)

    def errors(self) -> list[SamplerError]:
        """Failed scrapes, counted by message."""
        with self._lock:
            return [
                SamplerError(
                    what="dcgm", message=m, count=int(e[0]), first_unix_s=e[1], last_unix_s=e[2]
                )
                for m, e in self._errors.items()
            ]

    def series(
        self, start_unix_s: float | None = None, end_unix_s: float | None = None
    ) -> list[DcgmSeries]:
        """One series per entity (whole GPU, each GPU instance), scrapes in the window plus one each side."""
        with self._lock:
            snaps = list(self._snapshots)
        if start_unix_s is not None or end_unix_s is not None:
            lo = float("-inf") if start_unix_s is None else start_unix_s
            hi = float("inf") if end_unix_s is None else end_unix_s
            inside = [i for i, (t, _) in enumerate(snaps) if lo <= t <= hi]
            before = [i for i, (t, _) in enumerate(snaps) if t < lo][-1:]
            after = [i for i, (t, _) in enumerate(snaps) if t > hi][:1]
            snaps = [snaps[i] for i in before + inside + after]
        rows: dict[tuple[str, int | None], list[tuple[float, dict[str, float]]]] = {}
        meta: dict[tuple[str, int | None], tuple[int | None, str | None]] = {}
        for t, snap in snaps:
            for key, values in snap.gpus.items():
                rows.setdefault((key, None), []).append((t, values))
                meta[(key, None)] = (snap.gpu_index.get(key), None)
            for (key, gi_id), values in snap.instances.items():
                rows.setdefault((key, gi_id), []).append((t, values))
                meta[(key, gi_id)] = (snap.gpu_index.get(key), snap.profiles.get((key, gi_id)))
        out = []
        for (key, gi), entries in rows.items():
            names = sorted({c for _, v in entries for c in v})
            columns: dict[str, Column] = {"t_unix_s": [t for t, _ in entries]}
            for c in names:
                columns[c] = [v.get(c) for _, v in entries]
            index, profile = meta[(key, gi)]
            out.append(
                DcgmSeries(
                    gpu_index=index,
                    gpu_uuid=None if key.startswith("gpu") else key,
                    gi_id=gi,
                    profile=profile,
                    scope="whole_gpu" if gi is None else "gpu_instance",
                    columns=columns,
                )
            )
        return out
