"""Layout text and mig-parted counts: absurd numbers and non-ASCII digits are clean errors.

Python's int() and str.isdigit() take "٣" (Arabic-Indic three) and "３"
(fullwidth three) as digits, and int() of a huge count builds a huge list
(or overflows); each case here was accepted, hung or raised a bare Python
error before.
"""

from __future__ import annotations

import time

import pytest

from migperf.errors import ConfigError, UsageError
from migperf.mig.layout import MAX_COUNT, layout_from_yaml, parse_layout
from migperf.mig.migparted import layout_from_counts, load_migparted


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("1g.10gb*٣", "'٣' (U+0663) is not allowed: layouts are plain ASCII, with the digits 0-9"),
        ("３g.40gb", "'３' (U+FF13) is not allowed: layouts are plain ASCII"),
        ("1g.10gb@٣", "'٣' (U+0663) is not allowed"),
        ("7g.80gb[1c*٧]", "'٧' (U+0667) is not allowed"),
        ("1g.10gb*1e30", 'expected a count after "*", like *2 or x2'),
        ("1g.10gb*99999999999", f"the count must be between 1 and {MAX_COUNT}, got 99999999999"),
        ("1g.10gb*" + "9" * 5000, f"the count must be between 1 and {MAX_COUNT}, got 99999999..."),
        ("9" * 5000, "the profile id 99999999... has 5000 digits"),
        ("1g.10gb@" + "9" * 5000, "the placement start 99999999... has 5000 digits"),
        ("7g.80gb[1c*" + "9" * 5000 + "]", "the repeat count 99999999... has 5000 digits"),
        ("9" * 5000 + "g.10gb", "the slice count 99999999... has 5000 digits"),
    ],
)
def test_absurd_and_unicode_numbers_are_clean_layout_errors(text: str, problem: str) -> None:
    t0 = time.monotonic()
    with pytest.raises(UsageError) as info:
        parse_layout(text)
    assert time.monotonic() - t0 < 1.0
    assert problem in info.value.message
    assert len(info.value.message) < 400  # a 5,000-digit input is not quoted back whole


def test_plain_counts_still_parse() -> None:
    assert str(parse_layout("1g.10gb*0002")) == "1g.10gb*2"
    assert str(parse_layout("1g.10gbx7")) == "1g.10gb*7"


def test_yaml_layouts_refuse_unicode_digits_and_huge_ids() -> None:
    with pytest.raises(ConfigError, match="is not a profile name"):
        layout_from_yaml([{"profile": "３g.40gb"}])
    with pytest.raises(ConfigError, match="is not a profile name"):
        layout_from_yaml([{"profile": "9" * 5000}])
    with pytest.raises(ConfigError, match=f"is more than {MAX_COUNT}"):
        layout_from_yaml([{"profile": "1g.10gb", "count": 99999999999999999999}])
    with pytest.raises(
        ConfigError, match="expected a list of compute-instance sizes|not a positive"
    ):
        layout_from_yaml([{"profile": "7g.80gb", "compute": ["٣c"]}])


def _migparted(counts: str) -> str:
    return (
        "version: v1\nmig-configs:\n  x:\n    - devices: all\n      mig-enabled: true\n"
        f"      mig-devices:\n{counts}"
    )


def test_migparted_counts_beyond_a_gpu_are_clean_errors() -> None:
    t0 = time.monotonic()
    with pytest.raises(ConfigError) as info:
        load_migparted(_migparted('        "1g.10gb": 99999999999999999999\n'), source="c.yaml")
    assert time.monotonic() - t0 < 1.0
    assert info.value.message == (
        "c.yaml:7: mig-configs.x[0].mig-devices.1g.10gb: 99999999999999999999 instances is more "
        f"than a GPU can hold (at most {MAX_COUNT} per profile; a GPU has at most 8 slices)"
    )
    with pytest.raises(ConfigError, match=r"c.yaml:6: .*70 MIG devices in all is more than a GPU"):
        load_migparted(
            _migparted('        "1g.10gb": 40\n        "2g.20gb": 30\n'), source="c.yaml"
        )
    fine = load_migparted(_migparted('        "1g.10gb": 7\n'), source="c.yaml")
    assert str(layout_from_counts(fine.configs["x"][0].counts())) == "1g.10gb*7"
    with pytest.raises(UsageError, match="more than a GPU can hold"):
        layout_from_counts({"1g.10gb": 10**20})


def test_migparted_profiles_with_unicode_digits_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"c.yaml:7: .*'３g.40gb' is not a MIG profile name"):
        load_migparted(_migparted('        "３g.40gb": 1\n'), source="c.yaml")
    with pytest.raises(ConfigError, match="is not a MIG profile name"):
        load_migparted(_migparted('        "1c.٣g.40gb": 1\n'), source="c.yaml")
