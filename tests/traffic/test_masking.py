"""Masking secrets in what the switch prints and records: exact outputs."""

from __future__ import annotations

import pytest

from nocturna_infra.traffic.masking import excerpt, mask

KEY = "k3y-0123456789abcdef"


def test_every_occurrence_of_every_secret_is_masked() -> None:
    assert mask(f"Bearer {KEY}, again {KEY}; other s3cret", [KEY, "s3cret", ""]) == (
        "Bearer ***, again ***; other ***"
    )


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        pytest.param(f"auth=Bearer {KEY} tail", 40, "auth=Bearer *** tail", id="whole-key"),
        pytest.param(f"auth=Bearer {KEY} tail", 13, "auth=Bearer *", id="cut-after-masking"),
        pytest.param(f"auth=Bearer {KEY[:9]}", 200, "auth=Bearer ***", id="key-cut-short"),
        pytest.param(f"auth=Bearer {KEY[:4]}", 200, "auth=Bearer ***", id="four-chars-at-end"),
        pytest.param(f"auth=Bearer {KEY[:3]}", 200, "auth=Bearer k3y", id="three-chars-kept"),
        pytest.param("no secret here at all", 9, "no secret", id="plain-text"),
    ],
)
def test_excerpt_masks_before_the_cut_and_a_prefix_at_it(text, limit, expected) -> None:
    assert excerpt(text, limit, [KEY]) == expected
