"""End to end through the runtime: real containers from a busybox image, as root."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
from collections.abc import AsyncIterator

import pytest

from proto.docker.errors import Conflict, DockerError, InvalidParameter, NotFound, NotModified
from runtime import container_fs, image_transfer, usage
from runtime.containers import Runtime
from runtime.views import inspect, summary
from tests.fixtures import SUBNET, runtime_for_tests


@pytest.fixture
async def rt(busybox_tar: str) -> AsyncIterator[Runtime]:
    async with runtime_for_tests(busybox_tar) as runtime:
        yield runtime


async def reopen(rt: Runtime) -> Runtime:
    """A second Runtime on the same data root, as after an agent restart."""
    again = Runtime(
        rt.paths.root, node_name=rt.node_name, bridge_name=rt.bridge.name, bridge_subnet=SUBNET
    )
    await again.open()
    return again


async def run(rt: Runtime, cmd: list[str], **body: object) -> tuple[int, str, str]:
    """Create, start, wait, collect logs and remove: `docker run --rm` in miniature."""
    payload = {"Image": "busybox", "Cmd": cmd, **body}
    rec = await rt.create(payload)
    try:
        await rt.start(rec.id)
        result = await rt.wait(rec.id)
        entries = [e async for e in rt.logs(rec.id)]
        out = b"".join(e.data for e in entries if e.stream == "stdout").decode()
        err = b"".join(e.data for e in entries if e.stream == "stderr").decode()
        return result["StatusCode"], out, err
    finally:
        await rt.remove(rec.id, force=True)


async def test_true_and_exit_codes(rt: Runtime) -> None:
    assert (await run(rt, ["true"]))[0] == 0
    code, out, err = await run(rt, ["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (code, out, err) == (3, "out\n", "err\n")


async def test_identity_and_environment(rt: Runtime) -> None:
    code, out, _ = await run(
        rt,
        ["sh", "-c", "echo $$; hostname; id -u; pwd; echo $FOO; echo $PATH"],
        Hostname="box",
        User="nobody",
        WorkingDir="/tmp/work",
        Env=["FOO=bar"],
        HostConfig={"NetworkMode": "none"},
    )
    assert code == 0
    pid, host, uid, cwd, foo, path = out.split()
    assert (pid, host, uid, cwd, foo) == ("1", "box", "65534", "/tmp/work", "bar")
    assert path == "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


async def test_entrypoint_and_cmd(rt: Runtime) -> None:
    _, out, _ = await run(rt, ["a", "b"], Entrypoint=["echo", "x"])
    assert out == "x a b\n"


async def test_default_capabilities_and_masks(rt: Runtime) -> None:
    _, out, _ = await run(
        rt, ["sh", "-c", "grep CapEff /proc/self/status; cat /proc/kcore | wc -c; echo ok"]
    )
    lines = out.split()
    assert lines[1] == "00000000a80425fb"
    assert lines[2] == "0"
    _, out, _ = await run(
        rt, ["sh", "-c", "echo x 2>&1 >/proc/sys/kernel/domainname; mkdir /sys/fs/x 2>&1; true"]
    )
    assert out.count("Read-only file system") == 2, out


async def test_errors_worded_like_docker(rt: Runtime) -> None:
    with pytest.raises(NotFound, match=r"^No such image: nosuchimage:1\.0$"):
        await rt.create({"Image": "nosuchimage:1.0", "Cmd": ["true"]})
    with pytest.raises(NotFound, match=r"^No such container: nope$"):
        rt.get("nope")
    rec = await rt.create({"Image": "busybox", "Cmd": ["sleep", "30"]}, name="web")
    with pytest.raises(Conflict, match='The container name "/web" is already in use'):
        await rt.create({"Image": "busybox"}, name="web")
    await rt.start("web")
    with pytest.raises(NotModified):
        await rt.start("web")
    with pytest.raises(Conflict, match="You cannot remove a running container"):
        await rt.remove("web")
    await rt.remove(rec.id, force=True)
    with pytest.raises(InvalidParameter, match="Minimum memory limit allowed is 6MB"):
        await rt.create({"Image": "busybox", "HostConfig": {"Memory": 1024}})
    rec = await rt.create({"Image": "busybox", "Cmd": ["nosuchcmd"]})
    with pytest.raises(DockerError, match='exec: "nosuchcmd": executable file not found in'):
        await rt.start(rec.id)
    assert inspect(rt, rec)["State"]["ExitCode"] == 127
    rec = await rt.create({"Image": "busybox", "Cmd": ["true"], "User": "nosuchuser"})
    with pytest.raises(DockerError, match="unable to find user nosuchuser"):
        await rt.start(rec.id)


async def test_bridge_network_and_published_port(rt: Runtime) -> None:
    server = await rt.create(
        {
            "Image": "busybox",
            "Cmd": ["sh", "-c", "while true; do echo hello | nc -l -p 80; done"],
            "ExposedPorts": {"80/tcp": {}},
            "HostConfig": {"PortBindings": {"80/tcp": [{"HostIp": "", "HostPort": ""}]}},
        },
        name="srv",
    )
    await rt.start(server.id)
    info = inspect(rt, server)
    ip = info["NetworkSettings"]["IPAddress"]
    assert ip.startswith("10.77.0.")
    host_port = int(info["NetworkSettings"]["Ports"]["80/tcp"][0]["HostPort"])
    assert summary(rt, server)["Ports"][0]["PublicPort"] == host_port
    # From a second container by IP, from the host by the container IP, and via loopback DNAT.
    code, out, _ = await run(rt, ["sh", "-c", f"nc {ip} 80 </dev/null"])
    assert (code, out) == (0, "hello\n")
    assert await _read_tcp(ip, 80) == b"hello\n"
    assert await _read_tcp("127.0.0.1", host_port) == b"hello\n"
    await rt.remove(server.id, force=True)
    saved = subprocess.run(["iptables-save", "-t", "nat"], capture_output=True, text=True).stdout
    rules = [line for line in saved.splitlines() if line.startswith("-A")]
    assert not any(f"--dport {host_port}" in rule for rule in rules)


async def _read_tcp(host: str, port: int) -> bytes:
    for _ in range(50):
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        data = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        if data:
            return data
        await asyncio.sleep(0.05)
    raise AssertionError(f"nothing served at {host}:{port}")


async def test_links_give_legacy_env_and_hosts(rt: Runtime) -> None:
    target = await rt.create(
        {"Image": "busybox", "Cmd": ["sleep", "30"], "ExposedPorts": {"6666/tcp": {}}},
        name="db",
    )
    await rt.start(target.id)
    ip = inspect(rt, target)["NetworkSettings"]["IPAddress"]
    _, out, _ = await run(
        rt, ["sh", "-c", "env; cat /etc/hosts"], HostConfig={"Links": ["db:alias"]}
    )
    assert f"ALIAS_PORT_6666_TCP_ADDR={ip}" in out
    assert f"ALIAS_PORT=tcp://{ip}:6666" in out
    assert any(line.startswith(ip) and "alias" in line for line in out.splitlines())


async def test_stop_kill_pause_restart(rt: Runtime) -> None:
    rec = await rt.create(
        {
            "Image": "busybox",
            "Cmd": ["sh", "-c", "trap 'exit 42' TERM; while :; do sleep 0.1; done"],
        }
    )
    await rt.start(rec.id)
    await rt.pause(rec.id)
    assert inspect(rt, rec)["State"]["Paused"] is True
    await rt.unpause(rec.id)
    await rt.stop(rec.id, timeout=5)
    assert inspect(rt, rec)["State"]["ExitCode"] == 42
    with pytest.raises(NotModified):
        await rt.stop(rec.id)
    await rt.start(rec.id)
    await rt.kill(rec.id, "KILL")
    await rt.wait(rec.id)
    assert inspect(rt, rec)["State"]["ExitCode"] == 137
    with pytest.raises(Conflict, match="is not running"):
        await rt.kill(rec.id)


async def test_restart_policy_on_failure(rt: Runtime) -> None:
    rec = await rt.create(
        {
            "Image": "busybox",
            "Cmd": ["sh", "-c", "exit 5"],
            "HostConfig": {"RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 2}},
        }
    )
    await rt.start(rec.id)
    for _ in range(100):
        if rec.restart_count == 2 and rec.status == "exited":
            break
        await asyncio.sleep(0.05)
    assert (rec.restart_count, rec.status, rec.exit_code) == (2, "exited", 5)


async def test_oom_kill(rt: Runtime) -> None:
    code, _, _ = await run(
        rt,
        ["sh", "-c", "x=a; while :; do x=$x$x$x$x; done"],
        HostConfig={"Memory": 8 * 1024 * 1024, "MemorySwap": 8 * 1024 * 1024},
    )
    assert code == 137


async def test_exec_attach_and_tty(rt: Runtime) -> None:
    rec = await rt.create({"Image": "busybox", "Cmd": ["sleep", "30"], "Hostname": "h1"})
    await rt.start(rec.id)
    eid = rt.execs.create(rec.id, {"Cmd": ["sh", "-c", "hostname; exit 7"], "AttachStdout": True})
    streams = await rt.execs.start(eid)
    assert streams is not None
    data = await asyncio.wait_for(streams[0].read(), 5)
    assert data[8:] == b"h1\n" and data[0] == 1
    await asyncio.wait_for(rt.execs.get(eid).done.wait(), 5)
    assert rt.execs.get(eid).exit_code == 7

    eid = rt.execs.create(
        rec.id, {"Cmd": ["cat"], "AttachStdin": True, "AttachStdout": True, "Tty": True}
    )
    reader, writer = await rt.execs.start(eid)  # type: ignore[misc]
    await rt.execs.resize(eid, 30, 100)
    writer.write(b"ping\n")
    await writer.drain()
    echoed = await asyncio.wait_for(reader.readuntil(b"ping\r\n"), 5)
    assert b"ping" in echoed
    writer.write(b"\x04")
    await writer.drain()
    await asyncio.wait_for(rt.execs.get(eid).done.wait(), 5)


async def test_attach_to_running_container(rt: Runtime) -> None:
    rec = await rt.create(
        {"Image": "busybox", "Cmd": ["cat"], "OpenStdin": True, "StdinOnce": True}
    )
    await rt.start(rec.id)
    reader, writer = await rt.attach(rec.id, True, True, True)
    writer.write(b"hello\n")
    await writer.drain()
    frame = await asyncio.wait_for(reader.readexactly(8 + 6), 5)
    assert frame == b"\x01\x00\x00\x00\x00\x00\x00\x06hello\n"
    writer.write_eof()
    assert (await asyncio.wait_for(rt.wait(rec.id), 5))["StatusCode"] == 0


async def test_survives_runtime_restart(rt: Runtime) -> None:
    rec = await rt.create({"Image": "busybox", "Cmd": ["sh", "-c", "echo before; sleep 30"]})
    await rt.start(rec.id)
    pid = rec.pid
    await rt.close()
    again = await reopen(rt)
    adopted = again.get(rec.id)
    assert adopted.status == "running" and adopted.pid == pid
    os.kill(pid, 0)
    entries = [e async for e in again.logs(rec.id)]
    assert entries[0].data == b"before\n"
    await again.stop(rec.id, timeout=1)
    assert again.get(rec.id).exit_code == 137
    await again.remove(rec.id)
    await again.close()


async def test_reconcile_after_shim_death(rt: Runtime) -> None:
    rec = await rt.create({"Image": "busybox", "Cmd": ["sleep", "30"]})
    await rt.start(rec.id)
    await rt.close()
    os.kill(rec.pid, signal.SIGKILL)  # the shim then records the exit and quits
    for _ in range(100):
        if os.path.exists(os.path.join(rt.paths.container(rec.id), "exit.json")):
            break
        await asyncio.sleep(0.02)
    again = await reopen(rt)
    assert again.get(rec.id).status == "exited"
    assert again.get(rec.id).exit_code == 137
    assert rec.id not in again.cgroups.list_ids()
    await again.remove(rec.id)
    await again.close()


async def test_reconcile_after_crash_mid_start(rt: Runtime) -> None:
    """A runtime that died half-way through a start leaves kernel state; the next one clears it."""
    from runtime.cgroups import Resources
    from runtime.netns import create_netns

    rec = await rt.create({"Image": "busybox", "Cmd": ["true"]})
    half = await rt.create({"Image": "busybox", "Cmd": ["true"]})
    os.unlink(os.path.join(rt.paths.container(half.id), "config.json"))  # died inside create
    await asyncio.to_thread(rt.bridge.ensure)
    ip, _, _, mac = await asyncio.to_thread(rt.bridge.allocate, rec.id)
    netns_path = os.path.join(rt.paths.netns, rec.id)
    await asyncio.to_thread(create_netns, netns_path)
    await asyncio.to_thread(rt.bridge.attach, rec.id, netns_path, ip, mac)
    await asyncio.to_thread(rt.ports.publish, rec.id, ip, {"80/tcp": [{"HostPort": ""}]})
    await asyncio.to_thread(rt.cgroups.create, rec.id, Resources())
    await rt.close()
    again = await reopen(rt)
    assert again.get(rec.id).status == "created"
    with pytest.raises(NotFound):
        again.get(half.id)
    assert not os.path.exists(rt.paths.container(half.id))
    assert again.cgroups.list_ids() == []
    assert os.listdir(again.paths.netns) == []
    assert again.bridge.list_allocations() == {}
    assert again.ports.allocations() == {}
    assert await asyncio.to_thread(again.bridge.veths) == []
    await again.remove(rec.id)
    await again.close()


async def test_filesystem_cp_diff_export_commit(rt: Runtime) -> None:
    rec = await rt.create(
        {"Image": "busybox", "Cmd": ["sh", "-c", "echo hi > /greeting; rm /bin/vi"]}
    )
    await rt.start(rec.id)
    await rt.wait(rec.id)
    changes = {(c["Path"], c["Kind"]) for c in await container_fs.changes(rt, rec.id)}
    assert ("/greeting", 1) in changes and ("/bin/vi", 2) in changes
    buf = io.BytesIO()
    stat = await container_fs.archive_get(rt, rec.id, "/greeting", buf)
    assert stat["name"] == "greeting"
    buf.seek(0)
    with tarfile.open(fileobj=buf) as tar:
        assert tar.extractfile("greeting").read() == b"hi\n"  # type: ignore[union-attr]
    upload = io.BytesIO()
    with tarfile.open(fileobj=upload, mode="w") as tar:
        info = tarfile.TarInfo("uploaded")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"up\n"))
    upload.seek(0)
    await container_fs.archive_put(rt, rec.id, "/tmp", upload)
    exported = io.BytesIO()
    await container_fs.export(rt, rec.id, exported)
    exported.seek(0)
    with tarfile.open(fileobj=exported) as tar:
        names = set(tar.getnames())
    assert {"greeting", "tmp/uploaded", "bin/sh"} <= {n.lstrip("./") for n in names}
    assert "bin/vi" not in {n.lstrip("./") for n in names}
    image_id = await container_fs.commit(rt, rec.id, reference="committed:1")
    code, out, _ = await run(rt, ["cat", "/greeting", "/tmp/uploaded"], Image=image_id)
    assert (code, out) == (0, "hi\nup\n")


async def test_volumes_binds_and_tmpfs(rt: Runtime) -> None:
    hostdir = tempfile.mkdtemp(prefix="flt-bind-")
    try:
        with open(os.path.join(hostdir, "f"), "w") as f:
            f.write("host\n")
        code, out, _ = await run(
            rt,
            [
                "sh",
                "-c",
                "cat /h/f; touch /h/x 2>&1; echo v > /data/v; ls /etc-copy | head -1;"
                " mount | grep ' /scratch '",
            ],
            HostConfig={
                "Binds": [f"{hostdir}:/h:ro", "vol1:/data", "vol2:/etc-copy"],
                "Tmpfs": {"/scratch": "size=1m"},
            },
        )
        assert code == 0, out
        assert out.startswith("host\n") and "Read-only file system" in out
        assert "tmpfs" in out
        _, out, _ = await run(rt, ["cat", "/data/v"], HostConfig={"Binds": ["vol1:/data"]})
        assert out == "v\n"
    finally:
        shutil.rmtree(hostdir, ignore_errors=True)
        for name in ("vol1", "vol2"):
            with contextlib.suppress(DockerError):
                rt.volumes.remove(name)


async def test_top_and_stats(rt: Runtime) -> None:
    rec = await rt.create({"Image": "busybox", "Cmd": ["sleep", "30"]})
    await rt.start(rec.id)
    top = await usage.top(rt, rec.id)
    assert "PID" in top["Titles"]
    assert any("sleep 30" in " ".join(p) for p in top["Processes"])
    stats = await usage.stats(rt, rec.id)
    assert stats["memory_stats"]["usage"] > 0
    assert stats["pids_stats"]["current"] == 1
    assert "eth0" in stats["networks"]
    json.dumps(stats)


async def test_ps_and_inspect_shapes(rt: Runtime) -> None:
    rec = await rt.create({"Image": "busybox", "Cmd": ["true"], "Labels": {"a": "b"}}, name="x1")
    row = summary(rt, rec)
    assert row["Names"] == ["/x1"] and row["Status"] == "Created" and row["Labels"] == {"a": "b"}
    info = inspect(rt, rec)
    assert info["Name"] == "/x1" and info["State"]["Status"] == "created"
    assert info["Config"]["Cmd"] == ["true"]
    await rt.rename("x1", "x2")
    assert rt.get("x2").id == rec.id
    with pytest.raises(NotFound):
        rt.get("x1")


async def test_network_modes_host_none_and_container(rt: Runtime) -> None:
    _, out, _ = await run(rt, ["sh", "-c", "ls /sys/class/net"], HostConfig={"NetworkMode": "none"})
    assert out.split() == ["lo"]
    await asyncio.to_thread(rt.bridge.ensure)  # an interface of the host to look for
    _, out, _ = await run(rt, ["sh", "-c", "ls /sys/class/net"], HostConfig={"NetworkMode": "host"})
    assert "lo" in out.split() and rt.bridge.name in out.split()
    base = await rt.create({"Image": "busybox", "Cmd": ["sleep", "30"]}, name="netbase")
    await rt.start(base.id)
    ip = inspect(rt, base)["NetworkSettings"]["IPAddress"]
    _, out, _ = await run(
        rt, ["sh", "-c", "ip -4 -o addr show eth0"], HostConfig={"NetworkMode": "container:netbase"}
    )
    assert f"inet {ip}/" in out
    await rt.remove(base.id, force=True)
    rec = await rt.create(
        {"Image": "busybox", "Cmd": ["true"], "HostConfig": {"NetworkMode": "container:nope"}}
    )
    with pytest.raises(NotFound, match="No such container: nope"):
        await rt.start(rec.id)


async def test_limits_pids_cpus_and_oom_flag(rt: Runtime) -> None:
    code, out, _ = await run(
        rt,
        ["sh", "-c", "grep NoNewPrivs /proc/self/status; for i in 1 2 3 4 5 6; do sleep 5 & done"],
        HostConfig={"PidsLimit": 4, "NanoCpus": 500_000_000},
    )
    assert "NoNewPrivs:\t0" in out  # dockerd's default: setuid binaries keep working
    rec = await rt.create(
        {
            "Image": "busybox",
            "Cmd": ["sh", "-c", "x=a; while :; do x=$x$x$x$x; done"],
            "HostConfig": {"Memory": 8 << 20, "MemorySwap": 8 << 20},
        }
    )
    await rt.start(rec.id)
    await rt.wait(rec.id)
    state = inspect(rt, rec)["State"]
    assert (state["ExitCode"], state["OOMKilled"]) == (137, True)


async def test_cpus_and_pids_reach_the_cgroups(rt: Runtime) -> None:
    rec = await rt.create(
        {
            "Image": "busybox",
            "Cmd": ["sleep", "30"],
            "HostConfig": {"PidsLimit": 7, "NanoCpus": 500_000_000, "CpuShares": 512},
        }
    )
    await rt.start(rec.id)
    stats = await usage.stats(rt, rec.id)
    assert stats["pids_stats"]["limit"] == 7
    dirs = rt.cgroups.dirs(rec.id)
    cpu = next(d for d in dirs if "/cpu/" in d or d.endswith(rec.id) and rt.cgroups.version == 2)
    if rt.cgroups.version == 1:
        with open(os.path.join(cpu, "cpu.cfs_quota_us")) as f:
            assert f.read().strip() == "50000"
        with open(os.path.join(cpu, "cpu.shares")) as f:
            assert f.read().strip() == "512"
    await rt.update(rec.id, {"Memory": 64 << 20, "MemorySwap": 128 << 20})
    assert (await usage.stats(rt, rec.id))["memory_stats"]["limit"] == 64 << 20


async def test_attach_before_start_gets_all_output(rt: Runtime) -> None:
    """`docker run` attaches first, then starts: nothing written in between may be lost."""
    rec = await rt.create({"Image": "busybox", "Cmd": ["sh", "-c", "echo first; echo err >&2"]})
    await rt.start(rec.id, hold_output=True)
    reader, writer = await rt.attach(rec.id, False, True, True)
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert data == b"\x01\x00\x00\x00\x00\x00\x00\x06first\n\x02\x00\x00\x00\x00\x00\x00\x04err\n"
    assert (await rt.wait(rec.id))["StatusCode"] == 0


async def test_follow_logs_until_exit(rt: Runtime) -> None:
    rec = await rt.create(
        {"Image": "busybox", "Cmd": ["sh", "-c", "for i in 1 2 3; do echo $i; sleep 0.1; done"]}
    )
    await rt.start(rec.id)
    lines = [e.data async for e in rt.logs(rec.id, follow=True)]
    assert lines == [b"1\n", b"2\n", b"3\n"]
    tail = [e.data async for e in rt.logs(rec.id, tail=1)]
    assert tail == [b"3\n"]


async def test_image_removal_rules_and_save_load(rt: Runtime) -> None:
    rec = await rt.create({"Image": "busybox", "Cmd": ["sleep", "30"]})
    await rt.start(rec.id)
    image_id = rec.image_id
    with pytest.raises(Conflict, match="image is being used by running container"):
        rt.remove_image(image_id, force=True)
    buf = io.BytesIO()
    image_transfer.save(rt.images, ["busybox:latest"], buf)
    await rt.remove(rec.id, force=True)
    deleted = rt.remove_image("busybox:latest")
    assert {"Deleted": image_id} in deleted
    with pytest.raises(NotFound):
        await rt.create({"Image": "busybox"})
    buf.seek(0)
    assert image_transfer.load(rt.images, buf) == ["Loaded image: busybox:latest"]
    assert (await run(rt, ["true"]))[0] == 0


async def test_concurrent_first_starts_share_one_bridge_setup(rt: Runtime) -> None:
    """Several containers started at once on a fresh node (a reschedule lands them together):
    every start succeeds, none loses a race to create the bridge (EEXIST)."""
    recs = [await rt.create({"Image": "busybox", "Cmd": ["sleep", "30"]}) for _ in range(5)]
    await asyncio.gather(*(rt.start(rec.id) for rec in recs))
    assert all(rt.get(rec.id).running for rec in recs)
