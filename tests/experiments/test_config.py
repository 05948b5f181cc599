"""Config validation: every problem at once, each with file:line: field."""

from __future__ import annotations

from pathlib import Path

import pytest

from migperf.errors import ConfigError
from migperf.experiments.config import RangeSpec, json_schema, load_config, parse_config
from migperf.experiments.sweep import job_points


def test_every_problem_is_reported_with_its_line() -> None:
    text = (
        "name: x\n"
        'layouts: ["7g.80gb"]\n'
        "jobs:\n"
        "  - workload: resnet5\n"
        "    batch_size: -4\n"
        "    colour: red\n"
        "repeats: 0\n"
    )
    with pytest.raises(ConfigError) as info:
        parse_config(text, "cfg.yaml")
    msg = info.value.message
    assert "4 problem(s) in cfg.yaml" in msg
    assert "cfg.yaml:4: jobs[0].workload: unknown workload 'resnet5'" in msg
    assert "cfg.yaml:5: jobs[0].batch_size: Input should be greater than or equal to 1" in msg
    assert "cfg.yaml:6: jobs[0].colour: unknown field" in msg
    assert "cfg.yaml:7: repeats:" in msg


def test_bad_yaml_and_empty_files() -> None:
    with pytest.raises(ConfigError, match=r"cfg.yaml:2: not valid YAML"):
        parse_config("name: x\njobs: [1\n", "cfg.yaml")
    with pytest.raises(ConfigError, match="empty"):
        parse_config("", "cfg.yaml")
    with pytest.raises(ConfigError, match="required field is missing"):
        parse_config("name: x\n", "cfg.yaml")


def test_sweep_axes_and_ranges() -> None:
    cfg = parse_config(
        "name: s\njobs:\n  - workload: bert-base\n    sweep:\n"
        "      batch_size: {start: 1, stop: 16, mul: 2}\n      seq_len: [32, 64]\n"
        "      model_args.num_hidden_layers: [1, 2]\n"
    )
    points = job_points(cfg.jobs[0])
    assert len(points) == 5 * 2 * 2
    assert sorted({p[0] for p in points}) == [1, 2, 4, 8, 16]
    assert {p[2]["num_hidden_layers"] for p in points} == {1, 2}
    assert RangeSpec(start=32, stop=256, step=32).values()[-1] == 256
    with pytest.raises(ConfigError, match="cannot sweep 'colour'"):
        parse_config("name: s\njobs:\n  - workload: gemm\n    sweep: {colour: [1]}\n")
    with pytest.raises(ConfigError, match="give exactly one of step or mul"):
        parse_config(
            "name: s\njobs:\n  - workload: gemm\n    sweep: {batch_size: {start: 1, stop: 4}}\n"
        )


def test_config_hash_ignores_the_name_but_not_what_is_measured() -> None:
    a = parse_config("name: a\njobs: [{workload: gemm}]\n")
    b = parse_config("name: b\njobs: [{workload: gemm}]\n")
    c = parse_config("name: a\njobs: [{workload: gemm, batch_size: 2}]\n")
    assert a.config_hash() == b.config_hash() != c.config_hash()


def test_schema_is_json_schema() -> None:
    schema = json_schema()
    assert schema["title"] == "ExperimentConfig"
    assert "jobs" in schema["required"]


def test_a_misspelt_choice_is_one_line_with_a_suggestion(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("name: x\ninstances: frist\njobs: [{workload: gemm}]\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = info.value.message
    assert message.count("\n") == 0  # one problem, not one per union member
    assert "c.yaml:2: instances: 'frist' is not one of first, each, all" in message
    assert "did you mean 'first'?" in message
    assert "Input should be" not in message and "literal[" not in message
