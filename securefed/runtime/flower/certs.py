"""TLS certificates for a deployment on one machine (tests, benchmarks, a first loopback run).

:func:`write_test_certificates` makes a throwaway certificate authority and one server
certificate for ``localhost`` / ``127.0.0.1``, with the ``cryptography`` x509 API: P-256 keys,
SHA-256 signatures, valid for ``days`` days. The SuperLink serves the server certificate; every
SuperNode and the ``flwr`` CLI trust the CA. A real consortium uses certificates from its own
PKI instead (docs/deploy.md); securefed's own protections (signatures, AEAD, masks) do not
depend on TLS at all -- TLS keeps the metadata and Flower's own control traffic private.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from securefed.files import write_atomic

__all__ = ["TestCertificates", "write_test_certificates"]


@dataclass(frozen=True, slots=True)
class TestCertificates:
    """Where :func:`write_test_certificates` put its files (PEM)."""

    ca_certificate: Path
    server_certificate: Path
    server_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def write_test_certificates(directory: Path, *, days: int = 2) -> TestCertificates:
    """Write ``ca.crt``, ``server.pem`` and ``server.key`` (mode 0600, unencrypted: the
    SuperLink reads it at start-up) into ``directory`` (created). Never overwrites: raises
    :class:`~securefed.errors.ConfigError` if a file is already there."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=days)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("securefed test CA"))
        .issuer_name(_name("securefed test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca.subject)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    files = TestCertificates(
        directory / "ca.crt", directory / "server.pem", directory / "server.key"
    )
    write_atomic(files.ca_certificate, ca.public_bytes(serialization.Encoding.PEM), overwrite=False)
    write_atomic(
        files.server_certificate, server.public_bytes(serialization.Encoding.PEM), overwrite=False
    )
    key_pem = server_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_atomic(files.server_key, key_pem, mode=0o600, overwrite=False)
    return files
