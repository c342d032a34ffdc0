"""The node fence, agent side, on a dev cluster through the real docker CLI (docs/failover.md,
"Agent side"): a reschedulable container on a node whose lease may expire is killed by its own
shim (frozen agent, partition, agent stop), nothing is fenced when etcd is down for everyone or
on a 2 s blip, other containers are never fenced, and a node that comes back removes the stale
copies etcd says were replaced. Processes are checked from the host (their pids), not through
the manager. No timing assertions beyond the guarantee itself: waits poll with a deadline."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator

import pytest

from bench import failover_heartbeats as hb
from deploy import dev_drills, dev_layout, dev_processes
from deploy import devcluster as dc
from deploy.dev_layout import PREFIX, TTL, etcd_endpoint
from deploy.dev_processes import agent_pid
from proto.keys import Keys
from proto.kv import KV
from proto.records_pb2 import LogicalContainer
from tests.fixtures import dev_cluster, docker
from tests.manager.swarm_compat import healthy_nodes

RESCHEDULE = 'com.docker.swarm.reschedule-policies=["on-node-failure"]'
TEST_LABEL = "flotilla.test=fencing"
TTL_S = float(TTL.rstrip("s"))
DEADLINE_S = 60
LOGS = "/tmp/flotilla-fencing-e2e-logs"


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, object]]:
    with dev_cluster(2) as nodes:
        try:
            yield nodes
        finally:  # the agents' logs outlive the cluster, for a failure's post-mortem
            shutil.rmtree(LOGS, ignore_errors=True)
            shutil.copytree(dc.ROOT, LOGS, ignore=lambda _, names: [
                n for n in names if not n.endswith(".log")])  # fmt: skip


@pytest.fixture(autouse=True)
def clean(cluster: dict[str, object]) -> Iterator[None]:
    try:
        yield
    finally:
        dev_processes.start_etcd()
        for name in cluster:
            dev_drills.heal(name)
        wait_for(lambda: set(dc.registered()) == set(cluster), DEADLINE_S, "every node back")
        wait_for(lambda: healthy_nodes() == set(cluster), DEADLINE_S, "the manager sees every node")
        # Right after a fence the old lease may still be alive (the deadline comes first), so
        # "registered" and "Healthy" can hold while the fence has passed: a container started
        # then would be fenced at once. Wait until the node renews again.
        wait_for(lambda: renewing_for(3.0), DEADLINE_S, "node-1 renewing its fence")
        ids = docker("ps", "-aq", "--filter", f"label={TEST_LABEL}", check=False).stdout.split()
        if ids:
            docker("rm", "-f", *ids, check=False)


def fence_ahead(node: str) -> bool:
    """The node's fence deadline is in the future (its keep-alives are succeeding)."""
    try:
        with open(os.path.join(dc.ROOT, node, "fence")) as f:
            deadline = int(f.read())
    except (OSError, ValueError):
        return False
    return deadline > time.clock_gettime_ns(time.CLOCK_BOOTTIME)


def renewing_for(seconds: float, node: str = "node-1") -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if not fence_ahead(node):
            return False
        time.sleep(0.1)
    return True


def fence_peers(node: str) -> float:
    """The node's `flotilla_fence_peers` metric (-1: not readable)."""
    url = f"http://{dev_layout.node_ip(int(node.rsplit('-', 1)[1]))}:{dev_layout.METRICS_PORT}"
    try:
        with urllib.request.urlopen(f"{url}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return -1
    for line in text.splitlines():
        if line.startswith("flotilla_fence_peers "):
            return float(line.split()[1])
    return -1


def wait_for(check, timeout: float, what: str) -> float:  # noqa: ANN001
    start = time.monotonic()
    while not check():
        if time.monotonic() - start >= timeout:
            post_mortem()
            raise AssertionError(f"{what}: not within {timeout:.1f}s")
        time.sleep(0.05)
    return time.monotonic() - start


def post_mortem(lines: int = 60) -> None:
    """What the cluster looked like when a wait ran out, on stdout (pytest shows it with the
    failure, where the log files themselves are gone with the machine): the logical records
    and nodes in etcd, and the last lines of the manager's (debug too) and agents' logs (their
    repeated retry messages folded to one line each)."""
    print("----- etcd: logical records and nodes")
    try:
        print(asyncio.run(_etcd_state()))
    except Exception as e:  # noqa: BLE001 - a post-mortem must not hide the failure
        print(f"(unreadable: {e})")
    names = os.listdir(dc.ROOT) if os.path.isdir(dc.ROOT) else []
    for log in sorted(n for n in names if n.endswith(".log")):
        with open(os.path.join(dc.ROOT, log), errors="replace") as f:
            kept = [
                line.rstrip()[:300]
                for line in f
                if line[:4].isdigit() and (log == "manager.log" or " DEBUG " not in line)
            ]
        print(f"----- {log} (last {lines} entries)")
        print("\n".join(kept[-lines:]))


async def _etcd_state() -> str:
    keys = Keys(PREFIX)
    out = []
    async with await KV.connect([etcd_endpoint()]) as kv:
        for entry in await kv.get_prefix(keys.nodes_prefix()):
            out.append(f"node {entry.key} lease={entry.lease}")
        for entry in await kv.get_prefix(keys.logical_prefix()):
            rec = LogicalContainer()
            rec.ParseFromString(entry.value)
            out.append(
                f"logical {rec.name} state={rec.state} node={rec.node_id[:4]} "
                f"gen={rec.generation} prev={rec.previous_node_id[:4]} "
                f"failed_at_ns={rec.node_failed_at_ns}"
            )
    return "\n".join(out)


def dev(*args: str) -> None:
    """`flotilla dev ARGS`, as an operator types it."""
    subprocess.run([sys.executable, "-m", "deploy.cli", "dev", *args], check=True, timeout=60)


def run_on_node1(name: str, reschedulable: bool) -> int:
    """`docker run -d` pinned to node-1; returns the container's host pid."""
    labels = ["--label", TEST_LABEL] + (["--label", RESCHEDULE] if reschedulable else [])
    docker("run", "-d", "--name", name, *labels, "-e", "constraint:node==node-1", "busybox",
           "sleep", "1000")  # fmt: skip
    state = json.loads(docker("inspect", name).stdout)[0]["State"]
    assert state["Running"] and state["Pid"] > 0
    return int(state["Pid"])


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def gone_within_ttl(pid: int) -> None:
    """The guarantee: dead once the lease may have expired (TTL), plus a second of slack for
    the shim's 100 ms check and this poll."""
    wait_for(lambda: not alive(pid), TTL_S + 1, f"container pid {pid} fenced")


def stays_alive(pids: list[int], seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        assert all(alive(p) for p in pids), "a container was fenced"
        time.sleep(0.1)


def test_frozen_agent_fences_reschedulable_only(cluster: dict[str, object]) -> None:
    moving = run_on_node1("fence-freeze", reschedulable=True)
    plain = run_on_node1("fence-freeze-plain", reschedulable=False)
    dev("freeze", "node-1")
    gone_within_ttl(moving)
    stays_alive([plain], 2)  # not reschedulable: never fenced


def test_partition_fences(cluster: dict[str, object]) -> None:
    moving = run_on_node1("fence-partition", reschedulable=True)
    dev("partition", "node-1")
    gone_within_ttl(moving)


def test_only_this_node_losing_etcd_fences(cluster: dict[str, object]) -> None:
    """node-0 still reaches etcd and says so: node-1 is cut off, not etcd down for everyone."""
    moving = run_on_node1("fence-cutoff", reschedulable=True)
    dev("etcd-outage", "node-1")
    gone_within_ttl(moving)


def test_agent_stop_fences_then_revokes(cluster: dict[str, object]) -> None:
    moving = run_on_node1("fence-stop", reschedulable=True)
    plain = run_on_node1("fence-stop-plain", reschedulable=False)
    dev("stop", "node-1")
    # The agent exits only after its reschedulable containers died, then revokes its lease.
    assert not alive(moving)
    assert "node-1" not in dc.registered()
    assert alive(plain)


def test_two_second_blip_fences_nothing(cluster: dict[str, object]) -> None:
    moving = run_on_node1("fence-blip", reschedulable=True)
    # In-process, so the blip lasts 2 s and not 2 s plus a CLI's start-up.
    dev_drills.partition("node-1")
    time.sleep(2)
    dev_drills.heal("node-1")
    stays_alive([moving], TTL_S + 2)


def _agent_with(node: str, **flags: str) -> None:
    """Restart `node`'s agent with other `flotilla join` flags (not saved in the dev state, so
    a later `flotilla dev start` runs the default command again)."""
    dev_drills.kill(node)
    i = int(node.rsplit("-", 1)[1])
    cmd = dev_processes.agent_command(i, {})
    for flag, value in flags.items():
        at = cmd.index(f"--{flag.replace('_', '-')}")
        cmd[at + 1] = value
    since = time.time_ns()
    dev_processes.spawn_agent(node, cmd)
    dev_processes.wait_registered([node], 30, since)
    wait_for(lambda: renewing_for(1.0, node), DEADLINE_S, f"{node} renewing its fence")


def test_fenced_container_runs_again_when_the_lease_outlived_the_fence(
    cluster: dict[str, object],
) -> None:
    # A fence deadline 2 s into a 6 s lease: an agent frozen between the two has its
    # containers fenced while the manager still sees the node (it never reschedules them).
    _agent_with("node-1", ttl="6s", fence_guard="4s")
    try:
        pid = run_on_node1("fence-lapse", reschedulable=True)
        info = json.loads(docker("inspect", "fence-lapse").stdout)[0]
        dev_drills.freeze("node-1")
        try:
            gone_within_ttl(pid)
        finally:
            dev_drills.heal("node-1")

        def running_again() -> bool:
            state = json.loads(docker("inspect", "fence-lapse").stdout)[0]["State"]
            return bool(state["Running"]) and state["Pid"] != pid

        wait_for(running_again, DEADLINE_S, "the fenced container started again")
        again = json.loads(docker("inspect", "fence-lapse").stdout)[0]
        assert again["Id"] == info["Id"]  # the same container, on the same node: not a copy
        swarm_id = info["Config"]["Labels"]["com.docker.swarm.id"]
        copies = docker("ps", "-aq", "--filter", f"label=com.docker.swarm.id={swarm_id}")
        assert copies.stdout.split() == [info["Id"][:12]]
    finally:
        dev_drills.kill("node-1")
        dev("start", "node-1")


def test_no_duplicate_when_only_the_manager_reaches_etcd(cluster: dict[str, object]) -> None:
    # Every agent loses etcd, the manager does not: the agents, asking each other, take it for
    # an etcd outage and keep their containers running while their leases run out in etcd.
    # Then node-0 alone gets etcd back and receives node-1's container at once: the old copy
    # runs until node-1's last extension ends, and the new one must not start before that.
    beats_dir = tempfile.mkdtemp(prefix="flt-fence-hb-")
    name = "fence-cutoff"
    try:
        docker("run", "-d", "--name", name, "--label", TEST_LABEL, "--label", RESCHEDULE,
               "-e", "constraint:node==~node-1", "-e", f"SWARMID={name}",
               "-v", f"{beats_dir}:/hb", "busybox", "sh", "-c", hb.SCRIPT)  # fmt: skip
        watch = hb.HeartbeatDir(beats_dir)

        def beating() -> bool:
            watch.poll()
            return hb.beating_at(watch.of(name), hb.boottime())

        wait_for(beating, DEADLINE_S, "the container beating")
        # node-1 must know node-0 (its peer list is refreshed every few seconds): a node with
        # no peers to ask fences at once, and the test would prove nothing.
        wait_for(lambda: fence_peers("node-1") >= 1, DEADLINE_S, "node-1 knowing its peer")
        cut_t = hb.boottime()
        for node in cluster:
            dev_drills.etcd_outage(node)
        wait_for(lambda: not healthy_nodes(), DEADLINE_S, "the manager sees every node down")
        # Extended, not merely not yet fenced: still beating well past its lease's end.
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            assert beating(), "stopped while only the agents lost etcd"
            time.sleep(0.1)
        dev_drills.heal("node-0")

        def replaced() -> bool:
            watch.poll()
            return hb.time_to_replacement(watch.of(name), cut_t) is not None

        wait_for(replaced, DEADLINE_S, "a new copy beating on node-0")
        time.sleep(TTL_S)  # any overlap with the old copy would have happened by now
        watch.poll()
        assert not hb.overlaps(watch.of(name)), "two copies ran at once"
    finally:
        shutil.rmtree(beats_dir, ignore_errors=True)


def test_etcd_down_for_everyone_fences_nothing(cluster: dict[str, object]) -> None:
    moving = run_on_node1("fence-etcd", reschedulable=True)
    ids = {name: rec.id for name, rec in dc.registered().items()}
    dev_processes.stop_etcd()
    try:
        stays_alive([moving], 60)
    finally:
        dev_processes.start_etcd()
    wait_for(lambda: dc.registered().keys() == ids.keys(), 30, "both nodes re-registered")
    assert alive(moving)
    # The manager's own etcd connection comes back on its own schedule (not the agents'): the
    # next test needs it (a name claim is an etcd transaction).
    probe = ("create", "--name", "fence-probe", "--label", TEST_LABEL, "busybox", "true")
    wait_for(lambda: docker(*probe, check=False).returncode == 0, 30, "manager writes etcd")


def test_restarted_agent_removes_stale_copy(cluster: dict[str, object]) -> None:
    pid = run_on_node1("fence-stale", reschedulable=False)
    info = json.loads(docker("inspect", "fence-stale").stdout)[0]
    cid, swarm_id = info["Id"], info["Config"]["Labels"]["com.docker.swarm.id"]
    node1 = dc.registered()["node-1"].id
    node0 = dc.registered()["node-0"].id
    dev("kill", "node-1")
    keys = Keys(PREFIX)

    async def write_logical() -> bytes | None:
        async with await KV.connect([etcd_endpoint()]) as kv:
            before = await kv.get(keys.logical(swarm_id))
            record = LogicalContainer(
                swarm_id=swarm_id,
                generation=7,
                state="placed",
                node_id=node0,
                container_id="f" * 64,
                name="fence-stale",
            )
            await kv.put(keys.logical(swarm_id), record.SerializeToString())
            return before.value if before else None

    async def restore(value: bytes | None) -> None:
        async with await KV.connect([etcd_endpoint()]) as kv:
            if value is None:
                await kv.delete(keys.logical(swarm_id))
            else:
                await kv.put(keys.logical(swarm_id), value)

    before = asyncio.run(write_logical())
    try:
        dev("start", "node-1")
        wait_for(lambda: not alive(pid), 30, "stale copy stopped")
        bundle = os.path.join(dc.ROOT, "node-1", "containers", cid)
        wait_for(lambda: not os.path.exists(bundle), 30, "stale copy removed from node-1")
        assert node1 == dc.registered()["node-1"].id
    finally:
        asyncio.run(restore(before))
        assert agent_pid("node-1") is not None
