"""Attacks on a container's own kernel surface, through the runtime with real containers:
seccomp (default profile, unconfined, a user's profile), no_new_privs and setuid binaries,
capabilities, a read-only root, the pid / ipc namespace modes, sysctls and masked paths."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator

import pytest

from proto.docker.errors import DockerError, InvalidParameter
from runtime import seccomp
from runtime.containers import Runtime
from tests.fixtures import runtime_for_tests
from tests.runtime.test_containers import run

# Each argument names a syscall to try; prints `name=OK` or `name=<strerror>`. Static, so it
# runs in busybox; bind-mounted from the host.
PROBE_C = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>
int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        long r = -1;
        errno = 0;
        if (!strcmp(argv[i], "add_key"))
            r = syscall(SYS_add_key, "user", "flt", "v", 1, -2);
        else if (!strcmp(argv[i], "unshare_user"))
            r = syscall(SYS_unshare, CLONE_NEWUSER);
        else if (!strcmp(argv[i], "clone3"))
            r = syscall(SYS_clone3, 0, 0);
        else if (!strcmp(argv[i], "vsock"))
            r = socket(40, SOCK_STREAM, 0);
        else if (!strcmp(argv[i], "euid")) {
            printf("euid=%d\n", (int)geteuid());
            continue;
        }
        printf("%s=%s\n", argv[i], r >= 0 ? "OK" : strerror(errno));
    }
    return 0;
}
"""


@pytest.fixture(scope="module")
def probe_dir() -> Iterator[str]:
    """`probe` (plain) and `suid-probe` (root-owned, setuid) static binaries."""
    d = tempfile.mkdtemp(prefix="flt-probe-")
    try:
        src = os.path.join(d, "probe.c")
        with open(src, "w") as f:
            f.write(PROBE_C)
        subprocess.run(
            ["gcc", "-static", "-O1", "-o", os.path.join(d, "probe"), src],
            check=True,
            capture_output=True,
        )
        shutil.copy(os.path.join(d, "probe"), os.path.join(d, "suid-probe"))
        os.chown(os.path.join(d, "suid-probe"), 0, 0)
        os.chmod(os.path.join(d, "suid-probe"), 0o4755)
        os.chmod(d, 0o755)
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
async def rt(busybox_tar: str) -> AsyncIterator[Runtime]:
    async with runtime_for_tests(busybox_tar) as runtime:
        yield runtime


def _probe_body(probe_dir: str, **host: object) -> dict[str, object]:
    return {"HostConfig": {"Binds": [f"{probe_dir}:/probe:ro"], "NetworkMode": "none", **host}}


async def probe(rt: Runtime, probe_dir: str, calls: list[str], **host: object) -> dict[str, str]:
    code, out, err = await run(rt, ["/probe/probe", *calls], **_probe_body(probe_dir, **host))
    assert code == 0, err
    return dict(line.split("=", 1) for line in out.splitlines())


# ---------------------------------------------------------------- seccomp


async def test_default_profile_blocks_and_unconfined_allows(rt: Runtime, probe_dir: str) -> None:
    calls = ["add_key", "unshare_user", "clone3", "vsock"]
    confined = await probe(rt, probe_dir, calls)
    assert confined == {
        "add_key": "Operation not permitted",
        "unshare_user": "Operation not permitted",
        "clone3": "Function not implemented",  # so a libc falls back to clone
        "vsock": "Operation not permitted",
    }
    free = await probe(rt, probe_dir, calls, SecurityOpt=["seccomp=unconfined"])
    assert free["add_key"] == "OK"
    assert free["unshare_user"] == "OK"
    assert free["clone3"] != "Function not implemented"


async def test_privileged_runs_unconfined(rt: Runtime, probe_dir: str) -> None:
    privileged = await probe(rt, probe_dir, ["add_key"], Privileged=True)
    assert privileged["add_key"] == "OK"


async def test_busybox_unshare_is_refused(rt: Runtime) -> None:
    code, _, err = await run(rt, ["unshare", "-U", "true"])
    assert code != 0 and "Operation not permitted" in err
    code, _, err = await run(
        rt, ["unshare", "-U", "true"], HostConfig={"SecurityOpt": ["seccomp=unconfined"]}
    )
    assert code == 0, err


async def test_cap_sys_admin_opens_its_syscalls(rt: Runtime, probe_dir: str) -> None:
    out = await probe(rt, probe_dir, ["unshare_user", "clone3"], CapAdd=["SYS_ADMIN"])
    assert out["unshare_user"] == "OK"
    assert out["clone3"] != "Function not implemented"


async def test_exec_runs_under_the_container_filter(rt: Runtime, probe_dir: str) -> None:
    rec = await rt.create({"Image": "busybox", "Cmd": ["sleep", "30"], **_probe_body(probe_dir)})
    await rt.start(rec.id)
    eid = rt.execs.create(rec.id, {"Cmd": ["/probe/probe", "add_key"], "AttachStdout": True})
    streams = await rt.execs.start(eid)
    assert streams is not None
    data = await asyncio.wait_for(streams[0].read(), 10)
    assert data[8:] == b"add_key=Operation not permitted\n"
    await rt.remove(rec.id, force=True)


async def test_user_profile(rt: Runtime, probe_dir: str) -> None:
    profile = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"},
            {"names": ["add_key"], "action": "SCMP_ACT_ERRNO", "errnoRet": 22},
        ],
    }
    code, _, err = await run(
        rt,
        ["mkdir", "/tmp/x"],
        HostConfig={"SecurityOpt": [f"seccomp={json.dumps(profile)}"]},
    )
    assert code != 0 and "Operation not permitted" in err
    out = await probe(rt, probe_dir, ["add_key"], SecurityOpt=[f"seccomp={json.dumps(profile)}"])
    assert out["add_key"] == "Invalid argument"


async def test_bad_profile_is_dockerds_start_error(rt: Runtime) -> None:
    rec = await rt.create(
        {"Image": "busybox", "Cmd": ["true"], "HostConfig": {"SecurityOpt": ["seccomp=xyz"]}}
    )
    with pytest.raises(DockerError) as e:
        await rt.start(rec.id)
    assert e.value.status == 500
    assert e.value.message == (
        "Decoding seccomp profile failed: invalid character 'x' looking for beginning of value"
    )
    await rt.remove(rec.id, force=True)


def test_profile_translation_follows_caps_and_arch() -> None:
    rules = seccomp.compile_profile(seccomp.default_profile(), ["CAP_CHOWN"], "amd64", (6, 1))
    lines = rules.splitlines()
    assert lines[:4] == ["default errno 1", "arch x86_64", "arch x86", "arch x32"]
    assert "allow 0 arch_prctl" in lines and "allow 0 ptrace" in lines
    assert "allow 0 mount" not in lines and "allow 0 clone 0 masked_eq 2114060288 0" in lines
    admin = seccomp.compile_profile(seccomp.default_profile(), ["CAP_SYS_ADMIN"], "amd64", (6, 1))
    assert "allow 0 mount" in admin and "errno 38 clone3" not in admin
    arm = seccomp.compile_profile(seccomp.default_profile(), [], "arm64", (4, 4))
    assert "arch aarch64" in arm and "set_tls" in arm and "arch_prctl" not in arm
    assert "allow 0 ptrace" not in arm  # minKernel 4.8
    with pytest.raises(DockerError, match="'name' and 'names' were specified"):
        seccomp.compile_profile(
            {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"name": "a", "names": ["b"]}]}, []
        )


# ---------------------------------------------------------------- privileges


async def test_setuid_works_unless_no_new_privileges(rt: Runtime, probe_dir: str) -> None:
    body = _probe_body(probe_dir)
    code, out, err = await run(rt, ["/probe/suid-probe", "euid"], User="nobody", **body)
    assert (code, out) == (0, "euid=0\n"), err
    for opt in ("no-new-privileges", "no-new-privileges=true"):
        host = {**body["HostConfig"], "SecurityOpt": [opt]}  # type: ignore[dict-item]
        code, out, err = await run(
            rt, ["/probe/suid-probe", "euid"], User="nobody", HostConfig=host
        )
        assert (code, out) == (0, "euid=65534\n"), err
    code, out, _ = await run(
        rt,
        ["grep", "NoNewPrivs", "/proc/self/status"],
        HostConfig={"SecurityOpt": ["no-new-privileges"]},
    )
    assert out == "NoNewPrivs:\t1\n"


async def test_cap_drop_all_and_read_only_root(rt: Runtime) -> None:
    code, _, err = await run(rt, ["chown", "1", "/tmp"], HostConfig={"CapDrop": ["ALL"]})
    assert code != 0 and "Operation not permitted" in err
    code, _, err = await run(rt, ["chown", "1", "/tmp"], HostConfig={"CapDrop": ["chown"]})
    assert code != 0 and "Operation not permitted" in err
    code, _, err = await run(rt, ["chown", "1", "/tmp"])
    assert code == 0, err
    code, _, err = await run(rt, ["touch", "/x"], HostConfig={"ReadonlyRootfs": True})
    assert code != 0 and "Read-only file system" in err


async def test_masked_and_readonly_paths(rt: Runtime) -> None:
    code, out, _ = await run(rt, ["sh", "-c", "wc -c < /proc/timer_list"])
    assert out.strip() == "0"
    code, out, _ = await run(
        rt, ["sh", "-c", "wc -c < /proc/timer_list"], HostConfig={"MaskedPaths": []}
    )
    assert int(out) > 0
    code, _, err = await run(rt, ["touch", "/tmp/x"], HostConfig={"ReadonlyPaths": ["/tmp"]})
    assert code != 0 and "Read-only file system" in err


async def test_sys_is_writable_only_when_privileged(rt: Runtime) -> None:
    """dockerd mounts /sys read-only, and writable for --privileged (its own netns's sysfs, so
    the host's /sys stays the host's)."""
    options = ["sh", "-c", "awk '$2 == \"/sys\" {print $4}' /proc/mounts"]
    _, out, _ = await run(rt, options)
    assert out.split(",")[0] == "ro"
    _, out, _ = await run(rt, options, HostConfig={"Privileged": True})
    assert out.split(",")[0] == "rw"


# ---------------------------------------------------------------- namespaces and sysctls


def _host_ns(kind: str) -> str:
    return os.readlink(f"/proc/self/ns/{kind}")


async def test_pid_host_sees_host_pids(rt: Runtime) -> None:
    with open("/proc/1/comm") as f:
        init = f.read()
    code, out, _ = await run(
        rt,
        ["sh", "-c", "readlink /proc/self/ns/pid; cat /proc/1/comm"],
        HostConfig={"PidMode": "host"},
    )
    ns, comm = out.split("\n", 1)
    assert ns == _host_ns("pid") and comm == init
    code, out, _ = await run(rt, ["readlink", "/proc/self/ns/pid"])
    assert out.strip() != _host_ns("pid")


async def test_pid_and_ipc_of_another_container(rt: Runtime) -> None:
    donor = await rt.create(
        {"Image": "busybox", "Cmd": ["sleep", "30"], "HostConfig": {"IpcMode": "shareable"}}
    )
    await rt.start(donor.id)
    private = await rt.create({"Image": "busybox", "Cmd": ["sleep", "30"]})
    await rt.start(private.id)
    try:
        code, out, err = await run(
            rt,
            [
                "sh",
                "-c",
                "readlink /proc/self/ns/ipc; readlink /proc/self/ns/pid;"
                " ps -o comm | grep -c sleep",
            ],
            HostConfig={"IpcMode": f"container:{donor.id}", "PidMode": f"container:{donor.id}"},
        )
        ipc, pid, sleeps = out.split()
        assert ipc == os.readlink(f"/proc/{donor.pid}/ns/ipc")
        assert pid == os.readlink(f"/proc/{donor.pid}/ns/pid")
        assert sleeps == "1"
        rec = await rt.create(
            {
                "Image": "busybox",
                "Cmd": ["true"],
                "HostConfig": {"IpcMode": f"container:{private.id}"},
            }
        )
        with pytest.raises(DockerError, match="non-shareable IPC"):
            await rt.start(rec.id)
        await rt.remove(rec.id)
    finally:
        await rt.remove(donor.id, force=True)
        await rt.remove(private.id, force=True)


async def test_ipc_host(rt: Runtime) -> None:
    code, out, _ = await run(rt, ["readlink", "/proc/self/ns/ipc"], HostConfig={"IpcMode": "host"})
    assert out.strip() == _host_ns("ipc")


async def test_sysctls_apply_in_the_container_namespaces(rt: Runtime) -> None:
    with open("/proc/sys/net/ipv4/ip_unprivileged_port_start") as f:
        host_port_start = f.read()
    code, out, err = await run(
        rt,
        [
            "cat",
            "/proc/sys/net/ipv4/ip_forward",
            "/proc/sys/net/ipv4/ip_unprivileged_port_start",
            "/proc/sys/kernel/shmmni",
        ],
        HostConfig={
            "Sysctls": {
                "net.ipv4.ip_forward": "1",
                "net.ipv4.ip_unprivileged_port_start": "777",
                "kernel.shmmni": "1234",
            }
        },
    )
    assert (code, out.split()) == (0, ["1", "777", "1234"]), err
    with open("/proc/sys/net/ipv4/ip_unprivileged_port_start") as f:
        assert f.read() == host_port_start


@pytest.mark.parametrize(
    ("sysctls", "host", "message"),
    [
        ({"kernel.panic": "1"}, {}, 'sysctl "kernel.panic" is not in a separate kernel namespace'),
        (
            {"net.ipv4.ip_forward": "1"},
            {"NetworkMode": "host"},
            'sysctl "net.ipv4.ip_forward" is not allowed in the hosts network namespace',
        ),
        (
            {"kernel.shmmax": "1"},
            {"IpcMode": "host"},
            'sysctl "kernel.shmmax" is not allowed in the hosts ipc namespace',
        ),
    ],
)
async def test_refused_sysctls(
    rt: Runtime, sysctls: dict[str, str], host: dict[str, str], message: str
) -> None:
    rec = await rt.create(
        {"Image": "busybox", "Cmd": ["true"], "HostConfig": {"Sysctls": sysctls, **host}}
    )
    with pytest.raises(DockerError) as e:
        await rt.start(rec.id)
    assert e.value.message == (
        f"failed to create shim task: OCI runtime create failed: runc create failed: {message}: "
        "unknown"
    )
    assert e.value.status == 500
    await rt.remove(rec.id)


@pytest.mark.parametrize(
    ("host", "message", "status"),
    [
        ({"IpcMode": "bogus"}, "invalid IPC mode: bogus", 400),
        ({"IpcMode": "container:"}, "invalid IPC mode: container:", 400),
        ({"PidMode": "shareable"}, "invalid PID mode: shareable", 400),
        ({"UTSMode": "private"}, "invalid UTS mode: private", 400),
        ({"UsernsMode": "private"}, "invalid USER mode: private", 400),
        ({"SecurityOpt": ["bogus"]}, 'invalid --security-opt 1: "bogus"', 500),
        ({"SecurityOpt": ["foo=bar"]}, 'invalid --security-opt 2: "foo=bar"', 500),
        (
            {"SecurityOpt": ["no-new-privileges=maybe"]},
            'invalid --security-opt 2: "no-new-privileges=maybe"',
            500,
        ),
    ],
)
async def test_refused_options(
    rt: Runtime, host: dict[str, object], message: str, status: int
) -> None:
    with pytest.raises(DockerError) as e:
        await rt.create({"Image": "busybox", "Cmd": ["true"], "HostConfig": host})
    assert (e.value.message, e.value.status) == (message, status)
    assert isinstance(e.value, InvalidParameter) == (status == 400)
