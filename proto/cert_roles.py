"""The role a flotilla certificate carries, in its subject's OU (as Swarm mode's
`swarm-manager`/`swarm-worker`): one cluster CA signs every certificate, so the role is what
keeps a node's certificate — on the disk of the host it identifies, where any root on that host
can read it — from driving the other nodes' agents or the Engine API."""

from __future__ import annotations

from functools import lru_cache

MANAGER = "flotilla-manager"  # drives every agent; the Engine API's server certificate
NODE = "flotilla-node"  # an agent: serves the manager, asks peers about etcd (fencing) only
CLIENT = "flotilla-client"  # an operator or tool: the Engine API, and agents directly
ROLES = (MANAGER, NODE, CLIENT)


@lru_cache(maxsize=256)
def _subject(cert: bytes) -> object | None:
    """The subject of a certificate (PEM or DER); None when it does not parse."""
    from cryptography import x509

    try:
        if cert.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(cert).subject
        return x509.load_der_x509_certificate(cert).subject
    except ValueError:
        return None


def _attributes(cert: bytes, oid_name: str) -> list[str]:
    from cryptography.x509.oid import NameOID

    subject = _subject(cert)
    if subject is None:
        return []
    oid = getattr(NameOID, oid_name)
    return [str(a.value) for a in subject.get_attributes_for_oid(oid)]  # type: ignore[attr-defined]


@lru_cache(maxsize=256)
def role_of(cert: bytes) -> str:
    """The flotilla role of a certificate (PEM or DER), "" when it names none (or several)."""
    found = [u for u in _attributes(cert, "ORGANIZATIONAL_UNIT_NAME") if u in ROLES]
    return found[0] if len(found) == 1 else ""


def common_name(cert: bytes) -> str:
    names = _attributes(cert, "COMMON_NAME")
    return names[0] if names else ""
