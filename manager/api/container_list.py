"""`GET /containers/json` (`docker ps`): the containers of live nodes from their status records
(the ps row each agent keeps there, manager/api/ps_rows.py; no node is asked), with the
containers of nodes that left (their status records) and those being rescheduled that no copy
stands for (their logical records); stale copies (docs/failover.md) are never listed."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable
from typing import Any

import orjson
from aiohttp import web

from manager.api.filters import request_filters
from manager.api.ps_rows import PsRow, PsRows, listed_row
from manager.api.system import CLUSTER_KEY
from manager.cluster import Cluster
from manager.errors import bool_param, int_param
from manager.logical import body_of
from proto import patterns
from proto.docker.errors import InvalidParameter
from proto.logical import PENDING, SWARM_ID_LABEL
from proto.ps_status import NO_HEALTH
from proto.records_pb2 import NodeRecord

PENDING_STATUS = "Pending reschedule"

LIST_FILTERS = {
    "status",
    "id",
    "name",
    "label",
    "node",
    "ancestor",
    "exited",
    "before",
    "since",
    "network",
    "volume",
    "health",
    "is-task",
}
# The filters a row is matched against (before, since and is-task are applied apart).
ROW_FILTERS = LIST_FILTERS - {"before", "since", "is-task"}
TASK_LABEL = "com.docker.swarm.task"
STATES = {"created", "restarting", "running", "removing", "paused", "exited", "dead"}
HEALTH_STATES = {"starting", "healthy", "unhealthy", "none"}


def _names_of(row: dict[str, Any]) -> list[str]:
    return [str(n).lstrip("/") for n in row.get("Names") or []]


def label_ok(labels: dict[str, str], want: str) -> bool:
    """Docker's `label` filter value: `key` (present) or `key=value`."""
    key, sep, value = want.partition("=")
    if key not in labels:
        return False
    return not sep or labels[key] == value


def node_ok(rec: NodeRecord, want: str) -> bool:
    """The `node` filter: a node's name, ID or a glob over names."""
    return want in (rec.name, rec.id) or patterns.glob_match(rec.name, want)


def _ancestor_ok(row: dict[str, Any], want: str) -> bool:
    image = str(row.get("Image", ""))
    image_id = str(row.get("ImageID", ""))
    if image == want or image == f"{want}:latest" or image.split(":")[0] == want:
        return True
    bare = image_id.removeprefix("sha256:")
    return bool(want) and (image_id == want or bare.startswith(want.removeprefix("sha256:")))


def _row_matches(
    row: dict[str, Any], ready: PsRow | None, rec: NodeRecord, filters: dict[str, list[str]]
) -> bool:
    """`ready`: the live row `row` is from (its names and health are worked out already)."""
    names = ready.names if ready is not None else _names_of(row)
    health = ready.health if ready is not None else NO_HEALTH
    checks = {
        "id": lambda v: str(row["Id"]).startswith(v),
        "name": lambda v: any(patterns.search(v, n) for n in names),
        "status": lambda v: row.get("State") == v,
        "node": lambda v: node_ok(rec, v),
        "ancestor": lambda v: _ancestor_ok(row, v),
        "network": lambda v: v in ((row.get("NetworkSettings") or {}).get("Networks") or {}),
        "health": lambda v: health == v,
        "volume": lambda v: any(
            v in (m.get("Name"), m.get("Source"), m.get("Destination"))
            for m in row.get("Mounts") or []
        ),
    }
    for key, fn in checks.items():
        values = filters.get(key)
        if values and not any(fn(v) for v in values):
            return False
    for want in filters.get("label", []):
        if not label_ok(row.get("Labels") or {}, want):
            return False
    exited = filters.get("exited")
    if exited:
        # dockerd matches the exit code of exited containers; a departed or unplaced row's
        # code is not known (its Status says why).
        code = str(ready.st.exit_code) if ready is not None else None
        if row.get("State") != "exited" or code not in exited:
            return False
    return True


Row = tuple[dict[str, Any], NodeRecord]


def _departed_rows(cluster: Cluster) -> list[Row]:
    """Containers of nodes that left the cluster (agent gone, status records kept in etcd for
    its return), from those records: classic Swarm lists the containers of an engine it
    cannot reach with `-a` only, their Status "Host Down"."""
    rows: list[Row] = []
    for cid, st in cluster.statuses.items():
        if st.node_id in cluster.nodes or cluster.is_stale_copy(st.node_id, cid, st.labels):
            continue
        row = _down_row(cluster, cid, st.name, dict(st.labels), st.started_at_ns)
        row.update(Image=st.image, ImageID=st.image_id, State=st.state)
        rows.append((row, _node_of(cluster, st.node_id)))
    return rows


def _unplaced_rows(cluster: Cluster, listed: Iterable[dict[str, Any]]) -> list[Row]:
    """Containers being rescheduled that no listed row stands for (their old copy's status
    record is gone), from their logical records: the old copy's ID (else the swarm id), the
    name, image, command and labels of the create, State `exited` (the old copy was fenced or
    went down with its host), Created when its node was seen failing."""
    unplaced = cluster.unplaced()
    if not unplaced:
        return []  # the usual case: no need to look at every row
    carried = {(row.get("Labels") or {}).get(SWARM_ID_LABEL) for row in listed}
    rows: list[Row] = []
    for rid, rec in unplaced.items():
        if rec.swarm_id in carried:
            continue
        body = body_of(rec)
        labels = body.get("Labels")
        labels = {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {}
        created_ns = rec.node_failed_at_ns or rec.updated_at_ns
        row = _down_row(cluster, rid, rec.name, labels, created_ns)
        row.update(Image=str(body.get("Image") or ""), Command=_command(body), State="exited")
        rows.append((row, _node_of(cluster, rec.previous_node_id)))
    return rows


def _down_row(
    cluster: Cluster, cid: str, name: str, labels: dict[str, str], created_ns: int
) -> dict[str, Any]:
    """The row of a container on no live node (what its node last said is not to be had)."""
    return {
        "Id": cid,
        "Names": [f"/{name}"] if name else [],
        "Image": "",
        "ImageID": "",
        "Command": "",
        "Created": created_ns // 1_000_000_000,
        "Ports": [],
        "Labels": labels,
        "State": "",
        "Status": _down_status(cluster, labels.get(SWARM_ID_LABEL, "")),
        "HostConfig": {},
        "NetworkSettings": {"Networks": {}},
        "Mounts": [],
    }


def _node_of(cluster: Cluster, node_id: str) -> NodeRecord:
    return NodeRecord(id=node_id, name=cluster.node_names.get(node_id, node_id))


def _command(body: dict[str, Any]) -> str:
    """dockerd's Command column: the entrypoint and command, as far as the create set them."""
    words: list[str] = []
    for key in ("Entrypoint", "Cmd"):
        value = body.get(key)
        words += [str(v) for v in value] if isinstance(value, list) else [str(value or "")]
    return " ".join(w for w in words if w)


def _down_status(cluster: Cluster, swarm_id: str) -> str:
    """Swarm's `Host Down`; a reschedulable container that fits on no node now says so
    (docs/failover.md)."""
    rec = cluster.logical_records.get(swarm_id) if swarm_id else None
    return PENDING_STATUS if rec is not None and rec.state == PENDING else "Host Down"


def _is_task_filter(values: list[str] | None) -> bool | None:
    """dockerd's `is-task`: true wins over false when both are given; anything else is
    refused with the values as Go prints a []string."""
    if values is None:
        return None
    if not values or "true" in values:  # Go's ExactMatch holds for a key without values
        return True
    if "false" in values:
        return False
    raise InvalidParameter(f"Invalid filter 'is-task=[{' '.join(values)}]'")


PS_ROWS_KEY: web.AppKey[PsRows] = web.AppKey("ps_rows", PsRows)


def warm_rows(app: web.Application) -> None:
    """Build every live container's row now (a started manager, before it serves), so the
    first listing finds them ready."""
    cluster = app[CLUSTER_KEY]
    app[PS_ROWS_KEY].live_rows(cluster.statuses, cluster.nodes, True)


def _listed(cluster: Cluster, rows: PsRows, all_: bool) -> tuple[list[PsRow], list[Row]]:
    """The rows of live nodes' containers (stale copies left out: a returned node keeps them
    until its agent has removed them) and, with `all_`, the departed and unplaced ones."""
    live = [
        r
        for r in rows.live_rows(cluster.statuses, cluster.nodes, all_)
        if not cluster.is_stale_copy(r.node.id, r.cid, r.st.labels)
    ]
    down: list[Row] = []
    if all_:
        down.extend(_departed_rows(cluster))
        listed = itertools.chain((r.row for r in live), (row for row, _ in down))
        down.extend(_unplaced_rows(cluster, listed))
    return live, down


async def list_containers(request: web.Request) -> web.Response:
    """From the status records (docs/scale.md): no node is asked."""
    cluster = request.app[CLUSTER_KEY]
    filters = request_filters(request, LIST_FILTERS)
    for state in filters.get("status", []):
        if state not in STATES:
            raise InvalidParameter(f"Invalid filter 'status={state}'")  # dockerd's invalidFilter
    is_task = _is_task_filter(filters.get("is-task"))
    for value in filters.get("health", []):
        if value not in HEALTH_STATES:
            raise InvalidParameter(f"Unrecognised filter value for health: {value}")
    for code in filters.get("exited", []):
        if not code.lstrip("-").isdigit():
            raise InvalidParameter(f"invalid filter 'exited={code}'")
    limit = int_param(request, "limit") or 0
    all_ = bool_param(request, "all") or limit > 0 or "before" in filters or "since" in filters
    all_ = all_ or "status" in filters  # dockerd: a status filter implies --all
    if "exited" in filters:
        all_ = True
    size = bool_param(request, "size")
    live, down = _listed(cluster, request.app[PS_ROWS_KEY], all_)
    # One list of (row for the filters, node, the live row or None), newest first; the
    # creation sequence breaks ties within Docker's one-second Created.
    rows: list[tuple[dict[str, Any], NodeRecord, PsRow | None]] = [(r.row, r.node, r) for r in live]
    rows.extend((row, node, None) for row, node in down)
    rows.sort(
        key=lambda r: (r[0].get("Created", 0), cluster.creation_seq(r[0]["Id"]), r[0]["Id"]),
        reverse=True,
    )
    for key in ("before", "since"):
        for ref in filters.get(key, []):
            _, cid = await cluster.resolve(ref)
            index = next((i for i, r in enumerate(rows) if r[0]["Id"] == cid), None)
            if index is None:
                continue
            rows = rows[index + 1 :] if key == "before" else rows[:index]
    now = time.time_ns()
    out: list[bytes] = []
    filtered = not ROW_FILTERS.isdisjoint(filters)
    for row, node, ready in rows:
        if limit > 0 and len(out) >= limit:
            break
        if filtered and not _row_matches(row, ready, node, filters):
            continue
        if is_task is not None and (TASK_LABEL in (row.get("Labels") or {})) != is_task:
            continue
        if ready is not None:
            out.append(ready.json(now, size))
            continue
        row = listed_row(row, node)
        if size:
            row.setdefault("SizeRw", 0)
            row.setdefault("SizeRootFs", 0)
        out.append(orjson.dumps(row))
    # The rows are JSON already: the list is written as orjson would write it.
    return web.Response(body=b"[" + b",".join(out) + b"]", content_type="application/json")
