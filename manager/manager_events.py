"""Events the manager itself makes (a container rescheduled), for every `GET /events` listener:
live ones get them at once, and a short history serves `since` replays."""

from __future__ import annotations

import asyncio
import collections
import time
from typing import Any

from proto.records_pb2 import NodeRecord

HISTORY = 1000


class ManagerEvents:
    def __init__(self) -> None:
        self.history: collections.deque[dict[str, Any]] = collections.deque(maxlen=HISTORY)
        self.listeners: set[asyncio.Queue[dict[str, Any]]] = set()

    def publish(self, event: dict[str, Any]) -> None:
        self.history.append(event)
        for queue in self.listeners:
            if not queue.full():  # a stalled listener loses events rather than stall the manager
                queue.put_nowait(dict(event))

    def since(self, since_ns: int, until_ns: int) -> list[dict[str, Any]]:
        return [
            dict(e)
            for e in self.history
            if int(e["timeNano"]) >= since_ns and (not until_ns or int(e["timeNano"]) <= until_ns)
        ]


def _node_doc(rec: NodeRecord) -> dict[str, str]:
    ip = rec.addr.rpartition(":")[0].strip("[]") if ":" in rec.addr else rec.addr
    return {"Name": rec.name, "Id": rec.id, "Addr": rec.addr, "Ip": ip}


def mark(event: dict[str, Any], rec: NodeRecord) -> dict[str, Any]:
    node = _node_doc(rec)
    if "from" in event:
        event["from"] = f"{event['from']} node:{rec.name}"
    actor = event.setdefault("Actor", {"ID": "", "Attributes": {}})
    attrs = actor.get("Attributes") or {}
    attrs.update({f"node.{k.lower()}": v for k, v in node.items()})
    actor["Attributes"] = attrs
    event["node"] = node
    return event


def node_event(rec: NodeRecord, action: str) -> dict[str, Any]:
    ns = time.time_ns()
    event: dict[str, Any] = {
        "status": action,
        "id": rec.id,
        "from": "swarm",
        "Type": "swarm",
        "Action": action,
        "Actor": {"ID": rec.id, "Attributes": {"name": rec.name}},
        "scope": "swarm",
        "time": ns // 1_000_000_000,
        "timeNano": ns,
    }
    return mark(event, rec)
