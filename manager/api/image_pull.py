"""`docker pull` through the manager: POST /images/create?fromImage=…&tag=… on every node (or
the ones a `constraint` in the request's `filters` allows: `pull_nodes`).

As classic Swarm (swarm-semantics.md §4.5): the pull runs on all healthy nodes in parallel, each
node's progress line gets `id=<node name>` and the status `Pulling <ref>... : <node's status>`,
a node that finishes says `downloaded`, and any node's failure ends the stream with an error line
(the CLI exits 1 with the node's message, in dockerd's words). Unlike Swarm, the answer waits
for the first progress message: when every node fails before one (bad reference, manifest
unknown, unauthorized, unreachable registry), the reply is the HTTP error dockerd would give.

`X-Registry-Auth` (base64url JSON, Docker's AuthConfig) is decoded here and passed to the nodes.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
from typing import Any

import grpc
from aiohttp import web

from manager.api.filters import request_filters
from manager.api.system import CLUSTER_KEY, SETTINGS_KEY
from manager.cluster import Cluster, channel_closed
from manager.placing import node_infos, scheduler_for
from manager.scheduler import SchedulingError
from proto import agent_pb2 as pb
from proto.docker.errors import DockerError
from proto.rpc_errors import raise_for_rpc_error


def pull_reference(from_image: str, tag: str) -> str:
    """The reference Swarm and dockerd pull: fromImage, then `:tag` or `@digest`."""
    if not tag:
        return from_image
    return f"{from_image}{'@' if ':' in tag else ':'}{tag}"


def registry_auth(header: str) -> pb.RegistryAuth:
    """X-Registry-Auth decoded; an undecodable one is no credentials (as dockerd)."""
    if not header:
        return pb.RegistryAuth()
    try:
        raw = base64.urlsafe_b64decode(header + "=" * (-len(header) % 4))
        doc = json.loads(raw)
    except (ValueError, binascii.Error):
        return pb.RegistryAuth()
    return auth_config(doc)


def auth_config(doc: Any) -> pb.RegistryAuth:
    """Docker's AuthConfig JSON (X-Registry-Auth, the body of POST /auth) for the nodes;
    `auth` is base64 `user:password`, used when no username is given."""
    if not isinstance(doc, dict):
        return pb.RegistryAuth()
    username = str(doc.get("username") or "")
    password = str(doc.get("password") or "")
    auth = str(doc.get("auth") or "")
    if auth and not username:
        with contextlib.suppress(ValueError, binascii.Error, UnicodeDecodeError):
            username, _, password = base64.b64decode(auth).decode().partition(":")
    return pb.RegistryAuth(
        username=username,
        password=password,
        identity_token=str(doc.get("identitytoken") or ""),
        registry_token=str(doc.get("registrytoken") or ""),
        server_address=str(doc.get("serveraddress") or ""),
    )


def _line(doc: dict[str, Any]) -> bytes:
    return (json.dumps(doc, separators=(",", ":")) + "\n").encode()


class _Merged:
    """The nodes' pull streams as one Swarm-style stream."""

    def __init__(self, cluster: Cluster, node_ids: list[str], ref: str) -> None:
        self.cluster = cluster
        self.node_ids = node_ids
        self.ref = ref
        self.queue: asyncio.Queue[tuple[str, str, Any]] = asyncio.Queue()
        self.errors: dict[str, DockerError] = {}

    def name(self, node_id: str) -> str:
        return self.cluster.node_name(node_id)

    async def one(self, node_id: str, req: pb.ImagePullRequest) -> None:
        try:
            stream = self.cluster.stub(node_id).ImagePull(req)
            async for reply in stream:
                await self.queue.put((node_id, "message", json.loads(reply.json)))
        except DockerError as e:
            await self.queue.put((node_id, "error", e))
            return
        except grpc.RpcError as e:
            await self.queue.put((node_id, "error", raise_for_rpc_error(e)))
            return
        except asyncio.CancelledError:
            if not channel_closed():
                raise
            gone = DockerError(f"node {self.name(node_id)} is not available: it left the cluster")
            await self.queue.put((node_id, "error", gone))
            return
        await self.queue.put((node_id, "done", None))

    def status(self, node_id: str, text: str = "", extra: dict[str, Any] | None = None) -> bytes:
        status = f"Pulling {self.ref}..." + (f" : {text}" if text else "")
        doc: dict[str, Any] = {"status": status}
        for key in ("progressDetail", "progress"):
            if extra and key in extra:
                doc[key] = extra[key]
        doc["id"] = self.name(node_id)
        return _line(doc)

    def message(self, node_id: str, doc: dict[str, Any]) -> bytes:
        if "error" in doc:
            return self.status(node_id, str(doc["error"]))
        return self.status(node_id, str(doc.get("status", "")), doc)


async def pull_nodes(request: web.Request) -> list[str]:
    """The nodes a pull runs on: every registered one, or the ones the scheduler's filters
    pass for the `constraint` expressions of the request's `filters` (`{"constraint":
    ["node==node-1"]}`, Swarm's `key==value` grammar; dockerd has no filters here)."""
    cluster = request.app[CLUSTER_KEY]
    constraints = request_filters(request, ("constraint",)).get("constraint", [])
    if not constraints:
        return [rec.id for rec in cluster.sorted_nodes()]
    config = {"Env": [f"constraint:{c}" for c in constraints]}
    scheduler = scheduler_for(request.app[SETTINGS_KEY])
    try:
        return [n.id for n in scheduler.eligible(node_infos(cluster), config)]
    except SchedulingError as e:
        raise DockerError(e.message, e.status) from None


async def pull(request: web.Request) -> web.StreamResponse:
    cluster = request.app[CLUSTER_KEY]
    ref = pull_reference(request.query.get("fromImage", ""), request.query.get("tag", ""))
    node_ids = await pull_nodes(request)
    if not node_ids:
        raise DockerError("no node is available to pull the image", 503)
    req = pb.ImagePullRequest(
        reference=ref, auth=registry_auth(request.headers.get("X-Registry-Auth", ""))
    )
    merged = _Merged(cluster, node_ids, ref)
    tasks = [asyncio.create_task(merged.one(n, req)) for n in node_ids]
    response: web.StreamResponse | None = None
    try:
        pending = set(node_ids)
        while pending:
            node_id, kind, payload = await merged.queue.get()
            if kind == "error":
                merged.errors[node_id] = payload
                pending.discard(node_id)
                if response is not None:
                    await response.write(merged.status(node_id, payload.message))
                continue
            if response is None:
                response = await _start(request, merged)
            if kind == "done":
                pending.discard(node_id)
                await response.write(merged.status(node_id, "downloaded"))
            else:
                await response.write(merged.message(node_id, payload))
        if response is None:
            raise _first(merged)  # no node got as far as a message: dockerd's HTTP error
        if merged.errors:
            text = _first(merged).message
            detail = {"code": 1, "message": text}
            await response.write(_line({"errorDetail": detail, "error": text}))
        await response.write_eof()
        return response
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _start(request: web.Request, merged: _Merged) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    await response.prepare(request)
    for node_id in merged.node_ids:
        await response.write(merged.status(node_id))
    for node_id, err in merged.errors.items():
        await response.write(merged.status(node_id, err.message))
    return response


def _first(merged: _Merged) -> DockerError:
    """The failure to report: the first node's, in node order; a not-found loses to others."""
    ordered = [merged.errors[n] for n in merged.node_ids if n in merged.errors]
    for err in ordered:
        if err.status != 404:
            return err
    return ordered[0]
