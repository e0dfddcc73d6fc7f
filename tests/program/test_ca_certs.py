from __future__ import annotations

import base64

import pytest

from nocturna_infra.program.ca_certs import CaCertError, read_extra_ca_certs


def pem(payload: bytes) -> str:
    """A PEM block around a DER-shaped body (an ASN.1 SEQUENCE), 64 columns like openssl."""
    body = base64.b64encode(b"\x30\x82" + payload).decode()
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return "\n".join(["-----BEGIN CERTIFICATE-----", *lines, "-----END CERTIFICATE-----"])


PROXY_CA = pem(b"proxy ca" * 20)
CORP_CA = pem(b"corporate root")
OTHER_CA = pem(b"second in bundle")


def test_missing_directory_gives_no_certificates(tmp_path):
    assert read_extra_ca_certs(tmp_path / "absent") == ""


def test_directory_without_crt_files_gives_no_certificates(tmp_path):
    (tmp_path / "README").write_text("not a certificate\n")
    (tmp_path / "proxy.pem").write_text(PROXY_CA)

    assert read_extra_ca_certs(tmp_path) == ""


def test_certificates_are_concatenated_in_file_name_order(tmp_path):
    (tmp_path / "b-proxy.crt").write_text(PROXY_CA + "\n")
    (tmp_path / "a-corp.crt").write_text(CORP_CA)

    assert read_extra_ca_certs(tmp_path) == f"{CORP_CA}\n{PROXY_CA}\n"


def test_bundle_keeps_every_certificate_and_drops_comments_and_crlf(tmp_path):
    text = f"# corporate bundle\n{CORP_CA}\n\n{OTHER_CA}\n".replace("\n", "\r\n")
    (tmp_path / "bundle.crt").write_bytes(text.encode())

    assert read_extra_ca_certs(tmp_path) == f"{CORP_CA}\n{OTHER_CA}\n"


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        pytest.param(
            b"hello\n",
            "not a PEM certificate (no '-----BEGIN CERTIFICATE-----' block found)",
            id="text",
        ),
        pytest.param(
            b"\x30\x82\x01\xff\xfe",
            "not a PEM certificate (binary content; DER files must be converted to PEM)",
            id="der",
        ),
        pytest.param(
            f"{PROXY_CA}\n-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n".encode(),
            "contains a private key; only public CA certificates may be passed",
            id="private-key",
        ),
        pytest.param(
            b"-----BEGIN CERTIFICATE-----\nbm90IGRlcg==\n-----END CERTIFICATE-----\n",
            "certificate 1 is not valid base64-encoded DER",
            id="not-der",
        ),
    ],
)
def test_file_that_is_not_a_pem_certificate_is_named_in_the_error(tmp_path, content, problem):
    (tmp_path / "a-good.crt").write_text(CORP_CA)
    bad = tmp_path / "b-bad.crt"
    bad.write_bytes(content)

    with pytest.raises(CaCertError) as error:
        read_extra_ca_certs(tmp_path)

    assert str(error.value) == f"{bad}: {problem}"
