"""The selection: which slot's upstream group Nginx proxies to, as files Nginx tests per request.

For upstream name N, slot S is selected when `<dir>/N.S` exists. The shipped site config
tests only the non-fallback slots (`if (-f <dir>/N.green) { set $live N-green; }`, after
`set $live N-blue;`), so Nginx sees a change on the very next request, with no reload and
no admin endpoint, and nothing from a request can influence the choice. The marker of the
fallback slot is for people and tools: with no marker at all (a lost or never-written
selection) Nginx still uses the fallback, and `switch`/`status` report it as missing.

Flipping is one atomic create/rename or one unlink; creates happen before removals, so a
crash in between leaves a selection Nginx and this module read the same way.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from nocturna_infra.traffic.safe_files import DEFAULT_MODE, UnsafeFileError, exists, write_atomic


def marker(directory: Path, name: str, slot: str) -> Path:
    """The file whose existence selects `slot` for upstream `name`."""
    return directory / f"{name}.{slot}"


def read_markers(directory: Path, name: str, slots: Sequence[str]) -> frozenset[str]:
    """The slots whose marker exists. Raises UnsafeFileError if the directory cannot be read."""
    try:
        os.stat(directory)
        return frozenset(slot for slot in slots if exists(marker(directory, name, slot)))
    except FileNotFoundError:
        msg = f"{directory}: no such directory (Nginx uses its fallback slot)"
        raise UnsafeFileError(msg) from None
    except OSError as error:
        msg = f"{directory}: unreadable ({error.strerror})"
        raise UnsafeFileError(msg) from None


def nginx_choice(present: frozenset[str], slots: Sequence[str], fallback: str) -> str:
    """The slot the shipped config proxies to: the last tested marker present, else fallback."""
    chosen = fallback
    for slot in slots:
        if slot != fallback and slot in present:
            chosen = slot
    return chosen


def describe(present: frozenset[str], slots: Sequence[str], fallback: str) -> str:
    """One phrase for progress lines and status: the choice, and anything odd about it."""
    if not present:
        return f"no selection (Nginx uses its fallback {fallback})"
    chosen = nginx_choice(present, slots, fallback)
    stale = sorted(present - {chosen})
    return chosen + (f" (stale marker for {', '.join(stale)})" if stale else "")


def write_markers(directory: Path, name: str, slots: Sequence[str], want: frozenset[str]) -> None:
    """Make exactly the markers of `want` exist: creates first, removals last."""
    for slot in slots:
        path = marker(directory, name, slot)
        if slot in want and not exists(path):
            write_atomic(path, f"{slot}\n".encode(), DEFAULT_MODE)
    for slot in slots:
        if slot not in want:
            write_atomic(marker(directory, name, slot), None)
