"""A manager that crashes (SIGKILL) in the middle of a plain `docker create` leaves nothing
half-made (docs/failover.md, "Manager side"), through the real docker CLI on a dev cluster: killed
after the intent and before the node was asked, or after the node made the container and before
the commit, the restarted manager drops the intent and frees the name, or adopts the container.
The windows are held open by the manager's test hooks (manager/create_intent.py)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from collections.abc import Iterator

import pytest

from deploy import dev_processes, devcluster
from deploy.dev_layout import PREFIX, etcd_endpoint
from manager.create_intent import PAUSE_AFTER_INTENT_ENV, PAUSE_AFTER_NODE_CREATE_ENV
from proto.keys import Keys
from proto.kv import KV
from proto.logical import PLACED, PLACING, SWARM_ID_LABEL
from proto.records_pb2 import ContainerStatus, LogicalContainer
from tests.fixtures import DOCKER, dev_cluster, docker
from tests.manager.swarm_compat import reset, wait_for

DEADLINE_S = 60
# The restarted manager drops an intent its node never acted on once a create under it can no
# longer be running (the create call's deadline, 30 s, from the intent).
SETTLE_DEADLINE_S = 120
HOLD_S = "300"  # the hook's pause: the manager is killed long before it ends
KEYS = Keys(PREFIX)


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, object]]:
    with dev_cluster(2) as nodes:
        yield nodes


@pytest.fixture(autouse=True)
def clean(cluster: dict[str, object]) -> Iterator[None]:
    try:
        yield
    finally:
        for env in (PAUSE_AFTER_INTENT_ENV, PAUSE_AFTER_NODE_CREATE_ENV):
            os.environ.pop(env, None)
        # A manager started with a hook (or none at all) is replaced by a plain one.
        dev_processes.stop_manager()
        dev_processes.start_manager()
        reset(cluster)


def _restart_manager_with(env: str) -> None:
    dev_processes.stop_manager()
    os.environ[env] = HOLD_S
    try:
        dev_processes.start_manager()
    finally:
        os.environ.pop(env, None)


def _crash_manager() -> None:
    pids = dev_processes.manager_pids()
    assert pids, "no manager to crash"
    for pid in pids:
        dev_processes.send_signal(pid, signal.SIGKILL)
    for pid in pids:
        assert dev_processes.wait_gone(pid), f"manager {pid} survived SIGKILL"


def _create_in_background(name: str) -> subprocess.Popen[str]:
    env = dict(os.environ, DOCKER_HOST=devcluster.docker_host())
    return subprocess.Popen(
        [DOCKER, "create", "--name", name, "busybox", "true"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


class Etcd:
    """What etcd holds of containers: logical records, name claims, desired records, and the
    agents' status records."""

    def __init__(self) -> None:
        async def read() -> tuple[list, list, list, list]:
            async with await KV.connect([etcd_endpoint()]) as kv:
                return (
                    await kv.get_prefix(KEYS.logical_prefix()),
                    await kv.get_prefix(KEYS.names_prefix()),
                    await kv.get_prefix(KEYS.containers_prefix()),
                    await kv.get_prefix(KEYS.status_prefix()),
                )

        logical, names, desired, statuses = asyncio.run(read())
        self.logical = [LogicalContainer.FromString(e.value) for e in logical]
        self.names = {KEYS.name_of(e.key): e.value.decode() for e in names}
        self.desired = {KEYS.container_id(e.key) for e in desired}
        self.statuses = [ContainerStatus.FromString(e.value) for e in statuses]

    def record_named(self, name: str) -> LogicalContainer | None:
        found = [r for r in self.logical if r.name == name]
        assert len(found) <= 1, f"two logical records named {name}"
        return found[0] if found else None

    def status_of(self, swarm_id: str) -> list[ContainerStatus]:
        return [s for s in self.statuses if s.labels.get(SWARM_ID_LABEL) == swarm_id]


def _ps_all() -> dict[str, tuple[str, str]]:
    """`docker ps -a`: container ID -> (name as Swarm shows it, swarm id)."""
    out = docker(
        "ps", "-a", "--no-trunc", "--format", '{{.ID}}|{{.Names}}|{{.Label "com.docker.swarm.id"}}'
    ).stdout
    rows = {}
    for line in out.splitlines():
        cid, name, swarm_id = line.split("|")
        rows[cid] = (name, swarm_id)
    return rows


def _assert_consistent() -> None:
    """No container without its logical record, no record without its container, every name
    claim held by the container of that name, nothing half-made or twice."""
    etcd = Etcd()
    rows = _ps_all()
    assert [r for r in etcd.logical if r.state != PLACED] == []
    by_swarm_id = {swarm_id: cid for cid, (_, swarm_id) in rows.items()}
    assert len(by_swarm_id) == len(rows), f"a swarm id on two containers: {rows}"
    for rec in etcd.logical:
        assert rows.get(rec.container_id, ("", ""))[1] == rec.swarm_id, f"no container: {rec}"
    for cid, (_, swarm_id) in rows.items():
        assert any(r.container_id == cid for r in etcd.logical), f"no logical record: {cid}"
        assert swarm_id and cid in etcd.desired
    for name, cid in etcd.names.items():
        assert cid in rows and rows[cid][0].endswith(f"/{name}"), f"claim {name} -> {cid!r}"


def test_crash_before_the_node_create_frees_the_name() -> None:
    _restart_manager_with(PAUSE_AFTER_INTENT_ENV)
    proc = _create_in_background("half")
    try:
        wait_for(
            lambda: (rec := Etcd().record_named("half")) is not None and rec.state == PLACING,
            DEADLINE_S,
            "the intent of half",
        )
        intent = Etcd().record_named("half")
        assert intent is not None and intent.container_id == "" and intent.node_id
        assert Etcd().names.get("half") == ""  # claimed, in the same transaction
        _crash_manager()
        proc.communicate(timeout=DEADLINE_S)
        assert proc.returncode != 0  # the client never heard of a container
    finally:
        proc.kill()
        proc.communicate()
    dev_processes.start_manager()
    wait_for(
        lambda: Etcd().record_named("half") is None and "half" not in Etcd().names,
        SETTLE_DEADLINE_S,
        "the intent of half dropped",
    )
    # Never created on the user's behalf, on no node.
    assert Etcd().status_of(intent.swarm_id) == []
    assert not [name for name, _ in _ps_all().values() if name.endswith("/half")]
    _assert_consistent()
    # The name is free again.
    cid = docker("create", "--name", "half", "busybox", "true").stdout.strip()
    assert Etcd().names["half"] == cid
    _assert_consistent()


def test_crash_after_the_node_create_adopts_the_container() -> None:
    _restart_manager_with(PAUSE_AFTER_NODE_CREATE_ENV)
    proc = _create_in_background("made")
    try:
        wait_for(
            lambda: (
                (rec := Etcd().record_named("made")) is not None
                and len(Etcd().status_of(rec.swarm_id)) == 1
            ),
            DEADLINE_S,
            "made created on its node",
        )
        etcd = Etcd()
        intent = etcd.record_named("made")
        assert intent is not None and (intent.state, intent.container_id) == (PLACING, "")
        [status] = etcd.status_of(intent.swarm_id)
        assert etcd.names.get("made") == "" and status.id not in etcd.desired
        _crash_manager()
        proc.communicate(timeout=DEADLINE_S)
    finally:
        proc.kill()
        proc.communicate()
    dev_processes.start_manager()
    wait_for(
        lambda: (rec := Etcd().record_named("made")) is not None and rec.state == PLACED,
        DEADLINE_S,
        "made adopted",
    )
    etcd = Etcd()
    rec = etcd.record_named("made")
    assert rec is not None and rec.container_id == status.id and rec.node_id == status.node_id
    assert etcd.names["made"] == status.id and status.id in etcd.desired
    ids = docker("ps", "-aq", "--no-trunc", "--filter", f"label={SWARM_ID_LABEL}={rec.swarm_id}")
    assert ids.stdout.split() == [status.id]  # one container, not made twice
    _assert_consistent()
    # It is a container like any other: started, removed, and its name free again.
    docker("start", "made")
    docker("rm", "-f", "made")
    wait_for(
        lambda: Etcd().record_named("made") is None and "made" not in Etcd().names,
        DEADLINE_S,
        "made's records removed",
    )
    docker("create", "--name", "made", "busybox", "true")
    _assert_consistent()


def test_plain_creates_keep_the_records_consistent() -> None:
    """No crash: every create (named or not) leaves its three records, a refused one none."""
    docker("create", "--name", "one", "busybox", "true")
    docker("create", "busybox", "true")
    bad = docker("create", "--name", "nope", "no-such-image:9", check=False)
    assert bad.returncode != 0
    taken = docker("create", "--name", "one", "busybox", "true", check=False)
    assert taken.returncode != 0 and 'The container name "/one" is already in use' in taken.stderr
    assert "nope" not in Etcd().names
    _assert_consistent()
