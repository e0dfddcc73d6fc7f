"""What the command-line tools (switch, status) share: one usage error and its parser."""

from __future__ import annotations

import argparse
from typing import NoReturn


class UsageError(Exception):
    """A flag or value is invalid (exit 2); the message names it, the bad value and more."""


class RaisingArgumentParser(argparse.ArgumentParser):
    """argparse that raises UsageError instead of printing and exiting, so callers decide."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)
