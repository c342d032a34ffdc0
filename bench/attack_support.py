"""What every attack of bench/attacks.py uses: its outcome record, the host it watches, the
docker CLI against the dev cluster and the clean-up of what the attacks made."""

from __future__ import annotations

import contextlib
import http.client
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from deploy import devcluster
from deploy.dev_layout import NODE_RE
from tests.fixtures import DOCKER

PREFIX = "flt-atk-"
API = "/v1.41"
SUID_SOURCE = r"""
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>
int main(int argc, char **argv) {
    char buf[512];
    int fd = open(argv[1], O_RDONLY);
    if (fd < 0) { perror(argv[1]); return 3; }
    ssize_t n = read(fd, buf, sizeof buf);
    if (n > 0) fwrite(buf, 1, (size_t)n, stdout);
    return 0;
}
"""


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class ControlFailed(RuntimeError):
    """The attack's own control did not see the marker: the detector would miss an escape."""


@dataclass
class Outcome:
    name: str
    tries: int = 0
    escapes: int = 0  # for the unauthenticated attempts: how many succeeded
    notes: list[str] = field(default_factory=list)
    label: str = "escapes"

    def line(self) -> str:
        extra = f"  ({'; '.join(self.notes)})" if self.notes else ""
        return f"{self.name:<46} tries={self.tries:<5} {self.label}={self.escapes}{extra}"


@dataclass
class Host:
    """What the attacks aim at on the host: a directory whose only file is a secret, a
    root-only marker file, and random names nothing else uses."""

    token: str
    dir: str
    outside: str
    secret: str
    marker: str
    rootonly: str

    @classmethod
    @contextlib.contextmanager
    def make(cls) -> Iterator[Host]:
        token = secrets.token_hex(6)
        base = tempfile.mkdtemp(prefix=f"{PREFIX}host-")
        os.chmod(base, 0o755)  # the controls run as nobody below it
        try:
            outside = os.path.join(base, "outside")
            os.mkdir(outside)
            host = cls(token, base, outside, os.path.join(outside, "secret"),
                       f"FLT-HOST-SECRET-{token}", os.path.join(base, "rootonly"))  # fmt: skip
            host.reset_secret()
            with open(host.rootonly, "w") as f:
                f.write(f"FLT-ROOT-ONLY-{token}\n")
            os.chmod(host.rootonly, 0o600)
            yield host
        finally:
            shutil.rmtree(base, ignore_errors=True)

    def reset_secret(self) -> None:
        """A new secret file (a new inode: a hard link made to the old one counts once)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.secret)
        with open(self.secret, "w") as f:
            f.write(self.marker + "\n")

    def breaches(self) -> int:
        """Entries that appeared in `outside` plus a hard link to the secret; both undone."""
        extra = [n for n in os.listdir(self.outside) if n != "secret"]
        for name in extra:
            path = os.path.join(self.outside, name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.unlink(path)
        linked = os.stat(self.secret).st_nlink > 1
        if linked:
            self.reset_secret()
        return len(extra) + linked


# ----------------------------------------------------------------------------- the docker CLI


def docker(
    *args: str, stdin: bytes | None = None, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, DOCKER_HOST=devcluster.docker_host())
    res = subprocess.run(
        [DOCKER, *args], input=stdin, capture_output=True, timeout=timeout, env=env, check=False
    )
    out = subprocess.CompletedProcess(
        res.args, res.returncode, res.stdout.decode(errors="replace"),
        res.stderr.decode(errors="replace"),
    )  # fmt: skip
    if check and res.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)}: rc={res.returncode}: {out.stderr.strip()}")
    return out


def run_out(*args: str) -> str:
    """`docker run --rm …`'s stdout and stderr, whatever its exit code."""
    res = docker("run", "--rm", *args, check=False)
    return res.stdout + res.stderr


def import_image(rootfs: bytes, tag: str, *changes: str) -> subprocess.CompletedProcess[str]:
    with tempfile.NamedTemporaryFile(prefix=PREFIX, suffix=".tar") as f:
        f.write(rootfs)
        f.flush()
        flags = [x for c in changes for x in ("--change", c)]
        return docker("import", *flags, f.name, tag, check=False)


def load_image(archive: bytes) -> subprocess.CompletedProcess[str]:
    with tempfile.NamedTemporaryFile(prefix=PREFIX, suffix=".tar") as f:
        f.write(archive)
        f.flush()
        return docker("load", "-i", f.name, check=False)


def ours(kind: str) -> list[str]:
    """Objects this bench made (named or tagged with PREFIX)."""
    if kind == "container":
        rows = docker("ps", "-a", "--format", "{{.ID}} {{.Names}}").stdout.splitlines()
        return [r.split()[0] for r in rows if PREFIX in r]
    rows = docker("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
    return [r for r in rows if r.startswith(PREFIX)]


def cleanup() -> None:
    if ids := ours("container"):
        docker("rm", "-f", "-v", *ids, check=False)
    if tags := ours("image"):
        docker("rmi", "-f", *tags, check=False)


def data_roots() -> list[str]:
    root = devcluster.ROOT
    names = sorted(n for n in os.listdir(root) if NODE_RE.match(n))
    return [os.path.join(root, n) for n in names if os.path.isdir(os.path.join(root, n))]


def manager_conn() -> http.client.HTTPConnection:
    host, port = devcluster.MANAGER_ADDR.rsplit(":", 1)
    return http.client.HTTPConnection(host, int(port), timeout=60)
