"""The manager's streaming and per-container I/O endpoints end to end: a real dev cluster driven
by the real docker CLI (attach/run, logs, exec, top, stats, cp, diff, export, update, commit).

One cluster serves the module; tests run in file order and each removes what it made.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tarfile
import time
from collections.abc import Iterator

import pytest

from deploy import devcluster as dc
from tests.fixtures import DOCKER, dev_cluster, docker

HOST = dc.docker_host()
SCRIPT = "echo out; echo err >&2; exit 3"


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, object]]:
    with dev_cluster(2) as nodes:
        yield nodes


@pytest.fixture
def web(cluster: dict[str, object]) -> Iterator[str]:
    """A running container named `web` that prints one line to each stream."""
    docker(
        "run", "-d", "--name", "web", "busybox", "sh", "-c",
        "echo hello-out; echo hello-err >&2; exec sleep 300",
    )  # fmt: skip
    try:
        yield "web"
    finally:
        docker("rm", "-f", "web", check=False)


def test_run_attached(cluster: dict[str, object]) -> None:
    res = docker("run", "--rm", "busybox", "echo", "hi")
    assert res.stdout == "hi\n"
    res = docker("run", "--name", "out-err", "busybox", "sh", "-c", SCRIPT, check=False)
    docker("rm", "out-err")
    assert (res.returncode, res.stdout, res.stderr) == (3, "out\n", "err\n")
    res = docker("run", "--rm", "-i", "busybox", "cat", stdin="piped\nlines\n")
    assert res.stdout == "piped\nlines\n"
    # start -a attaches before starting, as run does.
    cid = docker("create", "busybox", "echo", "again").stdout.strip()
    try:
        assert docker("start", "-a", cid).stdout == "again\n"
    finally:
        docker("rm", "-f", cid, check=False)


def test_run_rm_exit_code(cluster: dict[str, object]) -> None:
    res = docker("run", "--rm", "busybox", "sh", "-c", SCRIPT, check=False)
    assert (res.stdout, res.stderr) == ("out\n", "err\n")
    assert res.returncode == 3


def in_pty(command: str) -> subprocess.CompletedProcess[str]:
    """`command` with a pseudo-terminal for the CLI (script(1)), so `-t` is allowed."""
    if not shutil.which("script"):
        pytest.skip("script(1) not installed")
    env = dict(os.environ, DOCKER_HOST=HOST)
    return subprocess.run(
        ["script", "-qec", command, "/dev/null"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def test_run_tty(cluster: dict[str, object]) -> None:
    res = in_pty(f"{DOCKER} run --name tty -t busybox sh -c 'echo tty-$(tty | cut -c1-8); exit 4'")
    docker("rm", "-f", "tty", check=False)
    assert "tty-/dev/pts" in res.stdout, res.stdout + res.stderr
    assert res.returncode == 4


def hijack(path: str) -> socket.socket:
    """A raw hijacked connection as the CLI opens it: POST with `Upgrade: tcp`, then 101."""
    host, _, port = dc.MANAGER_ADDR.partition(":")
    sock = socket.create_connection((host, int(port)), timeout=20)
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: docker\r\nConnection: Upgrade\r\n"
        "Upgrade: tcp\r\nContent-Length: 0\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101 UPGRADED\r\n"), head
    return sock


def read_all(sock: socket.socket) -> bytes:
    out = b""
    while chunk := sock.recv(4096):
        out += chunk
    return out


def test_attach_detach_keys(cluster: dict[str, object]) -> None:
    """The detach keys end the session and leave the container running, its stdin open."""
    docker("run", "-dit", "--name", "detach-me", "busybox", "sh")
    try:
        path = "/v1.41/containers/detach-me/attach?stdin=1&stdout=1&stream=1"
        with hijack(path + "&detachKeys=ctrl-x,y") as sock:
            sock.sendall(b"echo marker-$((40 + 2))\r")
            time.sleep(0.5)
            sock.sendall(b"\x18y")
            assert b"marker-42" in read_all(sock)
        assert inspect_state("detach-me")["Running"]
        with hijack(path) as sock:  # stdin still open: the shell takes the next command
            sock.sendall(b"echo again-$((1 + 1))\r")
            time.sleep(0.5)
            sock.sendall(b"\x10\x11")
            assert b"again-2" in read_all(sock)
        # A half-close ends the session of a TTY container, not its stdin (as in dockerd).
        with hijack(path) as sock:
            sock.shutdown(socket.SHUT_WR)
            read_all(sock)
        assert inspect_state("detach-me")["Running"]
    finally:
        docker("rm", "-f", "detach-me", check=False)


def in_terminal(args: list[str], keys: list[bytes], timeout: float = 30) -> tuple[int, bytes]:
    """Run the docker CLI on a real pseudo-terminal, typing `keys` one by one (0.5 s apart);
    its exit code and everything it printed. The CLI talks to the manager's unix socket: over
    TCP it cannot detach (ctrl-p ctrl-q hangs, as with dockerd or classic Swarm, swarm#2003)."""
    import pty
    import select

    pid, fd = pty.fork()
    if pid == 0:  # the child: the CLI with the pty as its terminal
        os.environ["DOCKER_HOST"] = f"unix://{dc.MANAGER_SOCKET}"
        os.execv(DOCKER, [DOCKER, *args])
    out = b""
    deadline = time.monotonic() + timeout
    pending = list(keys)
    next_key = time.monotonic() + 2.0
    try:
        while time.monotonic() < deadline:
            if pending and time.monotonic() >= next_key:
                os.write(fd, pending.pop(0))
                next_key = time.monotonic() + 0.5
            ready, _, _ = select.select([fd], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:  # EIO: the CLI closed its terminal
                    break
                if not chunk:
                    break
                out += chunk
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return os.waitstatus_to_exitcode(status), out
        os.kill(pid, 9)
    finally:
        os.close(fd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), out


def test_cli_detach_with_ctrl_p_ctrl_q(cluster: dict[str, object]) -> None:
    """`docker run -it` and `docker attach` in a real terminal: ctrl-p ctrl-q detaches."""
    try:
        code, out = in_terminal(
            ["run", "-it", "--name", "term", "busybox", "sh"],
            [b"echo typed-$((6 * 7))\r", b"\x10", b"\x11"],  # typed as keys: one per read
        )
        assert code == 0 and b"typed-42" in out, out
        assert inspect_state("term")["Running"]
        code, out = in_terminal(["attach", "term"], [b"echo back-$((2 + 3))\r", b"\x10", b"\x11"])
        # `docker attach` reports the detach as its error (exit 1), with dockerd too.
        assert code == 1 and b"back-5" in out and b"read escape sequence" in out, out
        assert inspect_state("term")["Running"]
    finally:
        docker("rm", "-f", "term", check=False)


def inspect_state(ref: str) -> dict[str, object]:
    state: dict[str, object] = json.loads(docker("inspect", ref).stdout)[0]["State"]
    return state


def test_logs(web: str) -> None:
    docker("exec", web, "true")  # the container's first lines are written by now
    res = docker("logs", web)
    assert (res.stdout, res.stderr) == ("hello-out\n", "hello-err\n")
    assert docker("logs", "--tail", "0", web).stdout == ""
    stamped = docker("logs", "-t", web).stdout
    assert stamped.endswith(" hello-out\n") and stamped[:2] == "20"
    assert docker("logs", "--since", "2000-01-01T00:00:00Z", web).stdout == "hello-out\n"
    assert docker("logs", "--until", "2000-01-01T00:00:00Z", web).stdout == ""
    res = docker("logs", "no-such-container", check=False)
    assert res.returncode == 1 and "No such container: no-such-container" in res.stderr
    # follow ends when the container exits
    cid = docker("run", "-d", "busybox", "sh", "-c", "echo a; sleep 1; echo b").stdout.strip()
    try:
        assert docker("logs", "-f", cid, timeout=30).stdout == "a\nb\n"
    finally:
        docker("rm", "-f", cid, check=False)


def test_exec(web: str) -> None:
    assert docker("exec", web, "echo", "in-exec").stdout == "in-exec\n"
    res = docker("exec", web, "sh", "-c", "echo e >&2; exit 3", check=False)
    assert (res.returncode, res.stderr) == (3, "e\n")
    assert docker("exec", "-i", web, "cat", stdin="to-exec\n").stdout == "to-exec\n"
    docker("exec", "-d", web, "sh", "-c", "echo detached > /tmp/d")
    assert docker("exec", web, "sh", "-c", "sleep 0.5; cat /tmp/d").stdout == "detached\n"
    hostname = docker("exec", web, "hostname").stdout.strip()
    assert hostname and len(hostname) == 12
    res = in_pty(f"{DOCKER} exec -t {web} sh -c 'echo tty-$(tty | cut -c1-8); exit 5'")
    assert "tty-/dev/pts" in res.stdout and res.returncode == 5, res.stdout + res.stderr
    res = docker("exec", web, "nosuchcmd", check=False)
    assert res.returncode in (126, 127)


def test_top_stats_port_update(web: str) -> None:
    top = docker("top", web).stdout
    assert "sleep 300" in top and "PID" in top.splitlines()[0]
    out = docker("stats", "--no-stream", "--format", "{{json .}}", web).stdout
    row = json.loads(out.splitlines()[0])
    assert row["Name"] == "web" and row["MemUsage"]
    docker("update", "--memory", "64m", "--memory-swap", "128m", web)
    assert json.loads(docker("inspect", web).stdout)[0]["HostConfig"]["Memory"] == 64 << 20
    cid = docker("run", "-d", "-p", "18081:80", "busybox", "sleep", "300").stdout.strip()
    try:
        node_ip = json.loads(docker("inspect", cid).stdout)[0]["Node"]["IP"]
        # As classic Swarm: the node's address where dockerd says 0.0.0.0.
        assert docker("port", cid).stdout.startswith(f"80/tcp -> {node_ip}:18081")
    finally:
        docker("rm", "-f", cid, check=False)


def test_cp_diff_export_commit(web: str, tmp_path: object) -> None:
    assert isinstance(tmp_path, os.PathLike)
    src = os.path.join(tmp_path, "in.txt")
    with open(src, "w") as f:
        f.write("copied in\n")
    docker("cp", src, f"{web}:/tmp/in.txt")
    assert docker("exec", web, "cat", "/tmp/in.txt").stdout == "copied in\n"
    dst = os.path.join(tmp_path, "out.txt")
    docker("cp", f"{web}:/tmp/in.txt", dst)
    with open(dst) as f:
        assert f.read() == "copied in\n"
    res = docker("cp", f"{web}:/no/such/file", dst, check=False)
    assert res.returncode == 1 and "Could not find the file /no/such/file" in res.stderr
    diff = docker("diff", web).stdout.splitlines()
    assert "A /tmp/in.txt" in diff and "C /tmp" in diff
    tar_path = os.path.join(tmp_path, "fs.tar")
    docker("export", "-o", tar_path, web)
    with tarfile.open(tar_path) as tar:
        names = tar.getnames()
    assert "tmp/in.txt" in names and "bin/busybox" in names
    image_id = docker(
        "commit", "-c", "ENV COMMITTED=1", "-m", "msg", "-a", "me", web, "committed:v1"
    ).stdout.strip()
    assert image_id.startswith("sha256:")
    try:
        node = json.loads(docker("inspect", web).stdout)[0]["Node"]["Name"]
        res = docker(
            "run", "--rm", "-e", f"constraint:node=={node}", "committed:v1", "sh", "-c",
            "cat /tmp/in.txt; echo $COMMITTED",
        )  # fmt: skip
        assert res.stdout == "copied in\n1\n"
    finally:
        docker("rmi", "-f", "committed:v1", check=False)


def test_attach_running_and_stats_stream(web: str) -> None:
    env = dict(os.environ, DOCKER_HOST=HOST)
    cid = docker("run", "-d", "busybox", "sh", "-c", "sleep 1; echo late; sleep 1").stdout.strip()
    try:
        # Attached to a running container: its later output, and the end at its exit.
        res = subprocess.run(
            [DOCKER, "attach", cid], capture_output=True, text=True, timeout=30, env=env
        )
        assert res.stdout == "late\n"
    finally:
        docker("rm", "-f", cid, check=False)
    # Streamed stats: one JSON document per line, a second apart, until the client leaves.
    with subprocess.Popen(
        [DOCKER, "stats", "--format", "{{.Name}}", web], stdout=subprocess.PIPE, env=env
    ) as proc:
        assert proc.stdout is not None
        seen = [proc.stdout.readline() for _ in range(2)]
        proc.terminate()
    assert all(b"web" in line for line in seen)


def test_docker_py(web: str) -> None:
    import docker as docker_py

    client = docker_py.DockerClient(base_url=HOST)
    try:
        ct = client.containers.get(web)
        for _ in range(3):  # docker-py loses bytes that come with the 101 head
            assert tuple(ct.exec_run("echo hi")) == (0, b"hi\n")
        assert ct.exec_run(["sh", "-c", "echo o; echo e >&2; exit 2"], demux=True) == (
            2,
            (b"o\n", b"e\n"),
        )
        assert ct.logs(stdout=True, stderr=False) == b"hello-out\n"
        assert ct.stats(stream=False)["name"] == "/web"
        bits, stat = ct.get_archive("/etc/hostname")
        assert stat["name"] == "hostname" and b"".join(bits)
        out = client.containers.run("busybox", ["sh", "-c", "echo a; echo b >&2"], remove=False)
        assert out == b"a\n"
    finally:
        for c in client.containers.list(all=True, filters={"ancestor": "busybox"}):
            if c.name != web:
                c.remove(force=True)
        client.close()
