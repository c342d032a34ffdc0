"""/dev/shm for each `--ipc` mode, through the runtime with real containers: private and none,
a shareable donor's host tmpfs shared with its joiners (both ways), a donor that stops or
restarts under a running joiner, a runtime restart in between, and `--ipc host`."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import struct
from collections.abc import AsyncIterator
from typing import Any

import pytest

from proto.docker.errors import DockerError
from runtime import config as cfg
from runtime import shm
from runtime.containers import Runtime
from runtime.launch import MountSpec
from runtime.views import inspect
from tests.fixtures import runtime_for_tests
from tests.runtime.test_containers import reopen, run

NOT_SHAREABLE = "non-shareable IPC (hint: use IpcMode:shareable for the donor container)"


@pytest.fixture
async def rt(busybox_tar: str) -> AsyncIterator[Runtime]:
    async with runtime_for_tests(busybox_tar) as runtime:
        yield runtime


async def sleeper(rt: Runtime, **host: Any) -> str:
    rec = await rt.create({"Image": "busybox", "Cmd": ["sleep", "60"], "HostConfig": host})
    await rt.start(rec.id)
    return rec.id


async def exec_sh(rt: Runtime, cid: str, script: str, user: str = "") -> str:
    """stdout and stderr of `sh -c script` run in the container."""
    body = {"Cmd": ["sh", "-c", script], "AttachStdout": True, "AttachStderr": True, "User": user}
    eid = rt.execs.create(cid, body)
    streams = await rt.execs.start(eid)
    assert streams is not None
    data = await asyncio.wait_for(streams[0].read(), 10)
    out = b""
    while len(data) >= 8:  # Docker's multiplexed frames: 8-byte header, then the payload
        size = struct.unpack(">I", data[4:8])[0]
        out, data = out + data[8 : 8 + size], data[8 + size :]
    await asyncio.wait_for(rt.execs.get(eid).done.wait(), 10)
    return out.decode()


def host_mounts_at(path: str) -> list[str]:
    """This (the host's) mount namespace's mountinfo lines for mounts on `path`."""
    with open("/proc/self/mountinfo") as f:
        return [line for line in f if line.split()[4:5] == [path]]


def shm_line(mountinfo: str) -> str:
    lines = [line for line in mountinfo.splitlines() if line.split()[4:5] == ["/dev/shm"]]
    assert len(lines) == 1, mountinfo
    return lines[0]


def parse(**host: Any) -> Any:
    body = {"Image": "busybox", "Cmd": ["true"], "HostConfig": host}
    return cfg.parse_create(
        body, {"config": {"Cmd": ["sh"], "Env": None, "Labels": None}}, "c" * 64
    )


# ---------------------------------------------------------------- what each mode asks for


def test_setup_per_mode_without_host_mounts(tmp_path: Any) -> None:
    bundle = str(tmp_path)
    flags = ["nosuid", "nodev", "noexec"]
    own = MountSpec("shm", "/dev/shm", "tmpfs", flags, f"mode=1777,size={64 << 20}")
    assert shm.setup(parse(), bundle, "", []) == (own, "")
    small = MountSpec("shm", "/dev/shm", "tmpfs", flags, "mode=1777,size=1048576")
    assert shm.setup(parse(ShmSize=1 << 20), bundle, "", []) == (small, "")
    assert shm.setup(parse(IpcMode="none"), bundle, "", []) == (None, "")
    host = MountSpec("/dev/shm", "/dev/shm", "bind", ["rbind", "rprivate"])
    assert shm.setup(parse(IpcMode="host"), bundle, "", []) == (host, "/dev/shm")
    joined = MountSpec("/donor/shm", "/dev/shm", "bind", ["rbind", "rprivate"])
    assert shm.setup(parse(IpcMode="container:x"), bundle, "/donor/shm", []) == (
        joined,
        "/donor/shm",
    )
    # A user's mount at /dev/shm is the container's /dev/shm: nothing of ours, and a
    # shareable container with one has nothing to share (dockerd's HasMountFor).
    for user in ({"Tmpfs": {"/dev/shm/": "size=1m"}}, {"Binds": [f"{bundle}:/dev/shm"]}):
        assert shm.setup(parse(**user), bundle, "", []) == (None, "")
        assert shm.setup(parse(IpcMode="shareable", **user), bundle, "", []) == (None, "")
    inherited = [{"Destination": "/dev/shm", "Type": "volume", "Name": "v", "RW": True}]
    assert shm.setup(parse(IpcMode="shareable"), bundle, "", inherited) == (None, "")
    assert not os.path.exists(shm.host_dir(bundle))


# ---------------------------------------------------------------- private, none, host


async def test_private_shm_is_own_tmpfs_of_shm_size(rt: Runtime) -> None:
    script = "stat -c %a /dev/shm; cat /proc/self/mountinfo"
    code, out, _ = await run(rt, ["sh", "-c", script], HostConfig={"ShmSize": 8 << 20})
    assert code == 0 and out.startswith("1777\n")
    fields = shm_line(out).split()
    assert {"nosuid", "nodev", "noexec"} <= set(fields[5].split(","))
    assert fields[-3:-1] == ["tmpfs", "shm"] and "size=8192k" in fields[-1], fields
    code, out, _ = await run(rt, ["cat", "/proc/self/mountinfo"])
    assert "size=65536k" in shm_line(out)
    # Writable by any user, as dockerd's, also with a read-only root.
    script = ["sh", "-c", "echo x > /dev/shm/f && cat /dev/shm/f"]
    for mode in ("private", "shareable"):
        host = {"IpcMode": mode, "ReadonlyRootfs": True}
        assert await run(rt, script, User="1", HostConfig=host) == (0, "x\n", "")
    # Nothing of it on the host, and nothing to share.
    cid = await sleeper(rt)
    with open("/proc/self/mountinfo") as f:
        assert rt.paths.container(cid) not in f.read()
    assert rt.get(cid).shm_path == "" and not os.path.exists(shm.host_dir(rt.paths.container(cid)))


async def test_ipc_none_has_no_dev_shm(rt: Runtime) -> None:
    script = "cat /proc/self/mountinfo; ls -d /dev/shm 2>&1; readlink /proc/self/ns/ipc"
    code, out, _ = await run(rt, ["sh", "-c", script], HostConfig={"IpcMode": "none"})
    assert code == 0
    assert not [line for line in out.splitlines() if " /dev/shm " in line], out
    assert "ls: /dev/shm: No such file or directory" in out
    assert out.split()[-1] != os.readlink("/proc/self/ns/ipc")  # its own namespace
    assert " /dev/mqueue " in out  # only /dev/shm goes, as with dockerd


async def test_ipc_host_binds_host_dev_shm(rt: Runtime) -> None:
    name = f"flt-ipc-{secrets.token_hex(4)}"
    with open(f"/dev/shm/{name}", "w") as f:
        f.write("from host\n")
    try:
        cmd = ["sh", "-c", f"cat /dev/shm/{name}; echo back > /dev/shm/{name}.2"]
        code, out, _ = await run(rt, cmd, HostConfig={"IpcMode": "host"})
        assert (code, out) == (0, "from host\n")
        with open(f"/dev/shm/{name}.2") as f:
            assert f.read() == "back\n"
        # A joiner of a host-IPC container gets the host's /dev/shm too (dockerd's ShmPath).
        donor = await sleeper(rt, IpcMode="host")
        cmd = ["cat", f"/dev/shm/{name}"]
        code, out, _ = await run(rt, cmd, HostConfig={"IpcMode": f"container:{donor}"})
        assert (code, out) == (0, "from host\n")
    finally:
        for path in (f"/dev/shm/{name}", f"/dev/shm/{name}.2"):
            if os.path.exists(path):
                os.unlink(path)


# ---------------------------------------------------------------- shareable and joiners


async def test_shareable_donor_and_joiner_share_dev_shm(rt: Runtime) -> None:
    donor = await sleeper(rt, IpcMode="shareable", ShmSize=4 << 20)
    host_dir = shm.host_dir(rt.paths.container(donor))
    (line,) = host_mounts_at(host_dir)
    fields = line.split()
    assert {"nosuid", "nodev", "noexec"} <= set(fields[5].split(","))
    assert fields[-3] == "tmpfs" and "size=4096k" in fields[-1]
    assert os.stat(host_dir).st_mode & 0o7777 == 0o1777
    assert rt.get(donor).shm_path == host_dir
    await exec_sh(rt, donor, "echo from-donor > /dev/shm/d")
    joiner = await sleeper(rt, IpcMode=f"container:{donor}")
    out = await exec_sh(rt, joiner, "cat /dev/shm/d; echo from-joiner > /dev/shm/j", user="1")
    assert out == "from-donor\n"
    assert await exec_sh(rt, donor, "cat /dev/shm/j; stat -c %u /dev/shm/j") == "from-joiner\n1\n"
    # Same superblock on both sides: the joiner's /dev/shm is the donor's, with its flags.
    donor_line = shm_line(await exec_sh(rt, donor, "cat /proc/self/mountinfo"))
    joiner_line = shm_line(await exec_sh(rt, joiner, "cat /proc/self/mountinfo"))
    assert donor_line.split()[2] == joiner_line.split()[2] == fields[2]
    assert {"nosuid", "nodev", "noexec"} <= set(joiner_line.split()[5].split(","))
    ns = "readlink /proc/self/ns/ipc"
    assert await exec_sh(rt, donor, ns) == await exec_sh(rt, joiner, ns)
    # A joiner of the joiner reaches the same /dev/shm (dockerd copies ShmPath along).
    code, out, _ = await run(
        rt, ["cat", "/dev/shm/j"], HostConfig={"IpcMode": f"container:{joiner}"}
    )
    assert (code, out) == (0, "from-joiner\n")
    await rt.remove(joiner, force=True)
    await rt.remove(donor, force=True)
    assert host_mounts_at(host_dir) == []


async def test_donor_stop_restart_under_a_running_joiner(rt: Runtime) -> None:
    donor = await sleeper(rt, IpcMode="shareable")
    host_dir = shm.host_dir(rt.paths.container(donor))
    joiner = await sleeper(rt, IpcMode=f"container:{donor}")
    await exec_sh(rt, donor, "echo kept > /dev/shm/k")
    await rt.stop(donor, timeout=0)
    # The host side is gone; the joiner keeps its bind and the files in it.
    assert host_mounts_at(host_dir) == [] and not os.path.exists(host_dir)
    assert rt.get(donor).shm_path == ""
    assert await exec_sh(rt, joiner, "cat /dev/shm/k; echo more > /dev/shm/m; cat /dev/shm/m") == (
        "kept\nmore\n"
    )
    # A stopped donor is refused as dockerd refuses it.
    late = await rt.create(
        {"Image": "busybox", "Cmd": ["true"], "HostConfig": {"IpcMode": f"container:{donor}"}}
    )
    with pytest.raises(DockerError, match=f"can't join IPC of container {donor}: Container"):
        await rt.start(late.id)
    # Started again, the donor gets a fresh tmpfs (mounted once); the old joiner keeps its own.
    await rt.start(donor)
    assert len(host_mounts_at(host_dir)) == 1
    assert await exec_sh(rt, donor, "ls /dev/shm") == ""
    assert await exec_sh(rt, joiner, "ls /dev/shm") == "k\nm\n"
    await rt.start(late.id)  # joins the new one
    await rt.wait(late.id)
    # `restart` too: unmounted and mounted again, never stacked.
    await exec_sh(rt, donor, "echo x > /dev/shm/x")
    await rt.restart(donor, timeout=0)
    assert len(host_mounts_at(host_dir)) == 1
    assert await exec_sh(rt, donor, "ls /dev/shm") == ""
    await rt.remove(donor, force=True)
    assert host_mounts_at(host_dir) == [] and not os.path.exists(rt.paths.container(donor))
    assert await exec_sh(rt, joiner, "cat /dev/shm/k") == "kept\n"


async def test_non_shareable_donors_are_refused(rt: Runtime) -> None:
    donors = [
        await sleeper(rt),
        await sleeper(rt, IpcMode="private"),
        await sleeper(rt, IpcMode="none"),
        # Its /dev/shm is the user's tmpfs: dockerd has no ShmPath to give a joiner.
        await sleeper(rt, IpcMode="shareable", Tmpfs={"/dev/shm": ""}),
    ]
    for donor in donors:
        rec = await rt.create(
            {"Image": "busybox", "Cmd": ["true"], "HostConfig": {"IpcMode": f"container:{donor}"}}
        )
        with pytest.raises(DockerError) as info:
            await rt.start(rec.id)
        assert info.value.message == f"can't join IPC of container {donor}: {NOT_SHAREABLE}"
        await rt.remove(rec.id)
    with pytest.raises(DockerError) as info:
        await run(rt, ["true"], HostConfig={"IpcMode": "container:nope"})
    assert info.value.message == "can't join IPC of container nope: No such container: nope"


async def test_inspect_shows_ipc_mode_and_shm_size(rt: Runtime) -> None:
    donor = await sleeper(rt, IpcMode="shareable", ShmSize=2 << 20)
    plain = await rt.create({"Image": "busybox", "Cmd": ["true"]})
    joiner = await rt.create(
        {"Image": "busybox", "Cmd": ["true"], "HostConfig": {"IpcMode": f"container:{donor[:12]}"}}
    )
    shown = [inspect(rt, rt.get(c))["HostConfig"] for c in (donor, plain.id, joiner.id)]
    assert [(h["IpcMode"], h["ShmSize"]) for h in shown] == [
        ("shareable", 2 << 20),
        ("private", 64 << 20),
        (f"container:{donor[:12]}", 64 << 20),
    ]


# ---------------------------------------------------------------- runtime restarts


async def test_adopted_donor_keeps_sharing_and_is_cleaned_up(rt: Runtime) -> None:
    donor = await sleeper(rt, IpcMode="shareable")
    host_dir = shm.host_dir(rt.paths.container(donor))
    await exec_sh(rt, donor, "echo before > /dev/shm/b")
    await rt.close()  # the agent goes; the donor and its host tmpfs stay
    again = await reopen(rt)
    try:
        assert len(host_mounts_at(host_dir)) == 1
        code, out, _ = await run(
            again, ["cat", "/dev/shm/b"], HostConfig={"IpcMode": f"container:{donor}"}
        )
        assert (code, out) == (0, "before\n")
        await again.stop(donor, timeout=0)
        assert host_mounts_at(host_dir) == []
        # A donor that dies while no runtime watches is cleaned up by the next one.
        await again.start(donor)
        assert len(host_mounts_at(host_dir)) == 1
        pid = again.get(donor).pid
        await again.close()
        os.kill(pid, signal.SIGKILL)
        exit_file = os.path.join(rt.paths.container(donor), "exit.json")
        for _ in range(250):
            if os.path.exists(exit_file):
                break
            await asyncio.sleep(0.02)
        third = await reopen(rt)
        try:
            assert third.get(donor).status == "exited"
            assert host_mounts_at(host_dir) == [] and not os.path.exists(host_dir)
            await third.remove(donor)
        finally:
            await third.close()
    finally:
        await again.close()
