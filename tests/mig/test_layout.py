"""Layout text, YAML and resolution against one GPU's profiles."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from migperf.errors import ConfigError, UsageError
from migperf.mig.layout import (
    InstanceSpec,
    LayoutSpec,
    layout_from_state,
    layout_from_yaml,
    parse_layout,
    place_compute_instances,
    resolve_layout,
)
from migperf.nvml.catalog import get_model
from migperf.nvml.types import GpuInstanceProfile, Placement


def profiles(key: str) -> list[GpuInstanceProfile]:
    return [p.to_profile() for p in get_model(key).profiles]


def names(spec: LayoutSpec) -> list[str | int]:
    return [i.profile for i in spec.instances]


# ------------------------------------------------------------------- grammar


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1g.10gb*2", [InstanceSpec("1g.10gb")] * 2),
        ("1g.10gb x2", [InstanceSpec("1g.10gb")] * 2),
        ("1g.10gbx2", [InstanceSpec("1g.10gb")] * 2),
        ("3g.40gb@4", [InstanceSpec("3g.40gb", 4)]),
        ("7g.80gb[1c*7]", [InstanceSpec("7g.80gb", None, (1,) * 7)]),
        ("3g.40gb[2c,1c]", [InstanceSpec("3g.40gb", None, (2, 1))]),
        ("3g.40gb[1c,2c]", [InstanceSpec("3g.40gb", None, (2, 1))]),
        ("3g.40gb[]", [InstanceSpec("3g.40gb", None, ())]),
        ("9,14,19", [InstanceSpec(9), InstanceSpec(14), InstanceSpec(19)]),
        ("1g.5gb+me", [InstanceSpec("1g.5gb+me")]),
        ("1g.24gb-me", [InstanceSpec("1g.24gb-me")]),
        ("1g.24gb+me.all", [InstanceSpec("1g.24gb+me.all")]),
        ("1g.24gb-me x2", [InstanceSpec("1g.24gb-me")] * 2),
        ("1g.24gb+me.allx2", [InstanceSpec("1g.24gb+me.all")] * 2),
        ("3G.40GB @ 4 [ 2c , 1c ]", [InstanceSpec("3g.40gb", 4, (2, 1))]),
        ("19*3", [InstanceSpec(19)] * 3),
        (
            "3g.40gb@4[2c,1c], 2g.20gb",
            [InstanceSpec("3g.40gb", 4, (2, 1)), InstanceSpec("2g.20gb")],
        ),
    ],
)
def test_grammar_examples(text: str, expected: list[InstanceSpec]) -> None:
    assert list(parse_layout(text).instances) == expected


@pytest.mark.parametrize("text", ["", "  ", "none", "EMPTY"])
def test_empty_layouts(text: str) -> None:
    assert parse_layout(text) == LayoutSpec()
    assert str(parse_layout(text)) == "none"


def test_canonical_text_is_largest_first_with_repeats_folded() -> None:
    spec = parse_layout("1g.10gb, 3g.40gb@4, 1g.10gb, 2g.20gb, 9, 7g.80gb[1c*3,4c]")
    assert str(spec) == "7g.80gb[4c,1c*3],3g.40gb@4,2g.20gb,1g.10gb*2,9"
    assert parse_layout(str(spec)).same_as(spec)
    assert spec.counts() == {"7g.80gb": 1, "3g.40gb": 1, "2g.20gb": 1, "1g.10gb": 2, "9": 1}


def test_order_does_not_matter_for_identity() -> None:
    assert parse_layout("1g.10gb,3g.40gb").same_as(parse_layout("3g.40gb, 1g.10gb"))
    assert not parse_layout("1g.10gb,3g.40gb").same_as(parse_layout("3g.40gb"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "1g.10gb, 3g.40gb@x",
            'invalid layout "1g.10gb, 3g.40gb@x": item 2 "3g.40gb@x" (column 9): '
            'expected a placement start (a number of memory slices) after "@"',
        ),
        (
            "3g.40",
            'invalid layout "3g.40": item 1 "3g.40" (column 1): '
            "expected a profile name of the form <g>g.<gb>gb, like 3g.40gb",
        ),
        (
            "big",
            'invalid layout "big": item 1 "big" (column 1): '
            "expected a profile name like 3g.40gb or a profile id like 9",
        ),
        (
            "1g.10gb,,2g.20gb",
            'invalid layout "1g.10gb,,2g.20gb": item 2 "" (column 9): '
            "empty item (two commas in a row, or a trailing comma)",
        ),
        (
            "3g.40gb[2c,one]",
            'invalid layout "3g.40gb[2c,one]": item 1 "3g.40gb[2c,one]" (column 1): '
            'expected compute-instance sizes like [2c,1c] or [1c*7] inside "[...]", got "one"',
        ),
        (
            "1g.10gb*0",
            'invalid layout "1g.10gb*0": item 1 "1g.10gb*0" (column 1): '
            "the count must be between 1 and 64, got 0",
        ),
        (
            "3g.40gb@4*2",
            'invalid layout "3g.40gb@4*2": item 1 "3g.40gb@4*2" (column 1): '
            "2 instances cannot all start at memory slice 4; give each its own item, or drop the @START",
        ),
        (
            "2c.3g.40gb",
            'invalid layout "2c.3g.40gb": item 1 "2c.3g.40gb" (column 1): '
            "compute-instance names like 2c.3g.40gb are not layout items; "
            "write the GPU instance with its split, e.g. 3g.40gb[2c,1c]",
        ),
        (
            "3g.40gb please",
            'invalid layout "3g.40gb please": item 1 "3g.40gb please" (column 1): unexpected '
            '"please" after the profile; expected a placement start, a compute split, a count or a comma',
        ),
        ("3g.40gb[2c", 'invalid layout "3g.40gb[2c": unbalanced "[" and "]"'),
    ],
)
def test_malformed_layouts_quote_the_item_and_position(text: str, message: str) -> None:
    with pytest.raises(UsageError) as exc:
        parse_layout(text)
    assert exc.value.message == message
    assert "3g.40gb@4" in exc.value.hint


# ----------------------------------------------------------------------- YAML


def test_yaml_list_of_strings_and_mappings() -> None:
    spec = layout_from_yaml(
        [
            "1g.10gb*2",
            {"profile": "3g.40gb", "start": 4, "compute": [1, 2]},
            {"profile": 14, "count": 2},
            {"profile": "7g.80gb", "compute": "1c*7"},
        ]
    )
    assert list(spec.instances) == [
        InstanceSpec("1g.10gb"),
        InstanceSpec("1g.10gb"),
        InstanceSpec("3g.40gb", 4, (2, 1)),
        InstanceSpec(14),
        InstanceSpec(14),
        InstanceSpec("7g.80gb", None, (1,) * 7),
    ]


def test_yaml_none_and_text() -> None:
    assert layout_from_yaml(None) == LayoutSpec()
    assert names(layout_from_yaml("3g.40gb, 1g.10gb")) == ["3g.40gb", "1g.10gb"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            [{"profile": "3g.40gb", "cnt": 2}],
            "exp.yaml: layout[0]: unknown key 'cnt' (expected profile, count, start, compute)",
        ),
        ([{"count": 2}], "exp.yaml: layout[0]: missing required key 'profile'"),
        (
            [{"profile": "3g.40gb", "count": 0}],
            "exp.yaml: layout[0].count: 0 is not a positive integer",
        ),
        (
            [{"profile": "3g.40gb", "start": -1}],
            "exp.yaml: layout[0].start: -1 is not a non-negative integer",
        ),
        (
            [{"profile": "3g.40gb", "count": 2, "start": 0}],
            "exp.yaml: layout[0]: 2 instances cannot all start at memory slice 0",
        ),
        (
            [{"profile": "3g.40"}],
            "exp.yaml: layout[0].profile: '3g.40' is not a profile name like 3g.40gb or an id like 9",
        ),
        (
            [{"profile": "3g.40gb", "compute": [2, 0]}],
            "exp.yaml: layout[0].compute: 0 is not a positive integer",
        ),
        ([3.5], "exp.yaml: layout[0]: expected a string or a mapping, got float"),
        ({"profile": "3g.40gb"}, "exp.yaml: layout: expected a list of GPU instances, got dict"),
    ],
)
def test_yaml_errors(data: object, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        layout_from_yaml(data, where="exp.yaml: layout")
    assert exc.value.message == message


def test_yaml_string_entries_report_their_index() -> None:
    with pytest.raises(ConfigError) as exc:
        layout_from_yaml(["3g.40gb", "3g.40gb@x"])
    assert exc.value.message.startswith('layout[1]: invalid layout "3g.40gb@x": item 1')


# ------------------------------------------------------------------ resolving


def test_the_same_name_is_a_different_profile_on_each_model() -> None:
    on_40 = resolve_layout(parse_layout("1g.10gb"), profiles("a100-40gb"))
    on_80 = resolve_layout(parse_layout("1g.10gb"), profiles("a100-80gb"))
    assert on_40.instances[0].profile.profile_id == 15
    assert on_40.instances[0].profile.memory_slices == 2
    assert on_80.instances[0].profile.profile_id == 19
    assert on_80.instances[0].profile.memory_slices == 1


def test_ids_resolve_to_names_and_default_compute_spans_the_gi() -> None:
    resolved = resolve_layout(parse_layout("9,14,19"), profiles("a100-80gb"))
    assert [i.name for i in resolved.instances] == ["3g.40gb", "2g.20gb", "1g.10gb"]
    assert [i.compute for i in resolved.instances] == [(3,), (2,), (1,)]
    assert str(resolved) == "3g.40gb,2g.20gb,1g.10gb"
    assert resolved.counts() == {"3g.40gb": 1, "2g.20gb": 1, "1g.10gb": 1}


def test_unknown_profile_lists_this_gpus_profiles() -> None:
    with pytest.raises(UsageError) as exc:
        resolve_layout(
            parse_layout("1g.5gb"), profiles("a100-80gb"), gpu_name="NVIDIA A100-SXM4-80GB"
        )
    assert exc.value.message == (
        "unknown MIG profile 1g.5gb on NVIDIA A100-SXM4-80GB; valid profiles are "
        "1g.10gb (19), 1g.10gb+me (20), 1g.20gb (15), 2g.20gb (14), 3g.40gb (9), "
        "4g.40gb (5), 7g.80gb (0)"
    )
    assert "nvidia-smi mig -lgip" in exc.value.hint


def test_unknown_profile_id() -> None:
    with pytest.raises(
        UsageError, match=r"^unknown profile id 21 on this GPU; valid profiles are 1g\.5gb \(19\)"
    ):
        resolve_layout(parse_layout("21"), profiles("a100-40gb"))


def test_start_must_be_one_of_the_profiles_placements() -> None:
    with pytest.raises(UsageError) as exc:
        resolve_layout(parse_layout("3g.40gb@2"), profiles("a100-80gb"))
    assert exc.value.message == (
        "3g.40gb cannot start at memory slice 2 on this GPU; it can start only at slices 0 or 4"
    )
    with pytest.raises(UsageError, match="it can start only at slice 0$"):
        resolve_layout(parse_layout("4g.40gb@4"), profiles("a100-80gb"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "4g.40gb[3c]",
            "4g.40gb[3c]: a 4g.40gb GPU instance has no 3-slice compute instance (it offers 1, 2 or 4 slices)",
        ),
        (
            "3g.40gb[2c*2]",
            "3g.40gb[2c*2]: the compute instances need 4 compute slices but a 3g.40gb GPU instance has 3",
        ),
    ],
)
def test_invalid_compute_splits(text: str, message: str) -> None:
    with pytest.raises(UsageError) as exc:
        resolve_layout(parse_layout(text), profiles("a100-80gb"))
    assert exc.value.message == message
    assert "nvidia-smi mig -lcip" in exc.value.hint


def test_valid_compute_splits() -> None:
    resolved = resolve_layout(parse_layout("7g.80gb[3c,2c,1c,1c]"), profiles("a100-80gb"))
    assert resolved.instances[0].compute == (3, 2, 1, 1)
    assert str(resolved) == "7g.80gb[3c,2c,1c*2]"


def test_place_compute_instances() -> None:
    assert place_compute_instances(3, [1, 2]) == (Placement(2, 1), Placement(0, 2))
    assert place_compute_instances(7, [3, 3, 1]) == (
        Placement(0, 3),
        Placement(3, 3),
        Placement(6, 1),
    )
    # The compute-instance grid is unverified and drivers place CIs themselves
    # (`-cci 0,1` on a 3g makes 1c + 2c): a split that fits the slices is
    # placed off the multiples-of-size grid rather than refused (changed on
    # purpose; it was None, and 7g.80gb[4c,3c] an invalid split).
    assert place_compute_instances(7, [4, 3]) == (Placement(0, 4), Placement(4, 3))
    assert place_compute_instances(4, [2, 1, 1]) == (
        Placement(0, 2),
        Placement(2, 1),
        Placement(3, 1),
    )
    assert place_compute_instances(2, []) == ()


# ---------------------------------------------------------------------- state


def test_layout_from_state_is_canonical() -> None:
    spec = layout_from_state(
        [("1g.10gb", 6, [1]), ("3g.40gb", 0, [1, 2]), ("2g.20gb", 4, None), ("1g.10gb", 5, [])]
    )
    assert str(spec) == "3g.40gb@0[2c,1c],2g.20gb@4,1g.10gb@5[],1g.10gb@6"
    assert spec.counts() == {"3g.40gb": 1, "2g.20gb": 1, "1g.10gb": 2}
    assert parse_layout(str(spec)) == spec


# ------------------------------------------------------------------ properties

_PROFILE = st.sampled_from(
    ["7g.80gb", "4g.40gb", "3g.40gb", "2g.20gb", "1g.10gb", "1g.24gb+me.all", "1g.24gb-me"]
) | st.integers(0, 99)
_INSTANCE = st.builds(
    InstanceSpec,
    _PROFILE,
    st.none() | st.integers(0, 11),
    st.none()
    | st.lists(st.integers(1, 7), max_size=4).map(lambda s: tuple(sorted(s, reverse=True))),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_INSTANCE, max_size=8))
def test_canonical_text_round_trips(instances: list[InstanceSpec]) -> None:
    spec = LayoutSpec(tuple(instances))
    text = str(spec)
    assert parse_layout(text).same_as(spec)
    assert str(parse_layout(text)) == text
