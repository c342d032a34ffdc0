"""Which calls a client of the agent may make, by the role its certificate carries
(proto/cert_roles.py). The TLS handshake already proved the certificate is the cluster CA's;
this decides what it is for. A node's certificate sits on that node, readable by anyone root
there, so it may only ask its peers about etcd (fencing): with it, root on one host must not
become root on every host (an agent creates privileged containers for whoever may call it)."""

from __future__ import annotations

from typing import Any

import grpc
import grpc.aio

from agent.grpc_wrap import Behavior, WrappingInterceptor, around
from proto import cert_roles

# What each role may call; None is every method.
ALLOWED: dict[str, frozenset[str] | None] = {
    cert_roles.MANAGER: None,
    cert_roles.CLIENT: None,
    cert_roles.NODE: frozenset({"PeerEtcdStatus"}),
    "": frozenset({"PeerEtcdStatus"}),  # made before roles existed: as a node's
}


def refusal(pem: bytes, method: str) -> str:
    """Why a client with certificate `pem` may not call `method`, "" when it may."""
    role = cert_roles.role_of(pem)
    allowed = ALLOWED.get(role, frozenset())
    if allowed is None or method in allowed:
        return ""
    who = f"certificate {cert_roles.common_name(pem)!r}"
    if not role:
        return (
            f"{who} carries no flotilla role: it may not call {method}; "
            "issue it again with `flotilla certs manager|node|client`"
        )
    return f"{who} is a {role}'s: it may not call {method}"


class RoleInterceptor(WrappingInterceptor):
    """Refuses (PERMISSION_DENIED) calls the peer's certificate role does not allow."""

    def wrap(self, method: str, behavior: Behavior) -> Behavior:
        async def check(context: Any) -> None:
            certs = context.auth_context().get("x509_pem_cert") or [b""]
            reason = refusal(certs[0], method)
            if reason:
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, reason)

        return around(behavior, check)
