"""``python -m migperf``: the same as the ``migperf`` command."""

from migperf.cli.main import main

main()
