"""`flotilla certs`: a cluster CA and the certificates its manager, nodes and clients present.

One CA signs everything; every side of the control plane trusts only it (docs/security.md,
"Control plane"). Names a certificate must carry:

- a node's (`certs node NAME --host IP`): its advertise address as an IP (or DNS) SAN — the
  manager and the peers dial that address and TLS checks the certificate against it, so a
  node cannot answer for another node's address. The node name is the CN and a DNS SAN.
  It is used for both ends of the gRPC calls (server towards the manager, client towards peers).
  Its role (OU `flotilla-node`) lets it ask peers about etcd and nothing else: a node's key is
  on that node, and root there must not become root on the others.
- the manager's (`certs manager --host IP|NAME…`): the addresses clients use for the Engine API;
  it is also the client certificate the manager presents to agents (as classic Swarm's).
- a client's (`certs client NAME`): client authentication only (docker CLI `--tlsverify`, and
  tools that call agents directly).
Each carries its role in the subject's OU (proto/cert_roles.py); agents and the Engine API act
on it.

Files: `<dir>/ca.pem` + `ca-key.pem`, `<dir>/<name>.pem` + `<name>-key.pem` (keys 0600).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass

from proto import cert_roles

CA_NAME = "flotilla-ca"
DEFAULT_DAYS = 825  # what browsers and Docker's guides cap leaf certificates at
CA_DAYS = 3650


@dataclass(frozen=True)
class CertFiles:
    cert: str
    key: str
    ca: str


def ca_files(directory: str) -> tuple[str, str]:
    return os.path.join(directory, "ca.pem"), os.path.join(directory, "ca-key.pem")


def files(directory: str, name: str) -> CertFiles:
    return CertFiles(
        os.path.join(directory, f"{name}.pem"),
        os.path.join(directory, f"{name}-key.pem"),
        ca_files(directory)[0],
    )


def _write(path: str, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, mode)  # an existing file keeps its mode through O_CREAT


def _key_pem(key: object) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def make_ca(directory: str, name: str = CA_NAME, days: int = CA_DAYS) -> str:
    """A new CA in `directory` (refuses to overwrite one: its certificates would all be
    orphaned). Returns the CA certificate's path."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    cert_path, key_path = ca_files(directory)
    if os.path.exists(key_path):
        raise FileExistsError(f"{key_path} exists: a CA is already there")
    os.makedirs(directory, mode=0o700, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    _write(key_path, _key_pem(key), 0o600)
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return cert_path


def _san(hosts: Sequence[str]) -> list[object]:
    from cryptography import x509

    out: list[object] = []
    for host in hosts:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            out.append(x509.DNSName(host))
    return out


def make_cert(
    directory: str,
    name: str,
    hosts: Sequence[str] = (),
    server: bool = True,
    client: bool = True,
    days: int = DEFAULT_DAYS,
    role: str = "",
) -> CertFiles:
    """A key and a certificate signed by the CA in `directory`, CN `name`, SANs `hosts`
    (IP addresses or DNS names). `server`/`client`: the extended key usages. `role`: the
    flotilla role in the subject's OU (proto/cert_roles.py); "" for none (e.g. etcd's)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    if not name or "/" in name:
        raise ValueError(f"invalid certificate name {name!r}")
    if role and role not in cert_roles.ROLES:
        raise ValueError(f"invalid certificate role {role!r}")
    if server and not hosts:
        raise ValueError("a server certificate needs at least one --host (IP or DNS name)")
    cert_path, key_path = ca_files(directory)
    try:
        with open(cert_path, "rb") as f:
            ca_cert = x509.load_pem_x509_certificate(f.read())
        with open(key_path, "rb") as f:
            ca_key = serialization.load_pem_private_key(f.read(), password=None)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"no CA in {directory}: run `flotilla certs ca` first") from e
    key = ec.generate_private_key(ec.SECP256R1())
    usages = [ExtendedKeyUsageOID.SERVER_AUTH] if server else []
    usages += [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
    now = datetime.datetime.now(datetime.UTC)
    subject = [x509.NameAttribute(NameOID.COMMON_NAME, name)]
    if role:
        subject.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role))
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(subject))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    )
    if hosts:
        builder = builder.add_extension(x509.SubjectAlternativeName(_san(hosts)), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    out = files(directory, name)
    _write(out.key, _key_pem(key), 0o600)
    _write(out.cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return out
