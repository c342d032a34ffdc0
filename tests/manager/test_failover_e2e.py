"""Rescheduling on node failure, the manager side, through the real docker CLI on a dev cluster
(docs/failover.md, "Manager side"): the policy, a killed agent's containers moving, `Host Down`
and pending ones, the node coming back, a manager restart in the middle of a reschedule, a
frozen agent that blocks nothing. No timing assertions: every wait polls with a deadline."""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.request
from collections.abc import Iterator

import pytest

from deploy import dev_drills, dev_processes
from deploy.dev_layout import MANAGER_METRICS, PREFIX, etcd_endpoint
from manager.rescheduler import PAUSE_ENV
from proto.keys import Keys
from proto.kv import KV
from proto.logical import FAILED, GENERATION_LABEL, PLACING, SWARM_ID_LABEL
from proto.records_pb2 import LogicalContainer
from tests.fixtures import dev_cluster, docker
from tests.manager.swarm_compat import heal_and_reset, inspect, wait_for

DEADLINE_S = 60
POLICY = "reschedule:on-node-failure"


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, object]]:
    with dev_cluster(3) as nodes:
        yield nodes


@pytest.fixture(autouse=True)
def clean(cluster: dict[str, object]) -> Iterator[None]:
    try:
        yield
    finally:
        heal_and_reset(cluster, DEADLINE_S)


def run(name: str, *args: str) -> str:
    return docker("run", "-d", "--name", name, *args, "busybox", "sleep", "1000").stdout.strip()


def ps_rows(*args: str) -> list[str]:
    return docker("ps", *args, "--format", "{{.Names}}|{{.Status}}").stdout.splitlines()


def running_names() -> list[str]:
    return [row.partition("|")[0] for row in ps_rows()]


def events_since(since: float, *filters: str) -> list[dict]:
    args = ["events", "--since", f"{since:.3f}", "--until", f"{time.time():.3f}"]
    for f in filters:
        args += ["--filter", f]
    return [
        json.loads(line) for line in docker(*args, "--format", "{{json .}}").stdout.splitlines()
    ]


def logical(swarm_id: str) -> LogicalContainer | None:
    async def read() -> LogicalContainer | None:
        async with await KV.connect([etcd_endpoint()]) as kv:
            entry = await kv.get(Keys(PREFIX).logical(swarm_id))
        if entry is None:
            return None
        rec = LogicalContainer()
        rec.ParseFromString(entry.value)
        return rec

    return asyncio.run(read())


def test_policy_errors_are_swarms() -> None:
    bad = docker(
        "run",
        "-d",
        "--label",
        'com.docker.swarm.reschedule-policies=["false"]',
        "busybox",
        check=False,
    )
    assert bad.returncode != 0 and "invalid reschedule policy: false" in bad.stderr
    many = docker(
        "run",
        "-d",
        "-e",
        "reschedule:off",
        "--label",
        'com.docker.swarm.reschedule-policies=["on-node-failure"]',
        "busybox",
        check=False,
    )
    assert many.returncode != 0 and "too many reschedule policies" in many.stderr
    cid = run("stored", "-e", POLICY, "-e", "A=1")
    config = inspect(cid)["Config"]
    assert config["Labels"]["com.docker.swarm.reschedule-policies"] == '["on-node-failure"]'
    assert config["Labels"][GENERATION_LABEL] == "1"
    assert config["Env"] == ["A=1"] or "A=1" in config["Env"]
    assert not any(e.startswith("reschedule:") for e in config["Env"])


def test_killed_node_containers_move_stay_or_wait() -> None:
    web = run("web", "-e", POLICY, "-e", "constraint:node==~node-1")
    run("plain", "-e", "constraint:node==~node-1")
    pinned = run("pinned", "-e", POLICY, "-e", "constraint:node==node-1")
    for name in ("web", "plain", "pinned"):
        assert inspect(name)["Node"]["Name"] == "node-1"
    swarm_id = inspect(web)["Config"]["Labels"][SWARM_ID_LABEL]
    since = time.time() - 0.5
    dev_drills.kill("node-1")

    wait_for(
        lambda: any(n.endswith("/web") and not n.startswith("node-1/") for n in running_names()),
        DEADLINE_S,
        "web running on another node",
    )
    moved = inspect("web")
    assert moved["Node"]["Name"] in ("node-0", "node-2")
    assert moved["Id"] != web and moved["State"]["Running"]
    assert moved["Config"]["Labels"][SWARM_ID_LABEL] == swarm_id
    assert moved["Config"]["Labels"][GENERATION_LABEL] == "2"
    assert inspect(swarm_id)["Id"] == moved["Id"]  # the stable identity resolves to the new one
    assert [n for n in running_names() if n.endswith("/web")] == [f"{moved['Node']['Name']}/web"]

    rows = ps_rows("-a")
    assert "node-1/plain|Host Down" in rows
    wait_for(
        lambda: "node-1/pinned|Pending reschedule" in ps_rows("-a"),
        DEADLINE_S,
        "pinned pending in ps -a",
    )
    logs = docker("logs", "plain", check=False)
    assert logs.returncode != 0 and "running on unhealthy node node-1" in logs.stderr

    info = docker("info").stdout
    assert "Nodes: 3" in info
    section = info[info.index(" node-1:") :]
    assert section.split("└ Status: ", 1)[1].startswith("Unhealthy")

    events = events_since(since)
    rescheduled = [e for e in events if e.get("Action") == "reschedule"]
    assert len(rescheduled) == 1
    attrs = rescheduled[0]["Actor"]["Attributes"]
    assert rescheduled[0]["Actor"]["ID"] == moved["Id"]
    assert (attrs["name"], attrs["from_node"], attrs[SWARM_ID_LABEL]) == ("web", "node-1", swarm_id)
    assert any(
        e.get("Action") == "engine_disconnect" and e["Actor"]["Attributes"]["name"] == "node-1"
        for e in events
    )
    metrics = urllib.request.urlopen(f"http://{MANAGER_METRICS}/metrics", timeout=10).read()
    text = metrics.decode()
    assert "flotilla_reschedules_total 1.0" in text
    assert 'flotilla_nodes{state="down"} 1.0' in text
    assert "flotilla_pending_containers 1.0" in text
    assert "flotilla_time_to_reschedule_seconds_count 1.0" in text

    # The node comes back: pinned runs there again — its old copy claimed back by the agent
    # (generation 1) or a new one placed by the manager's retry (generation 2), whichever wins
    # the compare-and-swap on its logical record; nothing else moves back.
    since = time.time() - 0.5
    dev_drills.start("node-1")
    wait_for(lambda: "node-1/pinned" in running_names(), DEADLINE_S, "pinned running on node-1")
    again = inspect("pinned")
    generation = again["Config"]["Labels"][GENERATION_LABEL]
    assert generation == "2" or (generation == "1" and again["Id"] == pinned)
    wait_for(
        lambda: docker("ps", "-aq", "--filter", "name=pinned").stdout.split() == [again["Id"][:12]],
        DEADLINE_S,
        "a single pinned",
    )
    assert inspect("web")["Id"] == moved["Id"]
    # The returned node removes its stale copy (decided from the logical record): one web.
    wait_for(
        lambda: (
            [n for n in running_names() if n.endswith("/web")] == [f"{moved['Node']['Name']}/web"]
        ),
        DEADLINE_S,
        "a single web after node-1 returned",
    )
    assert (
        len(docker("ps", "-aq", "--filter", f"label={SWARM_ID_LABEL}={swarm_id}").stdout.split())
        == 1
    )
    assert any(e.get("Action") == "engine_connect" for e in events_since(since))


def test_manager_restart_in_the_middle_of_a_reschedule() -> None:
    """The manager dies right after it wrote `placing`; the next one finishes the plan from
    etcd, and exactly one copy runs."""
    os.environ[PAUSE_ENV] = "60"
    try:
        dev_processes.stop_manager()
        dev_processes.start_manager()
    finally:
        os.environ.pop(PAUSE_ENV, None)
    db = run("db", "-e", POLICY, "-e", "constraint:node==~node-2")
    assert inspect(db)["Node"]["Name"] == "node-2"
    swarm_id = inspect(db)["Config"]["Labels"][SWARM_ID_LABEL]
    dev_drills.kill("node-2")
    wait_for(
        lambda: (rec := logical(swarm_id)) is not None and rec.state == PLACING,
        DEADLINE_S,
        "db placing",
    )
    dev_processes.stop_manager()
    dev_processes.start_manager()
    wait_for(
        lambda: any(n.endswith("/db") and not n.startswith("node-2/") for n in running_names()),
        DEADLINE_S,
        "db running elsewhere",
    )
    rows = docker(
        "ps", "-a", "--filter", f"label={SWARM_ID_LABEL}={swarm_id}", "--format", "{{.Names}}"
    ).stdout.split()
    assert len(rows) == 1 and not rows[0].startswith("node-2/")
    rec = logical(swarm_id)
    assert rec is not None and rec.state == "placed" and rec.generation == 2


def test_frozen_agent_blocks_nothing() -> None:
    """A hung agent (SIGSTOP): ps, info and a run on another node all answer (each within the
    manager's deadlines; the CLI's own timeout bounds them here)."""
    dev_drills.freeze("node-2")
    docker("ps", "-a", timeout=40)
    docker("info", timeout=40)
    run("elsewhere", "-e", "constraint:node==node-1")
    assert inspect("elsewhere")["Node"]["Name"] == "node-1"


def test_manager_restart_before_the_margin_ends() -> None:
    """The manager dies while a record waits out the margin (`failed`): the next one counts the
    margin from the stored time and moves it, once."""
    dev_processes.stop_manager()
    dev_processes.start_manager(["--reschedule-margin", "30"])
    api = run("api", "-e", POLICY, "-e", "constraint:node==~node-0")
    assert inspect(api)["Node"]["Name"] == "node-0"
    swarm_id = inspect(api)["Config"]["Labels"][SWARM_ID_LABEL]
    dev_drills.kill("node-0")
    wait_for(
        lambda: (rec := logical(swarm_id)) is not None and rec.state == FAILED,
        DEADLINE_S,
        "api failed",
    )
    dev_processes.stop_manager()
    dev_processes.start_manager()
    wait_for(
        lambda: any(n.endswith("/api") and not n.startswith("node-0/") for n in running_names()),
        DEADLINE_S,
        "api running elsewhere",
    )
    rows = docker(
        "ps", "-a", "--filter", f"label={SWARM_ID_LABEL}={swarm_id}", "--format", "{{.Names}}"
    ).stdout.split()
    assert len(rows) == 1
    rec = logical(swarm_id)
    assert rec is not None and rec.state == "placed" and rec.generation == 2
