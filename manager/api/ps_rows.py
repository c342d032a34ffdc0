"""The `docker ps` rows of the containers on live nodes, from their status records (the row
each agent writes with every status change, proto/records.proto `ps_row_json`): no node is
asked. A record's row is parsed and pre-serialised once, and again only when the record (a new
object on every watch event) or its node's name or address changes; a request then costs a
filter pass and one join of ready JSON, with the STATUS text written at request time.

Rows are parsed and written with orjson, compact as Go's encoding/json writes them: with the
standard library's json, building the 30,000 rows of a restarted manager's first listing was
its largest part (docs/scale.md)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from manager.api.node_ports import list_row_ports, node_ip
from proto.ps_status import NO_HEALTH, status_text
from proto.records_pb2 import ContainerStatus, NodeRecord

ACTIVE_STATES = ("running", "paused", "restarting")  # what `docker ps` lists without --all
# `--size`: the agents do not measure container layers; both sizes have always been 0.
SIZE_FIELDS = b',"SizeRw":0,"SizeRootFs":0}'


@dataclass(slots=True)
class PsRow:
    """One container's row, ready to list."""

    cid: str
    st: ContainerStatus  # the record it was built from (compared by identity)
    node: NodeRecord  # the node as of the last build
    row: dict[str, Any]  # what the filters and the sort read of it (filter_view): read-only
    names: list[str]  # its names without "/", as the name filter matches them
    health: str  # the health filter's value
    head: bytes  # the JSON of the row up to the Status value
    tail: bytes  # the JSON after it

    def json(self, now_ns: int, size: bool) -> bytes:
        st = self.st
        text = status_text(
            st.state, st.started_at_ns, st.finished_at_ns, st.exit_code, self.health, now_ns
        )
        tail = self.tail[:-1] + SIZE_FIELDS if size else self.tail
        return self.head + orjson.dumps(text) + tail


def listed_row(row: dict[str, Any], node: NodeRecord) -> dict[str, Any]:
    """A node's row as the manager lists it: names under the node's name (classic Swarm's
    `/<node>/<name>`), published ports at the node's address, no API 1.52 Health."""
    out = dict(row)
    out["Names"] = [f"/{node.name}/{str(n).lstrip('/')}" for n in row.get("Names") or []]
    out.pop("Health", None)  # the agent's API 1.52 field, for the filter only (we serve 1.41)
    out["Ports"] = [dict(p) if isinstance(p, dict) else p for p in row.get("Ports") or []]
    list_row_ports(out, node_ip(node))
    return out


def split_json(row: dict[str, Any], key: str) -> tuple[bytes, bytes]:
    """`orjson.dumps(row)` cut around the value of `key` (which `row` has): the two pieces a
    request joins with that value's JSON, byte for byte what orjson.dumps would write."""
    keys = list(row)
    at = keys.index(key)
    before = {k: row[k] for k in keys[:at]}
    after = {k: row[k] for k in keys[at + 1 :]}
    head = (orjson.dumps(before)[:-1] + b"," if before else b"{") + orjson.dumps(key) + b":"
    tail = b"," + orjson.dumps(after)[1:] if after else b"}"
    return head, tail


def filter_view(row: dict[str, Any]) -> dict[str, Any]:
    """The parts of a row the filters and the sort read, of strings and numbers in dicts and
    tuples only: the garbage collector leaves such objects untracked, so 30,000 cached rows do
    not make every full collection (which a listing's allocations trigger) walk their trees."""
    settings = row.get("NetworkSettings")
    networks = settings.get("Networks") if isinstance(settings, dict) else None
    labels = row.get("Labels")
    created = row.get("Created")
    return {
        "Id": str(row.get("Id", "")),
        "Image": str(row.get("Image", "")),
        "ImageID": str(row.get("ImageID", "")),
        "Created": created if isinstance(created, int) else 0,
        "State": str(row.get("State", "")),
        "Labels": {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {},
        "NetworkSettings": {"Networks": dict.fromkeys(map(str, networks or ()))},
        "Mounts": tuple(
            {k: str(m[k]) for k in ("Name", "Source", "Destination") if k in m}
            for m in row.get("Mounts") or ()
            if isinstance(m, dict)
        ),
    }


def _fallback_row(st: ContainerStatus) -> dict[str, Any]:
    """The row of a record written by an agent older than `ps_row_json`: what the record
    itself says."""
    return {
        "Id": st.id,
        "Names": [f"/{st.name}"] if st.name else [],
        "Image": st.image,
        "ImageID": st.image_id,
        "Command": "",
        "Created": st.started_at_ns // 1_000_000_000,
        "Ports": [],
        "Labels": dict(st.labels),
        "State": st.state,
        "Status": "",
        "HostConfig": {},
        "NetworkSettings": {"Networks": {}},
        "Mounts": [],
    }


def _parse(st: ContainerStatus) -> dict[str, Any]:
    try:
        row = orjson.loads(st.ps_row_json) if st.ps_row_json else None
    except orjson.JSONDecodeError:
        row = None
    if not isinstance(row, dict) or "Status" not in row or "Id" not in row:
        return _fallback_row(st)
    return row


def _health(row: dict[str, Any]) -> str:
    health = row.get("Health")
    return str(health.get("Status") or NO_HEALTH) if isinstance(health, dict) else NO_HEALTH


class PsRows:
    """The cache of built rows, one per container; entries of removed containers go at the
    next listing."""

    def __init__(self) -> None:
        self._rows: dict[str, PsRow] = {}

    def row(self, cid: str, st: ContainerStatus, node: NodeRecord) -> PsRow:
        cached = self._rows.get(cid)
        if (
            cached is not None
            and cached.st is st
            and cached.node.name == node.name
            and cached.node.addr == node.addr
        ):
            return cached
        row = _parse(st)
        built = PsRow(
            cid=cid,
            st=st,
            node=node,
            row=filter_view(row),
            names=[str(n).lstrip("/") for n in row.get("Names") or []],
            health=_health(row),
            head=b"",
            tail=b"",
        )
        built.head, built.tail = split_json(listed_row(row, node), "Status")
        self._rows[cid] = built
        return built

    def live_rows(
        self,
        statuses: Mapping[str, ContainerStatus],
        nodes: Mapping[str, NodeRecord],
        all_: bool,
    ) -> list[PsRow]:
        """The rows of the containers on the nodes in `nodes` (an unreachable node's drop out,
        as when they were asked), running ones only unless `all_`."""
        rows = []
        for cid, st in statuses.items():
            node = nodes.get(st.node_id)
            if node is None or not (all_ or st.state in ACTIVE_STATES):
                continue
            rows.append(self.row(cid, st, node))
        if len(self._rows) > len(rows):  # some not listed now: removed ones among them?
            for cid in [c for c in self._rows if c not in statuses]:
                del self._rows[cid]
        return rows
