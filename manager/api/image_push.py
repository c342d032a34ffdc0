"""`docker push` through the manager: POST /images/{name}/push?tag=… on one node that has it.

As classic Swarm (swarm-semantics.md §4.5): the first node, in node order, holding the image
(`name:tag`, or any tag of `name` for `--all-tags`) pushes it; its stream is dockerd's own and is
relayed as is. When no node has it, the first node still runs the push, so the client reads
dockerd's own `The push refers to repository [...]` and `An image does not exist locally with
the tag: …` from the real check. `X-Registry-Auth` is decoded as for a pull.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from manager.api.image_pull import registry_auth
from manager.api.json_stream import relay
from manager.api.system import CLUSTER_KEY
from manager.cluster import Cluster
from manager.versioning import add_versioned_routes
from proto import agent_pb2 as pb
from proto.agent_pb2_grpc import AgentStub
from proto.docker.errors import DockerError


async def _holder(cluster: Cluster, name: str, tag: str) -> str:
    """The first node (node order; a node that does not answer is passed over) with the
    image to push; the first node when none has it."""
    nodes = cluster.sorted_nodes()
    if not nodes:
        raise DockerError("no node is available to push the image", 503)

    async def has(stub: AgentStub) -> bool:
        if tag:
            await stub.ImageInspect(pb.ImageRef(ref=f"{name}:{tag}"))
            return True
        filters = json.dumps({"reference": [name]}).encode()
        reply = await stub.ImageList(pb.ImageListRequest(filters=filters))
        return bool(json.loads(reply.json))

    for rec, result in await cluster.fan_out(has):
        if result is True:
            return rec.id
    return nodes[0].id


async def push(request: web.Request) -> web.StreamResponse:
    cluster = request.app[CLUSTER_KEY]
    name = request.match_info["name"]
    tag = request.query.get("tag", "")
    node_id = await _holder(cluster, name, tag)
    req = pb.ImagePushRequest(
        name=name, tag=tag, auth=registry_auth(request.headers.get("X-Registry-Auth", ""))
    )
    return await relay(request, cluster.stub(node_id).ImagePush(req))


def add_routes(app: web.Application) -> None:
    routes: list[tuple[str, str, Any]] = [("POST", "/images/{name:.+}/push", push)]
    add_versioned_routes(app, routes)
