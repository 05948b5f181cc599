"""A results store as migperf wrote it before attempts existed (schema 1), for upgrade tests.

Written with the v1 DDL and the v1 writer's INSERTs (``INSERT OR IGNORE`` on a
UNIQUE ``run_key``), in WAL mode like the real store.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from migperf.results.schema import SCHEMA_V1, statements

#: run_key -> (status, samples_per_s, latency samples); run_ids 1, 2, 3 in this order.
V1_RUNS = {
    "h1-a": ("ok", 100.0, [1.0, 2.0, 3.0]),
    "h1-b": ("failed", None, []),
    "h1-c": ("ok", 300.0, [0.5]),
}


def write_v1_store(path: Path) -> Path:
    """A v1 store of config hash ``h1`` with metrics, samples and telemetry, run_ids 1..3.

    The AUTOINCREMENT high-water mark is 5 (two rows were written and later
    removed by hand), so an upgrade must not hand out run_id 4 or 5 again.
    """
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("BEGIN")
    statements(con, SCHEMA_V1)
    con.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    for key, (status, tput, lat) in V1_RUNS.items():
        cur = con.execute(
            "INSERT OR IGNORE INTO runs (run_key, experiment, config_hash, started_unix, "
            "finished_unix, status, error, workload, profile, batch_size, params, environment) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                key,
                "old",
                "h1",
                1_700_000_000.0,
                1_700_000_001.0,
                status,
                "boom" if status != "ok" else None,
                "gemm",
                "1g.10gb",
                1,
                json.dumps({"slot": "1g.10gb#0"}),
                json.dumps({"migperf_version": "0.0.9"}),
            ),
        )
        run_id = cur.lastrowid
        if tput is not None:
            con.execute(
                "INSERT INTO metrics VALUES (?,?,?,?)", (run_id, "samples_per_s", tput, "1/s")
            )
        if lat:
            con.execute(
                "INSERT INTO samples VALUES (?,?,?)", (run_id, "latency_ms", json.dumps(lat))
            )
            con.execute(
                "INSERT INTO telemetry VALUES (?,?,?)",
                (run_id, json.dumps({"power_mean_w": 90.0}), json.dumps([[0.0, 90.0]])),
            )
    con.execute("UPDATE sqlite_sequence SET seq = 5 WHERE name = 'runs'")
    con.execute("COMMIT")
    con.close()
    return path
