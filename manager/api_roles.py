"""Who may use the Engine API over TLS, by the role in the client's certificate
(proto/cert_roles.py). `--tlsverify` proves the certificate is the CA's; with the cluster CA
that also holds for every node's certificate, whose key is on that node: root there must not
gain the whole cluster through the manager. So a node's certificate is refused here, as dockerd
refuses a request an authorization plugin denies (403). Certificates without a flotilla role
(an operator's own CA) are the operator's to give out and are let in."""

from __future__ import annotations

from aiohttp import web

from manager.versioning import Handler
from proto import cert_roles
from proto.docker.errors import DockerError


def refusal(der: bytes) -> str:
    """Why a client with certificate `der` may not use the Engine API, "" when it may."""
    if cert_roles.role_of(der) != cert_roles.NODE:
        return ""
    return (
        f"authorization denied: certificate {cert_roles.common_name(der)!r} is a node's "
        f"({cert_roles.NODE}); use a client certificate (flotilla certs client)"
    )


@web.middleware
async def role_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    transport = request.transport
    tls = transport.get_extra_info("ssl_object") if transport is not None else None
    der = tls.getpeercert(binary_form=True) if tls is not None else None
    if der:
        reason = refusal(der)
        if reason:
            raise DockerError(reason, status=403)
    return await handler(request)
