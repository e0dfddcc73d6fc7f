"""Canary steps without a reload: the Nginx text that sends a share of requests to one slot.

Two pieces, both owned by the switch and rewritten (then `nginx -t` and reload) only when the
steps, the key or the servers change:

- at http level, appended to the upstream file: one `split_clients` map per step and
  direction, e.g. `$nocturna_img_production_to_green_25` is `nocturna-img-production-green`
  for 25 % of keys and `nocturna-img-production-blue` for the rest;
- at server level, the steps file the site includes in each server after its own selection:
  one `if (-f <dir>/<name>.green-25) { set $live $..._to_green_25; }` per step, so choosing a
  step is creating or removing a selection file, as choosing the slot already is.

The maps use the same key and hash for every step, and each gives the target slot the lowest
`share` % of the hash space, so widening a step never moves a sticky client back.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from nocturna_infra.traffic.safe_files import DEFAULT_MODE, exists, write_atomic
from nocturna_infra.traffic.upstream import group_name

PER_REQUEST_KEY: Final = "${request_id}"
"""A new random key per request: the default, no stickiness."""
STEPS_HEADER: Final = (
    "# Managed by nocturna_infra.switch: canary step selection, included in each server of "
    "the site; do not edit."
)
SPLITS_HEADER: Final = "# Canary steps: one split per step and target slot (no reload to step)."
_IDENT_RE: Final = re.compile(r"[^A-Za-z0-9_]")
KEYS: Final = {
    "request": PER_REQUEST_KEY,
    "client": "${remote_addr}",
}
"""Named stickiness keys; `cookie:<name>` keys on a cookie (`${cookie_<name>}`)."""
_COOKIE_RE: Final = re.compile(r"^cookie:([A-Za-z0-9_]{1,64})$")


class SplitKeyError(ValueError):
    """A stickiness key that is not one of the allowed forms."""


@dataclass(frozen=True)
class Steps:
    """The canary shares (percent of requests to the new slot, rising, each 1..99) and the
    `split_clients` key they hash."""

    shares: tuple[int, ...]
    key: str = PER_REQUEST_KEY


def split_key(spec: str) -> str:
    """The Nginx key of a stickiness spec: `request` (default), `client`, `cookie:<name>`."""
    if spec in KEYS:
        return KEYS[spec]
    cookie = _COOKIE_RE.match(spec)
    if cookie:
        return f"${{cookie_{cookie.group(1)}}}"
    msg = f"must be request, client or cookie:<name> (name of letters, digits, _); got {spec!r}"
    raise SplitKeyError(msg)


def split_variable(name: str, slot: str, share: int) -> str:
    """The variable (without `$`) naming the group a request goes to at `share` % to `slot`."""
    return f"{_IDENT_RE.sub('_', name)}_to_{slot}_{share}"


def step_marker(directory: Path, name: str, slot: str, share: int) -> Path:
    """The file whose existence selects step `share` % to `slot` (beside the slot markers)."""
    return directory / f"{name}.{slot}-{share}"


def steps_path(upstream_file: Path) -> Path:
    """The server-level steps file, beside the upstream file: `<name>.steps.conf`."""
    return upstream_file.with_name(f"{upstream_file.stem}.steps{upstream_file.suffix}")


def render_splits(name: str, slots: Sequence[str], steps: Steps) -> str:
    """The http-level maps appended to the upstream file: for each target slot and share,
    `share` % of keys to that slot's group, the rest to the other slot's group."""
    if not steps.shares:
        return ""
    lines = [SPLITS_HEADER]
    for target in slots:
        others = [slot for slot in slots if slot != target]
        if len(others) != 1:
            continue  # a canary needs exactly one slot to compare with
        for share in steps.shares:
            lines += [
                f'split_clients "{steps.key}" ${split_variable(name, target, share)} {{',
                f"    {share}% {group_name(name, target)};",
                f"    * {group_name(name, others[0])};",
                "}",
            ]
    return "\n".join(lines) + "\n"


def render_steps(
    name: str, slots: Sequence[str], steps: Steps, directory: Path, live_variable: str
) -> str:
    """The server-level step selection: each step's marker sets `$<live_variable>` to its
    map. Tested after the site's slot selection, so a step overrides the slot it starts from;
    shares rise in the file, so while two markers exist during a flip the wider one wins."""
    lines = [STEPS_HEADER]
    for target in slots:
        if sum(1 for slot in slots if slot != target) != 1:
            continue
        for share in steps.shares:
            lines += [
                f"if (-f {step_marker(directory, name, target, share)}) {{",
                f"    set ${live_variable} ${split_variable(name, target, share)};",
                "}",
            ]
    return "\n".join(lines) + "\n"


def parse_shares(text: str) -> tuple[int, ...]:
    """`5,25,50` as shares; each a whole percent 1..99, strictly rising (100 % is the flip
    itself, 0 % the old slot alone)."""
    shares: list[int] = []
    for part in text.split(","):
        item = part.strip()
        if not item.isdigit() or not 1 <= int(item) <= 99:
            msg = f"each step must be a whole percent from 1 to 99; got {item!r} in {text!r}"
            raise ValueError(msg)
        if shares and int(item) <= shares[-1]:
            msg = f"steps must rise; got {item} after {shares[-1]} in {text!r}"
            raise ValueError(msg)
        shares.append(int(item))
    return tuple(shares)


def write_step(
    directory: Path, name: str, target: str, shares: Sequence[int], share: int | None
) -> None:
    """Make step `share` % to `target` the only step marker (None: no step, the slot
    selection alone decides). The new marker is created before the old ones go, and the
    steps file tests wider shares later, so a step in between never routes below either."""
    if share is not None:
        path = step_marker(directory, name, target, share)
        if not exists(path):
            write_atomic(path, f"{target} {share}%\n".encode(), DEFAULT_MODE)
    for other in shares:
        if other != share:
            write_atomic(step_marker(directory, name, target, other), None)
