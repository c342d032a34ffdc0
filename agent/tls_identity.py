"""The agent's own check of its certificate before it serves: the manager and the peers dial
the address the node registers (--advertise) and TLS verifies that the certificate names it,
so a certificate for another host would make the node unreachable — said at start, not
found later as a node the manager cannot talk to."""

from __future__ import annotations

import ipaddress

from proto.rpc import TlsConfig


def certificate_names(cert_path: str) -> tuple[set[str], set[str]]:
    """The (DNS names, IP addresses) of a PEM certificate's subjectAltName."""
    from cryptography import x509

    with open(cert_path, "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set(), set()
    ips = {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    return set(san.get_values_for_type(x509.DNSName)), ips


def check_advertise(tls: TlsConfig, advertise: str) -> None:
    """Raise ValueError unless the certificate names the host of `advertise` (host:port)."""
    host = advertise.rpartition(":")[0].strip("[]")
    names, ips = certificate_names(tls.cert)
    try:
        if str(ipaddress.ip_address(host)) in ips:
            return
    except ValueError:
        if host.lower() in {n.lower() for n in names}:
            return
    have = ", ".join(sorted(names | ips)) or "none"
    raise ValueError(
        f"{tls.cert} is not for {host} (its names: {have}): the manager dials --advertise and "
        f"checks the certificate against it; make one with "
        f"`flotilla certs node NAME --host {host}`"
    )
