"""`--batch-size` lists take ASCII digits only: "٣" is not three, a 5,000-digit number is refused."""

from __future__ import annotations

import pytest

from migperf.bench.series import parse_batch_sizes
from migperf.errors import UsageError


@pytest.mark.parametrize("bad", ["٣", "1,٣", "３", "1,2," + "9" * 5000])
def test_non_ascii_or_absurd_batch_sizes_are_refused(bad: str) -> None:
    with pytest.raises(UsageError, match="is not a positive integer"):
        parse_batch_sizes(bad)


def test_plain_lists_still_parse() -> None:
    assert parse_batch_sizes("8, 1,32") == [1, 8, 32]
