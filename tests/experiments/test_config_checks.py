"""Config validation catches what a run would refuse: ceilings, and what workers call invalid.

A config that `migperf config check` calls valid must not produce `invalid`
rows; each mistake a worker used to catch at run time is caught here with its
file:line, and the validator's rules are compared with the workers' own.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from migperf.errors import ConfigError
from migperf.experiments.config import MAX_RUNS, RangeSpec, parse_config, run_estimate
from migperf.experiments.sweep import count_runs, expand, job_points_full, slots_of

cli = CliRunner()


def problems(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "c.yaml")
    return info.value.message


def job(body: str, top: str = "") -> str:
    return f"name: x\n{top}jobs:\n  - workload: {body}\n"


# ------------------------------------------------------------------ ceilings


def test_a_huge_range_is_refused_without_listing_it() -> None:
    t0 = time.monotonic()
    msg = problems(job("gemm\n    sweep: {batch_size: {start: 1, stop: 1e9, step: 1}}"))
    assert time.monotonic() - t0 < 1.0
    assert msg == (
        "c.yaml:4: jobs[0].sweep.batch_size: the range has 1,000,000,001 values; an axis may "
        "have at most 10,000 (use a larger step or mul)"
    )
    assert (
        RangeSpec(start=1, stop=64, mul=2).count()
        == len(RangeSpec(start=1, stop=64, mul=2).values())
        == 7
    )
    assert RangeSpec(start=32, stop=256, step=32).count() == 8
    with pytest.raises(ValueError, match="values"):
        RangeSpec(start=1, stop=2, step=1e-300)  # a quotient of inf is not int()ed
    assert "finite number" in problems(
        job("gemm\n    sweep: {batch_size: {start: 1, stop: .inf, step: 1}}")
    )


def test_repeats_over_the_ceiling_say_how_many_runs_and_where() -> None:
    msg = problems(job("gemm", top="repeats: 100000\n"))
    assert msg == (
        "c.yaml:2: repeats: the experiment would make at least 100,000 runs (1 sweep point x "
        "100,000 repeats x 1 layout x 1 GPU x 1 sharing arm); at most 10,000 are allowed: "
        "shrink the sweep, the repeats or the layouts, or split the experiment into several files"
    )


def test_a_sweep_product_over_the_ceiling_is_refused_before_expansion() -> None:
    text = job(
        "gemm\n    sweep:\n      batch_size: {start: 1, stop: 5000, step: 1}\n"
        "      model_args.n: [8, 16, 32]",
        top="layouts: ['0', '9,9']\n",
    )
    msg = problems(text)
    assert msg.startswith("c.yaml:6: jobs[0].sweep: the experiment would make at least 30,000 runs")
    assert "15,000 sweep points x 1 repeat x 2 layouts" in msg
    lists = job("gemm\n    sweep: {batch_size: [" + ", ".join(["1"] * 10_001) + "]}")
    assert "axis 'batch_size' has 10,001 values; at most 10,000" in problems(lists)


def test_the_library_refuses_a_big_sweep_before_expanding_it() -> None:
    cfg = parse_config(
        job("gemm\n    sweep: {batch_size: {start: 1, stop: 100, step: 1}}", top="repeats: 50\n")
    )
    assert run_estimate(cfg)[0] == 5000  # within the file's ceiling...
    # ...but seven slots of every layout make it 35,000: refused before any run is built.
    snap = _snapshot("1g.10gb*7")
    layouts = {(0, 0): snap}
    assert count_runs(cfg, layouts) == 5000
    cfg = cfg.model_copy(update={"instances": "each"})
    assert count_runs(cfg, layouts) == 35_000 > MAX_RUNS
    with pytest.raises(ConfigError, match="up to 35,000 runs"):
        expand(cfg, layouts)
    big = cfg.jobs[0].model_copy(
        update={
            "sweep": {"batch_size": RangeSpec.model_construct(start=1, stop=1e6, step=1, mul=None)}
        }
    )
    with pytest.raises(ConfigError, match="1,000,000 points"):
        job_points_full(big)


def _snapshot(layout: str) -> Any:
    from migperf.mig.manager import apply_layout
    from migperf.mig.snapshot import take_snapshot
    from migperf.nvml import open_nvml

    with open_nvml("a100-80gb") as nvml:
        apply_layout(nvml, 0, layout)
        snap = take_snapshot(nvml, 0)
    assert len(slots_of(snap)) == 7
    return snap


# ------------------------------------------------- what workers call invalid

MISTAKES = [
    # (the job, what the error says); each was an `invalid` row at run time before
    (
        "gemm\n    model_args: {m: 32}",
        "c.yaml:4: jobs[0].model_args.m: unknown model arg 'm' for gemm",
    ),
    ("gemm\n    task: train", "c.yaml:4: jobs[0].task: gemm supports only infer, not train"),
    (
        "gemm\n    model_args: {n: '32'}",
        "c.yaml:4: jobs[0].model_args.n: model arg n='32': gemm.n takes a int",
    ),
    (
        "gemm\n    model_args: {n: 0}",
        "c.yaml:4: jobs[0].model_args.n: gemm: model arg n=0 must be positive",
    ),
    (
        "gemm\n    compile: true",
        "c.yaml:4: jobs[0].compile: gemm runs no model; compile does not apply",
    ),
    (
        "memcpy\n    scenario: {name: offline}",
        "c.yaml:4: jobs[0].scenario: memcpy cannot serve inference scenarios",
    ),
    (
        "sleep\n    model_args: {service_ms: -1.0}",
        "c.yaml:4: jobs[0].model_args.service_ms: sleep: service_ms=-1.0 must not be negative",
    ),
    (
        "bert-base\n    model_args: {num_hidden_layer: 1}",
        "c.yaml:4: jobs[0].model_args.num_hidden_layer: unknown model arg 'num_hidden_layer' for "
        "bert-base: it is not a workload argument nor a field of BertConfig (did you mean "
        "num_hidden_layers",
    ),
    (
        "bert-base\n    model_args: {hidden_size: 12.5}",
        "jobs[0].model_args.hidden_size: model arg hidden_size=12.5: BertConfig.hidden_size takes a int",
    ),
    (
        "bert-base\n    seq_len: 600",
        "c.yaml:4: jobs[0].seq_len: bert-base: seq_len 600 exceeds the 512 positions",
    ),
    (
        "roberta-base\n    sweep: {seq_len: [128, 513]}",
        "c.yaml:4: jobs[0].sweep.seq_len: roberta-base: seq_len 513 exceeds the 512 positions",
    ),
    (
        "vit-base\n    model_args: {image_size: 30}",
        "c.yaml:4: jobs[0].model_args.image_size: vit-base: image_size 30 is not a multiple of patch_size 16",
    ),
    (
        "distilbert\n    sweep: {model_args.n_layers: [1, 'two']}",
        "c.yaml:4: jobs[0].sweep.model_args.n_layers: model arg n_layers='two'",
    ),
    (
        "bert-base\n    model_args: {layer_norm_eps: 1e-5}",
        "(YAML reads 1e-5 as text; write a dot and a signed exponent, like 1.0e-5",
    ),
    (
        "sleep\n    scenario: {name: offline}\n    sweep: {scenario.latency_target_ms: [5]}",
        "jobs[0].sweep.scenario.latency_target_ms: latency_target_ms does not apply to the offline scenario",
    ),
]


@pytest.mark.parametrize(("body", "expected"), MISTAKES)
def test_each_mistake_a_worker_would_refuse_is_a_config_error(body: str, expected: str) -> None:
    assert expected in problems(job(body))


def test_stop_rules_the_worker_refuses_are_refused_too() -> None:
    msg = problems(
        "name: x\nstop: {min_duration_s: 10, max_duration_s: 5}\njobs: [{workload: gemm}]\n"
    )
    assert msg == "c.yaml:2: stop: max_duration_s (5) is below min_duration_s (10)"


def test_every_problem_is_listed_at_once_with_schema_problems() -> None:
    msg = problems(
        "name: x\nrepeats: 0\njobs:\n  - workload: gemm\n    model_args: {m: 1}\n"
        "neighbors:\n  - {workload: memcpy, task: train}\n"
    )
    assert "3 problem(s) in c.yaml" in msg
    assert "c.yaml:2: repeats: Input should be greater than or equal to 1" in msg
    assert "c.yaml:5: jobs[0].model_args.m: unknown model arg 'm'" in msg
    assert "c.yaml:7: neighbors[0].task: memcpy supports only infer, not train" in msg


def test_validation_imports_no_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys\nfrom migperf.experiments.config import parse_config\n"
        "parse_config('name: x\\njobs: [{workload: bert-base, model_args: {output_hidden_states: true}, seq_len: 64}]\\n')\n"
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ------------------------------------------ the validator agrees with workers

AGREEMENT = [
    ("gemm", {"n": 8}, 1, 128),
    ("gemm", {"m": 8}, 1, 128),
    ("gemm", {"n": 8.0}, 1, 128),
    ("gemm", {"n": 0}, 1, 128),
    ("memcpy", {"size_mib": 1e-9}, 1, 128),
    ("memcpy", {"size_mib": 0.01}, 1, 128),
    ("sleep", {"service_ms": 1, "per_sample_ms": -0.5}, 1, 128),
    ("sleep", {"colour": 1}, 1, 128),
    ("bert-base", {"num_hidden_layer": 1}, 1, 16),
    ("bert-base", {"hidden_dropout_prob": 0}, 1, 16),
    ("bert-base", {"output_hidden_states": "yes"}, 1, 16),
    ("bert-base", {"max_position_embeddings": 20}, 1, 21),
    ("bert-base", {"max_position_embeddings": 20}, 1, 20),
    ("roberta-base", {}, 1, 513),
    ("roberta-base", {}, 1, 512),
    ("vit-base", {"image_size": 30}, 1, 128),
    ("vit-base", {"image_size": 32}, 1, 128),
    ("resnet18", {"image_size": 0}, 1, 128),
    ("resnet18", {"depths": 2}, 1, 128),
]


@pytest.mark.parametrize(("workload", "margs", "bs", "seq"), AGREEMENT)
def test_the_validator_and_the_worker_agree(
    workload: str, margs: dict[str, Any], bs: int, seq: int
) -> None:
    torch = pytest.importorskip("torch")
    from migperf.bench.spec import parse_spec
    from migperf.bench.workloads import build_workload
    from migperf.errors import UsageError

    small = json.loads(json.dumps(margs))
    if workload in ("bert-base", "roberta-base", "vit-base"):
        # Tiny models: the build runs for real, on the CPU.
        small = {
            "num_hidden_layers": 1,
            "hidden_size": 32,
            "num_attention_heads": 2,
            "intermediate_size": 37,
        } | small
    text = f"name: x\njobs:\n  - workload: {workload}\n    batch_size: {bs}\n    seq_len: {seq}\n    model_args: {json.dumps(small)}\n"
    try:
        parse_config(text, "c.yaml")
        config_ok = True
    except ConfigError:
        config_ok = False
    spec = parse_spec(
        {
            "workload": workload,
            "task": "infer",
            "batch_size": bs,
            "seq_len": seq,
            "model_args": small,
        }
    )
    try:
        build_workload(spec, torch.device("cpu"))
        worker_ok = True
    except UsageError:
        worker_ok = False
    assert config_ok == worker_ok


def test_workloads_without_per_sample_inference_are_the_listed_ones() -> None:
    torch = pytest.importorskip("torch")
    from migperf.bench.spec import parse_spec
    from migperf.bench.workloads import build_workload
    from migperf.experiments.jobcheck import NO_SCENARIO

    args = {"gemm": {"n": 8}, "memcpy": {"size_mib": 0.01}, "sleep": {"service_ms": 0.0}}
    for name, margs in args.items():
        spec = parse_spec({"workload": name, "task": "infer", "model_args": margs})
        prepared = build_workload(spec, torch.device("cpu"))
        assert (prepared.infer_batch is None) == (name in NO_SCENARIO), name


def test_static_config_fields_cover_every_field_the_worker_takes() -> None:
    transformers = pytest.importorskip("transformers")
    from migperf.bench.workloads import load_workload, workload_names
    from migperf.bench.workloads.base import check_type
    from migperf.experiments.hf_fields import config_fields

    internal = {
        "transformers_version",
        "model_type",
        "architectures",
        "_name_or_path",
        "dtype",
        "torch_dtype",
        "id2label",
        "label2id",
    }
    for name in workload_names():
        cls = load_workload(name)
        if not hasattr(cls, "CONFIG_CLASS"):
            continue
        real = getattr(transformers, cls.CONFIG_CLASS)(**cls.CONFIG_DEFAULTS).to_dict()
        static = config_fields(cls.CONFIG_CLASS)
        assert static is not None, name
        assert set(real) - internal <= set(static), name
        for key in set(real) - internal - set(cls.CONFIG_DEFAULTS):
            if static[key] is not None:  # the type check uses this default: same verdicts
                check_type(name, key, real[key], static[key])
                check_type(name, key, static[key], real[key])


# ----------------------------------------------------- `migperf config check`


def _cli(*args: str) -> tuple[int, str, str]:
    from migperf.cli.main import app

    r = cli.invoke(app, list(args))
    return r.exit_code, r.stdout, r.stderr


def test_a_config_that_config_check_calls_valid_makes_no_invalid_rows(
    tiny_config: Callable[..., Path], tmp_path: Path
) -> None:
    cfg = tiny_config(layouts='["0"]', batch_sizes="[1, 2]")
    code, out, err = _cli("--simulate", "a100-80gb", "config", "check", str(cfg))
    assert code == 0 and "valid; 2 run(s)" in out, err
    db = tmp_path / "r.db"
    code, _, err = _cli("--simulate", "a100-80gb", "run", str(cfg), "--results", str(db))
    assert code == 0, err
    code, out, _ = _cli("results", "show", "--results", str(db), "--json")
    rows = json.loads(out)
    assert len(rows) == 2 and {r["status"] for r in rows} == {"ok"}


def test_config_check_and_run_refuse_what_used_to_run_invalid(
    tiny_config: Callable[..., Path], tmp_path: Path
) -> None:
    # Before, both passed `config check` and every run came back `invalid`.
    cfg = tiny_config(layouts='["9,9"]')
    cfg.write_text(
        cfg.read_text().replace("model_args: {n: 32}", "model_args: {n: 32, m: 1}\n    task: train")
    )
    db = tmp_path / "r.db"
    for command in (["config", "check", str(cfg)], ["run", str(cfg), "--results", str(db)]):
        code, _, err = _cli("--simulate", "a100-80gb", *command)
        assert code == 2, err
        assert f"{cfg}:12: jobs[0].task: gemm supports only infer, not train" in err
        assert f"{cfg}:11: jobs[0].model_args.m: unknown model arg 'm' for gemm" in err
    # Nothing changed: no store, and the GPU still has no instances.
    assert not db.exists()
    from migperf.mig.snapshot import take_snapshot
    from migperf.nvml import open_nvml

    with open_nvml("a100-80gb") as nvml:
        assert not take_snapshot(nvml, 0).instances
