"""Values in the exact text form the docker provider reads them back from Docker.

The provider (pulumi-docker 5.2 bridges kreuzwerker/terraform-provider-docker v4.5.0) stores
what `resourceDockerContainerRead` reads from `docker inspect` after every create, and the next
`pulumi up` compares the program's inputs with that state. On a replace-on-change field any
textual difference replaces the container, so the program declares each value in the form the
read produces:

- `cpus`: read as `nanoInt64ToDecimalString(HostConfig.NanoCPUs)` (internal/provider/helpers.go),
  so "1" comes back as "1.0" and "0.05" as "0.1";
- health check durations: read as Go's `time.Duration.String()` (60 s is "1m0s").

Pure functions, no Pulumi import: settings.py validates with them and render.py renders them.
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Final

NANO: Final = 10**9
_DECIMAL: Final = re.compile(r"^\d+(\.\d+)?$")


def parse_cpus(text: str) -> int | None:
    """NanoCPUs for a decimal CPU count, as Docker's `opts.ParseCPUs` computes them.

    None when the text is not a plain decimal or is more precise than a nano-CPU (ParseCPUs
    refuses those with "value is too precise").
    """
    if not _DECIMAL.fullmatch(text):
        return None
    nano = Fraction(text) * NANO
    return nano.numerator if nano.denominator == 1 else None


def nano_cpus_read_back(nano_cpus: int) -> str:
    """`nanoInt64ToDecimalString` of provider v4.5.0 (internal/provider/helpers.go), verbatim.

    Go: `rat.FloatString(9)`; if that text holds exactly nine "0" characters, return
    `rat.FloatString(1)` (rounded to one decimal), else trim trailing zeros. Hence
    1e9 -> "1.0", 5e7 -> "0.1" (rounded), 1e10 -> "10." (ten zeros: only trimmed).
    """
    if nano_cpus == 0:
        return "0"
    nine = _float_string(Fraction(nano_cpus, NANO), 9)
    if nine.count("0") == 9:
        return _float_string(Fraction(nano_cpus, NANO), 1)
    return nine.rstrip("0")


def _float_string(value: Fraction, digits: int) -> str:
    """Go's `big.Rat.FloatString(digits)` for a non-negative value: rounds half away from 0."""
    scaled = value * 10**digits
    whole, rest = divmod(scaled.numerator, scaled.denominator)
    if 2 * rest >= scaled.denominator:
        whole += 1
    text = str(whole).rjust(digits + 1, "0")
    return f"{text[:-digits]}.{text[-digits:]}"


def cpus_form(text: str) -> str | None:
    """The `cpus` text that reads back unchanged and means the same as `text`, or None.

    None when Docker cannot take the value or the provider would read it back as a different
    number (e.g. "0.05" reads back as "0.1", "0.01" as "0.0").
    """
    nano = parse_cpus(text)
    if nano is None or nano == 0:
        return None
    form = nano_cpus_read_back(nano)
    return form if parse_cpus(form.rstrip(".")) == nano else None


def go_duration(seconds: int) -> str:
    """Go's `time.Duration.String()` for whole seconds: 0 -> "0s", 90 -> "1m30s"."""
    return go_duration_ns(seconds * NANO)


def go_duration_ns(nanoseconds: int) -> str:
    """Go's `time.Duration.String()` (src/time/time.go, `Duration.format`) for ns >= 0."""
    if nanoseconds < 0:
        msg = f"negative duration {nanoseconds}"
        raise ValueError(msg)
    if nanoseconds == 0:
        return "0s"
    if nanoseconds < NANO:
        for limit, precision, unit in ((10**3, 0, "ns"), (10**6, 3, "µs"), (NANO, 6, "ms")):
            if nanoseconds < limit:
                return f"{_go_frac(nanoseconds, precision)}{unit}"
    text = f"{_go_frac(nanoseconds % (60 * NANO), 9)}s"
    minutes = nanoseconds // (60 * NANO)
    if minutes:
        text = f"{minutes % 60}m{text}"
        if minutes // 60:
            text = f"{minutes // 60}h{text}"
    return text


def _go_frac(value: int, precision: int) -> str:
    """`fmtFrac` + `fmtInt`: value / 10**precision without trailing zeros or a bare point."""
    whole, fraction = divmod(value, 10**precision)
    digits = str(fraction).rjust(precision, "0").rstrip("0") if precision else ""
    return f"{whole}.{digits}" if digits else str(whole)
