"""A dockerd to compare with, for the benches: the docker CLI helper, the system's dockerd when
one answers, or a private dockerd started for the run.

The private one runs in a network namespace of its own (its bridge and iptables rules stay
there; `dockerd_netns`), with a throwaway data root and exec root under one temp dir, removed
after; it is never the system's service. `dockerd_netns(link=True)` also gives the namespace a
veth pair to the root namespace (LINK_HOST_IP on the host side, the namespace's default route),
so the private dockerd reaches a service the bench runs on the host at that address — which the
dev cluster's nodes reach too, through their default route via the host.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence

from deploy.busybox_image import build_rootfs_tar

DOCKER = shutil.which("docker") or "/usr/local/bin/docker"
BENCH_NETNS = "flt-bench-dockerd"
# The veth pair of `dockerd_netns(link=True)`: names ≤ 15 characters, a /30 of its own.
LINK_HOST_IF = "flt-bd-host"
LINK_NS_IF = "flt-bd-ns"
LINK_HOST_IP = "10.98.77.1"
LINK_NS_IP = "10.98.77.2"


def docker(host: str, *args: str) -> str:
    env = dict(os.environ, DOCKER_HOST=host)
    done = subprocess.run([DOCKER, *args], env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def answers(host: str) -> bool:
    env = dict(os.environ, DOCKER_HOST=host)
    done = subprocess.run([DOCKER, "version"], env=env, capture_output=True, check=False)
    return done.returncode == 0


def installed() -> bool:
    return shutil.which("dockerd") is not None


def ensure_busybox(host: str) -> None:
    """busybox:latest on that dockerd: the same root filesystem the dev cluster's nodes get."""
    if "busybox:latest" in docker(host, "images", "--format", "{{.Repository}}:{{.Tag}}"):
        return
    with tempfile.TemporaryDirectory(prefix="flt-bench-bb-") as tmp:
        tar = build_rootfs_tar(os.path.join(tmp, "busybox.tar"))
        docker(host, "import", "--change", 'CMD ["sh"]', tar, "busybox:latest")


@contextlib.contextmanager
def dockerd_host() -> Iterator[str | None]:
    """A dockerd with busybox:latest to compare with: the system's, or a private one; None
    when dockerd is not installed."""
    if not installed():
        yield None
        return
    system = "unix:///var/run/docker.sock"
    if os.path.exists("/var/run/docker.sock") and answers(system):
        ensure_busybox(system)
        yield system
        return
    with dockerd_netns() as netns, private_dockerd(netns) as host:
        ensure_busybox(host)
        yield host


def _ip(*args: str, netns: str = "") -> None:
    prefix = ["ip", "netns", "exec", netns] if netns else []
    subprocess.run([*prefix, "ip", *args], check=True, capture_output=True)


@contextlib.contextmanager
def dockerd_netns(link: bool = False) -> Iterator[str]:
    """The private dockerd's network namespace (loopback up), gone on exit with its devices;
    with `link`, the veth pair to the host (LINK_HOST_IP ↔ LINK_NS_IP)."""
    if os.path.exists(f"/run/netns/{BENCH_NETNS}"):
        # A killed earlier run's: ours by name, and nothing else may be using it.
        subprocess.run(["ip", "netns", "delete", BENCH_NETNS], check=False)
    subprocess.run(["ip", "link", "delete", LINK_HOST_IF], check=False, capture_output=True)
    subprocess.run(["ip", "netns", "add", BENCH_NETNS], check=True)
    try:
        _ip("link", "set", "lo", "up", netns=BENCH_NETNS)
        if link:
            _ip("link", "add", LINK_HOST_IF, "type", "veth", "peer", "name", LINK_NS_IF)
            _ip("link", "set", LINK_NS_IF, "netns", BENCH_NETNS)
            _ip("addr", "add", f"{LINK_HOST_IP}/30", "dev", LINK_HOST_IF)
            _ip("link", "set", LINK_HOST_IF, "up")
            _ip("addr", "add", f"{LINK_NS_IP}/30", "dev", LINK_NS_IF, netns=BENCH_NETNS)
            _ip("link", "set", LINK_NS_IF, "up", netns=BENCH_NETNS)
            _ip("route", "add", "default", "via", LINK_HOST_IP, netns=BENCH_NETNS)
        yield BENCH_NETNS
    finally:
        # Deleting the namespace destroys its end of the pair, and with it the host's.
        subprocess.run(["ip", "netns", "delete", BENCH_NETNS], check=False)
        subprocess.run(["ip", "link", "delete", LINK_HOST_IF], check=False, capture_output=True)


@contextlib.contextmanager
def private_dockerd(netns: str, extra_args: Sequence[str] = ()) -> Iterator[str]:
    """A dockerd in `netns` with its own data root; yields its DOCKER_HOST (a unix socket)."""
    root = tempfile.mkdtemp(prefix="flt-bench-dockerd-")
    sock = os.path.join(root, "docker.sock")
    host = f"unix://{sock}"
    log = open(os.path.join(root, "dockerd.log"), "wb")  # noqa: SIM115 - closed below
    proc = None
    try:
        # A mount namespace of its own too (not `ip netns exec`: its fresh /sys hides the
        # cgroup mounts): dockerd's mounts die with it.
        proc = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{netns}",
             "unshare", "--mount", "--propagation", "slave", "dockerd", "-H", host,
             "--data-root", os.path.join(root, "data"), "--exec-root", os.path.join(root, "exec"),
             "--pidfile", os.path.join(root, "dockerd.pid"), *extra_args],
            stdout=log, stderr=log, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while not (os.path.exists(sock) and answers(host)):
            if proc.poll() is not None or time.monotonic() > deadline:
                with open(os.path.join(root, "dockerd.log"), errors="replace") as f:
                    raise RuntimeError(f"private dockerd did not start:\n{f.read()[-2000:]}")
            time.sleep(0.2)
        yield host
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
        shutil.rmtree(root, ignore_errors=True)
