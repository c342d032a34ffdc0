"""flotilla-shim against the real kernel: namespaces, overlayfs, pty, cgroups (needs root)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator

import pytest

from deploy.busybox_image import build_rootfs_tar
from runtime import shim
from runtime.shim import ShimStartError

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

DEFAULT_CAPS = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
]  # fmt: skip
MASKED = ["/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/timer_list",
          "/proc/sched_debug", "/proc/scsi", "/sys/firmware"]  # fmt: skip
READONLY = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
TIMEOUT = 10


@pytest.fixture(scope="module")
def lowerdir() -> Iterator[str]:
    tmp = tempfile.mkdtemp(prefix="flotilla-shim-img-")
    try:
        tar = build_rootfs_tar(os.path.join(tmp, "rootfs.tar"))
        root = os.path.join(tmp, "rootfs")
        os.mkdir(root)
        # GNU tar, not tarfile: tarfile chmods hard links with their own (0644) entry mode.
        subprocess.run(["tar", "-xf", tar, "-C", root], check=True)
        yield root
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module", autouse=True)
def cache_dir() -> Iterator[None]:
    tmp = tempfile.mkdtemp(prefix="flotilla-shim-cache-")
    old = os.environ.get("FLOTILLA_CACHE")
    os.environ["FLOTILLA_CACHE"] = tmp
    try:
        shim.shim_binary()
        yield
    finally:
        if old is None:
            del os.environ["FLOTILLA_CACHE"]
        else:
            os.environ["FLOTILLA_CACHE"] = old
        shutil.rmtree(tmp, ignore_errors=True)


class Bundle:
    def __init__(self, root: str, lower: str) -> None:
        self.dir = root
        self.lower = lower
        for d in ("upper", "work", "rootfs"):
            os.mkdir(os.path.join(root, d))
        self.log = os.path.join(root, "c-json.log")
        self.exit = os.path.join(root, "exit.json")
        self.sock = os.path.join(root, "attach.sock")
        self.pidfile = os.path.join(root, "pid")
        self.shim_pids: list[int] = []

    def records(self, args: list[str], **opts: object) -> list[tuple[str, str]]:
        recs: list[tuple[str, str]] = [("mode", "container")]
        recs += [("arg", a) for a in args]
        recs += [("env", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")]
        recs += [
            ("lowerdir", self.lower),
            ("upperdir", os.path.join(self.dir, "upper")),
            ("workdir", os.path.join(self.dir, "work")),
            ("rootfs", os.path.join(self.dir, "rootfs")),
            ("log_path", self.log),
            ("exit_path", self.exit),
            ("pid_path", self.pidfile),
            ("attach_sock", self.sock),
            ("netns", "new"),
        ]
        recs += [("cap", c) for c in DEFAULT_CAPS]
        recs += [("mask", m) for m in MASKED] + [("readonly", r) for r in READONLY]
        for key, value in opts.items():
            values = value if isinstance(value, list) else [value]
            recs += [(key, str(v)) for v in values]
        return recs

    async def start(self, args: list[str], **opts: object) -> int:
        shim.write_spec(os.path.join(self.dir, "spec"), self.records(args, **opts))
        pid = await shim.start_shim(self.dir)
        self.shim_pids.append(pid)
        return pid

    async def wait(self) -> dict:
        for pid in self.shim_pids:
            await asyncio.wait_for(shim.wait_pid(pid), TIMEOUT)
        result = shim.read_exit(self.exit)
        assert result is not None
        return result

    async def run(self, args: list[str], **opts: object) -> dict:
        await self.start(args, **opts)
        return await self.wait()

    def container_pid(self) -> int:
        with open(self.pidfile) as f:
            return int(f.read())

    def logs(self, path: str | None = None) -> list[dict]:
        with open(path or self.log) as f:
            return [json.loads(line) for line in f]

    def output(self) -> str:
        return "".join(e["log"] for e in self.logs())

    def kill_all(self) -> None:
        for pidfile in glob_pidfiles(self.dir):
            with contextlib.suppress(ValueError, OSError), open(pidfile) as f:
                os.kill(int(f.read()), signal.SIGKILL)
        for pid in self.shim_pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def glob_pidfiles(root: str) -> list[str]:
    found = []
    for dirpath, _dirs, files in os.walk(root):
        found += [os.path.join(dirpath, f) for f in files if f in ("pid", "shim.pid")]
    return found


@pytest.fixture
def bundle(lowerdir: str) -> Iterator[Bundle]:
    root = tempfile.mkdtemp(prefix="fs-")
    b = Bundle(root, lowerdir)
    try:
        yield b
    finally:
        b.kill_all()
        time.sleep(0.05)
        shutil.rmtree(root, ignore_errors=True)


async def read_all(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.read(), TIMEOUT)


async def test_true_and_exit_code(bundle: Bundle) -> None:
    shim.write_spec(os.path.join(bundle.dir, "spec"), bundle.records(["/bin/true"]))
    t0 = time.perf_counter()
    pid = await shim.start_shim(bundle.dir)
    t1 = time.perf_counter()
    await shim.wait_pid(pid)
    t2 = time.perf_counter()
    print(f"\nshim start {1000 * (t1 - t0):.1f} ms, start->exit {1000 * (t2 - t0):.1f} ms")
    bundle.shim_pids.append(pid)
    result = await bundle.wait()
    assert result["exit_code"] == 0 and result["signal"] == 0 and result["oom"] is False
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z", result["finished_at"])
    assert not os.path.exists(bundle.sock)
    assert (await bundle.run(["sh", "-c", "exit 3"]))["exit_code"] == 3
    # wait_attach is an exec-only key: a container must run without anyone attaching
    assert (await bundle.run(["/bin/true"], wait_attach=1))["exit_code"] == 0
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        await bundle.run(["/bin/true"])
        times.append(1000 * (time.perf_counter() - t0))
    print(f"warm start->exit of /bin/true: median {sorted(times)[2]:.1f} ms")


async def test_json_log_both_streams(bundle: Bundle) -> None:
    script = "echo out; echo err >&2; printf 'a<b\\001\\377\\n'; printf partial"
    await bundle.run(["sh", "-c", script])
    entries = bundle.logs()
    by_stream = {(e["stream"], e["log"]) for e in entries}
    assert ("stdout", "out\n") in by_stream and ("stderr", "err\n") in by_stream
    assert ("stdout", "a<b\x01\ufffd\n") in by_stream
    assert ("stdout", "partial") in by_stream
    with open(bundle.log) as f:
        raw = f.read()
    assert "\\u003c" in raw and "\\u0001" in raw and "\\ufffd" in raw
    for e in entries:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z", e["time"])


async def test_long_line_is_split(bundle: Bundle) -> None:
    await bundle.run(["sh", "-c", "head -c 40000 /dev/zero | tr '\\0' x; echo"])
    pieces = [e["log"] for e in bundle.logs()]
    assert [len(p) for p in pieces] == [16384, 16384, 40000 - 32768 + 1]
    assert "".join(pieces) == "x" * 40000 + "\n"


async def test_command_not_found(bundle: Bundle) -> None:
    with pytest.raises(ShimStartError) as exc:
        await bundle.start(["nosuchcmd"])
    assert exc.value.message == 'exec: "nosuchcmd": executable file not found in $PATH'
    assert exc.value.exit_code == 127
    with pytest.raises(ShimStartError) as exc:
        await bundle.start(["/etc"])
    assert exc.value.message == 'exec: "/etc": is a directory'
    assert exc.value.exit_code == 126
    with pytest.raises(ShimStartError) as exc:
        await bundle.start(["/nope/x"])
    assert exc.value.message == 'exec: "/nope/x": stat /nope/x: no such file or directory'
    assert exc.value.exit_code == 127


async def test_bad_user(bundle: Bundle) -> None:
    with pytest.raises(ShimStartError) as exc:
        await bundle.start(["true"], user="nosuchuser")
    assert exc.value.message == "unable to find user nosuchuser: no matching entries in passwd file"
    with pytest.raises(ShimStartError) as exc:
        await bundle.start(["true"], user="root:nosuchgroup")
    assert (
        exc.value.message == "unable to find group nosuchgroup: no matching entries in group file"
    )


async def test_user_nobody(bundle: Bundle) -> None:
    await bundle.run(["sh", "-c", "id -u; id -g; echo $HOME"], user="nobody")
    assert bundle.output() == "65534\n65534\n/home\n"


async def test_numeric_user_group(bundle: Bundle) -> None:
    await bundle.run(["sh", "-c", "id -u; id -g; id -G"], user="1234:daemon")
    assert bundle.output() == "1234\n1\n1\n"


async def test_hostname_env_cwd_pid1(bundle: Bundle) -> None:
    script = "hostname; echo $FOO; pwd; echo $$; cat /proc/self/oom_score_adj"
    opts = {"hostname": "box1", "env": "FOO=bar baz", "cwd": "/srv/app", "oom_score_adj": 500}
    await bundle.run(["sh", "-c", script], **opts)
    assert bundle.output() == "box1\nbar baz\n/srv/app\n1\n500\n"


async def test_masked_and_readonly_paths(bundle: Bundle) -> None:
    script = (
        "wc -c < /proc/timer_list; ls /sys/firmware | wc -l; "
        "grep -c ' /proc/sys ro,' /proc/self/mountinfo; "
        "{ echo 1 > /proc/sys/vm/drop_caches; } 2>/dev/null || echo denied"
    )
    await bundle.run(["sh", "-c", script])
    assert bundle.output() == "0\n0\n1\ndenied\n"


async def test_capabilities(bundle: Bundle) -> None:
    await bundle.run(["grep", "^Cap", "/proc/self/status"])
    caps = dict(line.split(":\t") for line in bundle.output().splitlines())
    assert caps["CapEff"] == "00000000a80425fb"
    assert caps["CapPrm"] == "00000000a80425fb"
    assert caps["CapBnd"] == "00000000a80425fb"
    assert caps["CapInh"] == "0000000000000000"
    assert caps["CapAmb"] == "0000000000000000"
    os.unlink(bundle.log)
    await bundle.run(["grep", "^Cap", "/proc/self/status"], user="nobody", no_new_privs=1)
    caps = dict(line.split(":\t") for line in bundle.output().splitlines())
    assert caps["CapEff"] == "0000000000000000"
    assert caps["CapBnd"] == "00000000a80425fb"


async def test_attach_stdin_framed(bundle: Bundle) -> None:
    await bundle.start(["sh", "-c", "cat; echo done >&2"], open_stdin=1, stdin_once=1)
    reader, writer = await shim.open_attach(bundle.sock, True, True, True)
    writer.write(b"hello\n")
    await writer.drain()
    writer.write_eof()
    data = await read_all(reader)
    writer.close()
    frames = shim.demux(data)
    assert (1, b"hello\n") in frames and (2, b"done\n") in frames
    assert (await bundle.wait())["exit_code"] == 0
    assert ("stdout", "hello\n") in {(e["stream"], e["log"]) for e in bundle.logs()}


async def test_tty_and_resize(bundle: Bundle) -> None:
    script = "read x; stty size; tty; test -c /dev/console && echo console; echo $x"
    await bundle.start(["sh", "-c", script], tty=1, open_stdin=1)
    reader, writer = await shim.open_attach(bundle.sock, True, True, False)
    await shim.resize(bundle.sock, 40, 100)
    writer.write(b"go\n")
    await writer.drain()
    data = await read_all(reader)
    writer.close()
    assert b"40 100\r\n/dev/pts/0\r\nconsole\r\ngo\r\n" in data
    assert (await bundle.wait())["exit_code"] == 0
    assert "40 100\r\n" in bundle.output()


async def test_no_fd_leaks_into_container(bundle: Bundle) -> None:
    await bundle.run(["sh", "-c", "ls /proc/self/fd | sort -n | tr '\\n' ' '"], open_stdin=1)
    assert bundle.output() == "0 1 2 3 "


async def run_exec(bundle: Bundle, name: str, script: str, **opts: str) -> tuple[bytes, dict]:
    """Run `sh -c script` as an exec (wait_attach) in the bundle's container; output + exit."""
    edir = os.path.join(bundle.dir, "execs", name)
    os.makedirs(edir)
    esock = os.path.join(edir, "attach.sock")
    eexit = os.path.join(edir, "exit.json")
    records = [
        ("mode", "exec"),
        ("target_pid", str(bundle.container_pid())),
        ("arg", "sh"),
        ("arg", "-c"),
        ("arg", script),
        ("env", "PATH=/bin"),
        ("attach_sock", esock),
        ("exit_path", eexit),
        ("pid_path", os.path.join(edir, "pid")),
        ("wait_attach", "1"),
    ] + [("cap", c) for c in DEFAULT_CAPS]
    records += list(opts.items())
    shim.write_spec(os.path.join(edir, "spec"), records)
    epid = await shim.start_shim(edir)
    bundle.shim_pids.insert(0, epid)
    reader, writer = await shim.open_attach(esock, False, True, True)
    data = await read_all(reader)
    writer.close()
    await asyncio.wait_for(shim.wait_pid(epid), TIMEOUT)
    bundle.shim_pids.remove(epid)
    result = shim.read_exit(eexit)
    assert result is not None
    return data, result


async def test_exec_joins_container(bundle: Bundle) -> None:
    await bundle.start(["sleep", "100"], hostname="exec-host")
    cpid = bundle.container_pid()
    script = "hostname; readlink /proc/self/ns/pid; ps -o pid,comm | grep -c sleep; exit 5"
    data, result = await run_exec(bundle, "e1", script)
    out = b"".join(p for s, p in shim.demux(data) if s == 1).decode().splitlines()
    assert out == ["exec-host", os.readlink(f"/proc/{cpid}/ns/pid"), "1"]
    assert result["exit_code"] == 5
    data, result = await run_exec(bundle, "e2", "tty; id -u", tty="1", user="nobody")
    assert data.startswith(b"/dev/pts/") and data.endswith(b"\r\n65534\r\n")
    os.kill(cpid, signal.SIGKILL)
    await bundle.wait()


async def test_exec_not_found(bundle: Bundle) -> None:
    await bundle.start(["sleep", "100"])
    edir = os.path.join(bundle.dir, "e2")
    os.makedirs(edir)
    records = [("mode", "exec"), ("target_pid", str(bundle.container_pid())), ("arg", "nope")]
    shim.write_spec(os.path.join(edir, "spec"), records)
    with pytest.raises(ShimStartError) as exc:
        await shim.start_shim(edir)
    assert exc.value.exit_code == 127
    os.kill(bundle.container_pid(), signal.SIGKILL)
    await bundle.wait()


async def test_shim_is_reparented_and_sigkill_is_137(bundle: Bundle) -> None:
    pid = await bundle.start(["sleep", "100"])
    with open(f"/proc/{pid}/stat") as f:
        ppid = int(f.read().rsplit(")", 1)[1].split()[1])
    assert ppid != os.getpid()
    with open(os.path.join(bundle.dir, "shim.pid")) as f:
        assert int(f.read()) == pid
    os.kill(bundle.container_pid(), signal.SIGKILL)
    result = await bundle.wait()
    assert result["exit_code"] == 137 and result["signal"] == 9


async def test_signal_via_attach_socket(bundle: Bundle) -> None:
    await bundle.start(["sleep", "100"])
    await shim.send_signal(bundle.sock, signal.SIGKILL)
    assert (await bundle.wait())["exit_code"] == 137


async def test_log_rotation(bundle: Bundle) -> None:
    script = "for i in $(seq 1 300); do echo line $i; done"
    await bundle.run(["sh", "-c", script], log_max_size=3000, log_max_file=3)
    assert os.path.exists(bundle.log + ".1") and os.path.exists(bundle.log + ".2")
    assert not os.path.exists(bundle.log + ".3")
    for path in (bundle.log, bundle.log + ".1", bundle.log + ".2"):
        assert os.path.getsize(path) <= 3000
    assert bundle.logs()[-1]["log"] == "line 300\n"
    older = bundle.logs(bundle.log + ".1")
    assert int(older[-1]["log"].split()[1]) + 1 == int(bundle.logs()[0]["log"].split()[1])


async def test_mounts_and_readonly_rootfs_do_not_leak(bundle: Bundle) -> None:
    with open("/proc/self/mountinfo") as f:
        before = f.read()
    vol = os.path.join(bundle.dir, "vol")
    os.mkdir(vol)
    hosts = os.path.join(bundle.dir, "hosts")
    with open(hosts, "w") as f:
        f.write("127.0.0.1 localhost\n")
    mounts = [
        "\x1f".join([vol, "/data/vol", "", "rbind,rprivate", ""]),
        "\x1f".join([hosts, "/etc/hosts", "", "bind,ro", ""]),
        "\x1f".join(["tmpfs", "/scratch", "tmpfs", "nosuid", "size=1m"]),
    ]
    script = (
        "echo hi > /data/vol/f; cat /etc/hosts; { echo x > /etc/hosts; } 2>/dev/null || echo ro1; "
        "touch /newfile 2>/dev/null || echo ro2; touch /scratch/ok && echo rw"
    )
    await bundle.run(["sh", "-c", script], mount=mounts, readonly_rootfs=1)
    assert bundle.output() == "127.0.0.1 localhost\nro1\nro2\nrw\n"
    with open(os.path.join(vol, "f")) as f:
        assert f.read() == "hi\n"
    with open("/proc/self/mountinfo") as f:
        assert f.read() == before


async def test_netns_new_only_lo(bundle: Bundle) -> None:
    await bundle.run(["sh", "-c", "ls /sys/class/net; cat /sys/class/net/lo/operstate"])
    assert bundle.output().split() == ["lo", "unknown"]


async def test_host_namespaces(bundle: Bundle) -> None:
    script = "readlink /proc/self/ns/net; readlink /proc/self/ns/ipc; hostname; ls /sys/class/net"
    # hostname must not be applied to a shared (host) uts namespace; empty net_ip is unset
    opts = {"netns": "host", "utsns": "host", "ipcns": "host", "hostname": "nope", "net_ip": ""}
    await bundle.run(["sh", "-c", script], **opts)
    lines = bundle.output().splitlines()
    assert lines[:3] == [
        os.readlink("/proc/self/ns/net"),
        os.readlink("/proc/self/ns/ipc"),
        os.uname().nodename,
    ]
    assert "lo" in lines[3:]


async def test_cgroup_join(bundle: Bundle) -> None:
    with temp_cgroup("pids") as cg:
        try:
            await bundle.start(["sleep", "100"], cgroup=cg)
            with open(os.path.join(cg, "cgroup.procs")) as f:
                assert f.read().split() == [str(bundle.container_pid())]
            # exec with no cgroup records joins the container's cgroups by itself
            data, _ = await run_exec(bundle, "e1", "cat /proc/self/cgroup")
            assert f"/{os.path.basename(cg)}\n".encode() in data
            os.kill(bundle.container_pid(), signal.SIGKILL)
            await bundle.wait()
        finally:
            bundle.kill_all()


@contextlib.contextmanager
def temp_cgroup(controller: str) -> Iterator[str]:
    base = f"/sys/fs/cgroup/{controller}"
    if not os.path.isdir(base):
        base = "/sys/fs/cgroup"
    cg = os.path.join(base, f"flotilla-shim-test-{uuid.uuid4().hex[:8]}")
    os.mkdir(cg)
    try:
        yield cg
    finally:
        for _ in range(200):
            try:
                os.rmdir(cg)
                break
            except OSError:
                time.sleep(0.01)


async def test_oom_kill_is_reported(bundle: Bundle) -> None:
    with temp_cgroup("memory") as cg:
        v1 = os.path.exists(os.path.join(cg, "memory.limit_in_bytes"))
        limit = "memory.limit_in_bytes" if v1 else "memory.max"
        with open(os.path.join(cg, limit), "w") as f:
            f.write(str(16 << 20))
        if v1 and os.path.exists(os.path.join(cg, "memory.memsw.limit_in_bytes")):
            with open(os.path.join(cg, "memory.memsw.limit_in_bytes"), "w") as f:
                f.write(str(16 << 20))
        try:
            result = await bundle.run(
                ["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"], cgroup=cg
            )
        finally:
            bundle.kill_all()
        assert result["exit_code"] == 137 and result["oom"] is True


@pytest.fixture
def veth_netns() -> Iterator[tuple[str, str]]:
    tag = uuid.uuid4().hex[:6]
    ns, host_if = f"flt-{tag}", f"flv{tag}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(
            ["ip", "link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", ns],
            check=True,
        )
        subprocess.run(["ip", "addr", "add", "10.251.77.1/24", "dev", host_if], check=True)
        subprocess.run(["ip", "link", "set", host_if, "up"], check=True)
        yield f"/run/netns/{ns}", "10.251.77.1"
    finally:
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


async def test_net_ip_in_joined_netns(bundle: Bundle, veth_netns: tuple[str, str]) -> None:
    path, gw = veth_netns
    script = (
        "ip -4 addr show eth0 | grep -o 'inet [0-9./]*'; ip route; "
        f"ping -c1 -W2 {gw} >/dev/null && echo pong"
    )
    await bundle.run(
        ["sh", "-c", script], netns=path, net_ip="10.251.77.2", net_prefix=24, net_gw=gw
    )
    out = bundle.output()
    assert "inet 10.251.77.2/24" in out
    assert f"default via {gw} dev eth0" in out
    assert "pong" in out
