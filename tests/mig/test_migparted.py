"""mig-parted config files: validation, selection, layouts, export round trips."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from migperf.errors import ConfigError
from migperf.mig.layout import LayoutSpec, parse_layout
from migperf.mig.migparted import (
    MigPartedEntry,
    export_migparted,
    layout_for_gpu,
    layout_from_counts,
    load_migparted,
    migparted_counts,
    select_config,
)
from migperf.mig.solver import MigGeometry, solve_layout
from migperf.nvml.catalog import get_model

# mig-parted's README example (docs/reference/mig-facts.md 11.2).
README = """\
version: v1
mig-configs:
  all-disabled:
    - devices: all
      mig-enabled: false
  all-enabled:
    - devices: all
      mig-enabled: true
      mig-devices: {}
  all-1g.5gb:
    - devices: all
      mig-enabled: true
      mig-devices:
        "1g.5gb": 7
  all-balanced:
    - devices: all
      mig-enabled: true
      mig-devices:
        "1g.5gb": 2
        "2g.10gb": 1
        "3g.20gb": 1
  custom-config:
    - devices: [0,1,2,3]
      mig-enabled: false
    - devices: [4]
      mig-enabled: true
      mig-devices:
        "1g.5gb": 7
    - devices: [5]
      mig-enabled: true
      mig-devices:
        "2g.10gb": 3
"""

# config-default.yaml's all-balanced entries for the models in the catalog
# (docs/reference/mig-facts.md 11.2), with each model's PCI id as its device filter.
BALANCED = {
    "a100-40gb": {"1g.5gb": 2, "2g.10gb": 1, "3g.20gb": 1},
    "a100-80gb": {"1g.10gb": 2, "2g.20gb": 1, "3g.40gb": 1},
    "h100-80gb": {"1g.10gb": 2, "2g.20gb": 1, "3g.40gb": 1},
    "a30": {"1g.6gb": 2, "2g.12gb": 1},
    "h100-nvl": {"1g.12gb": 2, "2g.24gb": 1, "3g.47gb": 1},
    "h200": {"1g.18gb": 2, "2g.35gb": 1, "3g.71gb": 1},
    "rtx-pro-6000": {"1g.24gb": 2, "2g.48gb": 1},
}


def balanced_yaml() -> str:
    lines = ["version: v1", "mig-configs:", "  all-balanced:"]
    for key, counts in BALANCED.items():
        lines += [
            f'    - device-filter: "0x{get_model(key).pci_device_id:08X}"',
            "      devices: all",
            "      mig-enabled: true",
            "      mig-devices:",
        ]
        lines += [f'        "{name}": {n}' for name, n in counts.items()]
    return "\n".join(lines) + "\n"


def load_error(text: str) -> str:
    with pytest.raises(ConfigError) as exc:
        load_migparted(text, source="cfg.yaml")
    return exc.value.message


# -------------------------------------------------------------------- loading


def test_readme_example_loads() -> None:
    cfg = load_migparted(README, source="config.yaml")
    assert cfg.names == [
        "all-disabled",
        "all-enabled",
        "all-1g.5gb",
        "all-balanced",
        "custom-config",
    ]
    custom = select_config(cfg, "custom-config")
    assert custom[0] == MigPartedEntry((0, 1, 2, 3), False, (), (), 23)
    assert custom[2].counts() == {"2g.10gb": 3}
    assert select_config(cfg, "all-enabled")[0].mig_devices == ()


def test_load_from_a_path_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "mig.yaml"
    path.write_text("version: v1\nmig-configs:\n  x:\n    - devices: all\n      mig-enabled: 1\n")
    with pytest.raises(ConfigError) as exc:
        load_migparted(path)
    assert exc.value.message == (
        f"{path}:5: mig-configs.x[0].mig-enabled: expected true or false, got the number 1"
    )
    with pytest.raises(ConfigError, match=r"^cannot read mig-parted config .*missing\.yaml: "):
        load_migparted(tmp_path / "missing.yaml")


ENTRY = "version: v1\nmig-configs:\n  x:\n    - "


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "version: v2\nmig-configs: {}\n",
            "cfg.yaml:1: version: unknown version 'v2'; only \"v1\" is supported",
        ),
        ("mig-configs: {}\n", "cfg.yaml:1: missing required field 'version' (it must be v1)"),
        (
            "version: v1\nmig-config: {}\n",
            "cfg.yaml:2: unexpected top-level field 'mig-config' (expected version, mig-configs)",
        ),
        ("version: v1\n", "cfg.yaml:1: missing required field 'mig-configs'"),
        (
            "version: v1\nmig-configs: {}\n",
            "cfg.yaml:2: mig-configs: at least one configuration is required",
        ),
        (
            "version: v1\nmig-configs:\n  x: []\n",
            "cfg.yaml:3: mig-configs.x: at least one entry is required",
        ),
        (
            ENTRY + "devices: all\n      mig-enabled: true\n      mig-device: {}\n",
            "cfg.yaml:6: mig-configs.x[0]: unexpected field 'mig-device' "
            "(expected device-filter, devices, mig-enabled, mig-devices)",
        ),
        (
            ENTRY + "mig-enabled: false\n",
            "cfg.yaml:4: mig-configs.x[0]: missing required field 'devices'",
        ),
        (
            ENTRY + "devices: all\n",
            "cfg.yaml:4: mig-configs.x[0]: missing required field 'mig-enabled'",
        ),
        (
            ENTRY + "devices: some\n      mig-enabled: false\n",
            'cfg.yaml:4: mig-configs.x[0].devices: expected "all" or a list of GPU indices, '
            "got the string 'some'",
        ),
        (
            ENTRY + "devices: [0, -1]\n      mig-enabled: false\n",
            'cfg.yaml:4: mig-configs.x[0].devices: expected "all" or a list of GPU indices, got [0, -1]',
        ),
        (
            ENTRY + "devices: all\n      mig-enabled: true\n",
            "cfg.yaml:4: mig-configs.x[0]: missing required field 'mig-devices' when 'mig-enabled' is true",
        ),
        (
            ENTRY
            + "devices: all\n      mig-enabled: false\n      mig-devices:\n        1g.10gb: 1\n",
            "cfg.yaml:6: mig-configs.x[0]: MIG devices included when 'mig-enabled' is false",
        ),
        (
            ENTRY
            + "devices: all\n      mig-enabled: true\n      mig-devices: {1g.10gb: 0, 2g.20gb: 0}\n",
            "cfg.yaml:6: mig-configs.x[0].mig-devices: all counts for all MIG profiles are 0",
        ),
        (
            ENTRY
            + "devices: all\n      mig-enabled: true\n      mig-devices:\n        1g.10gb: -1\n",
            "cfg.yaml:7: mig-configs.x[0].mig-devices.1g.10gb: expected a count >= 0, got the number -1",
        ),
        (
            ENTRY + "devices: all\n      mig-enabled: true\n      mig-devices:\n        3g.40: 1\n",
            "cfg.yaml:7: mig-configs.x[0].mig-devices: '3g.40' is not a MIG profile name like "
            "1g.10gb, 3g.40gb+me or 1c.3g.40gb",
        ),
        (
            ENTRY + "device-filter: 0x20B010DE\n      devices: all\n      mig-enabled: false\n",
            "cfg.yaml:4: mig-configs.x[0].device-filter: expected a PCI id string like "
            '"0x20B010DE" or a list of them, got the number 548409566 '
            "(quote the ids: YAML reads 0x20B010DE as a number)",
        ),
        (
            ENTRY + 'device-filter: ["0x20B0"]\n      devices: all\n      mig-enabled: false\n',
            "cfg.yaml:4: mig-configs.x[0].device-filter: '0x20B0' is not a PCI id of the form "
            '"0xDDDDVVVV" (e.g. "0x20B010DE"); quote it, or YAML reads it as a number',
        ),
        (
            ENTRY + "devices: all\n      devices: [0]\n      mig-enabled: false\n",
            "cfg.yaml:5: mig-configs.x[0]: duplicate key 'devices'",
        ),
        (
            "version: v1\nmig-configs: [\n",
            "cfg.yaml:3: not valid YAML: expected the node content, but found '<stream end>'",
        ),
        ("", "cfg.yaml: the file is empty"),
        ("- v1\n", "cfg.yaml:1: expected a mapping, got ['v1']"),
    ],
)
def test_validation_errors_quote_file_line_and_field(text: str, message: str) -> None:
    assert load_error(text) == message


def test_accepted_forms() -> None:
    cfg = load_migparted(
        ENTRY
        + 'device-filter: ["0x20B010DE", "0x20B110DE:0x147E10DE"]\n'
        + "      devices: [1]\n      mig-enabled: true\n"
        + "      mig-devices: {1g.10gb: 1, 2g.20gb: 0, 1c.3g.40gb+me: 1}\n",
        source="cfg.yaml",
    )
    (entry,) = select_config(cfg, None)
    assert entry.device_filter == ("0x20B010DE", "0x20B110DE:0x147E10DE")
    assert entry.counts() == {"1g.10gb": 1, "1c.3g.40gb+me": 1}
    assert entry.applies_to(1, 0x20B110DE)
    assert not entry.applies_to(0, 0x20B110DE)
    assert not entry.applies_to(1, 0x20B210DE)


def test_select_config_needs_a_name_when_there_are_several() -> None:
    cfg = load_migparted(README, source="config.yaml")
    with pytest.raises(ConfigError) as exc:
        select_config(cfg, None)
    assert exc.value.message == (
        "config.yaml has 5 MIG configurations; choose one of: "
        "all-disabled, all-enabled, all-1g.5gb, all-balanced, custom-config"
    )
    with pytest.raises(
        ConfigError,
        match=r"^config.yaml has no MIG configuration named 'balanced'; it has: all-disabled, ",
    ):
        select_config(cfg, "balanced")


# -------------------------------------------------------------------- layouts


@pytest.mark.parametrize("key", list(BALANCED))
def test_all_balanced_resolves_and_solves_on_each_model(key: str) -> None:
    cfg = load_migparted(balanced_yaml(), source="config-default.yaml")
    entries = select_config(cfg, "all-balanced")
    model = get_model(key)
    found = layout_for_gpu(entries, 0, model.pci_device_id)
    assert found is not None
    enabled, layout = found
    assert enabled
    assert layout.counts() == BALANCED[key]
    g = MigGeometry.for_model(key)
    solution = solve_layout(g.resolve(layout), g)
    assert sorted(i.name for i in solution.instances) == sorted(
        name for name, n in BALANCED[key].items() for _ in range(n)
    )


def test_layout_for_gpu_selection() -> None:
    entries = select_config(load_migparted(README, source="c.yaml"), "custom-config")
    assert layout_for_gpu(entries, 2, 0x20B010DE) == (False, LayoutSpec())
    assert layout_for_gpu(entries, 4, 0x20B010DE) == (True, parse_layout("1g.5gb*7"))
    assert layout_for_gpu(entries, 6, 0x20B010DE) is None
    filtered = [MigPartedEntry("all", True, (("7g.80gb", 1),), ("0x233010DE",))]
    assert layout_for_gpu(filtered, 0, 0x20B010DE) is None


def test_the_last_matching_entry_wins() -> None:
    entries = [
        MigPartedEntry("all", True, (("7g.80gb", 1),)),
        MigPartedEntry((1,), True, (("3g.40gb", 2),)),
    ]
    assert layout_for_gpu(entries, 0, 0) == (True, parse_layout("7g.80gb"))
    assert layout_for_gpu(entries, 1, 0) == (True, parse_layout("3g.40gb*2"))


def test_compute_instance_names_share_gpu_instances() -> None:
    assert str(layout_from_counts({"2c.3g.40gb": 1, "1c.3g.40gb": 1})) == "3g.40gb[2c,1c]"
    assert str(layout_from_counts({"1c.7g.80gb": 7})) == "7g.80gb[1c*7]"
    # Two split 3g GIs come back as two, not three (mig-parted would also find this order).
    assert str(layout_from_counts({"2c.3g.40gb": 2, "1c.3g.40gb": 2})) == "3g.40gb[2c,1c]*2"
    assert str(layout_from_counts({"3g.40gb": 1, "1c.3g.40gb": 1, "3c.3g.40gb": 1})) == (
        "3g.40gb*2,3g.40gb[1c]"
    )
    assert str(layout_from_counts({"1g.10gb": 0})) == "none"


# --------------------------------------------------------------------- export


def test_export_shape_for_identical_gpus() -> None:
    counts = {"1g.10gb": 2, "3g.40gb": 1, "2g.20gb": 1}
    text = export_migparted([(i, 0x20B210DE, True, counts) for i in range(8)])
    assert text == (
        "version: v1\n"
        "mig-configs:\n"
        "  current:\n"
        "  - devices: all\n"
        "    mig-enabled: true\n"
        "    mig-devices:\n"
        '      "3g.40gb": 1\n'
        '      "2g.20gb": 1\n'
        '      "1g.10gb": 2\n'
    )


def test_export_groups_gpus_and_filters_by_model() -> None:
    text = export_migparted(
        [
            (0, 0x20B210DE, True, {"7g.80gb": 1}),
            (1, 0x20B210DE, True, {"3g.40gb": 2}),
            (2, 0x20B210DE, True, {"7g.80gb": 1}),
            (3, 0x20B710DE, False, {}),
        ],
        name="node-7",
    )
    data = yaml.safe_load(text)
    assert data == {
        "version": "v1",
        "mig-configs": {
            "node-7": [
                {
                    "device-filter": "0x20B210DE",
                    "devices": [0, 2],
                    "mig-enabled": True,
                    "mig-devices": {"7g.80gb": 1},
                },
                {
                    "device-filter": "0x20B210DE",
                    "devices": [1],
                    "mig-enabled": True,
                    "mig-devices": {"3g.40gb": 2},
                },
                {
                    "device-filter": "0x20B710DE",
                    "devices": "all",
                    "mig-enabled": False,
                    "mig-devices": {},
                },
            ]
        },
    }


def test_export_uses_compute_instance_names() -> None:
    counts = migparted_counts([("3g.40gb", [2, 1]), ("3g.40gb", None), ("1g.10gb", [])])
    assert counts == {"2c.3g.40gb": 1, "1c.3g.40gb": 1, "3g.40gb": 1}
    text = export_migparted([(0, 0x20B210DE, True, counts)])
    assert '"2c.3g.40gb": 1' in text and '"1c.3g.40gb": 1' in text


@pytest.mark.parametrize(
    ("key", "layout"),
    [
        ("a100-80gb", "3g.40gb[2c,1c], 2g.20gb, 1g.10gb*2"),
        ("a100-80gb", "3g.40gb[2c,1c]*2"),
        ("a100-80gb", "7g.80gb[1c*7]"),
        ("a100-40gb", "4g.20gb[2c,1c*2], 3g.20gb"),
        ("h100-80gb", "1g.20gb*2, 2g.20gb[1c*2], 1g.10gb"),
        ("a30", "2g.12gb+me[1c*2], 1g.6gb*2"),
        ("rtx-pro-6000", "1g.24gb+me.all, 1g.24gb-me*3"),
        ("rtx-pro-6000", "none"),
    ],
)
def test_export_load_layout_round_trip(key: str, layout: str) -> None:
    g = MigGeometry.for_model(key)
    pci = get_model(key).pci_device_id
    solution = solve_layout(g.resolve(layout), g)
    counts = migparted_counts((i.name, [c.size for c in i.compute]) for i in solution.instances)
    text = export_migparted([(0, pci, True, counts), (1, 0x20B710DE, False, {})])
    entries = select_config(load_migparted(text, source="export.yaml"), "current")
    found = layout_for_gpu(entries, 0, pci)
    assert found is not None
    enabled, back = found
    assert enabled
    assert back.same_as(parse_layout(layout))
    again = solve_layout(g.resolve(back), g)
    assert (
        migparted_counts((i.name, [c.size for c in i.compute]) for i in again.instances) == counts
    )
