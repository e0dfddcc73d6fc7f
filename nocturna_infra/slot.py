"""The deployment slots: the words every other module uses for "where a container runs"."""

from __future__ import annotations

from enum import StrEnum


class Slot(StrEnum):
    """A named place for one container of the service."""

    BLUE = "blue"
    GREEN = "green"
    STAGING = "staging"

    @property
    def other(self) -> Slot:
        """The other production slot: the standby of a live slot, and vice versa."""
        if self is Slot.BLUE:
            return Slot.GREEN
        if self is Slot.GREEN:
            return Slot.BLUE
        msg = f"slot {self.value!r} has no other slot: only blue and green pair up"
        raise ValueError(msg)


PRODUCTION_SLOTS: tuple[Slot, Slot] = (Slot.BLUE, Slot.GREEN)
