"""Find and run a throwaway etcd server (the dev cluster's, and tests' own).

Debian's `etcd-server` package provides /usr/bin/etcd (3.4); `deploy/setup.sh` installs it and
keeps the package's own service from running, since flotilla always starts its own instance
with its own data dir.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field

CANDIDATES = ("/usr/bin/etcd", "/usr/local/bin/etcd")


def find_etcd() -> str:
    """Path of the etcd binary: $FLOTILLA_ETCD, then Debian's, then $PATH."""
    env = os.environ.get("FLOTILLA_ETCD")
    if env:
        return env
    for path in CANDIDATES:
        if os.access(path, os.X_OK):
            return path
    found = shutil.which("etcd")
    if found:
        return found
    raise FileNotFoundError("etcd not found: apt-get install etcd-server (or set FLOTILLA_ETCD)")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def healthy(client_url: str, timeout: float = 1.0) -> bool:
    """True when etcd answers /health with health=true."""
    try:
        with urllib.request.urlopen(f"{client_url}/health", timeout=timeout) as resp:
            return b'"true"' in resp.read()
    except (OSError, urllib.error.URLError):
        return False


def launch(
    data_dir: str,
    client_urls: list[str],
    peer_url: str,
    log_path: str,
    name: str = "flotilla-dev",
    extra_args: Sequence[str] = (),
) -> subprocess.Popen[bytes]:
    """Start etcd detached (own session) so it outlives the command that started it."""
    os.makedirs(data_dir, mode=0o700, exist_ok=True)
    cmd = [
        find_etcd(),
        "--name",
        name,
        "--data-dir",
        data_dir,
        "--listen-client-urls",
        ",".join(client_urls),
        "--advertise-client-urls",
        client_urls[0],
        "--listen-peer-urls",
        peer_url,
        "--initial-advertise-peer-urls",
        peer_url,
        "--initial-cluster",
        f"{name}={peer_url}",
        # Short election ticks make a restart after `stop` usable sooner in tests and drills.
        "--heartbeat-interval",
        "50",
        "--election-timeout",
        "500",
        "--log-outputs",
        "stderr",
        *extra_args,
    ]
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            close_fds=True,
        )


def wait_healthy(
    client_url: str, timeout: float = 20.0, proc: subprocess.Popen | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if healthy(client_url, timeout=0.5):
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"etcd exited with status {proc.returncode}")
        time.sleep(0.05)
    raise TimeoutError(f"etcd at {client_url} not healthy after {timeout:.0f}s")


def terminate(pid: int, timeout: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after `timeout`; reaps it when it is our child."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _running(pid):
            return
        time.sleep(0.02)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    while _running(pid):
        time.sleep(0.02)


def _running(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


@dataclass
class EtcdServer:
    """A private etcd on free loopback ports with a temporary data dir (for tests).

    `stop()`/`start()` keep the data dir, so an outage can be simulated; `close()` removes it.
    `client_tls` (cert, key, CA): clients speak TLS and must present a certificate from the CA
    (`--client-cert-auth`); its health is then read from a plain metrics listener.
    """

    host: str = "127.0.0.1"
    client_port: int = 0
    peer_port: int = 0
    data_dir: str = ""
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    client_tls: tuple[str, str, str] | None = None
    metrics_port: int = 0

    def __post_init__(self) -> None:
        self.client_port = self.client_port or free_port(self.host)
        self.peer_port = self.peer_port or free_port(self.host)
        self.metrics_port = self.metrics_port or free_port(self.host)
        self._tmp = tempfile.mkdtemp(prefix="flt-etcd-")
        self.data_dir = self.data_dir or os.path.join(self._tmp, "data")

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.client_port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.client_tls else 'http'}://{self.endpoint}"

    def start(self, timeout: float = 20.0) -> EtcdServer:
        health_url, extra = self.url, []
        if self.client_tls:
            cert, key, ca = self.client_tls
            health_url = f"http://{self.host}:{self.metrics_port}"
            extra += ["--listen-metrics-urls", health_url]
            extra += ["--cert-file", cert, "--key-file", key]
            extra += ["--client-cert-auth", "--trusted-ca-file", ca]
        self.proc = launch(
            self.data_dir,
            [self.url],
            f"http://{self.host}:{self.peer_port}",
            os.path.join(self._tmp, "etcd.log"),
            extra_args=extra,
        )
        wait_healthy(health_url, timeout, self.proc)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc.pid)
            self.proc.wait()
            self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> EtcdServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
