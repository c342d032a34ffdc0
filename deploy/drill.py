"""`flotilla drill KIND NODE`: inject one fault into one node, measure what the cluster does about
it, print a report, then heal.

The fault comes from the dev cluster's drills (deploy/dev_drills.py) when NODE is a dev node and
`--rpc` is not given; otherwise from the node's own agent through the `Drill` RPC (only agents
started with `flotilla join --allow-drills` accept it; they undo the fault themselves after at
most 300 s, see agent/service_drills.py).

Measured from the outside, as an operator sees it:
- detection: fault → the node's key gone from etcd (its lease expired or was revoked);
- for each reschedulable container that ran on NODE: fault → a copy running on another node,
  as the manager's `docker ps` shows it (Names are /node/name, as in classic Swarm);
- duplicates: logical containers (label com.docker.swarm.id) seen with two running copies at once;
- lost: affected logical containers with no running copy at the end (after the heal).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

RESCHEDULE_LABEL = "com.docker.swarm.reschedule-policies"
SWARM_ID_LABEL = "com.docker.swarm.id"
KINDS = ("kill", "crash", "freeze", "partition", "etcd-outage")
POLL_S = 0.1


class DrillError(Exception):
    """A drill that cannot be run (unknown node, drills refused, nothing reachable)."""


@dataclass
class Copy:
    """One container of a logical container, as the manager lists it."""

    swarm_id: str
    name: str
    node: str
    id: str
    running: bool


def copies_from_ps(rows: list[dict[str, Any]]) -> list[Copy]:
    """The reschedulable containers in a `GET /containers/json?all=1` answer."""
    out: list[Copy] = []
    for row in rows:
        labels = row.get("Labels") or {}
        if "on-node-failure" not in labels.get(RESCHEDULE_LABEL, ""):
            continue
        names = row.get("Names") or [""]
        node, _, name = names[0].lstrip("/").partition("/")
        out.append(
            Copy(
                swarm_id=labels.get(SWARM_ID_LABEL, ""),
                name=name or node,
                node=node if name else "",
                id=str(row.get("Id", "")),
                # A down node's rows keep their last State; their Status says "Host Down".
                running=row.get("State") == "running"
                and str(row.get("Status", "")).startswith("Up"),
            )
        )
    return out


@dataclass
class Moved:
    name: str
    swarm_id: str
    from_node: str
    to_node: str = ""
    after_s: float | None = None  # fault → running on another node; None: never


@dataclass
class DrillReport:
    kind: str
    node: str
    via: str  # "dev" or "rpc"
    duration_s: float | None
    detection_s: float | None = None
    containers: list[Moved] = field(default_factory=list)
    duplicates: int = 0
    lost: int = 0
    healed: bool = False
    notes: list[str] = field(default_factory=list)

    def as_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    def lines(self) -> list[str]:
        det = "not detected" if self.detection_s is None else f"{self.detection_s:.2f}s"
        out = [f"drill {self.kind} {self.node} (via {self.via}): detection {det}"]
        if self.containers:
            out.append(f"{'NAME':<24} {'SWARM ID':<14} {'FROM':<10} {'TO':<10} RUNNING ELSEWHERE")
            for m in self.containers:
                after = "never" if m.after_s is None else f"{m.after_s:.2f}s"
                out.append(
                    f"{m.name:<24} {m.swarm_id[:12]:<14} {m.from_node:<10} {m.to_node or '-':<10} "
                    f"{after}"
                )
        else:
            out.append("no reschedulable container ran on the node")
        out.append(
            f"duplicates {self.duplicates}  lost {self.lost}  "
            f"healed {'yes' if self.healed else 'NO'}"
        )
        out += [f"note: {n}" for n in self.notes]
        return out


# --------------------------------------------------------------------------- observation


@dataclass
class Watch:
    """What the drill polls: the node's registration and the manager's containers."""

    registered: Callable[[], Awaitable[bool]]
    copies: Callable[[], Awaitable[list[Copy]]]


class Tally:
    """Folds successive views of the cluster into a report (pure: unit-tested on its own)."""

    def __init__(self, report: DrillReport, before: list[Copy]) -> None:
        self.report = report
        self.affected = {
            c.swarm_id: Moved(c.name, c.swarm_id, c.node)
            for c in before
            if c.node == report.node and c.running and c.swarm_id
        }
        report.containers = sorted(self.affected.values(), key=lambda m: m.name)
        self.doubled: set[str] = set()

    def see_registered(self, registered: bool, elapsed: float) -> None:
        if not registered and self.report.detection_s is None:
            self.report.detection_s = elapsed

    @staticmethod
    def _running(copies: list[Copy]) -> dict[str, list[Copy]]:
        running: dict[str, list[Copy]] = {}
        for c in copies:
            if c.running and c.swarm_id:
                running.setdefault(c.swarm_id, []).append(c)
        return running

    @classmethod
    def doubled_now(cls, copies: list[Copy]) -> bool:
        return any(len({c.id for c in cs}) > 1 for cs in cls._running(copies).values())

    def see_copies(self, copies: list[Copy], elapsed: float) -> None:
        running = self._running(copies)
        for sid, moved in self.affected.items():
            elsewhere = [c for c in running.get(sid, []) if c.node != self.report.node]
            if elsewhere and moved.after_s is None:
                moved.after_s, moved.to_node = elapsed, elsewhere[0].node
        self.doubled |= {sid for sid, cs in running.items() if len({c.id for c in cs}) > 1}
        self.report.duplicates = len(self.doubled)

    def settled(self) -> bool:
        return self.report.detection_s is not None and all(
            m.after_s is not None for m in self.affected.values()
        )

    def finish(self, copies: list[Copy]) -> None:
        alive = {c.swarm_id for c in copies if c.running}
        self.report.lost = sum(1 for sid in self.affected if sid not in alive)


async def observe(
    tally: Tally,
    watch: Watch,
    t0: float,
    until: float,
    heal_at: float | None,
    heal: Callable[[], Awaitable[None]],
) -> None:
    """Poll until everything moved (or `until`); with `heal_at` (monotonic), heal at that very
    moment, whatever the polling is doing (a 2 s blip must last 2 s, not a poll longer); heal
    at the end otherwise."""

    async def heal_on_time() -> None:
        assert heal_at is not None
        await asyncio.sleep(max(0.0, heal_at - time.monotonic()))
        await heal()

    healing = asyncio.create_task(heal_on_time()) if heal_at is not None else None
    try:
        while time.monotonic() < until:
            if tally.settled() and (healing is None or healing.done()):
                break
            reg, copies = await asyncio.gather(watch.registered(), watch.copies())
            elapsed = time.monotonic() - t0
            tally.see_registered(reg, elapsed)
            tally.see_copies(copies, elapsed)
            await asyncio.sleep(POLL_S)
    finally:
        if healing is None:
            await heal()
        else:
            await healing


# --------------------------------------------------------------------------- the cluster


def docker_client(host: str) -> Any:
    import docker

    return docker.APIClient(base_url=host, timeout=10)


async def list_copies(client: Any) -> list[Copy]:
    try:
        rows = await asyncio.to_thread(
            client.containers, all=True, filters={"label": RESCHEDULE_LABEL}
        )
    except Exception:  # noqa: BLE001 - a manager that does not answer now shows nothing
        return []
    return copies_from_ps(rows)


async def start_probes(client: Any, node: str, count: int, image: str) -> list[str]:
    """`count` reschedulable containers placed on `node` (soft constraint), running; their names.
    Those already made are removed again if one fails (nothing half-made)."""
    names: list[str] = []
    run = secrets.token_hex(2)  # an earlier drill's leftovers must not clash
    try:
        for i in range(count):
            name = f"drill-{node}-{run}-{i}"
            env = ["reschedule:on-node-failure", f"constraint:node==~{node}"]
            cid = await asyncio.to_thread(
                client.create_container, image, ["sleep", "1000000"], name=name, environment=env
            )
            names.append(name)
            await asyncio.to_thread(client.start, cid["Id"])
    except Exception as e:
        await remove_probes(client, names)
        raise DrillError(f"cannot start the drill's containers: {e}") from None
    return names


async def wait_planned(kv: Any, prefix: str, swarm_ids: list[str], timeout_s: float) -> bool:
    """Wait until each logical record (etcd `logical/<swarm id>`) says placed and started: a
    container started a moment before its node failed is only restarted elsewhere once the
    manager has recorded that it should run."""
    from proto.keys import Keys
    from proto.records_pb2 import LogicalContainer

    keys = Keys(prefix)
    deadline = time.monotonic() + timeout_s
    while True:
        ready = 0
        for sid in swarm_ids:
            entry = await kv.get(keys.logical(sid))
            rec = LogicalContainer()
            if entry is not None:
                rec.ParseFromString(entry.value)
            ready += int(entry is not None and rec.start and bool(rec.container_id))
        if ready == len(swarm_ids):
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(POLL_S)


async def remove_probes(client: Any, names: list[str], timeout_s: float = 15.0) -> list[str]:
    """Force-remove the drill's containers, retrying while the cluster settles; those left."""
    import docker.errors

    left = list(names)
    deadline = time.monotonic() + timeout_s
    while left and time.monotonic() < deadline:
        for name in list(left):
            try:
                await asyncio.to_thread(client.remove_container, name, force=True)
                left.remove(name)
            except docker.errors.NotFound:
                left.remove(name)
            except Exception:  # noqa: BLE001 - retried until the deadline, then reported
                pass
        if left:
            await asyncio.sleep(0.5)
    return left


async def node_addr(kv: Any, prefix: str, name: str) -> str | None:
    from proto.keys import Keys
    from proto.records_pb2 import NodeRecord

    for entry in await kv.get_prefix(Keys(prefix).nodes_prefix()):
        rec = NodeRecord()
        rec.ParseFromString(entry.value)
        if rec.name == name:
            return rec.addr
    return None


async def rpc_drill(addr: str, kind: str, duration_s: float, tls: Any = None) -> Any:
    """`tls`: the client certificate the agent's mutual TLS asks for (proto.rpc.TlsConfig)."""
    import grpc

    from proto import agent_pb2, agent_pb2_grpc
    from proto.rpc import agent_channel
    from proto.rpc_errors import error_from_rpc

    channel = agent_channel(addr, tls)
    try:
        stub = agent_pb2_grpc.AgentStub(channel)
        req = agent_pb2.DrillRequest(kind=kind, duration_ms=int(duration_s * 1000))
        return await stub.Drill(req, timeout=10)
    except grpc.RpcError as e:
        raise DrillError(str(error_from_rpc(e))) from None
    finally:
        await channel.close()


def _dev_node(name: str) -> bool:
    from deploy import dev_layout

    try:
        dev_layout.node_index(name)
    except dev_layout.DevError:
        return False
    return name in dev_layout.load_state().get("nodes", {})


async def run_drill(
    kind: str,
    node: str,
    duration_s: float | None = None,
    timeout_s: float = 30.0,
    use_rpc: bool = False,
    discovery: str = "",
    docker_host: str = "",
    containers: int = 0,
    image: str = "busybox:latest",
    tls: Any = None,
) -> DrillReport:
    """Inject `kind` into `node`, watch the cluster until every affected container runs
    elsewhere (or `timeout_s` after the fault), heal, and report. With `containers`, that many
    reschedulable containers of `image` are started on `node` first and removed at the end.
    `tls`: the client certificate for the agent's Drill RPC (default: a dev node's, the dev
    cluster's client certificate)."""
    from deploy import dev_drills
    from deploy.dev_layout import DevError, discovery_url
    from deploy.dev_layout import docker_host as dev_docker_host
    from proto.kv import KV, parse_discovery

    if kind not in KINDS:
        raise DrillError(f"unknown drill {kind!r}: expected one of {', '.join(KINDS)}")
    dev = _dev_node(node) and not use_rpc
    endpoints, prefix = parse_discovery(discovery or discovery_url())
    client = docker_client(docker_host or os.environ.get("DOCKER_HOST") or dev_docker_host())
    kv = await KV.connect(endpoints)
    report = DrillReport(kind, node, "dev" if dev else "rpc", duration_s)
    probes: list[str] = []
    try:

        async def registered() -> bool:
            try:
                return await node_addr(kv, prefix, node) is not None
            except Exception:  # noqa: BLE001 - etcd unreachable from here: no answer yet
                return True

        watch = Watch(registered, lambda: list_copies(client))
        addr = await node_addr(kv, prefix, node)
        if addr is None:
            raise DrillError(f"{node} is not registered (no healthy node of that name)")
        probes = await start_probes(client, node, containers, image)
        tally = Tally(report, await watch.copies())
        if probes and not await wait_planned(kv, prefix, list(tally.affected), 10):
            report.notes.append("the manager had not recorded every container as started")

        async def heal() -> None:
            """Undo the fault: the dev drills' heal; a real node's agent undoes its own fault
            (kill and crash need its supervisor, systemd, to start it again)."""
            if _dev_node(node):
                try:
                    await asyncio.to_thread(dev_drills.heal, node)
                except DevError as e:
                    report.notes.append(f"heal: {e}")

        async def wait_back() -> None:
            """Healed = registered again (the agent removed its stale copies first)."""
            undone_in = max(0.0, (undo_at_ns - time.time_ns()) / 1e9) if undo_at_ns else 0.0
            deadline = time.monotonic() + undone_in + max(timeout_s, 30.0)
            while not report.healed and time.monotonic() < deadline:
                report.healed = await node_addr(kv, prefix, node) is not None
                if not report.healed:
                    await asyncio.sleep(0.2)
            if not report.healed:
                report.notes.append(f"{node} has not registered again")

        undo_at_ns = 0  # when the agent undoes its own fault (the Drill RPC)
        t0 = time.monotonic()
        if dev:
            try:
                await asyncio.to_thread(dev_drills.DRILLS[kind][0], node)
            except DevError as e:
                raise DrillError(str(e)) from None
        else:
            if tls is None and _dev_node(node):
                from deploy.dev_certs import dev_tls

                tls = dev_tls()
            reply = await rpc_drill(addr, kind, duration_s or 0, tls)
            undo_at_ns = reply.undo_at_ns
            # The agent injects the fault a moment after replying, at started_at_ns.
            t0 = time.monotonic() + (reply.started_at_ns - time.time_ns()) / 1e9
        heal_at = None if duration_s is None else t0 + duration_s
        await observe(tally, watch, t0, t0 + timeout_s, heal_at, heal)
        await wait_back()
        # Stale copies must be gone a little after the heal; then count the survivors.
        settle = time.monotonic() + 10
        while True:
            copies = await watch.copies()
            tally.see_copies(copies, time.monotonic() - t0)
            if time.monotonic() > settle or not tally.doubled_now(copies):
                break
            await asyncio.sleep(POLL_S)
        tally.finish(copies)
        if report.detection_s is None and duration_s is None:
            report.notes.append("the node's key never left etcd")
        return report
    finally:
        left = await remove_probes(client, probes)
        if left:
            report.notes.append(f"could not remove {', '.join(left)}")
        await kv.close()
        client.close()


def _tls_of(args: Any) -> Any:
    files = tuple(getattr(args, f, "") for f in ("tlscert", "tlskey", "tlscacert"))
    if not any(files):
        return None
    if not all(files):
        raise DrillError("the agent's TLS needs all of --tlscert, --tlskey and --tlscacert")
    from proto.rpc import TlsConfig

    return TlsConfig(*files)


def main(args: Any) -> int:
    """`flotilla drill` (its parser is in deploy/cli.py)."""
    try:
        tls = _tls_of(args)
        report = asyncio.run(
            run_drill(
                args.kind,
                args.node,
                duration_s=args.duration,
                timeout_s=args.timeout,
                use_rpc=args.rpc,
                discovery=args.discovery,
                docker_host=args.host,
                containers=args.containers,
                image=args.image,
                tls=tls,
            )
        )
    except DrillError as e:
        print(f"flotilla drill: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(report.as_json())
    else:
        for line in report.lines():
            print(line)
    return 0 if report.duplicates == 0 and report.lost == 0 else 3
