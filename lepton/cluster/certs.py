"""Throwaway certificates for the local control plane.

One CA signs a serving certificate for 127.0.0.1/localhost and an admin client
certificate in ``system:masters``; every component and the kubeconfig use
them, as kwokctl does. A separate RSA key signs service-account tokens.
Nothing here is meant to protect anything: the cluster lives on loopback for
the length of a test session or a demo.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class CertPaths:
    """The PEM files a control plane needs."""

    ca_cert: Path
    ca_key: Path
    serving_cert: Path
    serving_key: Path
    admin_cert: Path
    admin_key: Path
    service_account_key: Path
    service_account_pub: Path

    @classmethod
    def under(cls, directory: Path) -> CertPaths:
        """Where :func:`generate` writes them in ``directory``."""
        return cls(
            ca_cert=directory / "ca.crt",
            ca_key=directory / "ca.key",
            serving_cert=directory / "serving.crt",
            serving_key=directory / "serving.key",
            admin_cert=directory / "admin.crt",
            admin_key=directory / "admin.key",
            service_account_key=directory / "sa.key",
            service_account_pub=directory / "sa.pub",
        )


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attrs)


def generate(directory: Path) -> CertPaths:
    """Write a fresh CA, serving, admin-client and service-account key set into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    valid = (now - dt.timedelta(hours=1), now + dt.timedelta(days=365))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("lepton-local-ca")
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid[0])
        .not_valid_after(valid[1])
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(
        name: x509.Name, usage: x509.ObjectIdentifier, sans: list[x509.GeneralName] | None
    ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(valid[0])
            .not_valid_after(valid[1])
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return key, builder.sign(ca_key, hashes.SHA256())

    serving_key, serving_cert = leaf(
        _name("kube-apiserver"),
        ExtendedKeyUsageOID.SERVER_AUTH,
        [
            x509.DNSName("localhost"),
            x509.DNSName("kubernetes"),
            x509.DNSName("kubernetes.default"),
            x509.DNSName("kubernetes.default.svc"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("10.0.0.1")),
        ],
    )
    admin_key, admin_cert = leaf(
        _name("lepton-admin", "system:masters"), ExtendedKeyUsageOID.CLIENT_AUTH, None
    )
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    paths = CertPaths.under(directory)
    for cert, path in (
        (ca_cert, paths.ca_cert),
        (serving_cert, paths.serving_cert),
        (admin_cert, paths.admin_cert),
    ):
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(paths.ca_key, ca_key)
    _write_key(paths.serving_key, serving_key)
    _write_key(paths.admin_key, admin_key)
    _write_key(paths.service_account_key, sa_key)
    paths.service_account_pub.write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return paths


def client_ssl_context(paths: CertPaths) -> ssl.SSLContext:
    """TLS as the admin client: trusts the cluster's CA, presents the admin certificate."""
    context = ssl.create_default_context(cafile=str(paths.ca_cert))
    context.load_cert_chain(str(paths.admin_cert), str(paths.admin_key))
    return context


def write_kubeconfig(path: Path, paths: CertPaths, server: str) -> None:
    """A kubeconfig for the admin client at ``server``, certificates inlined (mode 0600)."""

    def b64(pem: Path) -> str:
        return base64.b64encode(pem.read_bytes()).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "lepton-local",
                "cluster": {"server": server, "certificate-authority-data": b64(paths.ca_cert)},
            }
        ],
        "users": [
            {
                "name": "lepton-admin",
                "user": {
                    "client-certificate-data": b64(paths.admin_cert),
                    "client-key-data": b64(paths.admin_key),
                },
            }
        ],
        "contexts": [
            {
                "name": "lepton-local",
                "context": {"cluster": "lepton-local", "user": "lepton-admin"},
            }
        ],
        "current-context": "lepton-local",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
