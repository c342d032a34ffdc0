"""Seccomp and the security options through the real docker CLI on a dev cluster: what the CLI
sends (`--security-opt seccomp=<file>` becomes the file's JSON) is applied on the node."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator

import docker as docker_py
import pytest

from deploy import devcluster as dc
from tests.fixtures import dev_cluster, docker
from tests.manager.swarm_compat import inspect, reset


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, object]]:
    with dev_cluster(1) as nodes:
        yield nodes


@pytest.fixture(autouse=True)
def clean(cluster: dict[str, object]) -> Iterator[None]:
    try:
        yield
    finally:
        reset(cluster)


def test_default_profile_and_unconfined() -> None:
    res = docker("run", "--rm", "busybox", "unshare", "-U", "true", check=False)
    assert res.returncode != 0 and "Operation not permitted" in res.stderr
    docker(
        "run", "--rm", "--security-opt", "seccomp=unconfined", "busybox", "unshare", "-U", "true"
    )


def test_profile_file() -> None:
    profile = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}],
    }
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(profile, f)
    try:
        res = docker(
            "run",
            "--rm",
            "--security-opt",
            f"seccomp={f.name}",
            "busybox",
            "mkdir",
            "/x",
            check=False,
        )
        assert res.returncode != 0 and "Operation not permitted" in res.stderr
    finally:
        os.unlink(f.name)


def test_options() -> None:
    res = docker("run", "--rm", "--cap-drop", "ALL", "busybox", "chown", "1", "/tmp", check=False)
    assert res.returncode != 0 and "Operation not permitted" in res.stderr
    res = docker("run", "--rm", "--read-only", "busybox", "touch", "/x", check=False)
    assert res.returncode != 0 and "Read-only file system" in res.stderr
    out = docker("run", "--rm", "--pid", "host", "busybox", "readlink", "/proc/self/ns/pid")
    assert out.stdout.strip() == os.readlink("/proc/self/ns/pid")
    out = docker(
        "run",
        "--rm",
        "--sysctl",
        "net.ipv4.ip_forward=1",
        "busybox",
        "cat",
        "/proc/sys/net/ipv4/ip_forward",
    )
    assert out.stdout.strip() == "1"
    # The CLI refuses sysctls outside its allow-list itself; this one only the runtime can.
    # (No --rm: the CLI then waits for a removal that a failed start does not make here.)
    res = docker(
        "run",
        "--net",
        "host",
        "--sysctl",
        "net.ipv4.ip_forward=1",
        "busybox",
        "true",
        check=False,
    )
    assert res.returncode != 0
    assert (
        "Error response from daemon: failed to create shim task: OCI runtime create failed: runc "
        'create failed: sysctl "net.ipv4.ip_forward" is not allowed in the hosts network '
        "namespace: unknown"
    ) in res.stderr
    # The CLI refuses a malformed --security-opt itself; another client's reaches the engine.
    client = docker_py.APIClient(base_url=dc.docker_host())
    try:
        with pytest.raises(docker_py.errors.APIError) as info:
            host_config = client.create_host_config(security_opt=["bogus"])
            client.create_container("busybox", ["true"], host_config=host_config)
        assert info.value.explanation == 'invalid --security-opt 1: "bogus"'
    finally:
        client.close()


def _shm_mounts(cid: str) -> list[str]:
    """The host's mounts of a container's shareable /dev/shm (`<bundle>/mounts/shm`)."""
    with open("/proc/self/mountinfo") as f:
        return [line for line in f if f"/{cid}/mounts/shm " in line]


def test_ipc_modes_and_dev_shm() -> None:
    donor = docker(
        "run", "-d", "--name", "donor", "--ipc", "shareable", "--shm-size", "8m",
        "busybox", "sleep", "500",
    ).stdout.strip()  # fmt: skip
    assert len(_shm_mounts(donor)) == 1
    docker("exec", "donor", "sh", "-c", "echo from-donor > /dev/shm/d")
    joiner = ["--ipc", "container:donor", "busybox", "sh", "-c"]
    script = "cat /dev/shm/d; echo from-joiner > /dev/shm/j; df -k /dev/shm | tail -1"
    out = docker("run", "--rm", *joiner, script).stdout.split("\n", 1)
    assert out[0] == "from-donor" and out[1].split()[1] == "8192"
    assert docker("exec", "donor", "cat", "/dev/shm/j").stdout == "from-joiner\n"
    docker("create", "--name", "joiner", "--ipc", "container:donor", "busybox", "true")
    host = {n: inspect(n)["HostConfig"] for n in ("donor", "joiner")}
    assert (host["donor"]["IpcMode"], host["donor"]["ShmSize"]) == ("shareable", 8 << 20)
    assert (host["joiner"]["IpcMode"], host["joiner"]["ShmSize"]) == ("container:donor", 64 << 20)
    docker("stop", "-t", "0", "donor")
    assert _shm_mounts(donor) == []
    # --ipc none: no /dev/shm at all.
    res = docker("run", "--rm", "--ipc", "none", "busybox", "ls", "/dev/shm", check=False)
    assert res.returncode != 0 and "/dev/shm: No such file or directory" in res.stderr
    # A private donor is refused in dockerd's words (no --rm: see test_options).
    private = docker("run", "-d", "--name", "private", "busybox", "sleep", "500").stdout.strip()
    res = docker("run", "--ipc", "container:private", "busybox", "true", check=False)
    assert res.returncode != 0
    assert (
        "Error response from daemon: can't join IPC of container private: non-shareable IPC "
        "(hint: use IpcMode:shareable for the donor container)"
    ) in res.stderr, res.stderr
    assert _shm_mounts(private) == []
