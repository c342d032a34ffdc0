"""`docker login` through the manager: POST /auth, checked against the registry by one node.

Classic Swarm proxied /auth to one engine. The check runs on a node, not in the manager: how a
registry is reached (its CA in the node's certs.d, `--insecure-registry`) is a node's setting
(`flotilla join`), and the node is where a later pull or push with these credentials runs, so a
login succeeds exactly when they would. The first node in node order answers; one that cannot
be reached is passed over. The answer is dockerd's: `{"IdentityToken":"","Status":"Login
Succeeded"}`, or its error (401 when the registry refused the credentials).
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from manager.api.image_pull import auth_config
from manager.api.system import CLUSTER_KEY
from manager.api_types import AUTH_CONFIG
from manager.errors import read_json
from manager.versioning import add_versioned_routes
from proto.docker.errors import DockerError

# A node that cannot be reached (gRPC UNAVAILABLE) is passed over; a slow registry is not a
# reason to ask every node in turn, so the deadline covers the node's own retries (15 s per
# connection attempt, 3 attempts, HTTPS then HTTP).
_UNREACHABLE = 503
LOGIN_TIMEOUT_S = 120.0


async def login(request: web.Request) -> web.Response:
    cluster = request.app[CLUSTER_KEY]
    body = await read_json(request, AUTH_CONFIG, {})
    auth = auth_config(body)
    nodes = cluster.sorted_nodes()
    if not nodes:
        raise DockerError("no node is available to check the login", 503)
    error: DockerError | None = None
    for rec in nodes:
        try:
            reply = await cluster.call(
                rec.id, lambda s: s.RegistryLogin(auth), timeout=LOGIN_TIMEOUT_S
            )
        except DockerError as e:
            if e.status != _UNREACHABLE:
                raise
            error = error or e
            continue
        doc = json.loads(reply.json)
        # dockerd's json.Encoder: compact, a trailing newline.
        text = json.dumps(doc, separators=(",", ":")) + "\n"
        return web.Response(body=text.encode(), headers={"Content-Type": "application/json"})
    assert error is not None
    raise error


def add_routes(app: web.Application) -> None:
    routes: list[tuple[str, str, Any]] = [("POST", "/auth", login)]
    add_versioned_routes(app, routes)
