"""Runtime behaviours dockerd has and issue 8 asked for: `--volumes-from`, the hostname of a
`--net container:X` container, and a fresh container's empty `docker diff`."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from proto.docker.errors import NotFound
from runtime import container_fs
from runtime.containers import Runtime
from runtime.views import inspect
from tests.fixtures import runtime_for_tests
from tests.runtime.test_containers import run


@pytest.fixture
async def rt(busybox_tar: str) -> AsyncIterator[Runtime]:
    async with runtime_for_tests(busybox_tar) as runtime:
        yield runtime


async def test_volumes_from_shares_anonymous_and_named_volumes(rt: Runtime) -> None:
    owner = await rt.create(
        {
            "Image": "busybox",
            "Cmd": ["sh", "-c", "echo anon > /data/a; echo named > /named/n"],
            "Volumes": {"/data": {}},
            "HostConfig": {"Binds": ["vfnamed:/named"]},
        },
        name="owner",
    )
    await rt.start(owner.id)
    assert (await rt.wait(owner.id))["StatusCode"] == 0
    code, out, _ = await run(
        rt,
        ["sh", "-c", "cat /data/a /named/n; echo back > /data/b"],
        HostConfig={"VolumesFrom": ["owner"]},
    )
    assert (code, out) == (0, "anon\nnamed\n")
    _, out, _ = await run(rt, ["cat", "/data/b"], HostConfig={"VolumesFrom": ["owner:rw"]})
    assert out == "back\n"
    code, _, err = await run(
        rt, ["sh", "-c", "echo x > /data/c"], HostConfig={"VolumesFrom": ["owner:ro"]}
    )
    assert code != 0 and "Read-only file system" in err
    rec = await rt.create({"Image": "busybox", "HostConfig": {"VolumesFrom": ["owner:ro"]}})
    mounts = {m["Destination"]: m for m in inspect(rt, rec)["Mounts"]}
    owner_mounts = {m["Destination"]: m for m in inspect(rt, owner)["Mounts"]}
    assert mounts["/data"]["Name"] == owner_mounts["/data"]["Name"]
    assert (mounts["/named"]["Name"], mounts["/named"]["RW"]) == ("vfnamed", False)
    # The shared anonymous volume stays while its owner uses it.
    await rt.remove(rec.id, volumes=True)
    assert rt.volumes.exists(owner_mounts["/data"]["Name"])
    with pytest.raises(NotFound, match="No such container: nosuch"):
        await rt.create({"Image": "busybox", "HostConfig": {"VolumesFrom": ["nosuch"]}})


async def test_net_container_takes_the_other_containers_hostname(rt: Runtime) -> None:
    base = await rt.create(
        {"Image": "busybox", "Cmd": ["sleep", "30"], "Hostname": "basehost"}, name="hbase"
    )
    await rt.start(base.id)
    rec = await rt.create(
        {
            "Image": "busybox",
            "Cmd": ["sh", "-c", "hostname; cat /etc/hostname; echo $HOSTNAME; cat /etc/hosts"],
            "HostConfig": {"NetworkMode": "container:hbase"},
        }
    )
    await rt.start(rec.id)
    await rt.wait(rec.id)
    out = b"".join([e.data async for e in rt.logs(rec.id)]).decode().splitlines()
    assert out[:3] == ["basehost", "basehost", "basehost"]
    assert any(line.endswith("\tbasehost") for line in out[3:])
    view = inspect(rt, rec)
    assert view["Config"]["Hostname"] == "basehost"
    assert view["HostsPath"] == inspect(rt, base)["HostsPath"]


async def test_fresh_container_has_no_changes(rt: Runtime) -> None:
    rec = await rt.create({"Image": "busybox", "Cmd": ["true"]})
    await rt.start(rec.id)
    await rt.wait(rec.id)
    assert await container_fs.changes(rt, rec.id) == []
    rec = await rt.create({"Image": "busybox", "Cmd": ["sh", "-c", "echo x > /etc/new"]})
    await rt.start(rec.id)
    await rt.wait(rec.id)
    assert await container_fs.changes(rt, rec.id) == [
        {"Path": "/etc", "Kind": 0},
        {"Path": "/etc/new", "Kind": 1},
    ]


async def test_inspect_shows_links_with_full_names(rt: Runtime) -> None:
    target = await rt.create({"Image": "busybox", "Cmd": ["sleep", "30"]}, name="b1")
    await rt.start(target.id)
    rec = await rt.create(
        {"Image": "busybox", "Cmd": ["true"], "HostConfig": {"Links": ["b1:foo"]}}, name="b2"
    )
    assert inspect(rt, rec)["HostConfig"]["Links"] == ["/b1:/b2/foo"]
    assert inspect(rt, target)["HostConfig"]["Links"] is None


async def test_unknown_volume_driver_is_refused_before_anything_is_made(rt: Runtime) -> None:
    for body in (
        {"HostConfig": {"VolumeDriver": "nosuch", "Binds": ["drvvol:/x"]}},
        {"Volumes": {"/data": {}}, "HostConfig": {"VolumeDriver": "nosuch"}},
    ):
        with pytest.raises(
            NotFound, match='error looking up volume plugin nosuch: plugin "nosuch"'
        ):
            await rt.create({"Image": "busybox", **body}, name="drvct")
    assert rt.list() == [] and not rt.volumes.exists("drvvol")
    with pytest.raises(NotFound, match="^create drvvol: error looking up volume plugin nosuch"):
        await rt.create(
            {"Image": "busybox", "HostConfig": {"VolumeDriver": "nosuch", "Binds": ["drvvol:/x"]}}
        )
