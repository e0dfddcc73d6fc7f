"""The selection files: read and chosen exactly as the shipped site config chooses."""

from __future__ import annotations

from pathlib import Path

import pytest

from nocturna_infra.traffic.safe_files import UnsafeFileError
from nocturna_infra.traffic.selection import describe, nginx_choice, read_markers, write_markers

SLOTS = ["blue", "green"]


@pytest.mark.parametrize(
    ("present", "chosen", "described"),
    [
        pytest.param({"blue"}, "blue", "blue", id="blue"),
        pytest.param({"green"}, "green", "green", id="green"),
        pytest.param(set(), "blue", "no selection (Nginx uses its fallback blue)", id="missing"),
        pytest.param(
            {"blue", "green"}, "green", "green (stale marker for blue)", id="crash-in-between"
        ),
    ],
)
def test_choice_follows_the_site_config(present: set[str], chosen: str, described: str) -> None:
    assert nginx_choice(frozenset(present), SLOTS, "blue") == chosen
    assert describe(frozenset(present), SLOTS, "blue") == described


def test_write_leaves_exactly_the_wanted_markers(tmp_path: Path) -> None:
    write_markers(tmp_path, "app", SLOTS, frozenset({"green"}))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.green"]
    assert (tmp_path / "app.green").read_text() == "green\n"

    write_markers(tmp_path, "app", SLOTS, frozenset({"blue"}))
    assert read_markers(tmp_path, "app", SLOTS) == {"blue"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.blue"]


def test_missing_directory_is_reported_not_read_as_a_choice(tmp_path: Path) -> None:
    with pytest.raises(UnsafeFileError) as raised:
        read_markers(tmp_path / "absent", "app", SLOTS)
    assert str(raised.value) == (
        f"{tmp_path}/absent: no such directory (Nginx uses its fallback slot)"
    )
