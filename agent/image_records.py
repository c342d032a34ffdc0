"""The node's images in etcd: `images/<node-id>` holds the rows `docker images` shows for this
node (GET /images/json without `all` or filters, as ImageList answers), under the node's lease.

Rewritten at every registration (a new lease) and after every image change, which it learns
from the node's Docker events (EventBus listener): image pull, import, load, tag, untag and
delete, and a container commit. A burst (a build tagging three names, a load of five images)
is one write per WINDOW_S. RPCs that changed images wait for the write (`written`) before they
return, so a `docker pull` followed by a placement on `affinity:image==` sees the image. Failed
writes are retried with back-off; the record is one key, so a retry is a full rewrite.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from agent.tasks import cancel
from proto.keys import Keys
from proto.kv import KV, KVError
from proto.records_pb2 import NodeImages
from runtime import image_views

log = logging.getLogger(__name__)

WINDOW_S = 0.05  # changes within this much of the first are written together
RETRY_MAX_S = 2.0
WAIT_MAX_S = 5.0  # an RPC waits this long at most for its change to be written
# Docker image events that change what `docker images` shows (save and push do not), and the
# container events that make an image.
IMAGE_CHANGES = frozenset({"pull", "import", "load", "tag", "untag", "delete"})
CONTAINER_CHANGES = frozenset({"commit"})


class ImagesReporter:
    """Keeps `images/<node-id>` equal to the node's image list. `images` is the runtime's image
    store; `lease` the node's current lease (0: not registered, nothing is written)."""

    def __init__(
        self, kv: KV, keys: Keys, node_id: str, images: Any, lease: Callable[[], int]
    ) -> None:
        self.kv = kv
        self.key = keys.images(node_id)
        self.node_id = node_id
        self.images = images
        self.lease = lease
        self.generation = 0  # bumped by every change
        self._written = 0  # the generation the record in etcd holds
        self._advanced = asyncio.Event()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def on_event(self, event: dict[str, Any]) -> None:
        """An EventBus listener: Docker event JSON of this node."""
        kind, action = event.get("Type"), event.get("Action")
        if (kind == "image" and action in IMAGE_CHANGES) or (
            kind == "container" and action in CONTAINER_CHANGES
        ):
            self.changed()

    def changed(self) -> None:
        self.generation += 1
        self._wake.set()

    def request_resync(self) -> None:
        """After a (re)registration: written again under the new lease."""
        self.changed()

    async def written(self, since: int, timeout_s: float = WAIT_MAX_S) -> None:
        """Until every change after generation `since` is in etcd (at once if there was none);
        at most `timeout_s`: a node whose etcd is away still answers its RPCs."""
        target = self.generation
        if target == since:
            return
        deadline = time.monotonic() + timeout_s
        while self._written < target:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._advanced.clear()
            try:
                await asyncio.wait_for(self._advanced.wait(), left)
            except TimeoutError:
                return

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="images-reporter")

    async def stop(self) -> None:
        await cancel(self._task)
        self._task = None

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            await self._wake.wait()
            await asyncio.sleep(WINDOW_S)  # the rest of a burst joins this write
            self._wake.clear()
            lease = self.lease()
            if not lease:
                continue  # the registration asks again once it holds a lease
            target = self.generation
            try:
                await self._write(lease)
            except KVError as e:
                log.info("images record write failed (%s); retrying", e)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, RETRY_MAX_S)
                self._wake.set()
                continue
            backoff = 0.1
            self._written = max(self._written, target)
            self._advanced.set()

    async def _write(self, lease: int) -> None:
        rows = await asyncio.to_thread(image_views.list_images, self.images)
        record = NodeImages(
            node_id=self.node_id,
            images_json=json.dumps(rows).encode(),
            updated_at_ns=time.time_ns(),
        )
        await self.kv.put(self.key, record.SerializeToString(), lease=lease)
