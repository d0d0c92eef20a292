"""A throwaway certificate authority for brokers started with TLS on loopback.

``make_pki(directory)`` writes a CA, a server certificate for ``localhost`` and
``127.0.0.1``, and a client certificate, all signed by that CA, as PEM files, and
a second CA that signed nothing (to show what a wrong CA does). Keys are EC P-256,
certificates last a day: they exist for one test session. Two more server
certificates from the same CA show the other refusals a client must make: one
naming only ``elsewhere.invalid`` (a host name that does not match) and one for
``localhost`` that expired yesterday.
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


@dataclass(frozen=True)
class Pki:
    """Paths of the PEM files ``make_pki`` wrote."""

    ca: Path            # the CA certificate clients and servers trust
    server_cert: Path   # names localhost and 127.0.0.1
    server_key: Path
    client_cert: Path   # common name "omnibus-client"
    client_key: Path
    other_ca: Path      # a CA that signed nothing here: verification against it fails
    wrong_host_cert: Path  # signed by ca, names only elsewhere.invalid
    wrong_host_key: Path
    expired_cert: Path     # signed by ca, names localhost and 127.0.0.1, expired a day ago
    expired_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def _ca(common_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(_name(common_name))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def _leaf(ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, common_name: str, *,
          server: bool, hosts: tuple[str, ...] = ("localhost", "127.0.0.1"),
          age_days: int = 0) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=age_days)
    builder = (x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(ca_cert.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server
                                                     else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False))
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName([_general_name(h) for h in hosts]), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def make_pki(directory: Path) -> Pki:
    """Writes a fresh CA, server and client certificates under ``directory`` (created if needed)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = _ca("omnibus test CA")
    server_key, server_cert = _leaf(ca_key, ca_cert, "localhost", server=True)
    client_key, client_cert = _leaf(ca_key, ca_cert, "omnibus-client", server=False)
    _, other_cert = _ca("omnibus unrelated CA")
    wrong_key, wrong_cert = _leaf(ca_key, ca_cert, "elsewhere.invalid", server=True, hosts=("elsewhere.invalid",))
    expired_key, expired_cert = _leaf(ca_key, ca_cert, "localhost", server=True, age_days=2)
    pki = Pki(ca=directory / "ca.pem", server_cert=directory / "server.pem", server_key=directory / "server-key.pem",
              client_cert=directory / "client.pem", client_key=directory / "client-key.pem",
              other_ca=directory / "other-ca.pem",
              wrong_host_cert=directory / "wrong-host.pem", wrong_host_key=directory / "wrong-host-key.pem",
              expired_cert=directory / "expired.pem", expired_key=directory / "expired-key.pem")
    pem = serialization.Encoding.PEM
    pki.ca.write_bytes(ca_cert.public_bytes(pem))
    pki.server_cert.write_bytes(server_cert.public_bytes(pem))
    pki.client_cert.write_bytes(client_cert.public_bytes(pem))
    pki.other_ca.write_bytes(other_cert.public_bytes(pem))
    pki.wrong_host_cert.write_bytes(wrong_cert.public_bytes(pem))
    pki.expired_cert.write_bytes(expired_cert.public_bytes(pem))
    _write_key(server_key, pki.server_key)
    _write_key(client_key, pki.client_key)
    _write_key(wrong_key, pki.wrong_host_key)
    _write_key(expired_key, pki.expired_key)
    return pki
