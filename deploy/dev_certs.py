"""The dev cluster's certificates (deploy/certs.py): one CA per `dev up`, a certificate per
node for its address, the manager's (towards the agents) and a client's for tools and tests
that call agents directly (`dev_tls()`). They live in ROOT/certs and go with `dev down`."""

from __future__ import annotations

import os

from deploy.dev_layout import CERTS, node_index, node_ip
from proto import cert_roles
from proto.rpc import TlsConfig

MANAGER = "manager"
CLIENT = "dev-client"


def dev_tls(name: str = CLIENT) -> TlsConfig:
    """The files of one dev certificate: node-N, manager or the client's (the default)."""
    return TlsConfig(
        cert=os.path.join(CERTS, f"{name}.pem"),
        key=os.path.join(CERTS, f"{name}-key.pem"),
        ca=os.path.join(CERTS, "ca.pem"),
    )


def ensure_ca() -> None:
    """The CA, the manager's and the client's certificates, made once per cluster."""
    from deploy import certs

    if not os.path.exists(os.path.join(CERTS, "ca-key.pem")):
        certs.make_ca(CERTS, name="flotilla-dev-ca")
    made = (
        (MANAGER, ["127.0.0.1", "localhost"], True, cert_roles.MANAGER),
        (CLIENT, [], False, cert_roles.CLIENT),
    )
    for name, hosts, server, role in made:
        if not os.path.exists(dev_tls(name).key):
            certs.make_cert(CERTS, name, hosts, server=server, role=role)


def ensure_node(name: str) -> None:
    """Node `name`'s certificate: CN and DNS SAN its name, IP SAN its advertise address."""
    from deploy import certs

    ensure_ca()
    if not os.path.exists(dev_tls(name).key):
        certs.make_cert(CERTS, name, [name, node_ip(node_index(name))], role=cert_roles.NODE)
