"""Unit tests for manager/scheduler: classic Swarm's filters, strategies, grammar and errors."""

from __future__ import annotations

import contextlib
import itertools
import json
import random

import pytest

from manager.scheduler import (
    ContainerInfo,
    NodeInfo,
    Scheduler,
    SchedulingError,
    parse_placement,
    with_image_affinity,
)

GIB = 1 << 30
MIB = 1 << 20
COND = "Unable to find a node that satisfies the following conditions "
SLOTS = "\n[available container slots]"
_serial = itertools.count()


def ctr(
    name: str = "",
    *,
    cid: str = "",
    image: str = "busybox:latest",
    labels: dict[str, str] | None = None,
    cpus: int = 0,
    nano_cpus: int = 0,
    memory: int = 0,
    ports: list[tuple[str, int, str]] | None = None,
    network_mode: str = "",
) -> ContainerInfo:
    n = next(_serial)
    return ContainerInfo(
        id=cid or f"{n:064x}",
        name=name or f"c{n}",
        image=image,
        image_id=f"sha256:{n:064x}",
        labels=labels or {},
        running=True,
        cpu_shares=cpus,
        nano_cpus=nano_cpus,
        memory=memory,
        host_ports=ports or [],
        network_mode=network_mode,
    )


def node(
    name: str,
    *,
    nid: str = "",
    labels: dict[str, str] | None = None,
    healthy: bool = True,
    ncpu: int = 4,
    memory: int = 8 * GIB,
    images: set[str] | None = None,
    containers: list[ContainerInfo] | None = None,
) -> NodeInfo:
    return NodeInfo(
        id=nid or f"ID-{name}",
        name=name,
        addr=f"{name}:7001",
        labels=labels or {},
        healthy=healthy,
        ncpu=ncpu,
        memory=memory,
        kernel_version="6.1.0-18-amd64",
        operating_system="Debian GNU/Linux 12 (bookworm)",
        os_type="linux",
        storage_driver="overlay2",
        images=images or set(),
        containers=containers or [],
    )


def body(
    *env: str,
    labels: dict[str, str] | None = None,
    **host: object,
) -> dict:
    b: dict = {"Image": "busybox", "Env": list(env), "HostConfig": dict(host)}
    if labels is not None:
        b["Labels"] = labels
    return b


def select(nodes: list[NodeInfo], b: dict, strategy: str = "spread", **kw: object) -> str:
    return Scheduler(strategy, **kw).select(nodes, b).name


def error(
    nodes: list[NodeInfo],
    b: dict,
    strategy: str = "spread",
    pins: dict[str, str] | None = None,
    **kw: object,
) -> str:
    with pytest.raises(SchedulingError) as info:
        Scheduler(strategy, **kw).select(nodes, b, pins)  # type: ignore[arg-type]
    assert info.value.status == 500
    assert str(info.value) == info.value.message
    return info.value.message


def ports(*specs: tuple[str, str]) -> dict:
    """PortBindings for ("80/tcp", "8080") pairs, HostIp "" unless given as "ip:port"."""
    bindings: dict[str, list[dict[str, str]]] = {}
    for key, host in specs:
        ip, _, port = host.rpartition(":")
        bindings.setdefault(key, []).append({"HostIp": ip, "HostPort": port})
    return bindings


# --- construction ---------------------------------------------------------------------------


def test_defaults_and_validation() -> None:
    s = Scheduler()
    assert s.strategy == "spread"
    assert s.filters == [
        "health",
        "port",
        "containerslots",
        "dependency",
        "affinity",
        "constraint",
        "whitelist",
    ]
    assert Scheduler("binpack", ["constraint", "health"]).filters == ["constraint", "health"]
    with pytest.raises(ValueError, match="^strategy not supported$"):
        Scheduler("fifo")
    with pytest.raises(ValueError, match="^filter not supported$"):
        Scheduler("spread", ["health", "bogus"])


def test_no_nodes() -> None:
    assert error([], body()) == "No nodes available in the cluster"


# --- expressions ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("name=node0", "One of operator ==, != is expected"),
        ("node", "One of operator ==, != is expected"),
        ("a==b", "Key 'a' is invalid"),
        ("1node==b", "Key '1node' is invalid"),
        ("no de==b", "Key 'no de' is invalid"),
        ("node==a,b", "Value 'a,b' is invalid"),
        ("node==a@b", "Value 'a@b' is invalid"),
        ("node==", "Value '' is invalid"),
        ("node==~", "Value '~' is invalid"),
    ],
)
def test_expression_parse_errors(expr: str, message: str) -> None:
    nodes = [node("node-1")]
    got = error(nodes, body(f"constraint:{expr}"))
    assert got == f"{COND}{SLOTS}\nerror from constraint filter: {message}"


def test_affinity_and_whitelist_parse_errors_name_their_filter() -> None:
    nodes = [node("node-1")]
    got = error(nodes, body("affinity:x=y"))
    assert got == f"{COND}{SLOTS}\nerror from affinity filter: One of operator ==, != is expected"
    got = error(nodes, body("whitelist:node==a,b"))
    assert got == f"{COND}{SLOTS}\nerror from whitelist filter: Value 'a,b' is invalid"


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("node==node1", {"node1"}),
        ("node!=node1", {"node2", "node10", "other"}),
        ("node==node*", {"node1", "node2", "node10"}),
        ("node==*1*", {"node1", "node10"}),
        ("node==/node[12]/", {"node1", "node2", "node10"}),  # regexes are unanchored
        ("node==/^node[12]$/", {"node1", "node2"}),
        ("node==/node\\d/", {"node1", "node2", "node10"}),
        ("node!=/node-[01]/", {"node1", "node2", "node10", "other"}),
        ("node==/(?i)NODE1/", {"node1", "node10"}),
        ("node==(?i)NODE1", {"node1"}),
        ("node==NODE1", set()),  # case-sensitive by default
        ("node==nod.1", {"node1"}),  # glob keeps regex characters other than *
        ("node==/no(de/", set()),  # a bad regex matches nothing
        ("node!=/no(de/", {"node1", "node2", "node10", "other"}),
        ("NODE==node1", {"node1"}),  # keys are case-insensitive
        ("node==ID-other", {"other"}),  # node matches the ID too
    ],
)
def test_expression_matching(expr: str, expected: set[str]) -> None:
    nodes = [node(n) for n in ("node1", "node2", "node10", "other")]
    s = Scheduler("spread", ["constraint"])
    got = set()
    for n in nodes:
        with contextlib.suppress(SchedulingError):
            got.add(s.select([n], body(f"constraint:{expr}"), None).name)
    assert got == expected


def test_soft_value_tilde_is_stripped_and_reported() -> None:
    nodes = [node("node-1", labels={"region": "eu"})]
    got = error(nodes, body("constraint:region==~us*", "constraint:node==node-9"))
    assert got == f"{COND}{SLOTS}\n[region==us* node==node-9]"
    nodes[0].containers.append(ctr("db1"))
    got = error(nodes, body("affinity:container==~web", "affinity:container!=db*"))
    assert "[container==web (soft=true) container!=db* (soft=false)]" in got


# --- parse_placement -------------------------------------------------------------------------


def test_parse_placement_moves_env_into_labels() -> None:
    original = {
        "Image": "busybox",
        "Env": [
            "A=1",
            "constraint:region==us-*",
            "affinity:container==web",
            "B=x:y",
            "whitelist:node==n1|n2",
            "constraint:node!=node-3",
            "reschedule:on-node-failure",
        ],
        "Labels": {"com.docker.swarm.constraints": '["disk==ssd"]', "keep": "me"},
    }
    snapshot = json.dumps(original)
    new = parse_placement(original)
    assert json.dumps(original) == snapshot  # input untouched
    assert new["Env"] == ["A=1", "B=x:y"]
    assert new["Labels"] == {
        "com.docker.swarm.constraints": '["disk==ssd","region==us-*","node!=node-3"]',
        "com.docker.swarm.affinities": '["container==web"]',
        "com.docker.swarm.whitelists": '["node==n1|n2"]',
        "com.docker.swarm.reschedule-policies": '["on-node-failure"]',
        "keep": "me",
    }
    assert parse_placement(new) == new  # idempotent


def test_parse_placement_without_hints_keeps_body() -> None:
    b = {"Image": "busybox", "Env": ["A=1"], "Labels": {"x": "y"}}
    assert parse_placement(b) == b
    assert parse_placement({"Image": "busybox"}) == {"Image": "busybox"}
    assert parse_placement({"Image": "busybox", "Env": None}) == {"Image": "busybox", "Env": []}


def test_parse_placement_ignores_bad_label_json() -> None:
    new = parse_placement(
        {"Env": ["constraint:a1==b"], "Labels": {"com.docker.swarm.constraints": "nope"}}
    )
    assert new["Labels"]["com.docker.swarm.constraints"] == '["a1==b"]'


def test_parse_placement_reschedule_validation() -> None:
    with pytest.raises(SchedulingError, match="^too many reschedule policies$"):
        parse_placement({"Env": ["reschedule:off", "reschedule:on-node-failure"]})
    with pytest.raises(SchedulingError, match="^invalid reschedule policy: always$"):
        parse_placement({"Env": ["reschedule:always"]})


def test_hints_from_labels_and_raw_env_both_apply() -> None:
    nodes = [node("node-1"), node("node-2")]
    labels = {"com.docker.swarm.constraints": '["node==node-2"]'}
    assert select(nodes, body(labels=labels)) == "node-2"
    assert select(nodes, body("constraint:node==node-2")) == "node-2"
    assert select(nodes, parse_placement(body("constraint:node==node-2"))) == "node-2"


# --- health ---------------------------------------------------------------------------------


def test_health_filter() -> None:
    nodes = [node("node-1", healthy=False), node("node-2")]
    assert select(nodes, body()) == "node-2"
    nodes[1].healthy = False
    assert error(nodes, body("constraint:node==x")) == "No healthy node available in the cluster"
    # Without the health filter an unhealthy node is still a candidate, ranked last.
    assert select(nodes, body(), filters=["constraint"]) == "node-1"
    nodes[0].containers.append(ctr())
    nodes[1].healthy = True
    assert select(nodes, body(), filters=["constraint"]) == "node-2"


# --- port -----------------------------------------------------------------------------------


def test_port_bridge_conflicts() -> None:
    n1 = node("node-1", containers=[ctr(ports=[("0.0.0.0", 80, "tcp")])])
    n2 = node("node-2", containers=[ctr(), ctr()])
    assert select([n1, n2], body(PortBindings=ports(("80/tcp", "80")))) == "node-2"
    assert select([n1, n2], body(PortBindings=ports(("80/udp", "80")))) == "node-1"
    assert select([n1, n2], body(PortBindings=ports(("80/tcp", "81")))) == "node-1"
    # Explicit IP against a wildcard binding clashes.
    assert select([n1, n2], body(PortBindings=ports(("80/tcp", "10.0.0.1:80")))) == "node-2"
    # Two explicit, different IPs do not.
    n3 = node("node-3", containers=[ctr(ports=[("10.0.0.1", 80, "tcp")])])
    assert select([n3], body(PortBindings=ports(("80/tcp", "10.0.0.2:80")))) == "node-3"
    with pytest.raises(SchedulingError):
        Scheduler().select([n3], body(PortBindings=ports(("80/tcp", "10.0.0.1:80"))), None)
    with pytest.raises(SchedulingError):
        Scheduler().select([n3], body(PortBindings=ports(("80/tcp", "0.0.0.0:80"))), None)


def test_port_without_host_port_is_not_filtered_but_listed() -> None:
    n1 = node("node-1", containers=[ctr(ports=[("0.0.0.0", 80, "tcp")])])
    assert select([n1], body(PortBindings=ports(("80/tcp", "")))) == "node-1"
    got = error([n1], body("constraint:node==x", PortBindings=ports(("80/tcp", ""))))
    assert got == f"{COND}\n[port  (Bridge mode)]{SLOTS}\n[node==x]"


def test_port_error_and_pending_counts() -> None:
    nodes = [node("node-1"), node("node-2")]
    s = Scheduler()
    b = body(PortBindings=ports(("80/tcp", "8080")))
    first = s.select(nodes, b, None)
    first.containers.append(ctr(ports=[("0.0.0.0", 8080, "tcp")]))  # pending create
    second = s.select(nodes, b, None)
    assert second is not first
    second.containers.append(ctr(ports=[("0.0.0.0", 8080, "tcp")]))
    assert error(nodes, b) == f"{COND}\n[port 8080 (Bridge mode)]"


def test_port_error_lists_every_binding() -> None:
    nodes = [node("node-1", containers=[ctr(ports=[("", 443, "tcp")])])]
    b = body(PortBindings=ports(("80/tcp", "80"), ("443/tcp", "443")))
    assert error(nodes, b) == f"{COND}\n[port 80 (Bridge mode) port 443 (Bridge mode)]"


def test_port_host_mode() -> None:
    n1 = node("node-1", containers=[ctr(ports=[("0.0.0.0", 80, "tcp")], network_mode="host")])
    n2 = node("node-2", containers=[ctr(), ctr()])
    b = body(NetworkMode="host")
    b["ExposedPorts"] = {"80/tcp": {}}
    assert select([n1, n2], b) == "node-2"
    assert error([n1], b) == f"{COND}\n[port 80/tcp (Host mode)]"
    b["ExposedPorts"] = {"80/udp": {}}
    assert select([n1, n2], b) == "node-1"


# --- containerslots ---------------------------------------------------------------------------


def test_containerslots() -> None:
    full = node("node-1", labels={"containerslots": "2"}, containers=[ctr(), ctr()])
    room = node("node-2", labels={"containerslots": "3"}, containers=[ctr(), ctr(), ctr()][:2])
    bogus = node("node-3", labels={"containerslots": "many"}, containers=[ctr()] * 5)
    assert select([full, room], body()) == "node-2"
    assert select([full, bogus], body()) == "node-3"
    assert error([full], body()) == f"{COND}{SLOTS}"
    b = body(PortBindings=ports(("80/tcp", "80")))
    assert error([full], b) == f"{COND}\n[port 80 (Bridge mode)]{SLOTS}"


# --- dependency -------------------------------------------------------------------------------


def test_dependency_filter() -> None:
    db = ctr("db", cid="f" * 64, labels={"com.docker.swarm.id": "s" * 64})
    data = ctr("/data")
    n1 = node("node-1", containers=[ctr(), ctr(), db, data])
    n2 = node("node-2")
    nodes = [n2, n1]
    assert select(nodes, body(Links=["db:database"])) == "node-1"
    assert select(nodes, body(Links=["/db:/web/db"])) == "node-1"
    assert select(nodes, body(VolumesFrom=["data:ro"])) == "node-1"
    assert select(nodes, body(NetworkMode="container:db")) == "node-1"
    assert select(nodes, body(NetworkMode="container:" + "f" * 12)) == "node-1"  # short ID
    assert select(nodes, body(NetworkMode="container:" + "f" * 64)) == "node-1"
    assert select(nodes, body(NetworkMode="container:ffff")) == "node-1"  # unique prefix
    assert select(nodes, body(Links=["s" * 64 + ":x"])) == "node-1"  # swarm ID
    assert select(nodes, body(Links=["node-1/db:x"])) == "node-1"
    assert select(nodes, body(IpcMode="container:db")) == "node-1"
    assert select(nodes, body(PidMode="container:data")) == "node-1"


def test_dependency_pins_win_over_per_node_lookup() -> None:
    """A name on one node beats an ID prefix on another once the caller pins the reference."""
    named = ctr("b1", cid="0" * 64)
    n1 = node("node-1", containers=[named])
    n2 = node("node-2", containers=[ctr("other", cid="b1" + "0" * 62)])
    b = body(Links=["b1:db"])
    assert Scheduler().select([n2, n1], b, {"b1": named.id}).name == "node-1"
    assert Scheduler().pipeline([n2, n1], b, {"b1": named.id}).name == "node-1"
    # A pin outranks the name and prefix lookups: a node without that container never passes.
    assert "[--link=b1:db]" in error([n1], body(Links=["b1:db"]), pins={"b1": "f" * 64})


def test_dependency_error() -> None:
    n1 = node("node-1", containers=[ctr("a")])
    n2 = node("node-2", containers=[ctr("b")])
    b = body(VolumesFrom=["a:ro"], Links=["b:alias"], NetworkMode="container:c")
    assert error([n1, n2], b) == (
        f"{COND}{SLOTS}\n[--volumes-from=a:ro --link=b:alias --net=container:c]"
    )
    assert error([n1], body(Links=["node-2/b:x"])) == f"{COND}{SLOTS}\n[--link=node-2/b:x]"
    b = body(IpcMode="container:a", PidMode="container:b")
    assert error([n1, n2], b) == f"{COND}{SLOTS}\n[--ipc=container:a --pid=container:b]"


# --- affinity ---------------------------------------------------------------------------------


def test_affinity_container() -> None:
    web = ctr("web", cid="a" * 64)
    n1 = node("node-1", containers=[web])
    n2 = node("node-2")
    nodes = [n2, n1]
    assert select(nodes, body("affinity:container==web")) == "node-1"
    assert select(nodes, body("affinity:container==" + "a" * 64)) == "node-1"
    assert select(nodes, body("affinity:container==aaaa*")) == "node-1"
    assert select(nodes, body("affinity:container==/^w.b$/")) == "node-1"
    assert select(nodes, body("affinity:container!=web")) == "node-2"
    got = error(nodes, body("affinity:container==" + "a" * 12))  # short IDs do not match
    assert got == f"{COND}{SLOTS}\n[container=={'a' * 12} (soft=false)]"
    # Pending containers count, and the cached identity set follows appends.
    n2.containers.append(ctr("cache"))
    assert select(nodes, body("affinity:container==cache")) == "node-2"


def test_affinity_image() -> None:
    n1 = node("node-1", images={"sha256:" + "b" * 64, "redis:latest", "reg.io:5000/app:1"})
    n2 = node("node-2", images={"busybox:latest"})
    nodes = [n2, n1]
    assert select(nodes, body("affinity:image==redis")) == "node-1"
    assert select(nodes, body("affinity:image==redis:latest")) == "node-1"
    assert select(nodes, body("affinity:image==sha256:" + "b" * 64)) == "node-1"
    assert select(nodes, body("affinity:image==reg.io:5000/app")) == "node-1"
    assert select(nodes, body("affinity:image!=redis")) == "node-2"
    n2.images = n2.images | {"redis:7"}
    n2.containers.append(ctr())
    assert select(nodes, body("affinity:image==redis")) == "node-1"
    n1.containers += [ctr(), ctr()]
    assert select(nodes, body("affinity:image==redis")) == "node-2"


def test_affinity_container_label() -> None:
    n1 = node("node-1", containers=[ctr(labels={"com.example.type": "frontend"})])
    n2 = node("node-2", containers=[ctr(labels={"other": "x"})])
    n3 = node("node-3")
    nodes = [n3, n2, n1]
    assert select(nodes, body("affinity:com.example.type==frontend")) == "node-1"
    assert select(nodes, body("affinity:com.example.type==front*")) == "node-1"
    # `!=`: nodes without any such container qualify (missing label counts as "").
    assert select(nodes, body("affinity:com.example.type!=frontend")) == "node-3"
    n3.containers.append(ctr(labels={"com.example.type": "frontend"}))
    n3.containers.append(ctr())
    got = error([n1, n3], body("affinity:test.label!=true", "affinity:com.example.type!=frontend"))
    assert got == (
        f"{COND}{SLOTS}\n[test.label!=true (soft=false) com.example.type!=frontend (soft=false)]"
    )


def test_affinity_soft_falls_back() -> None:
    nodes = [node("node-1"), node("node-2", containers=[ctr("redis")])]
    assert select(nodes, body("affinity:container==~redis")) == "node-2"
    assert select(nodes, body("affinity:container==~nope")) == "node-1"
    assert select(nodes, body("affinity:container!=~redis*")) == "node-1"
    # The hard expression still applies in the retry, and its error is the one reported.
    got = error(nodes, body("affinity:container==~nope", "affinity:image==nope"))
    assert got == f"{COND}{SLOTS}\n[container==nope (soft=true) image==nope (soft=false)]"


# --- constraint -------------------------------------------------------------------------------


def test_constraint_node_and_labels() -> None:
    n1 = node("node-1", labels={"region": "us-east", "disk": "ssd"})
    n2 = node("node-2", nid="XYZ", labels={"region": "eu-west"})
    nodes = [n1, n2]
    assert select(nodes, body("constraint:node==node-2")) == "node-2"
    assert select(nodes, body("constraint:node==XYZ")) == "node-2"
    assert select(nodes, body("constraint:node!=node-1")) == "node-2"
    assert select(nodes, body("constraint:region==eu*")) == "node-2"
    assert select(nodes, body("constraint:region!=us*")) == "node-2"
    assert select(nodes, body("constraint:disk!=ssd")) == "node-2"  # missing label is ""
    assert select(nodes, body("constraint:node==/node-[2-9]/")) == "node-2"
    assert select(nodes, body("constraint:region==us-east", "constraint:disk==ssd")) == "node-1"
    assert error(nodes, body("constraint:node==node-9")) == f"{COND}{SLOTS}\n[node==node-9]"


def test_constraint_builtins() -> None:
    n1 = node("node-1", labels={"storagedriver": "zfs"})  # a daemon label cannot override
    n2 = node("node-2")
    n2.storage_driver, n2.kernel_version = "btrfs", "5.10.0"
    n2.operating_system, n2.os_type = "Alpine Linux", "windows"
    nodes = [n1, n2]
    assert select(nodes, body("constraint:storagedriver==btrfs")) == "node-2"
    assert select(nodes, body("constraint:storagedriver==overlay2")) == "node-1"
    assert select(nodes, body("constraint:kernelversion==5.*")) == "node-2"
    assert select(nodes, body("constraint:operatingsystem==Alpine*")) == "node-2"
    assert select(nodes, body("constraint:ostype==windows")) == "node-2"
    assert select(nodes, body("constraint:ostype==/(linux)|(windows)/")) == "node-1"


def test_constraint_label_keys_are_lowercased() -> None:
    nodes = [node("node-1"), node("node-2", labels={"Zone": "a"})]
    assert select(nodes, body("constraint:ZONE==a")) == "node-2"


def test_constraint_soft() -> None:
    nodes = [node("node-1"), node("node-2", labels={"region": "us"})]
    assert select(nodes, body("constraint:region==~us")) == "node-2"
    assert select(nodes, body("constraint:region==~eu")) == "node-1"
    got = error(nodes, body("constraint:region==~eu", "constraint:node==node-9"))
    assert got == f"{COND}{SLOTS}\n[region==eu node==node-9]"


# --- whitelist --------------------------------------------------------------------------------


def test_whitelist() -> None:
    nodes = [node("node-0"), node("node-1"), node("node-2")]
    nodes[0].containers.append(ctr())
    assert select(nodes, body("whitelist:node==node-2")) == "node-2"
    assert select(nodes, body("whitelist:node==node-0|node-1")) == "node-1"
    assert select(nodes, body("whitelist:anything!=node-0")) == "node-0"  # key/op ignored
    assert error(nodes, body("whitelist:node==node-*")) == (  # no globs
        f"{COND}{SLOTS}\n[node==node-* (soft=false)]"
    )
    labels = {"com.docker.swarm.whitelists": '["node==node-2"]'}
    assert select(nodes, body(labels=labels)) == "node-2"


# --- implicit image affinity and volume placement -------------------------------------------


def test_implicit_image_affinity() -> None:
    img = "sha256:" + "c" * 64
    nodes = [node("node-0"), node("node-1", images={img, "mine:v1"}), node("node-2")]
    nodes[1].containers.extend([ctr(), ctr()])  # spread alone would avoid node-1
    for ref in ("mine:v1", "mine", img, "c" * 12):
        b = body()
        b["Image"] = ref
        assert select(nodes, with_image_affinity(b, nodes)) == "node-1", ref
    b = body()
    b["Image"] = "mine:v1"
    assert with_image_affinity(b, nodes)["Env"] == ["affinity:image==mine:v1"]
    assert b["Env"] == []  # the caller's body is left alone
    # Everywhere or nowhere: nothing added; a hard node constraint: Swarm adds nothing either.
    b["Image"] = "busybox"
    assert with_image_affinity(b, nodes) is b
    for n in nodes:
        n.images = {"busybox:latest"}
    assert with_image_affinity(b, nodes) is b
    nodes[1].images = {"mine:v1"}
    b = body("constraint:node==node-0")
    b["Image"] = "mine:v1"
    assert with_image_affinity(b, nodes) is b
    b = body("constraint:node==~node-0")  # a soft node hint does not count
    b["Image"] = "mine:v1"
    assert select(nodes, with_image_affinity(b, nodes)) == "node-1"
    # The node with the image is full: Swarm's retry with the affinity fails the same way.
    nodes[1].containers.append(ctr(memory=8 * GIB))
    b = body(Memory=GIB)
    b["Image"] = "mine:v1"
    assert (
        error(nodes, with_image_affinity(b, nodes))
        == "no resources available to schedule container"
    )


def test_eligible_lists_every_node_passing_the_filters() -> None:
    nodes = [node("node-0"), node("node-1"), node("node-2")]
    s = Scheduler()
    wl = {"com.docker.swarm.whitelists": '["node==node-0|node-2"]'}
    assert [n.name for n in s.eligible(nodes, {"Labels": wl})] == ["node-0", "node-2"]
    cs = {"com.docker.swarm.constraints": '["node!=node-1"]'}
    assert [n.name for n in s.eligible(nodes, {"Labels": cs})] == ["node-0", "node-2"]
    assert [n.name for n in s.eligible(nodes, {"Env": ["constraint:node==node-1"]})] == ["node-1"]
    assert len(s.eligible(nodes, {"Env": ["constraint:node==~nosuch"]})) == 3  # soft
    with pytest.raises(SchedulingError) as info:
        s.eligible(nodes, {"Labels": {"com.docker.swarm.whitelists": '["node==nosuch"]'}})
    assert info.value.message == f"{COND}{SLOTS}\n[node==nosuch (soft=false)]"


def test_composite_lists_every_filter_up_to_the_failing_one() -> None:
    nodes = [node("node-1", containers=[ctr("db")])]
    b = body(
        "affinity:container==db",
        "constraint:node==node-1",
        "whitelist:node==node-2",
        PortBindings=ports(("80/tcp", "80")),
        Links=["db:db"],
    )
    assert error(nodes, b) == (
        f"{COND}\n[port 80 (Bridge mode)]{SLOTS}\n[--link=db:db]"
        "\n[container==db (soft=false)]\n[node==node-1]\n[node==node-2 (soft=false)]"
    )
    # Conditions of filters after the failing one are not listed.
    b["Env"][1] = "constraint:node==node-9"
    assert error(nodes, b) == (
        f"{COND}\n[port 80 (Bridge mode)]{SLOTS}\n[--link=db:db]"
        "\n[container==db (soft=false)]\n[node==node-9]"
    )
    # Only configured filters are listed.
    assert error(nodes, b, filters=["constraint"]) == f"{COND}\n[node==node-9]"


# --- strategies -------------------------------------------------------------------------------


def place(s: Scheduler, nodes: list[NodeInfo], b: dict, count: int) -> dict[str, int]:
    host = b.get("HostConfig", {})
    for _ in range(count):
        chosen = s.select(nodes, b, None)
        chosen.containers.append(
            ctr(cpus=int(host.get("CpuShares", 0)), memory=int(host.get("Memory", 0)))
        )
    return {n.name: len(n.containers) for n in nodes}


def test_spread_fewest_containers_when_unreserved() -> None:
    # Swarm's spread_test: sizes are ignored without -m/-c.
    nodes = [node("small", ncpu=21, memory=64 * GIB), node("big", ncpu=42, memory=128 * GIB)]
    assert place(Scheduler(), nodes, body(), 60) == {"small": 30, "big": 30}


def test_spread_by_reserved_share() -> None:
    nodes = [node("small", ncpu=21, memory=64 * GIB), node("big", ncpu=42, memory=128 * GIB)]
    assert place(Scheduler(), nodes, body(CpuShares=1), 60) == {"small": 20, "big": 40}


def test_spread_stopped_and_pending_containers_count() -> None:
    stopped = ctr()
    stopped.running = False
    nodes = [node("node-1", containers=[stopped]), node("node-2")]
    assert select(nodes, body()) == "node-2"


def test_spread_prefers_lower_weight_then_fewer_containers() -> None:
    busy = node("busy", memory=4 * GIB, containers=[ctr(memory=2 * GIB)])
    idle = node("idle", memory=4 * GIB, containers=[ctr(), ctr(), ctr()])
    assert select([busy, idle], body(Memory=GIB)) == "idle"
    # Same weight: the node with fewer containers.
    a = node("a", containers=[ctr(), ctr()])
    b = node("b", containers=[ctr()])
    assert select([a, b], body(Memory=GIB)) == "b"


def test_binpack_fills_the_fullest_node_first() -> None:
    nodes = [node("node-1", ncpu=2, memory=2 * GIB), node("node-2", ncpu=2, memory=2 * GIB)]
    s = Scheduler("binpack")
    assert place(s, nodes, body(Memory=GIB // 2), 4) == {"node-1": 4, "node-2": 0}
    assert place(s, nodes, body(Memory=GIB // 2), 1) == {"node-1": 4, "node-2": 1}


def test_binpack_equal_weight_prefers_more_containers() -> None:
    nodes = [node("node-1", containers=[ctr()]), node("node-2", containers=[ctr(), ctr()])]
    assert select(nodes, body(), "binpack") == "node-2"
    assert select(nodes, body(Memory=MIB), "binpack") == "node-2"


def test_no_resources() -> None:
    nodes = [node("node-1", ncpu=4, memory=GIB)]
    msg = "no resources available to schedule container"
    assert error(nodes, body(Memory=2 * GIB)) == msg
    assert error(nodes, body(CpuShares=5)) == msg
    assert error(nodes, body(CpuShares=512)) == msg  # CpuShares means CPUs, as in Swarm
    assert error(nodes, body(Memory=2 * GIB), "binpack") == msg
    nodes[0].containers.append(ctr(memory=GIB))
    assert error(nodes, body(Memory=GIB // 10)) == msg


def test_overcommit_five_percent() -> None:
    n = node("node-1", ncpu=4, memory=100 * MIB)
    assert select([n], body(Memory=105 * MIB)) == "node-1"
    with pytest.raises(SchedulingError):
        Scheduler().select([n], body(Memory=106 * MIB), None)
    # Fewer than 20 CPUs: no extra CPU.
    with pytest.raises(SchedulingError):
        Scheduler().select([n], body(CpuShares=5), None)
    big = node("node-2", ncpu=20, memory=GIB)
    assert select([big], body(CpuShares=21)) == "node-2"
    assert error([n], body(Memory=101 * MIB), overcommit=0.0) == (
        "no resources available to schedule container"
    )


def test_nano_cpus_reserve_fractions() -> None:
    n = node("node-1", ncpu=1, memory=GIB, containers=[ctr(nano_cpus=600_000_000)])
    assert select([n], body(NanoCpus=400_000_000)) == "node-1"
    assert error([n], body(NanoCpus=500_000_000)) == "no resources available to schedule container"
    assert n.reserved_cpus() == 0.6
    assert n.reserved_memory() == 0


def test_random_strategy_ignores_resources() -> None:
    nodes = [node(f"node-{i}", memory=MIB) for i in range(4)]
    s = Scheduler("random", rng=random.Random(1))
    picks = {s.select(nodes, body(Memory=GIB), None).name for _ in range(50)}
    assert picks == {n.name for n in nodes}
    # Filters still apply.
    assert {s.select(nodes, body("constraint:node==node-3"), None).name for _ in range(5)} == {
        "node-3"
    }


def test_soft_retry_also_covers_strategy_errors() -> None:
    nodes = [node("small", memory=GIB), node("big", memory=8 * GIB)]
    assert select(nodes, body("constraint:node==~small", Memory=4 * GIB)) == "big"


# --- incremental usage ------------------------------------------------------------------------


def test_usage_follows_appends_removals_and_replacement() -> None:
    n = node("node-1", ncpu=4, memory=4 * GIB)
    assert n.reserved_memory() == 0
    a, b = ctr(memory=GIB, cpus=1), ctr(memory=2 * GIB)
    n.containers.append(a)
    assert (n.reserved_memory(), n.reserved_cpus()) == (GIB, 1.0)
    n.containers.append(b)
    assert n.reserved_memory() == 3 * GIB
    n.containers.remove(a)
    assert (n.reserved_memory(), n.reserved_cpus()) == (2 * GIB, 0.0)
    n.containers = [ctr(memory=MIB)]
    assert n.reserved_memory() == MIB
    n.containers.pop()
    n.containers.append(ctr(memory=2 * MIB))
    assert n.reserved_memory() == 2 * MIB
    n.containers.insert(0, ctr(memory=MIB))
    n.containers.append(ctr())
    assert n.reserved_memory() == 3 * MIB
    n.containers[0] = ctr(memory=5 * MIB)  # mid-list replacement needs invalidate()
    n.invalidate()
    assert n.reserved_memory() == 7 * MIB


def test_many_pending_creates_never_overcommit() -> None:
    nodes = [node(f"node-{i}", ncpu=2, memory=GIB) for i in range(3)]
    s = Scheduler()
    placed = 0
    with pytest.raises(SchedulingError, match="no resources"):
        while True:
            chosen = s.select(nodes, body(Memory=256 * MIB), None)
            chosen.containers.append(ctr(memory=256 * MIB))
            placed += 1
    assert placed == 12  # 4 per node: 1 GiB + 5 % fits 4 x 256 MiB, not 5
    assert all(n.reserved_memory() <= GIB for n in nodes)


# --- the fast path gives the pipeline's answers ----------------------------------------------


def random_body(rng: random.Random, names: list[str]) -> dict:
    env: list[str] = []
    host: dict = {}
    if rng.random() < 0.4:
        host["Memory"] = rng.choice([64, 256, 1024]) * MIB
    if rng.random() < 0.3:
        host["CpuShares"] = rng.choice([1, 2])
    if rng.random() < 0.3:
        host["PortBindings"] = ports(("80/tcp", str(rng.choice([80, 81, 82]))))
    if rng.random() < 0.1 and names:
        host["Links"] = [rng.choice(names) + ":x"]
    hints = [
        "constraint:region==eu",
        "constraint:region!=us",
        "constraint:region==~eu",
        "constraint:node==/node-[0-4]/",
        "affinity:image==redis",
        "affinity:image!=~redis",
        "affinity:tier==db",
        "affinity:tier!=~db",
        "affinity:container==~c1*",
        "whitelist:node==node-1|node-2|node-3",
    ]
    for _ in range(rng.choice([0, 0, 1, 2])):
        env.append(rng.choice(hints))
    return body(*env, **host)


@pytest.mark.parametrize("strategy", ["spread", "binpack"])
@pytest.mark.parametrize("seed", range(6))
def test_select_matches_pipeline(strategy: str, seed: int) -> None:
    rng = random.Random(seed)
    nodes = [
        node(
            f"node-{i}",
            ncpu=rng.choice([1, 2, 4]),
            memory=rng.choice([1, 2, 4]) * GIB,
            labels={"region": rng.choice(["eu", "us"])}
            | ({"containerslots": str(rng.choice([3, 6, 9]))} if rng.random() < 0.3 else {}),
            images={"redis:latest"} if rng.random() < 0.4 else {"busybox:latest"},
            healthy=rng.random() > 0.1,
        )
        for i in range(12)
    ]
    fast = Scheduler(strategy)
    slow = Scheduler(strategy)
    names: list[str] = []
    for step in range(150):
        b = random_body(rng, names)
        try:
            expected: NodeInfo | str = slow.pipeline(nodes, b)
        except SchedulingError as e:
            expected = e.message
        try:
            got: NodeInfo | str = fast.select(nodes, b, None)
        except SchedulingError as e:
            got = e.message
        if isinstance(expected, NodeInfo):
            assert got is expected, (step, b)
        else:
            assert got == expected, (step, b)
        if isinstance(got, NodeInfo):
            host = b["HostConfig"]
            bound = [
                ("", int(x["HostPort"]), "tcp")
                for x in host.get("PortBindings", {}).get("80/tcp", [])
            ]
            name = f"c{step}"
            names.append(name)
            got.containers.append(
                ctr(
                    name,
                    labels={"tier": rng.choice(["db", "web"])},
                    memory=host.get("Memory", 0),
                    cpus=host.get("CpuShares", 0),
                    ports=bound,
                )
            )
        # The cluster also changes in ways other than placements.
        if rng.random() < 0.1:
            victim = rng.choice(nodes)
            if victim.containers:
                victim.containers.pop(rng.randrange(len(victim.containers)))
        if rng.random() < 0.05:
            rng.choice(nodes).healthy = rng.random() < 0.7
        if rng.random() < 0.05:
            rng.choice(nodes).labels = {"region": rng.choice(["eu", "us"])}
        if rng.random() < 0.03:
            nodes = nodes[1:] + nodes[:1]  # a different order invalidates the index


def test_index_and_memo_follow_changes() -> None:
    nodes = [node("node-1"), node("node-2", containers=[ctr()])]
    s = Scheduler()
    soft = body("affinity:image==~redis")
    assert s.select(nodes, soft, None).name == "node-1"
    nodes[1].images.add("redis:latest")  # in place: seen through the image count
    assert s.select(nodes, soft, None).name == "node-2"
    label = body("affinity:tier==~db")
    assert s.select(nodes, label, None).name == "node-1"
    nodes[1].containers.append(ctr(labels={"tier": "db"}))
    assert s.select(nodes, label, None).name == "node-2"
    # In-place label edits need touch(); attribute assignment does not.
    assert s.select(nodes, body(), None).name == "node-1"
    nodes[0].labels["containerslots"] = "0"
    nodes[0].touch()
    assert s.select(nodes, body(), None).name == "node-2"
    nodes[0].labels = {}
    nodes[1].healthy = False
    assert s.select(nodes, body(), None).name == "node-1"
    # A new node list (or order) is picked up too.
    extra = node("node-3")
    assert s.select([extra, *nodes], body(), None).name == "node-3"


def test_containers_are_tracked_copies() -> None:
    mine = [ctr()]
    n = node("node-1", containers=mine)
    assert n.containers == mine and n.containers is not mine
    before = n._version
    n.containers.append(ctr())
    assert n._version > before
    n.containers = []
    assert n.reserved_memory() == 0 and len(n.containers) == 0
