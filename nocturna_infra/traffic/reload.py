"""When has a reload taken effect in every Nginx worker?

`nginx -s reload` returns once the signal is sent. Until the master has started new workers
and each old worker has taken the quit message, old workers keep starting requests on their
keep-alive connections with the *old* upstream groups, while they test the selection file
on every request. A flip in that window sends those requests to the target slot's previous
servers (issue 21: two 500s from green's replaced server). So the switch flips only once
every worker that ran before the reload has exited, or, past `settle` seconds, at least
says "is shutting down" in its title (such a worker finishes the request in hand and starts
no other: Nginx closes keep-alive connections while exiting), bounded by a timeout.

Linux only: the master's children and their titles are read from /proc.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

PROC: Final = Path("/proc")
WORKER_TITLE: Final = "nginx: worker process"
SHUTTING_DOWN: Final = "is shutting down"


def master_pid(pid_file: Path) -> int | None:
    """The master's pid from its pid file, or None if unreadable (Nginx not running here)."""
    try:
        return int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def workers(master: int, proc: Path = PROC) -> dict[int, str]:
    """The master's worker processes: pid -> process title."""
    found: dict[int, str] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue
        # Field 4 of stat is the parent pid; the command name (field 2) may hold spaces.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 1 and fields[1] == str(master) and title.startswith(WORKER_TITLE):
            found[int(entry.name)] = title
    return found


@dataclass(frozen=True)
class ReloadWait:
    """How the wait ended: `ok` once no old worker can start a request."""

    ok: bool
    seconds: float
    exited: int
    """Old workers that had exited when the wait ended."""
    finishing: int
    """Old workers still finishing a request (shutting down, taking no new ones)."""
    taking: int
    """Old workers still taking requests (only on a timeout)."""

    def describe(self) -> str:
        if not self.ok:
            return (
                f"{self.taking} of the workers from before the reload still took requests "
                f"after {self.seconds:.2f}s"
            )
        text = f"in effect in every worker after {self.seconds:.2f}s ({self.exited} old exited"
        if self.finishing:
            text += f", {self.finishing} still finishing a request, taking no new ones"
        return text + ")"


def wait_for_workers(
    master: int,
    before: set[int],
    timeout: float,
    settle: float,
    proc: Path = PROC,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> ReloadWait:
    """Wait until every worker in `before` has exited (or, after `settle` seconds, is at
    least shutting down); give up after `timeout` seconds."""
    start = clock()
    while True:
        now = workers(master, proc)
        old = {pid: title for pid, title in now.items() if pid in before}
        taking = [pid for pid, title in old.items() if SHUTTING_DOWN not in title]
        elapsed = clock() - start
        exited = len(before) - len(old)
        if not old or (not taking and elapsed >= settle):
            return ReloadWait(True, elapsed, exited, len(old), 0)
        if elapsed >= timeout:
            return ReloadWait(not taking, elapsed, exited, len(old) - len(taking), len(taking))
        sleep(0.01)
