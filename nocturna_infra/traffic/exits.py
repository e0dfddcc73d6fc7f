"""How a switch ends: the exit codes its callers (the router, operators, `status`) rely on,
and the two exceptions that carry a code up to the CLI."""

from __future__ import annotations

from enum import IntEnum
from typing import Final


class ExitCode(IntEnum):
    """Process exit codes; the table in `--help` and docs/switch.md documents them."""

    OK = 0
    USAGE = 2
    UNHEALTHY = 3
    CONFIG_REJECTED = 4
    RELOAD_FAILED = 5
    VERIFY_FAILED = 6
    LOCKED = 7
    FILESYSTEM = 8
    WATCH_SWITCHED_BACK = 9
    WATCH_STILL_LIVE = 10
    CANARY_ABORTED = 11


EXIT_CODES_HELP: Final = """\
exit codes:
  0  switched, or the target was already live (nothing rewritten, no reload)
  2  bad usage: a flag is missing or invalid; nothing was touched
  3  target not healthy (probe, smoke URL or a --smoke-checks check failed); nothing was
     changed
  4  nginx -t rejected the new upstream file; the previous file was restored byte for byte
  5  reload failed; the previous file was restored and a reload retried with it
  6  verification through Nginx failed; the previous selection (and upstream file, if the
     servers changed) was restored
  7  another switch holds the lock; nothing was changed
  8  a file or directory could not be written, or is unsafe (a symlink, or a directory others
     may write to); nothing was changed, or what was written was restored
  9  the watch saw the new slot fail and switched back to the previous slot (health-gated)
  10 the watch saw the new slot fail, but switching back failed or was refused: the new
     slot is still live
  11 a canary step saw the new slot regress (--canary-steps): back to 0 %, the previous
     slot takes everything; the record names the step and why
  143/130/129  stopped by SIGTERM/SIGINT/SIGHUP (128 + signal); before the first write
     nothing was changed; after it, until the flip is verified, the previous selection and
     file were restored first; after that (before or during the watch) the new slot stays
     live and the message says so
"""


class SwitchError(Exception):
    """The switch stopped; `code` says how far it got and what was put back."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class Interrupted(BaseException):
    """SIGTERM, SIGINT or SIGHUP arrived; raised so a half-done switch can put things back."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
