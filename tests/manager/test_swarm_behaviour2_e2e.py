"""Issue 8's dockerd behaviours through the manager, end to end: a real 3-node dev cluster driven
by the real docker CLI (`--volumes-from`, `--net container:X`'s hostname, `docker attach` with
piped input, an empty `docker diff`, `HostConfig.Links`, ps/network filters, refusals).

One cluster serves the module; each test removes what it made, even when it fails.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from tests.fixtures import dev_cluster, docker

HEX64 = "0123456789abcdef" * 4


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, object]]:
    with dev_cluster(3) as nodes:
        yield nodes


def _rm(*refs: str) -> None:
    for ref in refs:
        docker("rm", "-f", "-v", ref, check=False)


def _rm_volumes(name: str) -> None:
    for full in docker("volume", "ls", "-q", "--filter", f"name={name}").stdout.split():
        docker("volume", "rm", "-f", full, check=False)


def _inspect(ref: str) -> dict[str, object]:
    doc: dict[str, object] = json.loads(docker("inspect", ref).stdout)[0]
    return doc


def _wait_exited(ref: str, deadline_s: float = 30) -> dict[str, object]:
    deadline = time.monotonic() + deadline_s
    while True:
        state = _inspect(ref)["State"]
        assert isinstance(state, dict)
        if state["Status"] == "exited" or time.monotonic() > deadline:
            return state
        time.sleep(0.2)


def test_volumes_from_shares_anonymous_and_named_volumes(cluster: dict[str, object]) -> None:
    try:
        docker(
            "run", "--name", "vf-owner", "-v", "/data", "-v", "vf-named:/named", "busybox",
            "sh", "-c", "echo anon > /data/a; echo named > /named/n",
        )  # fmt: skip
        res = docker(
            "run", "--rm", "--volumes-from", "vf-owner", "busybox",
            "sh", "-c", "cat /data/a /named/n; echo back > /data/b; echo back2 > /named/b",
        )  # fmt: skip
        assert res.stdout == "anon\nnamed\n"
        # Writes flowed back into the owner's volumes; `:ro` makes them read-only here.
        res = docker(
            "run", "--rm", "--volumes-from", "vf-owner:ro", "busybox",
            "sh", "-c", "cat /data/b /named/b; echo x > /data/c", check=False,
        )  # fmt: skip
        assert res.stdout == "back\nback2\n"
        assert res.returncode != 0 and "Read-only file system" in res.stderr
        docker("create", "--name", "vf-user", "--volumes-from", "vf-owner:rw", "busybox")
        owner = {m["Destination"]: m for m in _inspect("vf-owner")["Mounts"]}  # type: ignore[union-attr]
        user = {m["Destination"]: m for m in _inspect("vf-user")["Mounts"]}  # type: ignore[union-attr]
        assert {d: (m["Name"], m["RW"]) for d, m in user.items()} == {
            "/data": (owner["/data"]["Name"], True),
            "/named": ("vf-named", True),
        }
        assert _inspect("vf-user")["Node"] == _inspect("vf-owner")["Node"]
        res = docker("run", "--rm", "--volumes-from", "vf-nosuch", "busybox", "true", check=False)
        assert res.returncode != 0 and "vf-nosuch" in res.stderr
    finally:
        _rm("vf-user", "vf-owner")
        _rm_volumes("vf-named")


def test_net_container_shares_hostname_and_etc_files(cluster: dict[str, object]) -> None:
    try:
        docker(
            "run", "-d", "--name", "hn-base", "--hostname", "basehost", "busybox", "sleep", "300"
        )
        script = "hostname; cat /etc/hostname; echo $HOSTNAME"
        docker(
            "run",
            "--name",
            "hn-joined",
            "--net",
            "container:hn-base",
            "busybox",
            "sh",
            "-c",
            script,
        )
        assert docker("logs", "hn-joined").stdout == "basehost\nbasehost\nbasehost\n"
        assert _inspect("hn-joined")["Config"]["Hostname"] == "basehost"  # type: ignore[index]
        for path in ("/etc/hosts", "/etc/resolv.conf"):
            base = docker("exec", "hn-base", "cat", path).stdout
            joined = docker(
                "run", "--rm", "--net", "container:hn-base", "busybox", "cat", path
            ).stdout
            assert joined == base and base
    finally:
        _rm("hn-joined", "hn-base")


def test_attach_with_piped_input_returns_when_the_container_exits(
    cluster: dict[str, object],
) -> None:
    try:
        docker("run", "-di", "--name", "att-read", "busybox", "sh", "-c", "read l; echo got:$l")
        res = docker("attach", "att-read", stdin="input\n", timeout=30, check=False)
        assert res.returncode == 0, res.stderr
        assert _wait_exited("att-read")["ExitCode"] == 0
        assert docker("logs", "att-read").stdout == "got:input\n"
        # StdinOnce (`docker run -i` attached): the client's EOF closes the container's stdin.
        res = docker(
            "run", "-i", "--name", "att-once", "busybox", "cat", stdin="a\nb\n", timeout=30
        )
        assert res.stdout == "a\nb\n"
    finally:
        _rm("att-read", "att-once")


def test_diff_of_a_fresh_container_is_empty(cluster: dict[str, object]) -> None:
    try:
        docker("run", "--name", "diff-fresh", "busybox", "true")
        assert docker("diff", "diff-fresh").stdout == ""
        docker("run", "--name", "diff-changed", "busybox", "sh", "-c", "echo x > /etc/new")
        assert docker("diff", "diff-changed").stdout.splitlines() == ["C /etc", "A /etc/new"]
    finally:
        _rm("diff-fresh", "diff-changed")


def test_inspect_shows_links_as_dockerd(cluster: dict[str, object]) -> None:
    try:
        docker("run", "-d", "--name", "b1", "busybox", "sleep", "300")
        docker("run", "-d", "--name", "b2", "--link", "b1:foo", "busybox", "sleep", "300")
        assert _inspect("b2")["HostConfig"]["Links"] == ["/b1:/b2/foo"]  # type: ignore[index]
        assert _inspect("b1")["HostConfig"]["Links"] is None  # type: ignore[index]
    finally:
        _rm("b2", "b1")


def test_ps_status_and_is_task_filters(cluster: dict[str, object]) -> None:
    try:
        exited = docker("run", "--name", "ps-exited", "busybox", "true").stdout
        exited = _inspect("ps-exited")["Id"]  # type: ignore[assignment]
        running = docker(
            "run", "-d", "--name", "ps-running", "busybox", "sleep", "300"
        ).stdout.strip()
        task = docker(
            "run", "-d", "--name", "ps-task", "--label", "com.docker.swarm.task=", "busybox",
            "sleep", "300",
        ).stdout.strip()  # fmt: skip
        created = docker("create", "--name", "ps-created", "busybox").stdout.strip()

        def ps(*args: str) -> list[str]:
            out = docker("ps", "-q", "--no-trunc", "--filter", "name=ps-", *args).stdout
            return sorted(out.split())

        # A status filter implies --all, as in dockerd.
        assert ps("--filter", "status=exited") == [exited]
        assert ps("--filter", "status=created") == [created]
        assert ps("--filter", "status=running") == sorted([running, task])
        for state in ("restarting", "removing", "paused", "dead"):
            assert ps("--filter", f"status={state}") == []
        assert ps("--filter", "is-task=true") == [task]
        assert ps("--filter", "is-task=false") == [running]
        assert ps("-a", "--filter", "is-task=false") == sorted([exited, running, created])
        bad = docker("ps", "--filter", "status=x", check=False)
        assert bad.returncode == 1 and "Invalid filter 'status=x'" in bad.stderr
        bad = docker("ps", "--filter", "is-task=maybe", check=False)
        assert bad.returncode == 1 and "Invalid filter 'is-task=[maybe]'" in bad.stderr
    finally:
        _rm("ps-exited", "ps-running", "ps-task", "ps-created")


def test_network_ls_name_filter_matches_substrings(cluster: dict[str, object]) -> None:
    def names(value: str) -> list[str]:
        out = docker("network", "ls", "--format", "{{.Name}}", "--filter", f"name={value}")
        return sorted(out.stdout.split())

    bridges = ["node-0/bridge", "node-1/bridge", "node-2/bridge"]
    assert names("bridge") == bridges
    assert names("ridg") == bridges
    assert names("node-1/bridge") == ["node-1/bridge"]
    assert names("nosuchnet") == []


def test_refusals_worded_as_dockerd_and_swarm(cluster: dict[str, object]) -> None:
    before = sorted(docker("ps", "-aq", "--no-trunc").stdout.split())
    res = docker("run", "-d", HEX64, check=False)
    assert res.returncode != 0
    assert f"invalid repository name ({HEX64}), cannot specify 64-byte hexadecimal strings" in (
        res.stderr
    )
    res = docker(
        "run", "-d", "--volume-driver", "nosuch", "-v", "drv-vol:/x", "--name", "drv-ct",
        "busybox", "true", check=False,
    )  # fmt: skip
    assert res.returncode != 0
    assert 'create drv-vol: error looking up volume plugin nosuch: plugin "nosuch" not found' in (
        res.stderr
    )
    res = docker("volume", "create", "-d", "nosuch", "drv-vol2", check=False)
    assert res.returncode != 0
    assert 'create drv-vol2: error looking up volume plugin nosuch: plugin "nosuch" not found' in (
        res.stderr
    )
    # Nothing half-made: no container, no volume, and the name is free again.
    assert sorted(docker("ps", "-aq", "--no-trunc").stdout.split()) == before
    assert docker("volume", "ls", "-q", "--filter", "name=drv-vol").stdout == ""
    docker("create", "--name", "drv-ct", "busybox")
    _rm("drv-ct")
