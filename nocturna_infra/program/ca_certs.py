"""Extra CA certificates for image builds behind a TLS-intercepting proxy.

The build host trusts such a proxy through `*.crt` files in
`/usr/local/share/ca-certificates/`; a fresh image does not. `read_extra_ca_certs` turns those
files into the PEM text the Dockerfile's `EXTRA_CA_CERTS` build argument takes.
"""

from __future__ import annotations

import base64
import binascii
import re
from pathlib import Path
from typing import Final

HOST_CA_DIR: Final = Path("/usr/local/share/ca-certificates")
"""Where Debian's update-ca-certificates looks for locally added certificates."""

_PEM_CERTIFICATE: Final = re.compile(
    r"-----BEGIN CERTIFICATE-----\r?\n[A-Za-z0-9+/=\r\n]+-----END CERTIFICATE-----"
)


class CaCertError(ValueError):
    """A file offered as a CA certificate is not one."""


def read_extra_ca_certs(directory: Path = HOST_CA_DIR) -> str:
    """Return the PEM certificates of every `*.crt` in `directory`, in name order.

    Only the certificate blocks are kept (comments and blank lines around them are dropped),
    one per line-terminated block. A missing directory or one without `*.crt` files gives
    `""`, which the Dockerfile treats as "no extra certificates". Each file must hold at
    least one PEM certificate and nothing but certificates (no private keys).
    """
    if not directory.is_dir():
        return ""
    blocks: list[str] = []
    for path in sorted(directory.glob("*.crt")):
        blocks.extend(_certificates_in(path))
    return "".join(f"{block}\n" for block in blocks)


def _certificates_in(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="ascii")
    except UnicodeDecodeError:
        msg = f"{path}: not a PEM certificate (binary content; DER files must be converted to PEM)"
        raise CaCertError(msg) from None
    if "PRIVATE KEY-----" in text:
        msg = f"{path}: contains a private key; only public CA certificates may be passed"
        raise CaCertError(msg)
    blocks = [match.group(0).replace("\r\n", "\n") for match in _PEM_CERTIFICATE.finditer(text)]
    if not blocks:
        msg = f"{path}: not a PEM certificate (no '-----BEGIN CERTIFICATE-----' block found)"
        raise CaCertError(msg)
    for number, block in enumerate(blocks, start=1):
        if not _is_der_sequence(block):
            msg = f"{path}: certificate {number} is not valid base64-encoded DER"
            raise CaCertError(msg)
    return blocks


def _is_der_sequence(block: str) -> bool:
    body = "".join(block.splitlines()[1:-1])
    try:
        der = base64.b64decode(body, validate=True)
    except binascii.Error:
        return False
    return der[:1] == b"\x30"  # an X.509 certificate is an ASN.1 SEQUENCE
