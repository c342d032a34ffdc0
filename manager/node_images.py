"""Each node's images, from the `images/<node-id>` records its agent writes (agent/image_records.py)
and the manager watches (Cluster.start): `docker images`, `docker info`'s Images and the
scheduler's `affinity:image` read them here instead of asking every node.

`catch_up` makes a read see every image write that landed before it began (one etcd read of
one key, no values): the agent writes before the RPC that changed its images returns, so a
`docker pull` followed by a `docker run` placed by image finds the image.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from aiohttp import web
from google.protobuf.message import DecodeError

from proto.keys import Keys
from proto.kv import KV, Entry, KVError, WatchEvent
from proto.records_pb2 import NodeImages as NodeImagesRecord

log = logging.getLogger(__name__)

CATCH_UP_MAX_S = 2.0  # how long a read waits for the watch at most; then it answers as it is

Row = dict[str, Any]


class NodeImages:
    """node id -> its `docker images` rows, and the IDs and repo:tags they name."""

    def __init__(self, kv: KV, keys: Keys) -> None:
        self.kv = kv
        self.keys = keys
        self.rows: dict[str, list[Row]] = {}
        self.names: dict[str, frozenset[str]] = {}
        self.revision = 0  # the newest revision applied
        self._advanced = asyncio.Event()
        self._changed: set[str] = set()  # nodes whose images changed since take_changed()
        # Requests through this manager that may change images (pull, build, commit, tag, rmi,
        # load, import): the scheduler catches up only after one of them, not on every create.
        self._writes_started = 0
        self._writes_in_flight = 0
        self._caught_up_to = 0

    def load(self, entries: Iterable[Entry], revision: int) -> None:
        """The snapshot Cluster.start read `images/` at; the watch goes on from revision + 1."""
        for e in entries:
            self.apply(WatchEvent("put", e.key, e.value, e.mod_revision))
        self._advance(revision)

    def apply(self, event: WatchEvent) -> None:
        node_id = self.keys.images_node_id(event.key)
        try:
            self._changed.add(node_id)
            if event.kind == "delete":
                self.rows.pop(node_id, None)
                self.names.pop(node_id, None)
                return
            record = NodeImagesRecord()
            record.ParseFromString(event.value)
            rows = json.loads(record.images_json or b"[]")
            if not isinstance(rows, list) or not all(
                isinstance(r, dict) and "Id" in r for r in rows
            ):
                raise ValueError("not a list of image summaries")
            self.rows[node_id] = rows
            self.names[node_id] = _names(rows)
        except (ValueError, DecodeError) as e:  # a bad record hides that node's images only
            log.warning("unreadable images record of node %s: %s", node_id, e)
            self.rows.pop(node_id, None)
            self.names.pop(node_id, None)
        finally:
            self._advance(event.mod_revision)

    def _advance(self, revision: int) -> None:
        if revision > self.revision:
            self.revision = revision
            self._advanced.set()

    async def catch_up(self, timeout_s: float = CATCH_UP_MAX_S) -> None:
        """Until the watch has applied every `images/` write made before this call (bounded:
        with etcd away or the watch behind, the view answers as it is)."""
        try:
            latest = await self.kv.latest_revision(self.keys.images_prefix())
        except KVError as e:
            log.info("images view not caught up (etcd: %s); answering from what it holds", e)
            return
        try:
            async with asyncio.timeout(timeout_s):
                while self.revision < latest:
                    self._advanced.clear()
                    await self._advanced.wait()
        except TimeoutError:
            log.info("images view behind etcd (%d < %d)", self.revision, latest)

    def take_changed(self) -> set[str]:
        """Nodes whose images changed since the last call (the scheduler's view)."""
        changed, self._changed = self._changed, set()
        return changed

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Around a request that may change images on some node."""
        self._writes_started += 1
        self._writes_in_flight += 1
        try:
            yield
        finally:
            self._writes_in_flight -= 1

    async def catch_up_after_writes(self) -> None:
        """`catch_up`, when a request that may have changed images ran (or runs) since the
        last one: a create placed right after a `docker pull` sees the image, and a create
        with no image change before it costs no etcd read."""
        if not self._writes_in_flight and self._writes_started == self._caught_up_to:
            return
        started = self._writes_started
        await self.catch_up()
        if not self._writes_in_flight:
            self._caught_up_to = max(self._caught_up_to, started)

    def count(self, node_ids: Iterable[str]) -> int:
        """`docker info`'s Images: each node's `docker images` rows, added up."""
        return sum(len(self.rows.get(n, ())) for n in node_ids)

    def rows_of(self, node_id: str) -> list[Row]:
        """The node's `docker images` rows (shared: copy before changing one)."""
        return self.rows.get(node_id, [])


def merge_rows(per_node: Iterable[list[Row]]) -> list[Row]:
    """Nodes' image rows, in node order, one per image ID, RepoTags and RepoDigests the union in
    first-seen order (classic Swarm's `docker images`). The rows given are not changed."""
    merged: dict[str, Row] = {}
    for rows in per_node:
        for row in rows:
            seen = merged.get(row["Id"])
            if seen is None:
                merged[row["Id"]] = dict(row)
                continue
            for key in ("RepoTags", "RepoDigests"):
                values = list(seen.get(key) or [])
                values += [v for v in row.get(key) or [] if v not in values]
                seen[key] = values
    return list(merged.values())


def _names(rows: list[Row]) -> frozenset[str]:
    names: set[str] = set()
    for row in rows:
        names.add(str(row["Id"]))
        names.update(str(t) for t in row.get("RepoTags") or [])
    return frozenset(names)


# Requests that may change a node's images: pull/import/load/tag/push/rmi/prune, build, commit.
IMAGE_WRITE_PATH = re.compile(r"^(/v[0-9.]+)?/(images/|build$|commit$)")


def image_write_middleware(images_of: Callable[[web.Request], NodeImages]) -> Any:
    """An aiohttp middleware marking the requests that may change images (`NodeImages.writing`)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:  # noqa: ANN401
        if request.method not in ("POST", "DELETE") or not IMAGE_WRITE_PATH.match(request.path):
            return await handler(request)
        with images_of(request).writing():
            return await handler(request)

    return middleware
