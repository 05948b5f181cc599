"""Cluster sweeps on a real local Ray cluster: each node its own simulated GPU machine.

One cluster per module (a head without resources, two ``a100-80gb`` nodes
and one ``a30`` node, each with its own ``MIGPERF_SIMULATE`` and
``MIGPERF_STATE_DIR`` in its environment, as ``ray start`` would give them on
real machines). The tests run in file order: a sweep, a Ctrl-C, lost nodes
(two nodes are removed), the lost nodes coming back, and the shutdown.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from migperf.cli.main import app
from migperf.errors import UsageError
from migperf.experiments.config import parse_config
from migperf.experiments.executor import open_executor
from migperf.experiments.executor_spec import parse_executor, ray_available
from migperf.experiments.planning import plan_experiment
from migperf.mig.manager import apply_layout
from migperf.mig.snapshot import MigSnapshot, take_snapshot
from migperf.nvml import open_nvml
from migperf.nvml.facade import Nvml
from migperf.nvml.sim import clear_cache
from migperf.results import ResultsStore

#: Local Ray clusters take a minute: `pytest -m slow` (.ci/run runs it after the default suite).
pytestmark = pytest.mark.slow

needs_ray = pytest.mark.skipif(
    not ray_available(), reason='Ray is not installed (pip install "migperf[ray]")'
)

CONFIG = """
name: {name}
layouts: ["0"]
stop: {{warmup_iterations: 1, min_iterations: 3, min_duration_s: 0.0, max_duration_s: 5}}
timeout_s: 60
telemetry: {{enabled: false}}
jobs:
  - workload: gemm
    model_args: {{n: 32}}
    sweep: {{batch_size: {batch_sizes}}}
"""

A100 = "NVIDIA A100-SXM4-80GB"
A30 = "NVIDIA A30"
# (simulate spec, GPU name, layout each node has before the sweeps)
NODES = [("a100-80gb", A100, "19"), ("a100-80gb", A100, "19"), ("a30", A30, "14")]


def config(name: str, batch_sizes: str) -> Any:
    return parse_config(CONFIG.format(name=name, batch_sizes=batch_sizes))


# ------------------------------------------------------------------ without Ray


def test_executor_specs_are_parsed_and_checked() -> None:
    assert str(parse_executor("local")) == "local"
    spec = parse_executor("ray:10.0.0.5:6379")
    assert (spec.kind, spec.address) == ("ray", "10.0.0.5:6379")
    assert parse_executor("ray").address is None
    with pytest.raises(UsageError, match="unknown executor 'dask'") as info:
        parse_executor("dask")
    assert "ray[:ADDRESS]" in info.value.hint
    with pytest.raises(UsageError, match="takes no address"):
        parse_executor("local:host")


def test_the_executor_field_is_validated_and_not_hashed() -> None:
    local = config("x", "[1]")
    ray = parse_config(CONFIG.format(name="x", batch_sizes="[1]") + "executor: ray:head:6379\n")
    assert ray.executor == "ray:head:6379"
    assert ray.config_hash() == local.config_hash()
    with pytest.raises(Exception, match="executor: unknown executor 'dask'"):
        parse_config(CONFIG.format(name="x", batch_sizes="[1]") + "executor: dask\n", "c.yaml")


def test_without_ray_the_option_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(UsageError) as info:
        open_executor("ray")
    assert 'pip install "migperf[ray]"' in info.value.hint
    path = tmp_path / "c.yaml"
    path.write_text(CONFIG.format(name="x", batch_sizes="[1]"))
    result = CliRunner().invoke(
        app, ["--simulate", "a100-80gb", "run", str(path), "--executor", "ray"]
    )
    assert result.exit_code == 2
    assert "needs Ray, which is not installed" in result.output
    assert 'pip install "migperf[ray]"' in result.output


def test_runs_are_split_in_chunks_per_model_and_keyed_per_model_when_keys_collide() -> None:
    # Binding the nodes' answers into a plan is pure data: no Ray needed.
    from migperf.experiments.cluster.assignment import bind_plan
    from migperf.experiments.sweep import run_key

    cfg = parse_config(CONFIG.format(name="x", batch_sizes="[1]").replace('["0"]', "[current]"))

    def node(model: str, keys: list[str]) -> dict[str, Any]:
        runs = [
            {
                "key": k,
                "description": f"run {k} on {model}",
                "layout_index": 0,
                "gpu_index": 0,
                "members": [],
                "templates": [{"run_key": k, "experiment": "x", "config_hash": "h"}],
            }
            for k in keys
        ]
        gpus = [{"index": 0, "name": model}]
        return {
            "host": "h",
            "model": model,
            "gpus": gpus,
            "simulated": True,
            "pid": 1,
            "runs": runs,
        }

    # Two H100 nodes and one A30 node; with MIG off both models plan the same keys.
    keys = [f"k{i}" for i in range(5)]
    infos = {"n1": node("H100", keys), "n2": node("H100", keys), "n3": node("A30", keys[:2])}
    plan = bind_plan(cfg, "x.yaml", infos)
    chash = cfg.config_hash()
    per_model = {r.key: r for r in plan.runs.values()}
    assert len(per_model) == 7
    for k in keys[:2]:  # planned by both models: one key per model
        assert run_key(chash, key=k, gpu_model="H100") in per_model
        assert run_key(chash, key=k, gpu_model="A30") in per_model
    for k in keys[2:]:  # planned by one model only: the key stays what a local run stores
        assert k in per_model and per_model[k].nodes == ["n1", "n2"]
    moved = per_model[run_key(chash, key="k0", gpu_model="A30")]
    assert moved.templates[0]["run_key"] == moved.key and moved.nodes == ["n3"]
    # Contiguous, even chunks per model: 3 + 2 H100 runs, the A30's 2 on its node.
    h100 = [r.key for r in plan.runs.values() if r.model == "H100"]
    assert plan.assignment == {"n1": h100[:3], "n2": h100[3:], "n3": plan.assignment["n3"]}
    assert len(plan.assignment["n3"]) == 2


# ------------------------------------------------------------------ the cluster


@dataclass
class SimNode:
    spec: str
    gpu_name: str
    state: Path
    node: Any  # ray._private.node.Node
    before: MigSnapshot

    @property
    def node_id(self) -> str:
        return str(self.node.node_id)


@dataclass
class LocalCluster:
    cluster: Any
    root: Path
    nodes: list[SimNode]
    up: bool = True

    def add(self, spec: str, gpu_name: str, state: Path, before: MigSnapshot) -> SimNode:
        node = self.cluster.add_node(
            num_cpus=1,
            resources={"migperf_host": 1},
            env_vars={"MIGPERF_SIMULATE": spec, "MIGPERF_STATE_DIR": str(state)},
        )
        sim = SimNode(spec, gpu_name, state, node, before)
        self.nodes.append(sim)
        return sim

    def shutdown(self) -> None:
        if self.up:
            import ray

            self.up = False
            ray.shutdown()
            self.cluster.shutdown()


@contextmanager
def node_nvml(state: Path, spec: str) -> Iterator[Nvml]:
    """The simulated machine of one node, opened from this process."""
    old = os.environ.get("MIGPERF_STATE_DIR")
    os.environ["MIGPERF_STATE_DIR"] = str(state)
    clear_cache()
    try:
        with open_nvml(spec) as nvml:
            yield nvml
    finally:
        if old is None:
            os.environ.pop("MIGPERF_STATE_DIR", None)
        else:
            os.environ["MIGPERF_STATE_DIR"] = old
        clear_cache()


def layout_of(node: SimNode) -> MigSnapshot:
    with node_nvml(node.state, node.spec) as nvml:
        return take_snapshot(nvml, 0)


def processes_of(root: Path, names: tuple[str, ...] = ()) -> list[str]:
    """Processes whose environment points into ``root`` (and whose command names one of names)."""
    out = []
    needle = str(root).encode()
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as fh:
                env = fh.read()
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmd = fh.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{pid}/stat") as fh:
                state = fh.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if needle in env and state != "Z" and (not names or any(n in cmd for n in names)):
            out.append(f"{pid}: {cmd[:120]}")
    return out


def wait_gone(root: Path, names: tuple[str, ...] = (), timeout_s: float = 20.0) -> list[str]:
    deadline = time.monotonic() + timeout_s
    while True:
        left = processes_of(root, names)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


RUNNERS = ("migperf.experiments.cluster.node", "migperf.bench.worker")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    if not ray_available():
        pytest.skip('Ray is not installed (pip install "migperf[ray]")')
    import ray
    from ray.cluster_utils import Cluster

    root = tmp_path_factory.mktemp("cluster")
    c = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 0,
            "include_dashboard": False,
            # Notice a removed node within about a second.
            "_system_config": {
                "health_check_initial_delay_ms": 0,
                "health_check_period_ms": 300,
                "health_check_timeout_ms": 300,
                "health_check_failure_threshold": 3,
            },
        },
    )
    lc = LocalCluster(c, root, [])
    try:
        for i, (spec, name, layout) in enumerate(NODES):
            state = root / f"node{i}"
            with node_nvml(state, spec) as nvml:
                apply_layout(nvml, 0, layout)
                before = take_snapshot(nvml, 0)
            lc.add(spec, name, state, before)
        ray.init(address=c.address, log_to_driver=False, logging_level="warning")
        yield lc
    finally:
        lc.shutdown()


def run_sweep(
    cfg: Any,
    db: Path,
    *,
    resume: bool = False,
    on_event: Callable[..., None] | None = None,
) -> Any:
    with open_executor("ray") as ex, ResultsStore(db) as store:
        plan = ex.plan(cfg, "test.yaml")
        return plan, ex.run(plan, store, resume=resume, on_event=on_event)


def rows(db: Path) -> list[dict[str, Any]]:
    con = sqlite3.connect(db)
    con.row_factory = sqlite3.Row
    out = [
        dict(r)
        for r in con.execute(
            "SELECT run_key, gpu_name, profile, batch_size, status, error, "
            "json_extract(params, '$.node.node_id') AS node FROM runs ORDER BY run_id"
        )
    ]
    con.close()
    return out


@needs_ray
def test_a_sweep_runs_each_model_on_its_nodes_and_stores_every_run_once(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    cfg = config("spread", "[1, 2]")
    db = tmp_path / "r.db"
    events: list[tuple[str, dict[str, Any]]] = []
    plan, report = run_sweep(cfg, db, on_event=lambda kind, **info: events.append((kind, info)))
    got = rows(db)
    by_node = {n.node_id: n for n in cluster.nodes}
    assert len(got) == 4 == len(plan.runs) == report.stored
    assert len({r["run_key"] for r in got}) == 4
    for r in got:
        assert r["status"] == "ok"
        assert r["gpu_name"] == by_node[r["node"]].gpu_name
        assert r["profile"] == ("7g.80gb" if r["gpu_name"] == A100 else "4g.24gb")
    # Each model's runs are split across its nodes: both A100 nodes measured one.
    assert sorted(by_node[r["node"]].spec for r in got) == ["a100-80gb"] * 2 + ["a30"] * 2
    assert len({r["node"] for r in got}) == 3
    # The same sweep has the same run keys locally (the executor is not hashed).
    with node_nvml(tmp_path / "local", "a100-80gb") as nvml:
        local = {r.run_key for r in plan_experiment(nvml, cfg).runs}
    assert local == {r["run_key"] for r in got if r["gpu_name"] == A100}
    # Progress per node, and every node given back as it was.
    done = [info for kind, info in events if kind == "run_done"]
    assert [d["done"] for d in done] == [1, 2, 3, 4]
    assert {d["node"].node_id for d in done} == set(by_node)
    assert report.restored and not report.interrupted
    for node in cluster.nodes:
        assert layout_of(node).same_layout(node.before)
    assert wait_gone(cluster.root, RUNNERS) == []


@needs_ray
def test_dry_run_on_the_cluster_prints_each_nodes_share(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(CONFIG.format(name="dry", batch_sizes="[1, 2, 3]"))
    result = CliRunner().invoke(app, ["run", str(path), "--executor", "ray", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "6 run(s) on 3 node(s)" in result.output
    assert f"{A100}: 2 node(s)" in result.output and f"{A30}: 1 node(s)" in result.output
    assert result.output.count("gemm infer bs=") == 6
    assert not (tmp_path / "results").exists()


@needs_ray
def test_ctrl_c_stops_every_node_and_restores_it(cluster: LocalCluster, tmp_path: Path) -> None:
    pressed: list[str] = []

    def interrupt(kind: str, **info: Any) -> None:
        if kind == "run_done" and not pressed:
            pressed.append(info["key"])
            raise KeyboardInterrupt

    db = tmp_path / "r.db"
    plan, report = run_sweep(config("stop", "[1, 2, 3, 4]"), db, on_event=interrupt)
    assert report.interrupted
    assert 1 <= len(rows(db)) < len(plan.runs) == 8
    assert all(r["status"] == "ok" for r in rows(db))
    assert report.restored and all(n["restored"] for n in report.nodes)
    for node in cluster.nodes:
        assert layout_of(node).same_layout(node.before)
    pids = [n["agent_pid"] for n in report.nodes] + [
        p for n in report.nodes for p in n["runner_pids"]
    ]
    deadline = time.monotonic() + 20
    while any(os.path.exists(f"/proc/{p}") for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert [p for p in pids if os.path.exists(f"/proc/{p}")] == []
    assert wait_gone(cluster.root, RUNNERS) == []


DRIVER = """
import sys
import ray
from migperf.experiments.config import parse_config
from migperf.experiments.cluster.ray_executor import RayExecutor
from migperf.results import ResultsStore

ray.init(address=sys.argv[1], log_to_driver=False, logging_level="warning")
ex = RayExecutor(heartbeat_timeout_s=3.0)
plan = ex.plan(parse_config(sys.argv[2]), "driver.yaml")

def show(kind, **info):
    if kind == "run_start":
        print("running", *(n.agent_pid for n in plan.nodes.values()), flush=True)

with ResultsStore(sys.argv[3]) as store:
    ex.run(plan, store, on_event=show)
"""


@needs_ray
def test_agents_restore_their_node_and_exit_when_the_driver_goes_away(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    text = CONFIG.format(name="orphan", batch_sizes="[1, 2, 3, 4]")
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER, cluster.cluster.address, text, str(tmp_path / "r.db")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        agents = [int(p) for p in (driver.stdout.readline().split() or ["?"])[1:]]  # type: ignore[union-attr]
        assert len(agents) == 3
        assert any(not layout_of(n).same_layout(n.before) for n in cluster.nodes)
    finally:
        driver.kill()
        driver.wait()
    # Detached agents outlive the driver; each notices the silence, stops its
    # runner (which restores the node) and exits.
    deadline = time.monotonic() + 30
    while any(os.path.exists(f"/proc/{p}") for p in agents) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert [p for p in agents if os.path.exists(f"/proc/{p}")] == []
    assert wait_gone(cluster.root, RUNNERS) == []
    for node in cluster.nodes:
        assert layout_of(node).same_layout(node.before)


@needs_ray
def test_a_lost_node_fails_its_current_run_and_its_other_runs_move(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    # 3 A100 runs split 2 + 1 across the A100 nodes, 3 A30 runs on the A30 node.
    # The A100 node with 2 runs and the A30 node are removed (raylet SIGKILLed)
    # as their first run starts.
    a30 = cluster.nodes[2]
    victims: list[SimNode] = []
    removed: list[SimNode] = []
    by_id = {n.node_id: n for n in cluster.nodes}

    def crash(kind: str, **info: Any) -> None:
        node = by_id[info["node"].node_id] if "node" in info else None
        if kind == "node_start" and (node is a30 or info["runs"] == 2):
            victims.append(node)  # type: ignore[arg-type]
        if kind == "run_start" and node in victims and node not in removed:
            removed.append(node)  # type: ignore[arg-type]
            cluster.cluster.remove_node(node.node, allow_graceful=False)  # type: ignore[union-attr]

    db = tmp_path / "r.db"
    cfg = config("lost", "[1, 2, 3]")
    plan, report = run_sweep(cfg, db, on_event=crash)
    a100 = next(n for n in removed if n is not a30)
    survivor = next(n for n in cluster.nodes[:2] if n is not a100)
    assert sorted(n.spec for n in removed) == ["a100-80gb", "a30"]
    got = rows(db)
    assert len(got) == len({r["run_key"] for r in got}) == len(plan.runs) == 6
    on_a100 = [r for r in got if r["gpu_name"] == A100]
    on_a30 = [r for r in got if r["gpu_name"] == A30]
    # The A100 victim's current run failed; its other run moved to the other A100 node.
    failed = [r for r in on_a100 if r["status"] != "ok"]
    assert len(failed) == 1 and failed[0]["status"] == "failed"
    assert failed[0]["error"].startswith(f"node {a100.node_id[:12]} (")
    assert " lost: " in failed[0]["error"]
    assert [r["node"] for r in on_a100 if r["status"] == "ok"] == [survivor.node_id] * 2
    # No other A30 node: its current run and its other runs are failed, with why.
    assert [r["status"] for r in on_a30] == ["failed"] * 3
    lost = [r for r in on_a30 if "no other node" not in r["error"]]
    assert len(lost) == 1 and f"node {a30.node_id[:12]} (" in lost[0]["error"]
    assert all(f"no other node with {A30} is left" in r["error"] for r in on_a30 if r not in lost)
    assert not report.restored
    assert {n["node_id"] for n in report.nodes if n["lost"]} == {a100.node_id, a30.node_id}
    # The survivor is given back; the lost nodes keep the sweep's layout and
    # its journal; nothing of theirs is left running.
    assert layout_of(survivor).same_layout(survivor.before)
    for node in (a100, a30):
        assert not layout_of(node).same_layout(node.before)
    assert wait_gone(cluster.root, RUNNERS) == []

    # The lost machines come back (same GPUs, same state): the next run of the
    # sweep puts their recorded layouts back, skips the 2 runs that were ok and
    # retries the 4 that failed with their nodes, as second attempts.
    for node in (a100, a30):
        cluster.nodes.remove(node)
        cluster.add(node.spec, node.gpu_name, node.state, node.before)
    _, again = run_sweep(cfg, db, resume=True)
    assert (again.skipped_existing, again.stored, len(rows(db))) == (2, 4, 10)
    con = sqlite3.connect(db)
    latest = con.execute("SELECT attempt, status FROM latest_runs ORDER BY run_key").fetchall()
    con.close()
    assert sorted(latest) == [(1, "ok")] * 2 + [(2, "ok")] * 4
    assert again.restored
    for node in cluster.nodes:
        assert layout_of(node).same_layout(node.before)


@needs_ray
def test_shutdown_leaves_no_ray_or_worker_process(cluster: LocalCluster) -> None:
    cluster.shutdown()
    assert wait_gone(cluster.root) == []
