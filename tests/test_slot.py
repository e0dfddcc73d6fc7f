from __future__ import annotations

import pytest

from nocturna_infra.slot import Slot


@pytest.mark.parametrize(
    ("slot", "other"),
    [
        pytest.param(Slot.BLUE, Slot.GREEN, id="blue"),
        pytest.param(Slot.GREEN, Slot.BLUE, id="green"),
    ],
)
def test_production_slots_pair_up(slot: Slot, other: Slot) -> None:
    assert slot.other is other
    assert other.other is slot


def test_staging_has_no_other_slot() -> None:
    with pytest.raises(ValueError, match="slot 'staging' has no other slot"):
        _ = Slot.STAGING.other


def test_slot_formats_as_its_name() -> None:
    assert f"nocturna-chart-{Slot.GREEN}" == "nocturna-chart-green"
