"""Actual container state in etcd: `status/<node-id>/<cid>` is rewritten on every container
event (and network connect/disconnect: the ps row it carries lists the networks) and deleted on
destroy. Writes that fail (etcd down) are not queued one by one: the
reporter does a full resync once etcd answers again, so the records match the runtime exactly
(no stale entries, nothing missed) whatever happened during the outage."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any, Protocol

from agent.metrics import AgentMetrics
from agent.tasks import cancel
from proto.keys import Keys
from proto.kv import KV, KVError
from proto.records_pb2 import ContainerStatus
from runtime import views

log = logging.getLogger(__name__)

RETRY_MAX_S = 2.0
# How long a lifecycle call waits for its status write (etcd slow or down: the call still
# succeeds, the record follows with the resync).
FLUSH_WAIT_S = 2.0


class _Runtime(Protocol):
    def list(self) -> list[Any]: ...


def ps_row(rt: Any, rec: Any) -> bytes:
    """The container's `docker ps` row (what ContainerList answers), its Status left empty:
    the manager writes that at request time (proto/ps_status.py)."""
    try:
        row = views.summary(rt, rec)
    except Exception:  # one container's broken files must not stop every status write
        log.exception("ps row of %s", rec.id)
        return b""
    row["Status"] = ""  # kept as a key: the manager fills it in place, in dockerd's key order
    return json.dumps(row).encode()


def container_status(rt: Any, rec: Any, node_id: str) -> ContainerStatus:
    """A runtime ContainerRecord as the record the manager reads."""
    body = rec.body if isinstance(rec.body, dict) else {}
    labels = {k: str(v) for k, v in (body.get("Labels") or {}).items()}
    return ContainerStatus(
        id=rec.id,
        node_id=node_id,
        name=rec.name,
        image=rec.image_ref,
        image_id=rec.image_id,
        state=rec.status,
        exit_code=rec.exit_code,
        pid=rec.pid if rec.running else 0,
        started_at_ns=rec.started_ns,
        finished_at_ns=rec.finished_ns,
        oom_killed=rec.oom_killed,
        labels=labels,
        updated_at_ns=time.time_ns(),
        host_config_json=json.dumps(body.get("HostConfig") or {}).encode(),
        ps_row_json=ps_row(rt, rec),
    )


class StatusReporter:
    """Feed it the runtime's events with `notify` (a Runtime `events` sink)."""

    def __init__(
        self,
        kv: KV,
        keys: Keys,
        node_id: str,
        runtime: _Runtime,
        metrics: AgentMetrics | None = None,
    ) -> None:
        self.kv = kv
        self.keys = keys
        self.node_id = node_id
        self.runtime = runtime
        self.metrics = metrics or AgentMetrics()
        self._dirty: set[str] = set()
        self._resync = True  # the first pass is a full one
        self._wake = asyncio.Event()
        self._wake.set()
        self._task: asyncio.Task[None] | None = None
        self.synced = asyncio.Event()  # set when etcd matches the runtime (tests wait on it)
        self._noticed = 0  # changes notified so far
        self._written = 0  # of those, the ones whose records are written
        self._progress = asyncio.Event()  # set (and replaced) after every write pass

    def notify(self, type: str, action: str, id: str, attrs: dict[str, str] | None = None) -> None:
        if type == "network" and action in ("connect", "disconnect"):
            # The container's ps row lists its networks: the event names the network, the
            # container is in its attributes.
            id = (attrs or {}).get("container", "")
        elif type != "container" or action.startswith("exec_"):
            return  # execs, exports, commits don't change the container's state
        if not id:
            return
        self._noticed += 1
        self._dirty.add(id)
        self.synced.clear()
        self._wake.set()

    async def flush(self, timeout: float = FLUSH_WAIT_S) -> None:
        """Wait until every change notified so far is written (at most `timeout`): the
        manager lists containers from these records, so a lifecycle call returns once its
        change is there for the `docker ps` its client sends next."""
        target = self._noticed
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while self._written < target and self._task is not None:
                    await self._progress.wait()

    def request_resync(self) -> None:
        """After a (re)connection: rewrite everything and drop what is stale."""
        self._resync = True
        self.synced.clear()
        self._wake.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="status-reporter")

    async def stop(self) -> None:
        await cancel(self._task)
        self._task = None

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._dirty = self._dirty, set()
            resync, self._resync = self._resync, False
            upto = self._noticed
            try:
                if resync:
                    await self._full_resync()
                else:
                    await self._write(batch)
            except KVError as e:
                log.info("status report failed (%s); full resync when etcd is back", e)
                self.metrics.status_writes.labels("error").inc()
                self._resync = True
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, RETRY_MAX_S)
                self._wake.set()
                continue
            backoff = 0.1
            self._written = upto
            progress, self._progress = self._progress, asyncio.Event()
            progress.set()
            if not self._dirty and not self._resync:
                self.synced.set()

    def _records(self) -> dict[str, Any]:
        return {rec.id: rec for rec in self.runtime.list()}

    async def _write(self, cids: set[str]) -> None:
        records = self._records()
        for cid in sorted(cids):
            rec = records.get(cid)
            key = self.keys.status(self.node_id, cid)
            if rec is None:
                await self.kv.delete(key)
            else:
                status = container_status(self.runtime, rec, self.node_id)
                await self.kv.put(key, status.SerializeToString())
            self.metrics.status_writes.labels("ok").inc()

    async def _full_resync(self) -> None:
        existing = await self.kv.get_prefix(self.keys.status_prefix(self.node_id))
        records = self._records()
        for entry in existing:
            _, cid = self.keys.status_ids(entry.key)
            if cid not in records:
                await self.kv.delete(entry.key)
        await self._write(set(records))
        log.info("status resynced: %d containers", len(records))
