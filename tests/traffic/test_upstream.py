from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from nocturna_infra.traffic.upstream import (
    UpstreamParseError,
    UpstreamState,
    parse_upstream,
    parse_upstream_groups,
    render_upstream,
    render_upstreams,
    routing_text,
    slot_groups,
)

SWITCHED_AT = datetime(2026, 11, 26, 20, 40, 5, tzinfo=UTC)

GREEN_FILE = """\
# Managed by nocturna_infra.switch; rewritten whole on every switch, do not edit.
# live-slot: green
# switched-at: 2026-11-26T20:40:05Z
upstream nocturna-img-production {
    server 127.0.0.1:3012;
    keepalive 32;
    keepalive_timeout 60s;
}
"""


def test_render_green_on_one_server() -> None:
    text = render_upstream("nocturna-img-production", "green", ["127.0.0.1:3012"], SWITCHED_AT)
    assert text == GREEN_FILE


def test_render_two_servers_with_custom_keepalive() -> None:
    text = render_upstream("app", "blue", ["127.0.0.1:3014", "[::1]:3014"], SWITCHED_AT, 8)
    assert text == (
        "# Managed by nocturna_infra.switch; rewritten whole on every switch, do not edit.\n"
        "# live-slot: blue\n"
        "# switched-at: 2026-11-26T20:40:05Z\n"
        "upstream app {\n"
        "    server 127.0.0.1:3014;\n"
        "    server [::1]:3014;\n"
        "    keepalive 8;\n"
        "    keepalive_timeout 60s;\n"
        "}\n"
    )


def test_render_records_switch_time_in_utc() -> None:
    local = SWITCHED_AT.astimezone(timezone(timedelta(hours=3)))
    text = render_upstream("nocturna-img-production", "green", ["127.0.0.1:3012"], local)
    assert text == GREEN_FILE


def test_parse_reads_back_rendered_file() -> None:
    assert parse_upstream(GREEN_FILE) == UpstreamState(
        name="nocturna-img-production", slot="green", servers=("127.0.0.1:3012",)
    )


def test_parse_reads_original_hand_written_format() -> None:
    original = (
        "upstream nocturna-img-production {\n"
        "    server localhost:3014;  # ACTIVE: blue\n"
        "    # server localhost:3012;  # STANDBY: green\n"
        "    keepalive 32;\n"
        "    keepalive_timeout 60s;\n"
        "}\n"
    )
    assert parse_upstream(original) == UpstreamState(
        name="nocturna-img-production", slot=None, servers=("localhost:3014",)
    )


def test_parse_ignores_server_parameters() -> None:
    text = "upstream app {\n    server 127.0.0.1:3012 max_fails=0 weight=2;\n}\n"
    assert parse_upstream(text).servers == ("127.0.0.1:3012",)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("", "no `upstream NAME {` line found", id="empty"),
        pytest.param(
            "upstream app {\n    server 127.0.0.1:1;\n",
            "upstream app: block is not closed with `}`",
            id="truncated",
        ),
        pytest.param("upstream app {\n}\n", "upstream app: no `server` lines", id="no-servers"),
    ],
)
def test_parse_rejects_incomplete_files(text: str, message: str) -> None:
    with pytest.raises(UpstreamParseError) as raised:
        parse_upstream(text)
    assert str(raised.value) == message


def test_routing_text_ignores_only_the_switch_time() -> None:
    later = render_upstream(
        "nocturna-img-production", "green", ["127.0.0.1:3012"], SWITCHED_AT + timedelta(days=1)
    )
    blue = render_upstream("nocturna-img-production", "blue", ["127.0.0.1:3012"], SWITCHED_AT)
    assert routing_text(later) == routing_text(GREEN_FILE)
    assert routing_text(blue) != routing_text(GREEN_FILE)


# --- the file of the no-reload switch: one group per slot --------------------------------

BOTH_FILE = """\
# Managed by nocturna_infra.switch; rewritten whole when a slot's servers change, do not edit.
# written-at: 2026-11-26T20:40:05Z
upstream nocturna-img-production-blue {
    server 127.0.0.1:3014;
    keepalive 32;
    keepalive_timeout 60s;
}
upstream nocturna-img-production-green {
    server 127.0.0.1:3012;
    server [::1]:3012;
    keepalive 32;
    keepalive_timeout 60s;
}
"""


def test_render_one_group_per_slot_each_with_its_own_keepalive_pool() -> None:
    groups = {"blue": ["127.0.0.1:3014"], "green": ["127.0.0.1:3012", "[::1]:3012"]}
    text = render_upstreams("nocturna-img-production", groups, SWITCHED_AT)
    assert text == BOTH_FILE


def test_groups_are_read_back_by_slot() -> None:
    groups = parse_upstream_groups(BOTH_FILE)
    assert slot_groups(groups, "nocturna-img-production") == {
        "blue": ("127.0.0.1:3014",),
        "green": ("127.0.0.1:3012", "[::1]:3012"),
    }
    assert slot_groups(groups, "other") == {}


def test_a_single_group_file_defines_no_slot_groups() -> None:
    groups = parse_upstream_groups(GREEN_FILE)
    assert groups == {"nocturna-img-production": ("127.0.0.1:3012",)}
    assert slot_groups(groups, "nocturna-img-production") == {}


def test_routing_text_ignores_the_write_time_but_not_a_server() -> None:
    groups = {"blue": ["127.0.0.1:3014"], "green": ["127.0.0.1:3012", "[::1]:3012"]}
    later = render_upstreams("nocturna-img-production", groups, SWITCHED_AT + timedelta(days=1))
    moved = render_upstreams(
        "nocturna-img-production", {**groups, "blue": ["127.0.0.1:3015"]}, SWITCHED_AT
    )
    assert routing_text(later) == routing_text(BOTH_FILE)
    assert routing_text(moved) != routing_text(BOTH_FILE)
