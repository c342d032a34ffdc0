"""Test helpers shared by several test packages."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator

from proto.docker.errors import DockerError
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
        runtime.images.import_tarball(f, "busybox:latest", ['CMD ["sh"]'])
    try:
        yield runtime
    finally:
        for rec in runtime.list():
            if not os.path.isdir(runtime.paths.container(rec.id)):
                continue  # removed by a second Runtime on the same root
            with contextlib.suppress(DockerError):
                await runtime.remove(rec.id, force=True)
        await runtime.close()
        await asyncio.to_thread(runtime.bridge.teardown)
        runtime.cgroups.remove_parent()
        with open("/proc/self/mountinfo") as f:
            assert root not in f.read()
        assert runtime.cgroups.list_ids() == []
        assert os.listdir(runtime.paths.netns) == []
        shutil.rmtree(root, ignore_errors=True)


DOCKER = shutil.which("docker") or "/usr/local/bin/docker"


def dev_cluster_skip_reason(need_docker: bool = True) -> str | None:
    """Why a dev-cluster test cannot run here (only one dev cluster fits on a machine)."""
    from deploy import devcluster, etcd

    try:
        etcd.find_etcd()
    except FileNotFoundError as e:
        return str(e)
    if need_docker and not os.path.exists(DOCKER):
        return "docker CLI not installed"
    if devcluster.is_up() or devcluster._netns_list():
        return "a dev cluster is already up on this machine (flotilla dev down to remove it)"
    return None


@contextlib.contextmanager
def dev_cluster(
    nodes: int, labels: dict[str, dict[str, str]] | None = None, need_docker: bool = True
) -> Iterator[dict[str, object]]:
    """A real dev cluster (etcd, agents in netns, manager) taken down whatever happens; the
    docker CLI gets a config dir of its own."""
    import pytest

    from deploy import devcluster

    reason = dev_cluster_skip_reason(need_docker)
    if reason:
        pytest.skip(reason)
    config = tempfile.mkdtemp(prefix="flt-docker-config-")
    os.environ["DOCKER_CONFIG"] = config
    try:
        yield devcluster.up(nodes, labels, timeout=60)
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
