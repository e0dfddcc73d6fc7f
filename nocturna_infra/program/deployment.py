"""Blue/green memory: which container arguments each slot runs, and what a run may change.

Pulumi declares desired state, but blue/green needs history: the live slot must keep
exactly the arguments it was created with, and only the standby takes a new release. The
program keeps that history in two stack outputs of its own stack and reads them back
through a StackReference on the next run:

- `deployment` (plain): the live slot and each slot's container arguments (no secrets);
- `deploymentSecrets` (secret): the release fingerprint, each slot's API key and, when `env`
  is secret, each slot's secret variables (`secretEnv`).

A *release* is everything a deploy would give the slots (image ID, environment, limits,
API key); its fingerprint tells whether this run brings something new. The rules:

1. First deployment (nothing recorded for a slot): the slot gets the release.
2. `activeSlot` unchanged: the live slot is frozen; the standby gets the release if it is
   new, and otherwise keeps what it runs (so a no-op `up` never touches the rollback target).
3. `activeSlot` changed (a switch or rollback): every slot is frozen; only the router moves.
   A release that arrives together with a switch waits for the next `up`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Final

from nocturna_infra.slot import Slot

STATE_VERSION: Final = 1


class SlotAction(StrEnum):
    """What this run does to one slot."""

    DEPLOY = "deploy"  # takes the release: created or replaced
    FROZEN = "frozen"  # re-declared with its recorded arguments: untouched
    DEPLOY_IF_NEW = "deploy-if-new"  # takes the release only if the release is new


@dataclass(frozen=True)
class RecordedState:
    """What the previous run left in the stack outputs."""

    live_slot: Slot | None
    slots: Mapping[Slot, Mapping[str, Any]]
    release: str | None = None
    api_keys: Mapping[Slot, str] = field(default_factory=dict)
    secret_env: Mapping[Slot, Mapping[str, str]] = field(default_factory=dict)
    """Per slot, the variables it runs that are kept out of the plain record."""
    hosts: Mapping[str, RecordedState] = field(default_factory=dict)
    """The other Docker hosts' slots, by host name (the first host's are `slots`): a record
    written before there were hosts has none, and reads as the first host's."""
    docker_hosts: Mapping[str, str] = field(default_factory=dict)
    """Each host's `dockerHost` when it was deployed, by host name ('' = the default
    provider): a host's daemon must not change under its resources (hosts.docker_host_change)."""

    def on_host(self, name: str | None) -> RecordedState:
        """What was recorded on one host (None: the first); a host never recorded has no
        slots, so its slots are first deployments."""
        if name is None:
            return self
        other = self.hosts.get(name)
        return RecordedState(
            live_slot=self.live_slot,
            slots=other.slots if other else {},
            release=self.release,
            api_keys=other.api_keys if other else {},
            secret_env=other.secret_env if other else {},
        )

    @staticmethod
    def from_outputs(plain: Any, secret: Any) -> RecordedState | None:
        """Parse the two outputs; None when nothing usable is recorded (first deployment)."""
        if not isinstance(plain, Mapping) or plain.get("version") != STATE_VERSION:
            return None
        raw_slots = plain.get("slots")
        if not isinstance(raw_slots, Mapping):
            return None
        slots = {
            slot: args
            for name, args in raw_slots.items()
            if (slot := _slot_or_none(name)) and isinstance(args, Mapping)
        }
        secrets = secret if isinstance(secret, Mapping) else {}
        hosts = plain.get("hosts")
        secret_hosts = secrets.get("hosts")
        others = {
            str(name): RecordedState.from_outputs(
                {**recorded, "version": STATE_VERSION, "liveSlot": plain.get("liveSlot")},
                {
                    **(secret_hosts.get(name) or {} if isinstance(secret_hosts, Mapping) else {}),
                    "release": secrets.get("release"),
                },
            )
            for name, recorded in (hosts.items() if isinstance(hosts, Mapping) else ())
            if isinstance(recorded, Mapping)
        }
        docker_hosts = plain.get("dockerHosts")
        keys = secrets.get("apiKeys")
        envs = secrets.get("secretEnv")
        release = secrets.get("release")
        return RecordedState(
            live_slot=_slot_or_none(plain.get("liveSlot")),
            slots=slots,
            release=release if isinstance(release, str) else None,
            api_keys={
                slot: key
                for name, key in (keys.items() if isinstance(keys, Mapping) else ())
                if (slot := _slot_or_none(name)) and isinstance(key, str)
            },
            secret_env={
                slot: {str(k): str(v) for k, v in sorted(env.items())}
                for name, env in (envs.items() if isinstance(envs, Mapping) else ())
                if (slot := _slot_or_none(name)) and isinstance(env, Mapping)
            },
            hosts={name: state for name, state in others.items() if state is not None},
            docker_hosts={
                str(name): value
                for name, value in (
                    docker_hosts.items() if isinstance(docker_hosts, Mapping) else ()
                )
                if isinstance(value, str)
            },
        )


def plan_actions(
    previous: RecordedState | None, slots: tuple[Slot, ...], active: Slot | None
) -> dict[Slot, SlotAction]:
    """Decide, from plain values only, what may happen to each slot this run.

    `active` is None for staging, whose single slot takes every new release.
    """
    actions: dict[Slot, SlotAction] = {}
    switching = is_switch(previous, active)
    for slot in slots:
        if previous is None or slot not in previous.slots:
            actions[slot] = SlotAction.DEPLOY
        elif switching or slot == active:
            actions[slot] = SlotAction.FROZEN
        else:
            actions[slot] = SlotAction.DEPLOY_IF_NEW
    return actions


def is_protected(action: SlotAction, slot: Slot, active: Slot | None) -> bool:
    """Whether `slot` is declared with Pulumi's `protect` this run.

    Every frozen slot is, and so is the production live slot while it is first created:
    the engine refuses a replacement only when the old *and* the new state are protected,
    so the live slot must already be protected in the run that creates it. A slot that may
    take a release is not (staging, the standby), and unprotecting it in the run that
    replaces it is allowed.
    """
    return action is SlotAction.FROZEN or slot == active


def release_fingerprint(
    desired: Mapping[Slot, Mapping[str, Any]],
    api_key: str,
    secret_env: Mapping[str, str] | None = None,
) -> str:
    """A digest of everything a deploy would change; secret, as it covers the secrets.

    `secretEnv` is only part of it when there is one, so existing records keep their value.
    """
    document: dict[str, Any] = {
        "slots": {str(slot): args for slot, args in desired.items()},
        "apiKey": api_key,
    }
    if secret_env:
        document["secretEnv"] = dict(secret_env)
    canonical = json.dumps(
        document,
        sort_keys=True,
        separators=(",", ":"),
    )
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def takes_release(action: SlotAction, previous: RecordedState | None, release: str) -> bool:
    """Whether a slot with `action` runs the current release after this run."""
    if action is SlotAction.DEPLOY:
        return True
    if action is SlotAction.FROZEN:
        return False
    return previous is None or previous.release != release


def is_switch(previous: RecordedState | None, active: Slot | None) -> bool:
    """Whether this run moves traffic to another slot than the previous run did."""
    return previous is not None and active is not None and previous.live_slot not in (None, active)


def _slot_or_none(value: object) -> Slot | None:
    return Slot(value) if isinstance(value, str) and value in Slot._value2member_map_ else None


def routing_conflict(
    routed: Slot | None, active: Slot | None, previous: RecordedState | None
) -> str | None:
    """Why this run must not go ahead when Nginx routes to another slot than expected.

    Nginx may route to the slot the last run made live, or to `activeSlot` (a switch, or a
    break-glass switch whose config was then brought in step). Anything else means the
    "standby" this run would replace is the slot serving traffic.
    """
    if routed is None or active is None or previous is None:
        return None
    if routed in (active, previous.live_slot):
        return None
    return (
        f"Nginx routes to {routed}, but activeSlot is {active} and the last deployment made "
        f"{previous.live_slot} live: this run would replace the slot serving traffic. If "
        f"{routed} should be live (a switch made by hand), run `pulumi config set activeSlot "
        f"{routed}`; otherwise switch back with `python -m nocturna_infra.switch` first."
    )


def after_switch_back(
    previous: RecordedState | None, routed: Slot | None, switched_back: tuple[Slot, Slot] | None
) -> RecordedState | None:
    """The recorded state, corrected for a switch the watch window undid.

    `switched_back` is (from, to) when the last switch's watch moved traffic from `from` back
    to `to` (and so failed that `up`). If the last run recorded `from` live but Nginx routes
    to `to`, then `to` is the slot serving traffic: plan as if it were recorded live, so it is
    frozen (never replaced) and a run that still asks for `from` retries that switch.
    """
    if previous is None or routed is None or switched_back is None:
        return previous
    undone, restored = switched_back
    if routed is restored and previous.live_slot is undone:
        return replace(previous, live_slot=restored)
    return previous
