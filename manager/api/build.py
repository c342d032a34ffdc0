"""POST /build: `docker build` (the legacy builder's API) on one node, as classic Swarm does it.

The scheduler picks the node with the build's `--build-arg constraint:…` / `affinity:…` turned
into hints (and removed from the build args the node sees) and its `--cpu-shares`/`--memory`
for placement; the context tar is streamed to that node's ImageBuild call and its JSON
messages are relayed. An error before the node's first message (bad Dockerfile, unknown
target, bad tag) is the HTTP answer, as dockerd gives it before writing any output; later ones
(a FROM image the node cannot pull among them) are in the stream. X-Registry-Config goes to the
node for the pulls of FROM images. The image then exists on that node only; a later `docker run`
of it lands there by the image affinity of placement.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from manager.api.json_stream import relay
from manager.api.system import CLUSTER_KEY, SETTINGS_KEY
from manager.placing import choose_node, scheduler_for, survey
from manager.scheduler.model import SchedulingError
from manager.scheduler.placement import parse_placement
from manager.versioning import add_versioned_routes, split_version
from proto import agent_pb2 as pb
from proto.docker.errors import DockerError, InvalidParameter

CHUNK = 64 * 1024
_HINT_PREFIXES = ("constraint:", "affinity:")


def split_build_args(query: dict[str, list[str]]) -> tuple[dict[str, list[str]], list[str]]:
    """The query without Swarm's placement build args, and those args as `Env` hints."""
    text = (query.get("buildargs") or [""])[0]
    if not text:
        return query, []
    try:
        args = json.loads(text)
    except ValueError as e:
        raise InvalidParameter(f"error reading build args: {e}") from None
    if not isinstance(args, dict):
        raise InvalidParameter("error reading build args: json: cannot unmarshal into map")
    hints = [f"{k}={v or ''}" for k, v in args.items() if k.startswith(_HINT_PREFIXES)]
    kept = {k: v for k, v in args.items() if not k.startswith(_HINT_PREFIXES)}
    return {**query, "buildargs": [json.dumps(kept)]}, hints


def registry_config(header: str) -> bytes:
    """X-Registry-Config (base64url JSON {registry: AuthConfig}, every login the CLI knows) as
    JSON for the node, which picks the FROM image's registry from it. Undecodable is none, as
    dockerd's getAuthConfigs ignores the error (a pull without credentials)."""
    if not header:
        return b""
    try:
        doc = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    except (ValueError, binascii.Error):
        return b""
    return json.dumps(doc).encode() if isinstance(doc, dict) else b""


def _int(query: dict[str, list[str]], key: str) -> int:
    text = (query.get(key) or ["0"])[0] or "0"
    try:
        return int(text)
    except ValueError:
        raise InvalidParameter(f'strconv.ParseInt: parsing "{text}": invalid syntax') from None


async def build(request: web.Request) -> web.StreamResponse:
    cluster = request.app[CLUSTER_KEY]
    query = {key: request.query.getall(key) for key in request.query}
    query, hints = split_build_args(query)
    body: dict[str, Any] = {
        "Env": hints,
        "HostConfig": {"CpuShares": _int(query, "cpushares"), "Memory": _int(query, "memory")},
    }
    try:
        body = parse_placement(body)
    except SchedulingError as e:
        raise DockerError(e.message, e.status) from None
    seen = await survey(cluster, body)
    async with cluster.schedule_lock:
        node = choose_node(cluster, scheduler_for(request.app[SETTINGS_KEY]), body, seen)
    version, _ = split_version(request.path)
    options = pb.ImageBuildOptions(
        query=json.dumps(query).encode(),
        api_version=version or "",
        registry_config=registry_config(request.headers.get("X-Registry-Config", "")),
    )

    async def inputs() -> AsyncIterator[pb.ImageBuildInput]:
        yield pb.ImageBuildInput(options=options)
        async for data in request.content.iter_chunked(CHUNK):
            if data:
                yield pb.ImageBuildInput(data=data)

    return await relay(request, cluster.stub(node.id).ImageBuild(inputs()))


def add_routes(app: web.Application) -> None:
    add_versioned_routes(app, [("POST", "/build", build)])
