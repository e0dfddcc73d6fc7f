"""Secrets out of every line the switch prints or records.

The switch holds the API key (and any other value a smoke check's `${VAR}` names) and quotes
what the release answered. A release may echo the key back, in an error body or a JSON field,
and what the switch says ends up in `pulumi up`'s output, the stack's `switchOutput`, the
watch record and `status --json`. So every such text passes through `mask`, and an excerpt
cut to a length passes through `excerpt`, which also masks a key's first characters where the
cut splits it (masking after cutting would leave that part readable).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

MASK: Final = "***"
MIN_PREFIX: Final = 4
"""A secret's first characters left at the end of an excerpt are masked from this many on."""


def mask(text: str, secrets: Iterable[str]) -> str:
    """`text` with every occurrence of every (non-empty) secret replaced by `***`."""
    for value in sorted({value for value in secrets if value}, key=len, reverse=True):
        text = text.replace(value, MASK)
    return text


def excerpt(text: str, limit: int, secrets: Iterable[str]) -> str:
    """The first `limit` characters of `text` with every secret masked, masked before the cut,
    and a secret's prefix of `MIN_PREFIX` or more characters at the end masked as well."""
    values = [value for value in secrets if value]
    head = mask(text, values)[:limit]
    for value in sorted(values, key=len, reverse=True):
        for size in range(min(len(value) - 1, len(head)), MIN_PREFIX - 1, -1):
            if head.endswith(value[:size]):
                return head[:-size] + MASK
    return head
