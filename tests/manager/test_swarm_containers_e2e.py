"""Classic Swarm's own container tests (docker/swarm test/integration/api/*.bats and
swarm_id.bats), re-expressed as docker CLI calls against a 2-node dev cluster. Each test names
the bats file and case it stands for; docs/swarm-compat.md has the whole map.

The last tests stop an agent (Swarm's "host down" cases), so they come last.
"""

from __future__ import annotations

import os
import subprocess
import tarfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from deploy import devcluster as dc
from tests.fixtures import DOCKER, dev_cluster, docker
from tests.manager.swarm_compat import (
    inspect,
    node_of,
    out,
    ps_ids,
    ps_names,
    reset,
    state_is,
    wait_for,
)

# api/info.bats starts its engines with `--label foo=bar`.
LABELS = {"node-0": {"foo": "bar"}, "node-1": {"foo": "bar"}}
HEX64 = "4e8aa3148a132f19ec560952231c4d39522043994df7d2dc239942c0f9424ebd"


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, object]]:
    with dev_cluster(2, LABELS) as nodes:
        yield nodes


@pytest.fixture(autouse=True)
def clean(cluster: dict[str, object]) -> Iterator[None]:
    yield
    reset(cluster)


def sleeper(name: str, *args: str, seconds: str = "500") -> str:
    return docker("run", "-d", "--name", name, *args, "busybox", "sleep", seconds).stdout.strip()


# --- create.bats, run.bats, start.bats ---------------------------------------------------------


def test_create() -> None:
    """create.bats "docker create"."""
    assert ps_ids("-a") == []
    docker("create", "--name", "test_container", "busybox", "sleep", "1000")
    assert [n.split("/")[1] for n in ps_names("-l")] == ["test_container"]


def test_create_conflict() -> None:
    """create.bats "docker create conflict": an ID prefix and a full ID are free names."""
    cid = docker("create", "busybox").stdout.strip()
    docker("create", "--name", cid[:4], "busybox")
    docker("create", "--name", cid, "busybox")
    docker("create", "--name", "test", "busybox")


def test_run() -> None:
    """run.bats "docker run" (its 64-hex half is test_run_64_hex_reference)."""
    assert ps_ids("-a") == []
    sleeper("test_container", seconds="100")
    assert state_is("test_container", "running")


def test_run_64_hex_reference() -> None:
    """run.bats "docker run": a 64-hex image reference is refused as dockerd words it."""
    res = docker("run", "-d", HEX64, check=False)
    assert res.returncode != 0
    assert "cannot specify 64-byte hexadecimal strings" in res.stderr


def test_run_with_autoremove() -> None:
    """run.bats "docker run with autoremove"."""
    sleeper("keep")
    for _ in range(3):
        assert docker("run", "--rm", "busybox", "echo", "hello").stdout == "hello\n"
    wait_for(lambda: len(ps_ids("-a")) == 1, what="--rm containers removed")


def test_run_with_resources() -> None:
    """run.bats "docker run with resources": every option reaches inspect."""
    docker(
        "run", "-d", "--name", "test_container",
        "--add-host=host-test:127.0.0.1", "--cap-add=NET_ADMIN", "--cap-drop=MKNOD",
        "--label=com.example.version=1.0", "--read-only=true", "--ulimit=nofile=10",
        "--device=/dev/loop0:/dev/loop0", "--ipc=host", "--pid=host", "--memory-swappiness=2",
        "--group-add=root", "--memory-reservation=100M", "--kernel-memory=100M",
        "--dns-opt=someDnsOption", "--stop-signal=SIGKILL",
        "busybox", "sleep", "1000",
    )  # fmt: skip
    assert state_is("test_container", "running")
    doc = inspect("test_container")
    host, config = doc["HostConfig"], doc["Config"]
    assert config["Labels"]["com.example.version"] == "1.0"
    assert host["ExtraHosts"] == ["host-test:127.0.0.1"]
    # dockerd (20.10+) keeps capabilities as CAP_*; Swarm's test matches a substring.
    assert "NET_ADMIN" in host["CapAdd"][0] and "MKNOD" in host["CapDrop"][0]
    assert host["ReadonlyRootfs"] is True
    assert [u["Name"] for u in host["Ulimits"]] == ["nofile"]
    assert host["Devices"][0]["PathOnHost"] == "/dev/loop0"
    assert host["IpcMode"] == "host" and host["PidMode"] == "host"
    assert host["MemorySwappiness"] == 2
    assert host["GroupAdd"] == ["root"]
    assert host["MemoryReservation"] == 104857600 and host["KernelMemory"] == 104857600
    assert host["DnsOptions"] == ["someDnsOption"]
    assert config["StopSignal"] == "SIGKILL"

    docker(
        "run", "-d", "--name", "test_container2", "--oom-score-adj=350", "--tmpfs=/tempfs:rw",
        "--device-read-iops=/dev/null:351", "--device-write-iops=/dev/null:352",
        "--device-read-bps=/dev/null:1mb", "--device-write-bps=/dev/null:2mb",
        "busybox", "sleep", "1000",
    )  # fmt: skip
    host = inspect("test_container2")["HostConfig"]
    assert host["OomScoreAdj"] == 350
    assert host["Tmpfs"] == {"/tempfs": "rw"}
    assert host["BlkioDeviceReadIOps"][0]["Rate"] == 351
    assert host["BlkioDeviceWriteIOps"][0]["Rate"] == 352
    assert host["BlkioDeviceReadBps"][0]["Rate"] == 1048576
    assert host["BlkioDeviceWriteBps"][0]["Rate"] == 2097152


def test_run_with_not_exist_volume_driver() -> None:
    """run.bats "docker run - with not exist volume driver"."""
    assert ps_ids("-a") == []
    res = docker(
        "run", "-d", "--volume-driver=not_exist_volume_driver", "-v", "testvolume:/testvolume",
        "--name", "test_container", "busybox", "sleep", "100", check=False,
    )  # fmt: skip
    assert res.returncode != 0 and "not found" in res.stderr.lower()
    assert ps_ids("-a") == []


def test_start() -> None:
    """start.bats "docker start"."""
    docker("create", "--name", "test_container", "busybox", "sleep", "1000")
    assert [n.split("/")[1] for n in ps_names("-l")] == ["test_container"]
    docker("start", "test_container")
    assert state_is("test_container", "running")


def test_containerslots_without_existing_label() -> None:
    """containerslots-filter.bats "containerslots without existing label": no limit."""
    for _ in range(5):
        docker("run", "-d", "-t", "busybox", "sh")
    assert len(ps_ids()) == 5


# --- attach.bats, swarm_id.bats ----------------------------------------------------------------


def test_attach() -> None:
    """attach.bats "docker attach": piped input reaches a running -i container."""
    docker("run", "-d", "-i", "--name", "test_container", "busybox", "sh", "-c",
           "head -n 1; echo output")  # fmt: skip
    docker("attach", "test_container", stdin="input\n", timeout=20)
    logs = docker("logs", "test_container").stdout
    assert "input" in logs and "output" in logs


def test_swarm_id_generation() -> None:
    """swarm_id.bats "swarm id generation": the label is 64 hex and a reference everywhere."""
    docker("run", "-d", "busybox", "true")
    cid = docker("run", "-d", "-i", "busybox", "sh", "-c", "head -n 1; echo output").stdout
    cid = cid.strip()
    swarm_id = inspect(cid)["Config"]["Labels"]["com.docker.swarm.id"]
    assert len(swarm_id) == 64 and swarm_id != cid
    assert inspect(swarm_id)["Id"] == cid
    docker("logs", swarm_id)
    docker("commit", swarm_id)
    docker("attach", swarm_id, stdin="input\n", timeout=20)
    assert ps_ids("-a", f"--filter=label=com.docker.swarm.id={swarm_id}") == [cid]


# --- commit, cp, diff, export, exec ------------------------------------------------------------


def test_commit() -> None:
    """commit.bats "docker commit"."""
    sleeper("test_container")
    assert [n.split("/")[1] for n in ps_names("-l")] == ["test_container"]
    assert "commit_image_busybox" not in docker("images").stdout
    docker("commit", "test_container", "commit_image_busybox")
    assert "commit_image_busybox" in docker("images").stdout


def test_cp(tmp_path: os.PathLike[str]) -> None:
    """cp.bats "docker cp": a file copied out has the checksum it has inside."""
    sleeper("test_container")
    assert state_is("test_container", "running")
    inside = docker("exec", "test_container", "md5sum", "/bin/busybox").stdout.split()[0]
    host_file = os.path.join(tmp_path, "busybox")
    assert not os.path.exists(host_file)
    docker("cp", "test_container:/bin/busybox", str(tmp_path))
    copied = subprocess.run(["md5sum", host_file], capture_output=True, text=True, check=True)
    assert copied.stdout.split()[0] == inside


def test_diff_of_fresh_container() -> None:
    """diff.bats "docker diff", first half: a fresh container has no changes."""
    sleeper("test_container")
    assert docker("diff", "test_container").stdout == ""


def test_diff() -> None:
    """diff.bats "docker diff", second half: a file made in the container is listed."""
    sleeper("test_container")
    docker("exec", "test_container", "touch", "/home/diff.txt")
    assert "diff.txt" in docker("diff", "test_container").stdout


def test_export(tmp_path: os.PathLike[str]) -> None:
    """export.bats "docker export": the output is a non-empty tar archive."""
    sleeper("test_container")
    assert [n.split("/")[1] for n in ps_names("-l")] == ["test_container"]
    path = os.path.join(tmp_path, "export.tar")
    with open(path, "wb") as f:
        env = dict(os.environ, DOCKER_HOST=dc.docker_host())
        subprocess.run([DOCKER, "export", "test_container"], stdout=f, env=env, check=True,
                       timeout=60)  # fmt: skip
    assert os.path.getsize(path) > 0 and tarfile.is_tarfile(path)


@pytest.mark.parametrize("detach", [False, True], ids=["exec", "exec-d"])
def test_exec(detach: bool) -> None:
    """exec.bats "docker exec" and "docker exec -d": refused while created, then runs."""
    flags = ["-d"] if detach else []
    docker("create", "--name", "test_container", "busybox", "sleep", "100")
    res = docker("exec", *flags, "test_container", "ls", check=False)
    assert res.returncode != 0 and "is not running" in res.stderr
    docker("start", "test_container")
    assert state_is("test_container", "running")
    res = docker("exec", *flags, "test_container", "echo", "foobar")
    assert res.stdout == ("" if detach else "foobar\n")


# --- inspect, kill, logs, pause, port, rename, restart, rm, stop, stats, top, update, wait -----


def test_inspect() -> None:
    """inspect.bats "docker inspect": env, hostname and Swarm's Node section."""
    sleeper("test_container", "-e", "TEST=true", "-h", "hostname.test")
    assert [n.split("/")[1] for n in ps_names("-l")] == ["test_container"]
    doc = inspect("test_container")
    assert "NetworkSettings" in doc and "TEST=true" in doc["Config"]["Env"]
    assert doc["Node"]["Name"].startswith("node-")
    assert doc["Config"]["Hostname"] == "hostname.test" and doc["Config"]["Domainname"] == ""


def test_inspect_format(cluster: dict[str, object]) -> None:
    """inspect.bats "docker inspect --format": Config.Image and Node.IP (the node's address;
    Swarm's test engines all listen on 127.0.0.1)."""
    sleeper("test_container")
    assert out("inspect", "--format={{.Config.Image}}", "test_container") == ["busybox"]
    ip = out("inspect", "--format={{.Node.IP}}", "test_container")
    assert ip == [dc.node_ip(dc.node_index(node_of("test_container")))]


def test_kill() -> None:
    """kill.bats "docker kill": exited, code 137."""
    sleeper("test_container", seconds="1000")
    assert state_is("test_container", "running")
    docker("kill", "test_container")
    assert state_is("test_container", "exited")
    assert out("inspect", "-f", "{{ .State.ExitCode }}", "test_container") == ["137"]


def test_logs() -> None:
    """logs.bats "docker logs"."""
    docker("run", "-d", "--name", "test_container", "busybox", "/bin/sh", "-c",
           "echo hello world; echo hello docker; echo hello swarm")  # fmt: skip
    assert [n.split("/")[1] for n in ps_names("-l", "-a")] == ["test_container"]
    docker("wait", "test_container")
    assert docker("logs", "test_container").stdout.splitlines() == [
        "hello world", "hello docker", "hello swarm",
    ]  # fmt: skip


def test_pause_unpause() -> None:
    """pause.bats "docker pause" and unpause.bats "docker unpause"."""
    sleeper("test_container", seconds="1000")
    assert state_is("test_container", "running")
    docker("pause", "test_container")
    assert state_is("test_container", "paused")
    docker("unpause", "test_container")
    assert state_is("test_container", "running")


def test_port() -> None:
    """port.bats "docker port"."""
    sleeper("test_container", "-p", "8000")
    assert state_is("test_container", "running")
    assert "8000" in docker("port", "test_container").stdout


def test_rename() -> None:
    """rename.bats "docker rename": a taken name is a Conflict, a free one renames."""
    sleeper("test_container")
    sleeper("another_container")
    names = {n.split("/")[1] for n in ps_names("-a")}
    assert names == {"test_container", "another_container"}
    res = docker("rename", "test_container", "another_container", check=False)
    assert res.returncode != 0 and "Conflict" in res.stderr
    docker("rename", "test_container", "rename_container")
    assert {n.split("/")[1] for n in ps_names("-a")} == {"rename_container", "another_container"}


def test_rename_conflict() -> None:
    """rename.bats "docker rename conflict": an ID prefix is a free name; after it, `test`
    is gone, so renaming it (to the other container's ID) fails."""
    cid = docker("create", "busybox").stdout.strip()
    docker("create", "--name", "test", "busybox")
    docker("rename", "test", cid[:4])
    res = docker("rename", "test", cid, check=False)
    assert res.returncode == 1 and "No such container: test" in res.stderr


def test_restart() -> None:
    """restart.bats "docker restart": running again, with a new StartedAt."""
    sleeper("test_container", seconds="1000")
    assert state_is("test_container", "running")
    started = inspect("test_container")["State"]["StartedAt"]
    docker("restart", "test_container")
    assert state_is("test_container", "running")
    assert inspect("test_container")["State"]["StartedAt"] != started


def test_rm() -> None:
    """rm.bats "docker rm"."""
    docker("create", "--name", "test_container", "busybox")
    assert [n.split("/")[1] for n in ps_names("-l")] == ["test_container"]
    docker("rm", "test_container")
    assert ps_ids("-a") == []


def test_rm_force() -> None:
    """rm.bats "docker rm -f": a running container needs -f."""
    sleeper("test_container")
    assert docker("rm", "test_container", check=False).returncode != 0
    docker("rm", "-f", "test_container")
    assert ps_ids("-a") == []


def test_stop() -> None:
    """stop.bats "docker stop"."""
    sleeper("test_container")
    docker("stop", "test_container")
    assert state_is("test_container", "exited")


def test_stats() -> None:
    """stats.bats "docker stats": the table has its CPU/memory columns."""
    sleeper("test_container", seconds="50")
    head = docker("stats", "--no-stream", "test_container").stdout.splitlines()[0]
    assert "CPU %" in head and "MEM USAGE" in head and "LIMIT" in head


def test_top() -> None:
    """top.bats "docker top"."""
    sleeper("test_container")
    lines = docker("top", "test_container").stdout.splitlines()
    assert "PID" in lines[0] or "UID" in lines[0]
    assert "CMD" in lines[0] or "COMMAND" in lines[0]
    assert "sleep 500" in lines[1]


def test_update() -> None:
    """update.bats "docker update": limits in inspect and the node's reserved memory."""
    docker("run", "-d", "--name", "test_container", "-m=10M", "--cpu-period=50000",
           "--cpu-quota=25000", "--blkio-weight=300", "busybox", "sleep", "100")  # fmt: skip
    host = inspect("test_container")["HostConfig"]
    assert (host["Memory"], host["CpuPeriod"], host["CpuQuota"], host["BlkioWeight"]) == (
        10485760, 50000, 25000, 300,
    )  # fmt: skip
    assert "Reserved Memory: 10 MiB" in docker("info").stdout
    docker("update", "-m=100M", "--cpu-period=50000", "--cpu-quota=5000", "--blkio-weight=600",
           "test_container")  # fmt: skip
    host = inspect("test_container")["HostConfig"]
    assert (host["Memory"], host["CpuQuota"], host["BlkioWeight"]) == (104857600, 5000, 600)
    assert "Reserved Memory: 100 MiB" in docker("info").stdout


def test_wait() -> None:
    """wait.bats "docker wait"."""
    sleeper("test_container", seconds="1")
    assert docker("wait", "test_container", timeout=5).stdout == "0\n"


# --- ps.bats ------------------------------------------------------------------------------------


def test_ps_n() -> None:
    """ps.bats "docker ps -n": the last N containers, whatever their state."""
    docker("run", "-d", "busybox", "sleep", "42")
    docker("run", "-d", "busybox", "false")
    assert len(ps_ids("-n", "3")) == 2
    docker("run", "-d", "busybox", "true")
    assert len(ps_ids("-n", "3")) == 3
    docker("run", "-d", "busybox", "true")
    assert len(ps_ids("-n", "3")) == 3


def test_ps_l() -> None:
    """ps.bats "docker ps -l": the newest container only."""
    docker("run", "-d", "busybox", "sleep", "42")
    time.sleep(1)  # Swarm's test: distinct creation seconds
    docker("run", "-d", "busybox", "true")
    lines = docker("ps", "-l").stdout.splitlines()
    assert len(lines) == 2 and '"true"' in lines[1]
    time.sleep(1)
    docker("run", "-d", "busybox", "false")
    lines = docker("ps", "-l").stdout.splitlines()
    assert len(lines) == 2 and '"false"' in lines[1]


def three_labelled() -> tuple[str, str, str]:
    first = docker("run", "-d", "--name", "name1", "--label", "match=me", "--label",
                   "second=tag", "busybox", "sleep", "10000").stdout.strip()  # fmt: skip
    second = docker("run", "-d", "--name", "name2", "--label", "match=me too", "busybox",
                    "true").stdout.strip()  # fmt: skip
    docker("wait", second)
    third = docker("run", "-d", "--name", "name3", "--label", "nomatch=me", "busybox",
                   "false").stdout.strip()  # fmt: skip
    docker("wait", third)
    return first, second, third


def test_ps_filter_status() -> None:
    """ps.bats "docker ps --filter", its status=exited/running half."""
    first, second, third = three_labelled()
    assert sorted(ps_ids("--filter=status=exited")) == sorted([second, third])
    assert ps_ids("-a", "--filter=status=running") == [first]


def test_ps_filter() -> None:
    """ps.bats "docker ps --filter", its id/name/exited/label half."""
    first, second, third = three_labelled()
    assert ps_ids("-a", f"--filter=id={second}") == [second]
    assert ps_ids("-a", "--filter=id=bogusID") == []
    assert ps_ids("-a", "--filter=name=name3") == [third]
    assert ps_ids("-a", "--filter=name=badname") == []
    assert ps_ids("-a", "--filter=exited=0") == [second]
    assert ps_ids("-a", "--filter=exited=1") == [third]
    assert ps_ids("-a", "--filter=exited=99") == []
    assert ps_ids("-a", "--filter=label=match=me") == [first]
    assert ps_ids("-a", "--filter=label=match=me", "--filter=label=second=tag") == [first]
    assert ps_ids("-a", "--filter=label=match=me", "--filter=label=second=tag-no") == []
    assert sorted(ps_ids("-a", "--filter=label=match")) == sorted([first, second])


def test_ps_filter_node() -> None:
    """ps.bats "docker ps --filter node"."""
    sleeper("c1", "-e", "constraint:node==node-0", seconds="100")
    sleeper("c2", "-e", "constraint:node==node-1", seconds="100")
    assert ps_names("--filter", "node=node-0") == ["node-0/c1"]


def test_ps_filter_volume() -> None:
    """ps.bats "docker ps --filter volume": by volume name or by mount point."""
    sleeper("c1", "-e", "constraint:node==node-0", "-v", "test_volume1:/abc", seconds="100")
    sleeper("c2", "-e", "constraint:node==node-1", "-v", "test_volume2:/def", seconds="100")
    sleeper("c3", "-e", "constraint:node==node-1", "-v", "test_volume3:/ghi", seconds="100")
    names = ps_names("--filter", "volume=test_volume1", "--filter", "volume=/def")
    assert sorted(names) == ["node-0/c1", "node-1/c2"]


def test_ps_filter_is_task() -> None:
    """ps.bats "docker ps --filter is-task"."""
    sleeper("c1", "-e", "constraint:node==node-0", "--label", "com.docker.swarm.task=",
            seconds="100")  # fmt: skip
    sleeper("c2", "-e", "constraint:node==node-1", seconds="100")
    assert ps_names("--filter", "is-task=true") == ["node-0/c1"]
    assert ps_names("--filter", "is-task=false") == ["node-1/c2"]


def test_ps_filter_health() -> None:
    """ps.bats "docker ps --filter health": starting, then healthy/unhealthy/none."""
    sleeper("c1", "-e", "constraint:node==node-0", "--health-cmd", "true", seconds="100")
    sleeper("c2", "-e", "constraint:node==node-1", "--health-cmd", "false", seconds="100")
    sleeper("c3", "-e", "constraint:node==node-1", seconds="100")
    assert sorted(ps_names("--filter", "health=starting")) == ["node-0/c1", "node-1/c2"]
    wait_for(lambda: "unhealthy" in docker("ps").stdout, timeout=120, what="c2 unhealthy")
    assert ps_names("--filter", "health=healthy") == ["node-0/c1"]
    assert ps_names("--filter", "health=unhealthy") == ["node-1/c2"]
    assert ps_names("--filter", "health=none") == ["node-1/c3"]


# --- info.bats, version.bats, events.bats -------------------------------------------------------


def test_info() -> None:
    """info.bats "docker info": node count and each node's engine labels."""
    info = docker("info").stdout
    assert "Nodes: 2" in info
    labels = [line for line in info.splitlines() if "└ Labels:" in line]
    assert len(labels) == 2 and all("foo=bar" in line for line in labels)


def test_info_details() -> None:
    """info.bats "docker info - details": running/paused/stopped counts."""
    sleeper("test", seconds="100")
    info = docker("info").stdout
    assert "Running: 1" in info and "Containers: 1 (1 Running, 0 Paused, 0 Stopped)" in info
    docker("pause", "test")
    info = docker("info").stdout
    assert "Paused: 1" in info and "Containers: 1 (0 Running, 1 Paused, 0 Stopped)" in info
    docker("unpause", "test")
    docker("kill", "test")
    info = docker("info").stdout
    assert "Stopped: 1" in info and "Containers: 1 (0 Running, 0 Paused, 1 Stopped)" in info


def test_version() -> None:
    """version.bats "docker version": the server names itself `<product>/<version>` as Swarm
    does (`swarm/1.2.9`); the product here is flotilla."""
    server = docker("version", "--format", "{{.Server.Version}}").stdout.strip()
    assert server.startswith("flotilla/"), server


def test_events() -> None:
    """events.bats "docker events": create, start and die of a run on node-0, live."""
    env = dict(os.environ, DOCKER_HOST=dc.docker_host())
    with subprocess.Popen([DOCKER, "events"], stdout=subprocess.PIPE, text=True, env=env) as proc:
        try:
            time.sleep(1)  # the subscription is open before the run
            docker("run", "-d", "--name", "test_container", "-e", "constraint:node==node-0",
                   "busybox", "true")  # fmt: skip
            lines: list[str] = []
            assert proc.stdout is not None
            deadline = time.monotonic() + 20
            while not any(" die " in line for line in lines):
                assert time.monotonic() < deadline, lines
                lines.append(proc.stdout.readline())
        finally:
            proc.terminate()
    text = "".join(lines)
    assert len(lines) >= 3 and "node-0" in text
    assert all(f" {action} " in text for action in ("create", "start", "die"))


def test_events_until() -> None:
    """events.bats "docker events until": an `until` in the past ends at once, empty."""
    past = str(int(time.time()) - 1)
    res = docker("events", "--until", past, timeout=20)
    docker("run", "--name", "test_container", "-e", "constraint:node==node-0", "busybox", "true")
    assert res.stdout == ""


# --- agent down and etcd down: last, they stop node-0's agent or etcd ----------------------------
# Swarm's tests stop a dockerd that stays in its static node list, so Swarm shows the engine as
# Unhealthy. A flotilla node is in the cluster while its agent holds its etcd lease, as an engine
# is with Swarm's etcd discovery (discovery/etcd.bats "node removal"): a stopped agent's node
# leaves `docker info`, so these wait for that instead of for "Unhealthy" (docs/swarm-compat.md).


def test_ps_host_down() -> None:
    """ps.bats "docker ps - host down": the down node's containers leave `ps`; `ps -a` still
    lists them ("Host Down")."""
    sleeper("c0", "-e", "constraint:node==node-0", seconds="300")
    sleeper("c1", "-e", "constraint:node==node-1", seconds="300")
    assert len(ps_ids()) == 2
    dc.stop("node-0")
    try:
        dc.wait_unregistered("node-0")
        assert ps_names() == ["node-1/c1"]
        assert sorted(ps_names("-a")) == ["node-0/c0", "node-1/c1"]
        status = docker("ps", "-a", "--filter", "name=c0", "--format", "{{.Status}}").stdout
        assert status == "Host Down\n"
    finally:
        dc.start("node-0")
    assert sorted(ps_names()) == ["node-0/c0", "node-1/c1"]


def test_logs_unhealthy_node() -> None:
    """logs.bats "docker logs unhealthy node": Swarm's error for a container it cannot reach."""
    docker("run", "-d", "--name", "test_container", "-e", "constraint:node==node-0", "busybox",
           "/bin/sh", "-c", "echo hello world; echo hello docker; echo hello swarm")  # fmt: skip
    dc.stop("node-0")
    try:
        dc.wait_unregistered("node-0")
        res = docker("logs", "test_container", check=False)
        assert res.returncode == 1
        assert "Container test_container running on unhealthy node node-0" in res.stderr
    finally:
        dc.start("node-0")
    assert "hello swarm" in docker("logs", "test_container").stdout  # reachable again


def test_etcd_discovery_failure() -> None:
    """discovery/etcd.bats "etcd discovery: failure": a manager started while its etcd is down
    comes up, and sees the nodes, once etcd is back."""
    dc.stop_manager()
    dc.stop_etcd()
    try:
        with ThreadPoolExecutor(1) as pool:
            manager = pool.submit(dc.start_manager, (), 90)
            time.sleep(3)
            assert not dc.manager_healthy()  # still waiting for etcd
            dc.start_etcd()
            manager.result(timeout=120)
        wait_for(lambda: "Nodes: 2" in docker("info").stdout, timeout=30, what="2 nodes seen")
    finally:
        if not dc.status().etcd:
            dc.start_etcd()
        if not dc.manager_healthy():
            dc.stop_manager()
            dc.start_manager()
    sleeper("after_outage", "-e", "constraint:node==node-1")
    assert node_of("after_outage") == "node-1"
