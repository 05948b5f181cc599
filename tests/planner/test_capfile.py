"""Capacities files: both forms, CSV and YAML, the raw form's SLO filter, every bad row with file:line."""

from __future__ import annotations

from pathlib import Path

import pytest

from migperf.errors import ConfigError
from migperf.planner import VerifyOptions, load_capacities, parse_demand, plan_demand

DEMAND = parse_demand(
    """\
services:
  - {name: api, target_qps: 600, slo: {percentile: 99, latency_ms: 50}, mps: {max_processes: 3}}
  - {name: web, target_qps: 100, slo: {percentile: 90, latency_ms: 20}}
training:
  - {name: tune, workload: bert-base, min_samples_per_s: 10}
gpus: [{model: a100-80gb, count: 2}]
""",
    require_workload=(),
)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_capacities_form_in_csv_keeps_processes_batch_latency_and_source(tmp_path: Path) -> None:
    f = write(
        tmp_path,
        "caps.csv",
        "# measured with perf_analyzer\n"
        "gpu_model,profile,service,capacity_qps,mps_processes,batch_size,latency_ms,source\n"
        "a100-80gb,1g.10gb,api,50,,8,41,triton May\n"
        "\n"
        "NVIDIA A100-SXM4-80GB,1g.10gb,api,90,2,8,47,triton May\n"
        "a100-80gb,3g.40gb,web,300,1,,,\n"
        "a100-80gb,3g.40gb,web,300,1,,,\n",  # an exact repeat is harmless
    )
    t = load_capacities([f], DEMAND)
    one = t.entry("a100-80gb", "1g.10gb", "api")
    two = t.entry("a100-80gb", "1g.10gb", "api", 2)
    assert one is not None and two is not None
    assert (one.value, one.processes, one.batch_size, one.latency_ms) == (50.0, 1, 8, 41.0)
    assert one.origin == f"{f}:3 (triton May)" and one.from_file
    assert (two.value, two.processes, two.origin) == (90.0, 2, f"{f}:5 (triton May)")
    assert t.mps_values("a100-80gb", "1g.10gb", "api") == {2: 90.0}
    web = t.entry("a100-80gb", "3g.40gb", "web")
    assert web is not None and web.origin == f"{f}:6"
    assert t.best_latency_ms["api"] == (41.0, "a100-80gb", "1g.10gb")


def test_the_same_capacities_in_yaml(tmp_path: Path) -> None:
    f = write(
        tmp_path,
        "caps.yaml",
        """\
capacities:
  - {gpu_model: a100-80gb, profile: 1g.10gb, service: api, capacity_qps: 50}
  - gpu_model: a100-80gb
    profile: 1g.10gb
    service: api
    capacity_qps: 90
    mps_processes: 2
    source: triton
""",
    )
    t = load_capacities([f], DEMAND)
    assert t.value("a100-80gb", "1g.10gb", "api") == 50.0
    e = t.entry("a100-80gb", "1g.10gb", "api", 2)
    assert e is not None and e.value == 90.0 and e.origin == f"{f}:3 (triton)"


RAW = """\
gpu_model,profile,service,batch_size,mps_processes,throughput_qps,latency_ms,source
a100-80gb,1g.10gb,api,1,1,50,30,sweep
a100-80gb,1g.10gb,api,4,1,60,45,sweep
a100-80gb,1g.10gb,api,8,1,70,58,sweep
a100-80gb,1g.10gb,api,1,2,95,70,sweep
a100-80gb,1g.10gb,api,4,2,110,90,sweep
a100-80gb,3g.40gb,api,1,3,400,50,sweep
"""


def test_raw_points_the_highest_throughput_within_the_slo_is_taken_and_said(
    tmp_path: Path,
) -> None:
    f = write(tmp_path, "raw.csv", RAW)
    t = load_capacities([f], DEMAND)
    # Batch 8 is faster (70 QPS) but its 58 ms breaks p99 <= 50 ms: batch 4 it is.
    e = t.entry("a100-80gb", "1g.10gb", "api")
    assert e is not None and (e.value, e.batch_size, e.latency_ms) == (60.0, 4, 45.0)
    assert e.origin == (
        f"{f}:3 (sweep): the highest throughput of 2 raw point(s) within p99 <= 50 ms "
        "(batch 4, 45 ms); 1 point(s) over the SLO left out (line(s) 4)"
    )
    # Two MPS processes never meet the SLO: a measured zero, and the planner says so.
    z = t.entry("a100-80gb", "1g.10gb", "api", 2)
    assert z is not None and z.value == 0.0
    assert any(
        "api on 1g.10gb (a100-80gb) with 2 MPS processes: none of 2 raw point(s) (line(s) 5, 6) "
        "meets p99 <= 50 ms; the lowest latency is 70 ms" in n
        for n in t.notes
    )
    assert any("raw points" in n and "3 point(s) over their SLO left out" in n for n in t.notes)
    # Exactly at the SLO counts.
    assert t.value("a100-80gb", "3g.40gb", "api", 3) == 400.0


def test_every_bad_row_is_listed_at_once_with_its_file_and_line(tmp_path: Path) -> None:
    f = write(
        tmp_path,
        "bad.csv",
        """\
gpu_model,profile,service,capacity_qps,mps_processes,latency_ms
a100-80gb,5g.40gb,api,50,1,
a100-99gb,1g.10gb,api,50,1,
a100-80gb,1g.10gb,api,-5,1,
a100-80gb,1g.10gb,api,abc,1,
a100-80gb,2g.20gb,api,100,1,
a100-80gb,2g.20gb,api,120,1,
a100-80gb,1g.10gb,search,50,1,
a100-80gb,1g.10gb,api,50,1,80
a100-80gb,1g.10gb,api,50,99,
a100-80gb,1g.10gb+me,api,50,1,
a100-80gb,1g.10gb,api,50
a100-80gb,1g.10gb,api,,1,
a100-80gb,1g.10gb,tune,5,1,
a100-80gb,1g.10gb,api,50,-2,
a100-80gb,gpu,api,50,2,
""",
    )
    with pytest.raises(ConfigError) as err:
        load_capacities([f], DEMAND)
    msg = err.value.message
    expected = [
        f"{f}:2: a100-80gb has no profile '5g.40gb'; it has 1g.10gb, 1g.20gb, 2g.20gb",
        f"{f}:3: unknown GPU model 'a100-99gb'; the catalog has a100-40gb, a100-80gb",
        f"{f}:4: capacity_qps -5 is negative",
        f"{f}:5: capacity_qps 'abc' is not a number",
        f"{f}:7: api on 2g.20gb (a100-80gb) is given again with another value "
        f"(120 QPS here, 100 QPS at {f}:6)",
        f"{f}:8: service 'search' is not in the demand (its services: api, web)",
        f"{f}:9: latency_ms 80 is over service api's SLO (p99 <= 50 ms)",
        f"{f}:10: mps_processes 99 is not in 1..48",
        f"{f}:11: 1g.10gb+me: media-engine and graphics variants are not planned",
        f"{f}:12: 4 value(s); the header has 6 columns",
        f"{f}:13: capacity_qps: required value is missing",
        f"{f}:14: 'tune' is a training job; capacities files give services only",
        f"{f}:15: mps_processes -2 is negative",
        f"{f}:16: MPS on a whole GPU (MIG off) is not planned",
    ]
    for line in expected:
        assert line in msg, line
    assert msg.startswith("14 problem(s) in the capacities file(s):")
    # In file order, so a reader fixes them top to bottom.
    assert [msg.index(line) for line in expected] == sorted(msg.index(line) for line in expected)


def test_bad_raw_points_and_a_key_in_both_forms(tmp_path: Path) -> None:
    raw = write(
        tmp_path,
        "raw.csv",
        """\
gpu_model,profile,service,batch_size,mps_processes,throughput_qps,latency_ms
a100-80gb,1g.10gb,api,4,1,60,45
a100-80gb,1g.10gb,api,4,1,61,45
a100-80gb,1g.10gb,api,0,1,60,45
a100-80gb,1g.10gb,api,2.5,1,60,45
a100-80gb,1g.10gb,api,2,1,60,
a100-80gb,1g.10gb,api,2,1,60,0
""",
    )
    caps = write(
        tmp_path,
        "caps.csv",
        "gpu_model,profile,service,capacity_qps\na100-80gb,1g.10gb,api,55\n",
    )
    with pytest.raises(ConfigError) as err:
        load_capacities([raw, caps], DEMAND)
    msg = err.value.message
    assert (
        f"{raw}:3: api on 1g.10gb (a100-80gb) at batch 4 is given again with another value "
        f"(throughput 61 QPS at 45 ms here, 60 QPS at 45 ms at {raw}:2)"
    ) in msg
    assert f"{raw}:4: batch_size 0 is not a batch size" in msg
    assert f"{raw}:5: batch_size 2.5 is not a whole number" in msg
    assert f"{raw}:6: latency_ms: required value is missing" in msg
    assert f"{raw}:7: latency_ms 0 is not a latency" in msg
    assert (
        f"{caps}:2: api on 1g.10gb (a100-80gb) is given as a capacity here and as a raw point "
        f"at {raw}:2; give one form per key"
    ) in msg


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("gpu_model,profile,service\n", "1: header: no capacity_qps column"),
        (
            "gpu_model,profile,service,capacity_qps,throughput_qps\n",
            "1: header: give capacity_qps (capacities) or throughput_qps (raw points), not both",
        ),
        (
            "# a comment\ngpu_model,profile,capacity_qps,colour\n",
            "2: header: missing column(s) service; unknown column(s) colour",
        ),
        (
            "gpu_model,profile,service,throughput_qps,latency_ms\n",
            "1: header: missing column(s) batch_size, mps_processes",
        ),
        ("", "1: the file has no header row"),
    ],
)
def test_bad_headers(tmp_path: Path, text: str, expected: str) -> None:
    f = write(tmp_path, "h.csv", text)
    with pytest.raises(ConfigError) as err:
        load_capacities([f], DEMAND)
    assert f"{f}:{expected}" in err.value.message


def test_bad_yaml_rows_carry_their_lines(tmp_path: Path) -> None:
    f = write(
        tmp_path,
        "caps.yaml",
        """\
points:
  - {gpu_model: a100-80gb, profile: 1g.10gb, service: api, batch_size: 1,
     mps_processes: 1, throughput_qps: -1, latency_ms: 5}
  - {gpu_model: a100-80gb, profile: 1g.10gb, service: api, colour: red}
  - just text
""",
    )
    with pytest.raises(ConfigError) as err:
        load_capacities([f], DEMAND)
    msg = err.value.message
    assert f"{f}:2: throughput_qps -1 is negative" in msg
    assert f"{f}:4: points[1]: missing column(s) batch_size" in msg and "colour" in msg
    assert f"{f}:5: points[2] must be a mapping of columns" in msg
    other = write(tmp_path, "other.yaml", "rows: []\n")
    with pytest.raises(ConfigError, match="one list: capacities: or points:"):
        load_capacities([other], DEMAND)


# ------------------------------------------------- the demand a file relaxes

FILE_ONLY = """\
services:
  - name: api
    target_qps: 50
    slo: {percentile: 99, latency_ms: 50}
  - name: db
    target_qps: 50
    slo: {percentile: 99, latency_ms: 50}
gpus: [{model: a30, count: 2}]
headroom: 0
"""


def test_a_service_from_a_file_needs_no_workload_others_do(tmp_path: Path) -> None:
    demand = write(tmp_path, "d.yaml", FILE_ONLY)
    caps = write(
        tmp_path,
        "caps.csv",
        "gpu_model,profile,service,capacity_qps\n"
        + "".join(
            f"a30,{p},{s},{q}\n"
            for s in ("api", "db")
            for p, q in (("1g.6gb", 30), ("2g.12gb", 60), ("4g.24gb", 120))
        ),
    )
    db = tmp_path / "none.db"
    report = plan_demand(demand, db, capacities=[caps])
    # Two 1g.6gb (60 QPS) each, on one A30 (1g.6gb*4).
    assert report.plan is not None and report.plan.feasible and report.plan.gpus_used == 1
    assert report.failure() is None
    # Without the files, every service needs a workload, as always.
    with pytest.raises(ConfigError) as err:
        plan_demand(demand, db)
    assert f"{demand}:2: services[0].workload: required field is missing" in err.value.message
    # A service no file covers must be looked up in the store: it needs one, with its line.
    only_api = write(
        tmp_path, "api.csv", "gpu_model,profile,service,capacity_qps\na30,1g.6gb,api,1\n"
    )
    with pytest.raises(ConfigError) as err:
        plan_demand(demand, db, capacities=[only_api])
    msg = err.value.message
    assert (
        f"{demand}:5: services[1].workload: required field is missing (the service is planned from the results store"
        in msg
    )
    assert "services[0]" not in msg


def test_verify_needs_every_workload_and_write_config_skips_file_only_services(
    tmp_path: Path,
) -> None:
    demand = write(tmp_path, "d.yaml", FILE_ONLY)
    caps = write(
        tmp_path, "caps.csv", "gpu_model,profile,service,capacity_qps\na30,1g.6gb,api,30\n"
    )
    verify = VerifyOptions(
        open_gpus=lambda: pytest.fail("GPUs opened before the demand was checked")
    )
    with pytest.raises(ConfigError) as err:
        plan_demand(demand, tmp_path / "none.db", capacities=[caps], verify=verify)
    assert f"{demand}:2: services[0].workload: required field is missing" in err.value.message
    assert f"{demand}:5: services[1].workload: required field is missing" in err.value.message
    # Both are in the file but lack their 2g.12gb and 4g.24gb rows, and neither gives a workload.
    events: list[str] = []
    both = write(
        tmp_path,
        "both.csv",
        "gpu_model,profile,service,capacity_qps\na30,1g.6gb,api,30\na30,1g.6gb,db,30\n",
    )
    report = plan_demand(
        demand,
        tmp_path / "none.db",
        capacities=[both],
        write_config=tmp_path / "measure.yaml",
        on_event=lambda _k, line: events.append(line),
    )
    assert report.stage == "measurements" and report.measurements == {}
    assert any("api, db give(s) no workload, so migperf cannot measure them" in e for e in events)
    failure = plan_demand(demand, tmp_path / "none.db", capacities=[both]).failure()
    assert failure is not None and f"nor given in {both}" in failure.message
