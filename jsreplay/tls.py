"""Throw-away PKI for tests, demos and the record/replay servers.

Real Jumpstarter peers always speak TLS to the controller and the router, and they check the host name even
in insecure mode (they fetch the server's chain and then trust it), so a server on 127.0.0.1 needs a
certificate with an IP SAN. Keys are EC P-256: generating one takes well under a millisecond, an RSA key
would take tens of milliseconds per test.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "CertificateAuthority",
    "ServerCertificate",
    "channel_credentials",
    "load_server_certificate",
    "server_credentials",
]

_ALWAYS_HOSTS = ("127.0.0.1", "localhost")
# Backdated so a peer whose clock runs a little behind still accepts the certificate.
_NOT_BEFORE_SLACK = datetime.timedelta(hours=1)
_VALIDITY = datetime.timedelta(days=30)


@dataclass(frozen=True)
class ServerCertificate:
    cert_pem: bytes  # leaf certificate (for a loaded one: everything in the certificate file)
    key_pem: bytes
    ca_pem: bytes  # what clients trust: the CA that signed it (for a loaded one: the file's chain)


@dataclass(frozen=True)
class CertificateAuthority:
    cert_pem: bytes
    key_pem: bytes

    @classmethod
    def generate(cls, common_name: str = "jsreplay throw-away CA") -> CertificateAuthority:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = datetime.datetime.now(datetime.UTC)
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _NOT_BEFORE_SLACK)
            .not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
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
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert_pem=cert.public_bytes(serialization.Encoding.PEM), key_pem=_key_pem(key))

    def issue(self, hosts: Sequence[str]) -> ServerCertificate:
        """A server certificate for `hosts` (IP literals become IP SANs, the rest DNS SANs).

        127.0.0.1 and localhost are always included, so a certificate is usable for local servers.
        """
        ca_cert = x509.load_pem_x509_certificate(self.cert_pem)
        ca_key = serialization.load_pem_private_key(self.key_pem, password=None)
        if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
            raise TypeError("CertificateAuthority.key_pem must hold an EC private key")
        names: list[str] = []
        for host in [*hosts, *_ALWAYS_HOSTS]:
            if host and host not in names:
                names.append(host)
        sans: list[x509.GeneralName] = []
        for host in names:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                sans.append(x509.DNSName(host))
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _NOT_BEFORE_SLACK)
            .not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        return ServerCertificate(
            cert_pem=cert.public_bytes(serialization.Encoding.PEM),
            key_pem=_key_pem(key),
            ca_pem=self.cert_pem,
        )


def server_credentials(cert: ServerCertificate) -> grpc.ServerCredentials:
    """Server credentials that present the leaf *and* its chain.

    Sending the CA along matters: in insecure mode the Jumpstarter client trusts exactly the chain the
    server sent, and a leaf alone is not a trust anchor for gRPC's verifier.
    """
    return grpc.ssl_server_credentials([(cert.key_pem, full_chain_pem(cert))])


def channel_credentials(ca_pem: bytes | None) -> grpc.ChannelCredentials:
    """Client credentials trusting `ca_pem`, or the system roots when it is None."""
    return grpc.ssl_channel_credentials(root_certificates=ca_pem)


def load_server_certificate(cert_file: Path, key_file: Path) -> ServerCertificate:
    """Load a PEM certificate (optionally followed by its chain) and its key.

    `ca_pem` is every certificate found in the file: for a self-signed certificate that is the certificate
    itself, which is what a client has to trust.
    """
    cert_pem = Path(cert_file).read_bytes()
    key_pem = Path(key_file).read_bytes()
    certs = x509.load_pem_x509_certificates(cert_pem)  # raises ValueError on a file with no certificate
    serialization.load_pem_private_key(key_pem, password=None)  # fail early on a bad or encrypted key
    chain = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)
    return ServerCertificate(cert_pem=cert_pem, key_pem=key_pem, ca_pem=chain)


def full_chain_pem(cert: ServerCertificate) -> bytes:
    """The leaf followed by every certificate of `ca_pem` not already in `cert_pem`."""
    present = {c.fingerprint(hashes.SHA256()) for c in x509.load_pem_x509_certificates(cert.cert_pem)}
    extra = [
        c.public_bytes(serialization.Encoding.PEM)
        for c in x509.load_pem_x509_certificates(cert.ca_pem)
        if c.fingerprint(hashes.SHA256()) not in present
    ]
    leaf = cert.cert_pem if cert.cert_pem.endswith(b"\n") else cert.cert_pem + b"\n"
    return leaf + b"".join(extra)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
