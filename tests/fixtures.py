"""Test helpers shared by several test packages."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator, Sequence

from proto.docker.errors import DockerError
from runtime import image_transfer
from runtime.containers import EventSink, Runtime

SUBNET = "10.77.0.0/24"


@contextlib.asynccontextmanager
async def runtime_for_tests(
    busybox_tar: str, events: EventSink | None = None
) -> AsyncIterator[Runtime]:
    """A Runtime on a throwaway data root with busybox imported; afterwards every container is
    removed and nothing may be left: no mount, cgroup or netns file."""
    root = tempfile.mkdtemp(prefix="flt-rt-")
    node = f"t{secrets.token_hex(3)}"
    runtime = Runtime(
        root, node_name=node, bridge_name=f"flt{node}", bridge_subnet=SUBNET, events=events
    )
    await runtime.open()
    with open(busybox_tar, "rb") as f:
        image_transfer.import_tarball(runtime.images, f, "busybox:latest", ['CMD ["sh"]'])
    try:
        yield runtime
    finally:
        try:
            leaked = await remove_runtime(runtime)
            with open("/proc/self/mountinfo") as f:
                assert root not in f.read()
            assert leaked == []
            assert os.listdir(runtime.paths.netns) == []
        finally:
            shutil.rmtree(root, ignore_errors=True)


async def remove_runtime(runtime: Runtime) -> list[str]:
    """Remove every container of `runtime` (forced), close it, and remove its bridge and
    cgroup parent; its data root is left to the caller. Returns the container cgroups that the
    removals left behind (a leak the caller asserts on); they are deleted here all the same, also
    when a removal raised, so a failing test leaves nothing on the machine."""
    try:
        for rec in runtime.list():
            if not os.path.isdir(runtime.paths.container(rec.id)):
                continue  # removed by a second Runtime on the same root
            with contextlib.suppress(DockerError):
                await runtime.remove(rec.id, force=True)
    finally:
        leaked = runtime.cgroups.list_ids()
        for cid in leaked:
            with contextlib.suppress(OSError):
                runtime.cgroups.remove(cid)
        try:
            await runtime.close()
            await asyncio.to_thread(runtime.bridge.teardown)
        finally:
            runtime.cgroups.remove_parent()
    return leaked


DOCKER = shutil.which("docker") or "/usr/local/bin/docker"

_machine_netns_fd: int | None = None


def keep_machine_netns() -> None:
    """Hold the machine's network namespace open (before the session leaves it, conftest.py)."""
    global _machine_netns_fd
    if _machine_netns_fd is None:
        _machine_netns_fd = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)


def machine_netns() -> str:
    """A path for `nsenter --net=` to the machine's network namespace, for the rare test that
    needs the real network (the Debian mirror and PyPI, for a fresh install)."""
    if _machine_netns_fd is None:  # the session kept the machine's (FLOTILLA_TEST_HOST_NET=1)
        return f"/proc/{os.getpid()}/ns/net"
    return f"/proc/{os.getpid()}/fd/{_machine_netns_fd}"


def dev_cluster_skip_reason(need_docker: bool = True) -> str | None:
    """Why a dev-cluster test cannot run here (only one dev cluster fits on a machine).

    A skip for it is a failure in CI (tests/conftest.py): deploy/setup.sh installs etcd and the
    docker CLI."""
    from deploy import dev_network, devcluster, etcd

    try:
        etcd.find_etcd()
    except FileNotFoundError as e:
        return str(e)
    if need_docker and not os.path.exists(DOCKER):
        return "docker CLI not installed (deploy/setup.sh installs Debian's docker.io)"
    if devcluster.is_up() or dev_network.netns_list():
        if not devcluster.only_leftovers():
            return "a dev cluster is already up on this machine (flotilla dev down to remove it)"
        devcluster.down()  # the remains of a run killed half-way: nobody is using them
    return None


@contextlib.contextmanager
def dev_cluster(
    nodes: int,
    labels: dict[str, dict[str, str]] | None = None,
    need_docker: bool = True,
    manager_args: Sequence[str] = (),
    hollow: int = 0,
) -> Iterator[dict[str, object]]:
    """A real dev cluster (etcd, agents in netns, manager) taken down whatever happens; the
    docker CLI gets a config dir of its own. `manager_args`: more `flotilla manage` flags
    (`--strategy binpack`, `--filter health`), as Swarm's integration tests start theirs.
    `hollow`: that many hollow nodes besides (docs/scale.md)."""
    import pytest

    from deploy import devcluster

    reason = dev_cluster_skip_reason(need_docker)
    if reason:
        pytest.skip(reason)
    config = tempfile.mkdtemp(prefix="flt-docker-config-")
    os.environ["DOCKER_CONFIG"] = config
    try:
        yield devcluster.up(nodes, labels, timeout=60, manager_args=manager_args, hollow=hollow)
    finally:
        devcluster.down()
        os.environ.pop("DOCKER_CONFIG", None)
        shutil.rmtree(config, ignore_errors=True)


def docker(
    *args: str, check: bool = True, timeout: float = 60, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """The real docker CLI pointed at the dev cluster's manager."""
    from deploy import devcluster

    env = dict(os.environ, DOCKER_HOST=devcluster.docker_host())
    res = subprocess.run(
        [DOCKER, *args], capture_output=True, text=True, timeout=timeout, env=env, input=stdin
    )
    if check and res.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: rc={res.returncode}\n{res.stderr}")
    return res
