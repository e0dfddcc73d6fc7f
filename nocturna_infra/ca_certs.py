"""Extra CA certificates for builds behind a TLS-intercepting proxy."""

from __future__ import annotations

from pathlib import Path

PEM_BEGIN = "-----BEGIN CERTIFICATE-----"
PEM_END = "-----END CERTIFICATE-----"


def read_extra_ca_certs(directory: Path) -> str:
    """Concatenate the PEM certificates (*.crt, sorted) in `directory` into one bundle."""
    bundle = []
    for path in sorted(directory.glob("*.crt")):
        text = path.read_text().strip()
        if not text.startswith(PEM_BEGIN) or not text.endswith(PEM_END):
            msg = f"{path}: not a PEM certificate (expected {PEM_BEGIN} ... {PEM_END})"
            raise ValueError(msg)
        bundle.append(text + "\n")
    return "".join(bundle)
