"""Device attacks through the real docker CLI and a dev cluster: the device cgroup is in force on
a node's containers, and `--device`, `--device-cgroup-rule`, `--privileged` and a bad rule
behave as with dockerd. The agents run on this machine, so a loop device here is a host device
of every node."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fixtures import dev_cluster, docker
from tests.runtime.test_devices import Loop, loop  # noqa: F401  (the loop fixture)


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, object]]:
    with dev_cluster(1) as nodes:
        yield nodes


def _attack(lp: Loop, *flags: str) -> str:
    script = f"mknod /dev/x b {lp.major} {lp.minor}; echo mknod=$?; head -c 64 /dev/x 2>&1; true"
    return docker("run", "--rm", *flags, "busybox", "sh", "-c", script).stdout


def test_device_cgroup_through_the_cli(cluster: dict[str, object], loop: Loop) -> None:  # noqa: F811
    out = _attack(loop)
    assert "mknod=0" in out and "Operation not permitted" in out, out
    assert loop.marker not in out
    assert loop.marker in _attack(loop, "--privileged")
    assert loop.marker in _attack(loop, "--device-cgroup-rule", f"b {loop.major}:{loop.minor} r")
    out = docker(
        "run", "--rm", "--device", f"{loop.path}:/dev/d:r", "busybox", "head", "-c", "64", "/dev/d"
    ).stdout
    assert loop.marker in out
    res = docker("run", "--rm", "--device", "/dev/flt-nope", "busybox", "true", check=False)
    assert res.returncode != 0
    assert (
        'error gathering device information while adding custom device "/dev/flt-nope": '
        "no such file or directory" in res.stderr
    ), res.stderr
