"""The canary step text: split maps, step selection and the step settings, exact output."""

from __future__ import annotations

from pathlib import Path

import pytest

from nocturna_infra.traffic.split import (
    SplitKeyError,
    Steps,
    parse_shares,
    render_splits,
    render_steps,
    split_key,
    step_marker,
    steps_path,
)

NAME = "nocturna-img-production"
SLOTS = ("blue", "green")


def test_splits_give_each_step_its_share_of_the_target_slot_both_ways() -> None:
    text = render_splits(NAME, SLOTS, Steps((5, 25)))

    assert text == (
        "# Canary steps: one split per step and target slot (no reload to step).\n"
        'split_clients "${request_id}" $nocturna_img_production_to_blue_5 {\n'
        "    5% nocturna-img-production-blue;\n"
        "    * nocturna-img-production-green;\n"
        "}\n"
        'split_clients "${request_id}" $nocturna_img_production_to_blue_25 {\n'
        "    25% nocturna-img-production-blue;\n"
        "    * nocturna-img-production-green;\n"
        "}\n"
        'split_clients "${request_id}" $nocturna_img_production_to_green_5 {\n'
        "    5% nocturna-img-production-green;\n"
        "    * nocturna-img-production-blue;\n"
        "}\n"
        'split_clients "${request_id}" $nocturna_img_production_to_green_25 {\n'
        "    25% nocturna-img-production-green;\n"
        "    * nocturna-img-production-blue;\n"
        "}\n"
    )


def test_sticky_splits_hash_the_client_key() -> None:
    text = render_splits(NAME, ("blue", "green"), Steps((50,), split_key("cookie:uid")))

    assert 'split_clients "${cookie_uid}" $nocturna_img_production_to_green_50 {' in text


def test_no_steps_render_nothing_so_the_upstream_file_stays_as_today() -> None:
    assert render_splits(NAME, SLOTS, Steps(())) == ""


def test_steps_file_tests_one_marker_per_step_widest_last() -> None:
    text = render_steps(NAME, SLOTS, Steps((5, 50)), Path("/sel"), "nocturna_production_live")

    assert text == (
        "# Managed by nocturna_infra.switch: canary step selection, included in each server "
        "of the site; do not edit.\n"
        "if (-f /sel/nocturna-img-production.blue-5) {\n"
        "    set $nocturna_production_live $nocturna_img_production_to_blue_5;\n"
        "}\n"
        "if (-f /sel/nocturna-img-production.blue-50) {\n"
        "    set $nocturna_production_live $nocturna_img_production_to_blue_50;\n"
        "}\n"
        "if (-f /sel/nocturna-img-production.green-5) {\n"
        "    set $nocturna_production_live $nocturna_img_production_to_green_5;\n"
        "}\n"
        "if (-f /sel/nocturna-img-production.green-50) {\n"
        "    set $nocturna_production_live $nocturna_img_production_to_green_50;\n"
        "}\n"
    )


def test_a_single_slot_stack_gets_no_steps() -> None:
    assert render_splits("nocturna-img-staging", ("staging",), Steps((5,))) == (
        "# Canary steps: one split per step and target slot (no reload to step).\n"
    )


def test_step_marker_and_steps_file_sit_beside_what_the_switch_owns() -> None:
    assert step_marker(Path("/sel"), NAME, "green", 25) == Path(
        "/sel/nocturna-img-production.green-25"
    )
    assert steps_path(Path("/etc/nginx/upstreams/nocturna-img-production.conf")) == Path(
        "/etc/nginx/upstreams/nocturna-img-production.steps.conf"
    )


@pytest.mark.parametrize(
    ("spec", "key"),
    [
        pytest.param("request", "${request_id}", id="request"),
        pytest.param("client", "${remote_addr}", id="client"),
        pytest.param("cookie:uid", "${cookie_uid}", id="cookie"),
    ],
)
def test_split_keys(spec: str, key: str) -> None:
    assert split_key(spec) == key


@pytest.mark.parametrize("spec", ["cookie:", "cookie:a;b", "header:x", "$request_id"])
def test_a_bad_split_key_says_what_is_allowed(spec: str) -> None:
    with pytest.raises(SplitKeyError) as caught:
        split_key(spec)

    assert str(caught.value) == (
        f"must be request, client or cookie:<name> (name of letters, digits, _); got {spec!r}"
    )


def test_shares_parse_rising_whole_percents() -> None:
    assert parse_shares("5, 25,50") == (5, 25, 50)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            "5,100",
            "each step must be a whole percent from 1 to 99; got '100' in '5,100'",
            id="100",
        ),
        pytest.param(
            "0", "each step must be a whole percent from 1 to 99; got '0' in '0'", id="zero"
        ),
        pytest.param(
            "5,2.5",
            "each step must be a whole percent from 1 to 99; got '2.5' in '5,2.5'",
            id="fraction",
        ),
        pytest.param("25,5", "steps must rise; got 5 after 25 in '25,5'", id="falling"),
    ],
)
def test_bad_shares_say_what_is_allowed(text: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_shares(text)

    assert str(caught.value) == message
