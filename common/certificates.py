"""Credentials of a deployment (``privrec certs``): a CA, the SuperLink's TLS certificate, and one
authentication key pair per SuperNode, all made with the ``cryptography`` package.

What Flower 1.42 reads:

* the SuperLink: ``--ssl-ca-certfile ca.crt --ssl-certfile superlink.crt --ssl-keyfile superlink.key``;
* each SuperNode: ``--root-certificates ca.crt`` (it trusts only servers this CA signed) and
  ``--auth-supernode-private-key nodes/<name>`` (an OpenSSH EC P-384 private key);
* the operator: ``flwr supernode register nodes/<name>.pub <connection>`` for each node it admits
  (with ``flower-superlink --enable-supernode-auth`` any other key is refused).

The SuperLink certificate names the hosts and IP addresses the nodes dial (subject alternative
names). Nothing is overwritten without ``force``; private keys are written 0600, atomically.
In a real deployment each node owner makes their own key pair (:func:`make_node_key`) and hands
the operator only the ``.pub`` file.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from common.files import atomic_write

CURVE = ec.SECP384R1()  # P-384: what Flower's node authentication expects
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
_NODE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class CertificateError(ValueError):
    """Credentials cannot be made as asked (a bad name, or files that would be overwritten)."""


@dataclass(frozen=True)
class Credentials:
    """Where ``privrec certs`` puts each file, under one folder."""

    folder: Path

    @property
    def ca_cert(self) -> Path:
        return self.folder / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.folder / "ca.key"

    @property
    def superlink_cert(self) -> Path:
        return self.folder / "superlink.crt"

    @property
    def superlink_key(self) -> Path:
        return self.folder / "superlink.key"

    def node_key(self, name: str) -> Path:
        """A SuperNode's private key (``--auth-supernode-private-key``); its public key is ``.pub`` beside it."""
        return self.folder / "nodes" / name

    def node_public_key(self, name: str) -> Path:
        return self.folder / "nodes" / f"{name}.pub"


def subject_alternative_names(hosts: Sequence[str]) -> list[x509.GeneralName]:
    """IP addresses and DNS names for the SuperLink certificate; a bad one is a :class:`CertificateError`."""
    if not hosts:
        raise CertificateError(
            "no host given: pass --host with each name or IP address the SuperNodes "
            "dial (e.g. --host 127.0.0.1 --host localhost)"
        )
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
            continue
        except ValueError:
            pass
        if not _HOSTNAME.match(host):
            raise CertificateError(
                f"--host {host!r} is neither an IP address nor a DNS name; give e.g. 'server.example.org' or '10.0.0.5'"
            )
        names.append(x509.DNSName(host.lower()))
    return names


def make_credentials(
    folder: Path, *, hosts: Sequence[str], nodes: Sequence[str], force: bool = False, days: int = 365
) -> list[Path]:
    """A new CA, a SuperLink certificate for ``hosts`` and a key pair per node name; returns the files.

    Refuses (before writing anything) when any of them exists, unless ``force``.
    """
    credentials = Credentials(folder)
    sans = subject_alternative_names(hosts)
    for name in nodes:
        if not _NODE_NAME.match(name):
            raise CertificateError(
                f"node name {name!r} should be letters, digits, '.', '_' or '-' (it names the key files)"
            )
    if len(set(nodes)) != len(nodes):
        raise CertificateError("node names repeat; give each SuperNode its own name")
    if days < 1:
        raise CertificateError(f"--days should be at least 1, got {days}")
    targets = [credentials.ca_cert, credentials.ca_key, credentials.superlink_cert, credentials.superlink_key]
    targets += [p for n in nodes for p in (credentials.node_key(n), credentials.node_public_key(n))]
    existing = [p for p in targets if p.exists()]
    if existing and not force:
        raise CertificateError(
            f"{existing[0]} already exists; pass --force to replace the credentials (nodes and "
            "the SuperLink then need the new files)"
        )
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(CURVE)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "PrivRec federation CA")])
    ca_cert = (
        _builder(ca_name, ca_name, ca_key.public_key(), now, days)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
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
        .sign(ca_key, hashes.SHA384())
    )
    server_key = ec.generate_private_key(CURVE)
    server_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    server_cert = (
        _builder(server_name, ca_name, server_key.public_key(), now, days)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA384())
    )
    atomic_write(credentials.ca_key, _private_pem(ca_key), private=True)
    atomic_write(credentials.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM))
    atomic_write(credentials.superlink_key, _private_pem(server_key), private=True)
    atomic_write(credentials.superlink_cert, server_cert.public_bytes(serialization.Encoding.PEM))
    written = targets[:4]
    for name in nodes:
        written += make_node_key(credentials.node_key(name), force=True)
    return written


def make_node_key(path: Path, *, force: bool = False) -> list[Path]:
    """One SuperNode's EC P-384 key pair in OpenSSH format: ``path`` (0600) and ``path.pub``."""
    public = path.with_name(path.name + ".pub")
    existing = [p for p in (path, public) if p.exists()]
    if existing and not force:
        raise CertificateError(
            f"{existing[0]} already exists; pass --force to replace this node's key (then register the new .pub file)"
        )
    key = ec.generate_private_key(CURVE)
    atomic_write(
        path,
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        ),
        private=True,
    )
    atomic_write(
        public,
        key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH) + b"\n",
    )
    return [path, public]


def _builder(subject: x509.Name, issuer: x509.Name, public_key, now: dt.datetime, days: int) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
    )


def _private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
