from __future__ import annotations

import pytest

from nocturna_infra.program.deployment import (
    RecordedState,
    SlotAction,
    after_switch_back,
    is_protected,
    plan_actions,
    release_fingerprint,
    routing_conflict,
    takes_release,
)
from nocturna_infra.slot import PRODUCTION_SLOTS, Slot

BLUE_ARGS = {"name": "nocturna-chart-blue", "image": "sha256:1"}
GREEN_ARGS = {"name": "nocturna-chart-green", "image": "sha256:1"}


def recorded(live: Slot, release: str = "r1") -> RecordedState:
    return RecordedState(
        live_slot=live,
        slots={Slot.BLUE: BLUE_ARGS, Slot.GREEN: GREEN_ARGS},
        release=release,
        api_keys={Slot.BLUE: "k", Slot.GREEN: "k"},
    )


def test_first_deployment_deploys_every_slot() -> None:
    assert plan_actions(None, PRODUCTION_SLOTS, Slot.BLUE) == {
        Slot.BLUE: SlotAction.DEPLOY,
        Slot.GREEN: SlotAction.DEPLOY,
    }


@pytest.mark.parametrize(
    ("live", "standby"),
    [
        pytest.param(Slot.BLUE, Slot.GREEN, id="blue-live"),
        pytest.param(Slot.GREEN, Slot.BLUE, id="green-live"),
    ],
)
def test_unchanged_active_slot_freezes_live_and_offers_release_to_standby(
    live: Slot, standby: Slot
) -> None:
    assert plan_actions(recorded(live), PRODUCTION_SLOTS, live) == {
        live: SlotAction.FROZEN,
        standby: SlotAction.DEPLOY_IF_NEW,
    }


def test_switch_freezes_every_slot() -> None:
    assert plan_actions(recorded(Slot.BLUE), PRODUCTION_SLOTS, Slot.GREEN) == {
        Slot.BLUE: SlotAction.FROZEN,
        Slot.GREEN: SlotAction.FROZEN,
    }


def test_slot_missing_from_the_record_is_deployed() -> None:
    only_blue = RecordedState(live_slot=Slot.BLUE, slots={Slot.BLUE: BLUE_ARGS}, release="r1")

    assert plan_actions(only_blue, PRODUCTION_SLOTS, Slot.BLUE) == {
        Slot.BLUE: SlotAction.FROZEN,
        Slot.GREEN: SlotAction.DEPLOY,
    }


def test_staging_slot_takes_every_new_release() -> None:
    staging = RecordedState(live_slot=Slot.STAGING, slots={Slot.STAGING: {}}, release="r1")

    assert plan_actions(staging, (Slot.STAGING,), None) == {Slot.STAGING: SlotAction.DEPLOY_IF_NEW}


@pytest.mark.parametrize(
    ("action", "release", "expected"),
    [
        pytest.param(SlotAction.DEPLOY, "r1", True, id="deploy"),
        pytest.param(SlotAction.FROZEN, "r2", False, id="frozen"),
        pytest.param(SlotAction.DEPLOY_IF_NEW, "r1", False, id="same-release"),
        pytest.param(SlotAction.DEPLOY_IF_NEW, "r2", True, id="new-release"),
    ],
)
def test_takes_release(action: SlotAction, release: str, expected: bool) -> None:
    assert takes_release(action, recorded(Slot.BLUE, release="r1"), release) is expected


def test_fingerprint_changes_with_image_settings_and_api_key() -> None:
    base = release_fingerprint({Slot.BLUE: BLUE_ARGS}, "k")

    assert base == release_fingerprint({Slot.BLUE: dict(BLUE_ARGS)}, "k")
    assert base != release_fingerprint({Slot.BLUE: {**BLUE_ARGS, "image": "sha256:2"}}, "k")
    assert base != release_fingerprint({Slot.BLUE: {**BLUE_ARGS, "memory": 2048}}, "k")
    assert base != release_fingerprint({Slot.BLUE: BLUE_ARGS}, "rotated")
    assert "k" not in base.removeprefix("sha256:")


def test_recorded_state_round_trips_from_outputs() -> None:
    state = RecordedState.from_outputs(
        {"version": 1, "liveSlot": "green", "slots": {"blue": BLUE_ARGS, "green": GREEN_ARGS}},
        {"release": "r9", "apiKeys": {"blue": "a", "green": "b"}},
    )

    assert state == RecordedState(
        live_slot=Slot.GREEN,
        slots={Slot.BLUE: BLUE_ARGS, Slot.GREEN: GREEN_ARGS},
        release="r9",
        api_keys={Slot.BLUE: "a", Slot.GREEN: "b"},
    )


@pytest.mark.parametrize(
    "plain",
    [
        pytest.param(None, id="no-outputs"),
        pytest.param({"version": 99, "slots": {}}, id="unknown-version"),
        pytest.param({"version": 1, "slots": "blue"}, id="malformed"),
    ],
)
def test_unusable_outputs_mean_first_deployment(plain: object) -> None:
    assert RecordedState.from_outputs(plain, None) is None


@pytest.mark.parametrize(
    ("routed", "active", "conflict"),
    [
        pytest.param(Slot.BLUE, Slot.BLUE, False, id="as-recorded"),
        pytest.param(Slot.BLUE, Slot.GREEN, False, id="switching"),
        pytest.param(Slot.GREEN, Slot.GREEN, False, id="hand-switch-adopted"),
        pytest.param(Slot.GREEN, Slot.BLUE, True, id="hand-switch-forgotten"),
        pytest.param(None, Slot.BLUE, False, id="unknown-routing"),
    ],
)
def test_routing_conflict_only_when_the_standby_serves_traffic(
    routed: Slot | None, active: Slot, conflict: bool
) -> None:
    assert (routing_conflict(routed, active, recorded(Slot.BLUE)) is not None) is conflict


def test_routing_conflict_message_names_both_ways_out() -> None:
    assert routing_conflict(Slot.GREEN, Slot.BLUE, recorded(Slot.BLUE)) == (
        "Nginx routes to green, but activeSlot is blue and the last deployment made blue live: "
        "this run would replace the slot serving traffic. If green should be live (a switch "
        "made by hand), run `pulumi config set activeSlot green`; otherwise switch back with "
        "`python -m nocturna_infra.switch` first."
    )


@pytest.mark.parametrize(
    ("action", "slot", "active", "protected"),
    [
        pytest.param(SlotAction.FROZEN, Slot.BLUE, Slot.BLUE, True, id="live"),
        pytest.param(SlotAction.FROZEN, Slot.GREEN, Slot.BLUE, True, id="switch-old-live"),
        pytest.param(SlotAction.DEPLOY, Slot.BLUE, Slot.BLUE, True, id="live-first-created"),
        pytest.param(SlotAction.DEPLOY, Slot.GREEN, Slot.BLUE, False, id="standby-created"),
        pytest.param(SlotAction.DEPLOY_IF_NEW, Slot.GREEN, Slot.BLUE, False, id="standby"),
        pytest.param(SlotAction.DEPLOY_IF_NEW, Slot.STAGING, None, False, id="staging"),
        pytest.param(SlotAction.DEPLOY, Slot.STAGING, None, False, id="staging-created"),
    ],
)
def test_only_slots_that_must_stay_are_protected(
    action: SlotAction, slot: Slot, active: Slot | None, protected: bool
) -> None:
    assert is_protected(action, slot, active) is protected


def test_fingerprint_without_secret_env_keeps_the_value_existing_records_hold() -> None:
    assert release_fingerprint({Slot.BLUE: BLUE_ARGS}, "k") == release_fingerprint(
        {Slot.BLUE: BLUE_ARGS}, "k", {}
    )
    assert release_fingerprint({Slot.BLUE: BLUE_ARGS}, "k") != release_fingerprint(
        {Slot.BLUE: BLUE_ARGS}, "k", {"DB": "pw"}
    )


def test_secret_env_round_trips_from_outputs() -> None:
    state = RecordedState.from_outputs(
        {"version": 1, "liveSlot": "blue", "slots": {"blue": BLUE_ARGS}},
        {"release": "r", "apiKeys": {"blue": "a"}, "secretEnv": {"blue": {"Z": "2", "DB": "pw"}}},
    )

    assert state is not None
    assert state.secret_env == {Slot.BLUE: {"DB": "pw", "Z": "2"}}
    assert list(state.secret_env[Slot.BLUE]) == ["DB", "Z"]


def test_switch_back_by_the_watch_makes_the_restored_slot_the_recorded_live_one() -> None:
    # The last run recorded green live; its watch switched back to blue, where Nginx routes.
    previous = after_switch_back(recorded(Slot.GREEN), Slot.BLUE, (Slot.GREEN, Slot.BLUE))

    assert previous is not None and previous.live_slot is Slot.BLUE
    assert routing_conflict(Slot.BLUE, Slot.GREEN, previous) is None
    # Blue serves traffic: frozen; asking for green again retries the switch only.
    assert plan_actions(previous, PRODUCTION_SLOTS, Slot.GREEN) == {
        Slot.BLUE: SlotAction.FROZEN,
        Slot.GREEN: SlotAction.FROZEN,
    }
    assert plan_actions(previous, PRODUCTION_SLOTS, Slot.BLUE)[Slot.BLUE] is SlotAction.FROZEN


@pytest.mark.parametrize(
    ("routed", "switched_back"),
    [
        pytest.param(Slot.GREEN, (Slot.GREEN, Slot.BLUE), id="switched-again-since"),
        pytest.param(Slot.BLUE, None, id="no-switch-back"),
        pytest.param(Slot.BLUE, (Slot.BLUE, Slot.GREEN), id="other-direction"),
        pytest.param(None, (Slot.GREEN, Slot.BLUE), id="routing-unknown"),
    ],
)
def test_switch_back_record_changes_nothing_unless_it_explains_the_routing(
    routed: Slot | None, switched_back: tuple[Slot, Slot] | None
) -> None:
    previous = recorded(Slot.GREEN)

    assert after_switch_back(previous, routed, switched_back) == previous
