"""The two-host rehearsal (tests/rehearsal_hosts.py): the real program on this machine's
Docker and a second Docker host reached over SSH, one Nginx in front, under load."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.rehearsal import render_table
from tests.rehearsal_hosts import TwoHostRehearsal
from tests.second_host import SecondHost

pytestmark = [pytest.mark.docker, pytest.mark.nginx]


def test_blue_green_on_two_hosts_with_outages_loses_no_request(
    second_host: SecondHost, tmp_path: Path
) -> None:
    results = TwoHostRehearsal(tmp_path, second_host).run()

    table = render_table(results)
    print(table)
    assert [result.step.split(" ")[0] for result in results] == [
        "1", "2", "3", "4", "5a", "5b", "6", "7", "8",
    ], table  # fmt: skip
    assert all(result.passed for result in results), table
    assert sum(result.failed for result in results) == 0, table
