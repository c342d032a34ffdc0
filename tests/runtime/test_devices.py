"""Device access, attacked as root in a container would: mknod of a host block device, a device
node from an image layer or `docker cp`, and what `--device`, `--device-cgroup-rule` and
`--privileged` give back. The target is a loop device over a file holding a marker, so a
successful read is recognisable and harmless; every attack is also run where it must succeed
(privileged), so a denial is the device cgroup's and not a missing or broken node.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import tarfile
import tempfile
from collections.abc import AsyncIterator, Iterator

import pytest

from proto.docker.errors import DockerError
from runtime import container_fs, devices, image_transfer
from runtime.cgroups import Cgroups
from runtime.containers import Runtime
from tests.attack_kit import Loop, crafted_rootfs, dev_node, loop_device
from tests.fixtures import runtime_for_tests
from tests.runtime.test_containers import run
from tests.tarballs import tar_of_entries

BLK = tarfile.BLKTYPE

# ------------------------------------------------------------------------------ policy


def test_default_policy_is_dockerd_and_runc_folded() -> None:
    policy = devices.container_devices([], [], privileged=False).policy
    assert not policy.default_allow
    got = [r.text() for r in policy.exceptions]
    # Allow-list mode: null, zero, urandom, random, tty, console from moby, then runc's mknod of
    # anything, full, pts, ptmx and tun; no fuse (10:229) and no block device but mknod.
    assert got == [
        "c 1:5 rwm",
        "c 1:3 rwm",
        "c 1:9 rwm",
        "c 1:8 rwm",
        "c 5:0 rwm",
        "c 5:1 rwm",
        "c *:* m",
        "b *:* m",
        "c 1:7 rwm",
        "c 136:* rwm",
        "c 5:2 rwm",
        "c 10:200 rwm",
    ]
    assert devices.container_devices([], [], privileged=True).policy.records() == [
        ("devices_default", "allow")
    ]


def test_policy_folds_like_the_v1_kernel() -> None:
    p = devices.policy_of(
        [
            devices.Rule("a", allow=False),
            devices.Rule("c", 1, 3, "r"),
            devices.Rule("c", 1, 3, "w"),
            devices.Rule("c", 1, 3, "r", allow=False),
            devices.Rule("b", 7, 0, "rw"),
            devices.Rule("b", 7, 0, "rw", allow=False),
        ]
    )
    assert (p.default_allow, [r.text() for r in p.exceptions]) == (False, ["c 1:3 w"])
    p = devices.policy_of([devices.Rule("a", allow=False), devices.Rule("a")])
    assert (p.default_allow, p.exceptions) == (True, [])


@pytest.mark.parametrize(
    ("rule", "error"),
    [
        ("", "invalid device cgroup rule format: ''"),
        ("c 1:1  rwm", "invalid device cgroup rule format: 'c 1:1  rwm'"),
        ("x 1:1 rwm", "invalid device cgroup rule format: 'x 1:1 rwm'"),
        ("c 1:1 rwx", "invalid device cgroup rule format: 'c 1:1 rwx'"),
        ("a", "invalid device cgroup rule format: 'a'"),
        (
            "c 99999999999999999999:1 r",
            "invalid major value in device cgroup rule format: 'c 99999999999999999999:1 r'",
        ),
    ],
)
def test_bad_cgroup_rules_in_dockerd_words(rule: str, error: str) -> None:
    with pytest.raises(DockerError) as exc:
        devices.parse_cgroup_rule(rule)
    assert exc.value.message == error


def test_cgroup_rules_parse() -> None:
    assert devices.parse_cgroup_rule("c *:* m") == devices.Rule("c", -1, -1, "m")
    assert devices.parse_cgroup_rule("b 7:12 rw") == devices.Rule("b", 7, 12, "rw")
    assert devices.parse_cgroup_rule("a *:* rwm").text() == "a"


def test_device_from_path_errors_and_directories() -> None:
    with pytest.raises(DockerError) as exc:
        devices.devices_from_path("/dev/nonexistent-flt", "/dev/x", "rwm")
    assert exc.value.message == (
        'error gathering device information while adding custom device "/dev/nonexistent-flt": '
        "no such file or directory"
    )
    with pytest.raises(DockerError, match=r'"/etc/hostname": not a device node$'):
        devices.devices_from_path("/etc/hostname", "/x", "rwm")
    devs, rules = devices.devices_from_path("/dev/null", "/dev/mynull", "r")
    assert devs == [devices.Device("/dev/mynull", "c", 1, 3, 0o666, 0, 0)]
    assert [r.text() for r in rules] == ["c 1:3 r"]
    with tempfile.TemporaryDirectory() as d:
        os.mkdir(os.path.join(d, "sub"))
        os.mknod(os.path.join(d, "sub", "zero"), 0o600 | 0o020000, os.makedev(1, 5))
        devs, _ = devices.devices_from_path(d, "/dev/mine", "rwm")
        assert [(x.path, x.mode) for x in devs] == [("/dev/mine/sub/zero", 0o600)]


# ------------------------------------------------------------------- attacks, for real


@pytest.fixture
def loop() -> Iterator[Loop]:
    """A loop device over a temp file that starts with a random marker; detached after."""
    with contextlib.ExitStack() as stack:
        try:
            lp = stack.enter_context(loop_device())
        except (OSError, subprocess.CalledProcessError) as err:
            pytest.skip(f"no loop device: {err}")
        yield lp


@pytest.fixture
async def rt(busybox_tar: str) -> AsyncIterator[Runtime]:
    async with runtime_for_tests(busybox_tar) as runtime:
        yield runtime


def _mknod_read(lp: Loop, node: str = "/dev/x", write: bool = True) -> list[str]:
    """mknod the loop device, read it, and (where that must fail) try to write it."""
    script = f"mknod {node} b {lp.major} {lp.minor}; echo mknod=$?; head -c 64 {node} 2>&1; echo"
    if write:
        script += f"; {{ echo owned > {node}; }} 2>&1"
    return ["sh", "-c", script + "; true"]


async def test_mknod_of_a_host_block_device_is_unusable(rt: Runtime, loop: Loop) -> None:
    code, out, _ = await run(rt, _mknod_read(loop), HostConfig={"NetworkMode": "none"})
    assert code == 0, out
    assert "mknod=0" in out  # dockerd allows creating any node: using it is what is denied
    assert loop.marker not in out
    assert "head: /dev/x: Operation not permitted" in out, out
    assert "can't create /dev/x: Operation not permitted" in out, out
    # The same attack where nothing denies it reads the disk: the node itself is fine.
    privileged = {"Privileged": True}
    _, out, _ = await run(rt, _mknod_read(loop, write=False), HostConfig=privileged)
    assert "mknod=0" in out and loop.marker in out, out
    # An exec joins the container's cgroup, and with it its policy.
    rec = await rt.create({"Image": "busybox", "Cmd": ["sleep", "30"]})
    try:
        await rt.start(rec.id)
        eid = rt.execs.create(rec.id, {"Cmd": _mknod_read(loop, "/dev/y"), "AttachStdout": True})
        streams = await rt.execs.start(eid)
        assert streams is not None
        data = (await streams[0].read()).decode(errors="replace")
        assert "Operation not permitted" in data and loop.marker not in data, data
    finally:
        await rt.remove(rec.id, force=True)


async def test_default_devices_work(rt: Runtime) -> None:
    cmd = (
        "head -c 4 /dev/zero | wc -c; head -c 4 /dev/urandom | wc -c; head -c 4 /dev/random"
        " | wc -c; echo x > /dev/null && echo null; { echo x > /dev/full; } 2>&1;"
        " echo x > /dev/tty; ls /dev/fuse 2>&1;"
        " mknod /tmp/fuse c 10 229 && cat /tmp/fuse 2>&1; true"
    )
    code, out, _ = await run(rt, ["sh", "-c", cmd], Tty=True)
    assert code == 0
    lines = out.replace("\r", "").splitlines()
    assert lines[:4] == ["4", "4", "4", "null"], out
    assert "No space left on device" in out
    assert "/dev/fuse: No such file or directory" in out
    assert "cat: can't open '/tmp/fuse': Operation not permitted" in out, out


async def test_device_flag_gives_the_device(rt: Runtime, loop: Loop) -> None:
    dev = {"PathOnHost": loop.path, "PathInContainer": "/dev/disk0", "CgroupPermissions": "r"}
    cmd = "ls -l /dev/disk0; head -c 64 /dev/disk0; echo; { echo nope > /dev/disk0; } 2>&1; true"
    code, out, _ = await run(rt, ["sh", "-c", cmd], HostConfig={"Devices": [dev]})
    assert code == 0
    assert out.startswith("brw-rw----") or out.startswith("brw-"), out
    assert loop.marker in out
    assert "can't create /dev/disk0: Operation not permitted" in out, out
    # PathInContainer and permissions default as in the CLI: same path, rwm.
    _, out, _ = await run(
        rt, ["head", "-c", "64", loop.path], HostConfig={"Devices": [{"PathOnHost": loop.path}]}
    )
    assert loop.marker in out


async def test_device_cgroup_rule_allows_the_node(rt: Runtime, loop: Loop) -> None:
    rule = f"b {loop.major}:{loop.minor} r"
    _, out, _ = await run(rt, _mknod_read(loop), HostConfig={"DeviceCgroupRules": [rule]})
    assert loop.marker in out
    assert "can't create /dev/x: Operation not permitted" in out, out


async def test_device_errors_in_dockerd_words(rt: Runtime) -> None:
    rec = await rt.create(
        {"Image": "busybox", "HostConfig": {"Devices": [{"PathOnHost": "/dev/flt-nope"}]}}
    )
    with pytest.raises(DockerError) as exc:
        await rt.start(rec.id)
    assert exc.value.message == (
        'error gathering device information while adding custom device "/dev/flt-nope": '
        "no such file or directory"
    )
    assert exc.value.status == 500
    rec = await rt.create({"Image": "busybox", "HostConfig": {"DeviceCgroupRules": ["c 1:3"]}})
    with pytest.raises(DockerError, match=r"^invalid device cgroup rule format: 'c 1:3'$"):
        await rt.start(rec.id)
    assert rt.cgroups.list_ids() == []  # nothing left behind by the failed starts
    # `docker run --rm` waits for the removal dockerd does after a failed start.
    body = {"Image": "busybox", "HostConfig": {"AutoRemove": True, "DeviceCgroupRules": ["x"]}}
    rec = await rt.create(body)
    with pytest.raises(DockerError, match="invalid device cgroup rule format: 'x'"):
        await rt.start(rec.id)
    assert rec.id not in [r.id for r in rt.list()]


def _layer_with_node(lp: Loop, busybox_tar: str) -> bytes:
    """busybox plus a 0666 block node with the loop device's numbers at /disk."""
    return crafted_rootfs(busybox_tar, extra=[dev_node("disk", lp.major, lp.minor, BLK)])


async def test_device_node_from_an_image_layer_is_unusable(
    rt: Runtime, loop: Loop, busybox_tar: str
) -> None:
    image_transfer.import_tarball(
        rt.images, io.BytesIO(_layer_with_node(loop, busybox_tar)), "withdisk:latest"
    )
    cmd = ["sh", "-c", "ls -l /disk; id -u; head -c 64 /disk 2>&1; true"]
    for user in ("0", "nobody"):
        code, out, _ = await run(rt, cmd, Image="withdisk", User=user)
        assert code == 0 and out.startswith("brw-rw-rw-"), out
        assert loop.marker not in out
        assert "head: /disk: Operation not permitted" in out, out
    _, out, _ = await run(rt, cmd, Image="withdisk", User="nobody", HostConfig={"Privileged": True})
    assert loop.marker in out  # the very node works where the cgroup allows it


async def test_device_node_copied_in_is_unusable(rt: Runtime, loop: Loop) -> None:
    buf = io.BytesIO(tar_of_entries([dev_node("disk", loop.major, loop.minor, BLK)]))
    rec = await rt.create({"Image": "busybox", "Cmd": ["sleep", "30"], "User": "nobody"})
    try:
        await rt.start(rec.id)
        buf.seek(0)
        with contextlib.suppress(DockerError):  # a hardened cp may refuse device nodes outright
            await container_fs.archive_put(rt, rec.id, "/tmp", buf)
        eid = rt.execs.create(
            rec.id, {"Cmd": ["sh", "-c", "head -c 64 /tmp/disk 2>&1"], "AttachStdout": True}
        )
        streams = await rt.execs.start(eid)
        assert streams is not None
        data = (await streams[0].read()).decode(errors="replace")
        assert loop.marker not in data, data
    finally:
        await rt.remove(rec.id, force=True)


# -------------------------------------------------------------------------- cgroup v2


@pytest.fixture
def cgroup2_mount() -> Iterator[str]:
    """A cgroup v2 hierarchy: the machine's, or one mounted for the test on a v1 machine (the
    v2 hierarchy exists alongside the v1 ones; its device programs apply all the same)."""
    mnt = tempfile.mkdtemp(prefix="flt-cg2-")
    try:
        try:
            subprocess.run(["mount", "-t", "cgroup2", "none", mnt], check=True, capture_output=True)
        except subprocess.CalledProcessError as err:
            pytest.skip(f"cannot mount cgroup2: {err.stderr.decode().strip()}")
        try:
            yield mnt
        finally:
            subprocess.run(["umount", mnt], check=False)
    finally:
        os.rmdir(mnt)


async def test_v2_device_program_enforces_the_policy(
    busybox_tar: str, loop: Loop, cgroup2_mount: str
) -> None:
    async with runtime_for_tests(busybox_tar) as rt:
        rt.cgroups = Cgroups(rt.cgroups.parent, root=cgroup2_mount, version=2)
        code, out, _ = await run(rt, _mknod_read(loop), HostConfig={"NetworkMode": "none"})
        assert code == 0 and "mknod=0" in out, out
        assert loop.marker not in out
        assert "head: /dev/x: Operation not permitted" in out, out
        # default devices still work through the program; fuse does not
        cmd = (
            "head -c 3 /dev/zero | wc -c; echo > /dev/null && echo null; mknod /f c 10 229;"
            " cat /f 2>&1; true"
        )
        _, out, _ = await run(rt, ["sh", "-c", cmd])
        assert out.splitlines()[:2] == ["3", "null"], out
        assert "cat: can't open '/f': Operation not permitted" in out, out
        dev = {"PathOnHost": loop.path, "PathInContainer": "/dev/d", "CgroupPermissions": "r"}
        cmd = "head -c 64 /dev/d; echo; { echo no > /dev/d; } 2>&1; true"
        _, out, _ = await run(rt, ["sh", "-c", cmd], HostConfig={"Devices": [dev]})
        assert loop.marker in out and "Operation not permitted" in out, out
        privileged = {"Privileged": True}
        _, out, _ = await run(rt, _mknod_read(loop, write=False), HostConfig=privileged)
        assert loop.marker in out, out
