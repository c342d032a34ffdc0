"""Attacks against the dev cluster, as a container, an image, an archive or a client on the
network would make them, each watching the host for what must not happen there.

Containment (each escape is seen on the host, never inferred from an error message):
- device nodes: mknod of a loop device whose first bytes are a marker, read as root in a
  container; the same node in an image layer (`docker import`, run as root and as nobody) and
  put by `docker cp`; each with a privileged control that must read the marker;
- the `docker cp` symlink-swap race (raw HTTP PUT/GET archive, `--race-tries`, 2,000 by
  default): a write landing in the host's "/" or a read of a host-only file;
- crafted images (`docker import` and `docker load`) with /etc, VOLUME paths and a copy-up
  source that are symlinks to a host directory: nothing may appear there or be read from it;
- whiteouts naming `..` in layers (`docker load`, `docker import`): no directory of a node's
  data root may vanish;
- tar entries with `..`, absolute names, hard links out and a symlink then a write through it,
  in `docker load`, `docker import` and `docker cp`: a host directory must keep its one file,
  whose link count must stay 1 and whose content must not come back from a container;
- a setuid-root program in a layer (it prints any file), run by the host user nobody through
  the data root and /proc/<pid>/root, and the container's config read as nobody: a root-only
  marker file and the container's Env secret must not be printed (control: the same program
  outside the data root prints the marker).

Control plane: the hypothesis fuzz of bench/api_fuzz.py against the manager (`--fuzz-cases`),
and unauthenticated clients against the secured configuration an operator deploys
(docs/install.md "Certificates"), started here for real with a fresh PKI (tests/secured_kit.py,
the code tests/agent/test_etcd_auth.py and tests/manager/test_api_tls.py use): `_ping`, info and
a container create sent to a `flotilla manage --tlsverify` without a client certificate (plain
HTTP, TLS 1.2, TLS 1.3) and with another CA's certificate; a fake node record written to an etcd
with client-certificate auth in plaintext, over TLS without a certificate and with another CA's;
and a gRPC client without a certificate calling ContainerCreate on every dev cluster agent
(mutual TLS). The manager and etcd attempts have a control with the right certificate that
must get through.
`unauthenticated_ok` counts the unauthenticated attempts that succeeded.

The dev cluster's own Engine API and etcd are plaintext on loopback by design (a developer's
convenience, not the secured deployment): the same attempts against them are measured too,
printed with the "plaintext=" label and counted in `dev_plaintext_listeners`, not in
`unauthenticated_ok`.

Brings up a 1-node dev cluster (or uses the running one with `--use-running`, left up), run it
from the checkout's root under the shared lock:
`flock /tmp/flt-dev.lock /opt/flotilla/venv/bin/python bench/attacks.py`. One line per attack
(name, tries, escapes); the last line is JSON:
{"attacks": N, "escapes": E, "fuzz_cases": F, "fuzz_5xx": X, "unauthenticated_ok": U,
 "dev_plaintext_listeners": P}.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import io
import json
import os
import secrets
import shutil
import ssl
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from deploy import devcluster  # noqa: E402
from deploy.busybox_image import build_rootfs_tar  # noqa: E402
from deploy.dev_layout import AGENT_PORT, NODE_RE  # noqa: E402
from deploy.etcd import EtcdServer  # noqa: E402
from tests.attack_kit import (  # noqa: E402
    Loop,
    as_nobody,
    crafted_rootfs,
    dev_node,
    host_tree,
    loop_device,
    relative_to_host,
    save_archive,
    swap_script,
    tar_info,
)
from tests.fixtures import DOCKER  # noqa: E402
from tests.secured_kit import (  # noqa: E402
    PING,
    Pki,
    client_context,
    make_pki,
    refused,
    register_node,
    tls_etcd,
    tls_manager,
)
from tests.tarballs import Entry, tar_of_entries  # noqa: E402

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


# ----------------------------------------------------------------------------- devices


def _mknod_read(lp: Loop, node: str = "/dev/x") -> str:
    return f"mknod {node} b {lp.major} {lp.minor}; head -c 64 {node} 2>&1; true"


def attack_device_mknod(lp: Loop) -> Outcome:
    out = Outcome("device: mknod + read of a host disk")
    if lp.marker not in run_out("--privileged", "busybox", "sh", "-c", _mknod_read(lp)):
        raise ControlFailed("a privileged container did not read the loop device")
    for flags in ([], ["--cap-add", "ALL"], ["--security-opt", "seccomp=unconfined"]):
        out.tries += 1
        out.escapes += lp.marker in run_out(*flags, "busybox", "sh", "-c", _mknod_read(lp))
    name = f"{PREFIX}dev-exec"
    docker("run", "-d", "--name", name, "busybox", "sleep", "600")
    try:
        out.tries += 1
        res = docker("exec", name, "sh", "-c", _mknod_read(lp, "/tmp/y"), check=False)
        out.escapes += lp.marker in res.stdout + res.stderr
    finally:
        docker("rm", "-f", name, check=False)
    return out


def attack_device_layer(lp: Loop, busybox_tar: str) -> Outcome:
    out = Outcome("device: node in an image layer (import)")
    tag = f"{PREFIX}disk:latest"
    node = dev_node("disk", lp.major, lp.minor, tarfile.BLKTYPE)
    res = import_image(crafted_rootfs(busybox_tar, extra=[node]), tag)
    if res.returncode != 0:
        out.notes.append(f"import refused: {res.stderr.strip()}")
        return out
    read = ["sh", "-c", "head -c 64 /disk 2>&1; true"]
    if lp.marker not in run_out("--privileged", "-u", "nobody", tag, *read):
        raise ControlFailed("a privileged container did not read the layer's node")
    for user in ("0", "nobody"):
        out.tries += 1
        out.escapes += lp.marker in run_out("-u", user, tag, *read)
    return out


def attack_device_cp(lp: Loop) -> Outcome:
    out = Outcome("device: node put by docker cp")
    name = f"{PREFIX}dev-cp"
    node = dev_node("disk", lp.major, lp.minor, tarfile.BLKTYPE)
    docker("run", "-d", "--name", name, "-u", "nobody", "busybox", "sleep", "600")
    try:
        for dest in ("/tmp", "/"):
            out.tries += 1
            res = docker("cp", "-", f"{name}:{dest}", stdin=tar_of_entries([node]), check=False)
            if res.returncode != 0:
                out.notes.append(f"cp to {dest} refused")
            path = os.path.join(dest, "disk")
            read = docker("exec", name, "sh", "-c", f"head -c 64 {path} 2>&1", check=False)
            out.escapes += lp.marker in read.stdout + read.stderr
    finally:
        docker("rm", "-f", name, check=False)
    return out


# ----------------------------------------------------------------------------- cp race


def _one_file(name: str, data: bytes) -> bytes:
    return tar_of_entries([(tar_info(name), data)])


def _first_file(data: bytes) -> bytes | None:
    """The first file's content; None for a stream cut short (a 200 whose copy then failed)."""
    try:
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            member = tar.next()
            f = tar.extractfile(member) if member else None
            return f.read() if f else b""
    except tarfile.TarError:
        return None


def _manager_conn() -> http.client.HTTPConnection:
    host, port = devcluster.MANAGER_ADDR.rsplit(":", 1)
    return http.client.HTTPConnection(host, int(port), timeout=60)


def attack_cp_race(tries: int) -> Outcome:
    """The container swaps /d for a link to "/" in a loop; every PUT and GET of /d is raced."""
    out = Outcome("cp: symlink-swap race (PUT and GET archive)")
    token = secrets.token_hex(4)
    escape_name, secret_name = f"flt-escape-{token}", f"flt-hostonly-{token}"
    host_escape, host_secret = f"/{escape_name}", f"/{secret_name}"
    with open(host_secret, "wb") as f:
        f.write(b"HOST-ONLY\n")
    name = f"{PREFIX}race"
    swap = swap_script(secret_name)
    found = missing = errors = cut = reconnects = 0
    conn = _manager_conn()

    def ask(method: str, url: str, body: bytes | None = None) -> tuple[int, bytes]:
        # A server may close a kept-alive connection between requests (aiohttp does after a
        # refused upload it did not read): such a request is sent again on a new connection.
        nonlocal conn, reconnects
        headers = {"Content-Type": "application/x-tar"} if body is not None else {}
        for attempt in (1, 2):
            try:
                conn.request(method, url, body, headers)
                resp = conn.getresponse()
                return resp.status, resp.read()
            except (ConnectionError, http.client.RemoteDisconnected):
                conn.close()
                conn = _manager_conn()
                reconnects += 1
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    try:
        docker("run", "-d", "--name", name, "busybox", "sh", "-c", swap)
        body = _one_file(escape_name, b"x")
        for _ in range(tries):
            out.tries += 1
            status, _ = ask("PUT", f"{API}/containers/{name}/archive?path=/d", body)
            errors += status >= 500
            if os.path.lexists(host_escape):
                out.escapes += 1
                os.unlink(host_escape)
            status, data = ask("GET", f"{API}/containers/{name}/archive?path=/d/{secret_name}")
            if status != 200:
                missing += status == 404
                errors += status >= 500
                continue
            content = _first_file(data)
            cut += content is None
            found += content == b"CONTAINER\n"
            out.escapes += content == b"HOST-ONLY\n"
    finally:
        conn.close()
        for path in (host_secret, host_escape):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        docker("rm", "-f", name, check=False)
    out.notes.append(
        f"{found} gets found the file, {missing} missed it, {cut} cut short, {errors} 5xx, "
        f"{reconnects} reconnects"
    )
    if not (found and missing):
        out.notes.append("the swap never raced a copy: no figure")
    return out


# ----------------------------------------------------------------------------- crafted images


def attack_crafted_images(host: Host, busybox_tar: str) -> list[Outcome]:
    """/etc, two VOLUME paths and a copy-up source through links to a host directory."""
    victim = os.path.join(host.dir, "victim")
    secret = os.path.join(victim, "secret")
    os.makedirs(os.path.join(secret, "sub"))
    key = f"FLT-COPYUP-{host.token}"
    with open(os.path.join(secret, "sub", "key"), "w") as f:
        f.write(key + "\n")
    before = host_tree(victim)
    links = {
        "etc": victim,
        "data": victim,
        "rel": relative_to_host(victim),
        "cvol": secret,
        "rcvol": relative_to_host(secret),
    }
    volumes = ["/data/vol", "/rel/rvol", "/cvol/sub", "/rcvol/sub"]
    rootfs = crafted_rootfs(busybox_tar, links, drop=("etc",))
    script = (
        "echo x > /data/vol/f; echo y > /rel/rvol/f; echo z > /etc/pwn; cat /etc/hostname;"
        " cat /cvol/sub/key /rcvol/sub/key 2>&1; echo ran"
    )
    results = []
    for how in ("import", "load"):
        out = Outcome(f"image: symlinked /etc, VOLUME, copy-up ({how})")
        tag = f"{PREFIX}links-{how}:latest"
        if how == "import":
            res = import_image(rootfs, tag, *(f"VOLUME {v}" for v in volumes))
        else:
            config = {"Cmd": ["sh"], "Volumes": {v: {} for v in volumes}}
            res = load_image(save_archive(rootfs, tag=tag, config=config))
        if res.returncode != 0:
            out.notes.append(f"{how} refused: {res.stderr.strip()}")
            results.append(out)
            continue
        out.tries += 1
        seen = run_out(tag, "sh", "-c", script)
        out.escapes += key in seen
        if "ran" not in seen:
            out.notes.append(f"the container did not run: {seen.strip()[:200]}")
        after = host_tree(victim)
        out.escapes += len(set(after) ^ set(before))
        for extra in set(after) - set(before):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(victim, extra))
        results.append(out)
    return results


# ----------------------------------------------------------------------------- whiteouts


def _store_dirs() -> set[str]:
    """Every node's image store directories two levels down (images/tmp, images/layers/<id>,
    …), not the transient ones inside tmp: a whiteout of `..` deletes the directory above the
    one being unpacked (for the outer archive of a load, images/tmp itself)."""
    found = set()
    for root in data_roots():
        images = os.path.join(root, "images")
        for first in os.scandir(images):
            if first.is_dir(follow_symlinks=False):
                found.add(first.path)
                if first.name != "tmp":
                    found.update(e.path for e in os.scandir(first.path) if e.is_dir())
    return found


def attack_whiteouts(busybox_tar: str) -> list[Outcome]:
    layers: list[list[Entry]] = [
        [(tar_info("keep/f"), b"k"), (tar_info("keep/.wh..."), b"")],
        [(tar_info(".wh..."), b"")],
        [(tar_info("keep/.wh.."), b"")],
    ]
    results = []
    for how in ("load", "import"):
        out = Outcome(f"whiteout '..' in a layer ({how})")
        refused = 0
        for i, entries in enumerate(layers):
            before = _store_dirs()
            layer = tar_of_entries(entries)
            tag = f"{PREFIX}wh{i}-{how}:latest"
            if how == "load":
                extra = [(tar_info(".wh..."), b"")] if i == 1 else None  # the outer archive too
                res = load_image(save_archive(layer, extra, tag=tag))
            else:
                res = import_image(layer, tag)
            out.tries += 1
            refused += res.returncode != 0
            out.escapes += len(before - _store_dirs())
        out.notes.append(f"{refused} refused")
        results.append(out)
    return results


# ----------------------------------------------------------------------------- tar entries


def _tar_attacks(host: Host) -> dict[str, list[list[Entry]]]:
    """kind → hostile archives (each one technique, at the host directory `outside`)."""
    rel_out = relative_to_host(host.outside)
    return {
        "../ traversal": [[(tar_info(f"a/{rel_out}/dotdot"), b"x")]],
        "absolute name": [[(tar_info(f"{host.outside}/abs"), b"x")]],
        "hard link out": [
            [tar_info("h", tarfile.LNKTYPE, f"{rel_out}/secret")],
            [tar_info("h", tarfile.LNKTYPE, host.secret)],
            [
                tar_info("s", tarfile.SYMTYPE, host.outside),
                tar_info("h", tarfile.LNKTYPE, "s/secret"),
            ],
        ],
        "symlink then write": [
            [tar_info("s", tarfile.SYMTYPE, host.outside), (tar_info("s/pwn"), b"x")],
            [tar_info("r", tarfile.SYMTYPE, rel_out), (tar_info("r/pwn"), b"x")],
        ],
    }


def attack_tar_entries(host: Host, busybox_tar: str) -> list[Outcome]:
    with tarfile.open(busybox_tar) as src:
        base = [(m, src.extractfile(m).read() if m.isfile() else None) for m in src]  # type: ignore[union-attr]
    results = []
    cp_name = f"{PREFIX}cp-target"
    docker("run", "-d", "--name", cp_name, "busybox", "sleep", "3600")
    try:
        for how in ("load", "import", "cp"):
            for kind, archives in _tar_attacks(host).items():
                out = Outcome(f"tar {kind} ({how})")
                refused = 0
                for i, entries in enumerate(archives):
                    out.tries += 1
                    tag = f"{PREFIX}tar{i}-{how}:latest"
                    if how == "cp":
                        res = docker("cp", "-", f"{cp_name}:/tmp", stdin=tar_of_entries(entries),
                                     check=False)  # fmt: skip
                        # What the container reads back through a hard link must not be ours.
                        got = docker("exec", cp_name, "cat", "/tmp/h", check=False).stdout
                    else:
                        rootfs = tar_of_entries([*base, *entries])
                        if how == "load":
                            res = load_image(save_archive(rootfs, tag=tag, config={"Cmd": ["sh"]}))
                        else:
                            res = import_image(rootfs, tag)
                        got = run_out(tag, "cat", "/h") if res.returncode == 0 else ""
                    refused += res.returncode != 0
                    out.escapes += host.breaches() + (host.marker in got)
                out.notes.append(f"{refused} refused")
                results.append(out)
    finally:
        docker("rm", "-f", cp_name, check=False)
    return results


# ----------------------------------------------------------------------------- setuid


def _build_suid(workdir: str) -> bytes:
    src, exe = os.path.join(workdir, "suid.c"), os.path.join(workdir, "suid")
    with open(src, "w") as f:
        f.write(SUID_SOURCE)
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        raise RuntimeError("no C compiler (deploy/setup.sh installs gcc)")
    res = subprocess.run([cc, "-static", "-O2", "-o", exe, src], capture_output=True, check=False)
    if res.returncode != 0:  # no static libc: the host's own libc is as good here
        subprocess.run([cc, "-O2", "-o", exe, src], check=True, capture_output=True)
    with open(exe, "rb") as f:
        return f.read()


def attack_setuid(host: Host, busybox_tar: str) -> Outcome:
    out = Outcome("setuid binary / config via the data root")
    workdir = os.path.join(host.dir, "suid-ctl")
    os.mkdir(workdir)
    os.chmod(workdir, 0o755)
    program = _build_suid(workdir)
    control = os.path.join(workdir, "suid")
    os.chmod(control, 0o4755)
    root_marker = f"FLT-ROOT-ONLY-{host.token}"
    if root_marker not in as_nobody(f"{control} {host.rootonly}").stdout:
        raise ControlFailed("the setuid program outside the data root did not read the marker")
    exe_name = f"flt-suid-{host.token}"
    tag = f"{PREFIX}suid:latest"
    rootfs = crafted_rootfs(busybox_tar, files={f"suid/{exe_name}": (program, 0o4755)})
    import_image(rootfs, tag).check_returncode()
    env_secret = f"FLT-ENV-SECRET-{host.token}"
    name = f"{PREFIX}suid"
    docker("run", "-d", "--name", name, "-e", f"TOKEN={env_secret}", tag, "sleep", "600")
    try:
        pid = json.loads(docker("inspect", name).stdout)[0]["State"]["Pid"]
        paths = [f"/proc/{pid}/root/suid/{exe_name}"]
        configs = []
        for root in data_roots():
            for dirpath, _, filenames in os.walk(root):
                if exe_name in filenames:
                    paths.append(os.path.join(dirpath, exe_name))
                for fname in filenames:
                    if fname in ("config.json", "spec") and "containers" in dirpath:
                        with open(os.path.join(dirpath, fname), errors="replace") as f:
                            if env_secret in f.read():
                                configs.append(os.path.join(dirpath, fname))
        if len(paths) < 2 or not configs:
            raise ControlFailed(f"the layer's program or the config not found: {paths} {configs}")
        for path in paths:
            out.tries += 1
            out.escapes += root_marker in as_nobody(f"{path} {host.rootonly}").stdout
        for path in configs:
            out.tries += 1
            out.escapes += env_secret in as_nobody(f"cat {path}").stdout
    finally:
        docker("rm", "-f", name, check=False)
    return out


# ----------------------------------------------------------------------------- API fuzz


def _snapshot() -> dict[str, set[str]]:
    return {
        "container": set(docker("ps", "-aq", "--no-trunc").stdout.split()),
        "network": set(docker("network", "ls", "-q", "--no-trunc").stdout.split()),
        "volume": set(docker("volume", "ls", "-q").stdout.split()),
        "image": set(docker("images", "-aq", "--no-trunc").stdout.split()),
    }


def attack_api_fuzz(n: int) -> tuple[Outcome, int, int]:
    import aiohttp

    from bench import api_fuzz

    before = _snapshot()

    async def go() -> api_fuzz.Result:
        async with aiohttp.ClientSession(f"http://{devcluster.MANAGER_ADDR}") as session:

            async def send(
                method: str, path: str, params: dict[str, str], body: bytes | None
            ) -> tuple[int, bytes]:
                headers = {"Content-Type": "application/json"} if body is not None else {}
                try:
                    resp = await asyncio.wait_for(
                        session.request(method, path, params=params, data=body, headers=headers),
                        30,
                    )
                except (TimeoutError, aiohttp.ClientError) as e:
                    return 599, json.dumps({"message": f"no answer: {e!r}"}).encode()
                async with resp:
                    if resp.status < 400:
                        return resp.status, b""  # a success may be a stream (events, logs)
                    return resp.status, await asyncio.wait_for(resp.read(), 30)

            return await api_fuzz.run(send, n)

    try:
        result = asyncio.run(go())
    finally:
        after = _snapshot()
        if made := after["container"] - before["container"]:
            docker("rm", "-f", "-v", *made, check=False)
        if made := after["network"] - before["network"]:
            docker("network", "rm", *made, check=False)
        if made := after["volume"] - before["volume"]:
            docker("volume", "rm", "-f", *made, check=False)
        if made := after["image"] - before["image"]:
            docker("rmi", "-f", *made, check=False)
    out = Outcome("API fuzz (hypothesis) against the manager", result.fuzz_cases,
                  result.fuzz_5xx, label="5xx")  # fmt: skip
    out.notes.append(f"{len(result.failures)} bad answers")
    for failure in result.failures[:5]:
        log(f"fuzz: {failure}")
    return out, result.fuzz_cases, result.fuzz_5xx


# ----------------------------------------------------------------------------- unauthenticated


SECURED_PREFIX = f"/{PREFIX}secured"
DEV_PLAINTEXT = "plaintext on loopback by design (dev cluster only; docs/security.md)"


@contextlib.contextmanager
def secured_control_plane() -> Iterator[tuple[Pki, EtcdServer, int]]:
    """A fresh PKI, an etcd with client-certificate auth and a `flotilla manage --tlsverify`
    that reaches it with its own certificate: what docs/install.md "Certificates" deploys."""
    with tempfile.TemporaryDirectory(prefix=f"{PREFIX}pki-") as d:
        pki = make_pki(d)
        with tls_etcd(pki) as etcd:
            discovery = f"etcd://{etcd.endpoint}{SECURED_PREFIX}"
            log_path = os.path.join(d, "manager.log")
            flags = pki.etcd_flags(pki.manager)
            with tls_manager(discovery, pki, log_path, *flags) as port:
                yield pki, etcd, port


def _api_requests() -> dict[str, bytes]:
    body = json.dumps({"Image": "busybox", "Cmd": ["true"]}).encode()
    create = (
        f"POST {API}/containers/create?name={PREFIX}intruder-api HTTP/1.1\r\nHost: x\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    info = f"GET {API}/info HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    return {"_ping": PING, "info": info, "create": create + body}


def unauth_engine_api(pki: Pki, port: int) -> list[Outcome]:
    """`_ping`, info and a container create on `flotilla manage --tlsverify`, without a client
    certificate and with another CA's; any HTTP answer counts as getting in."""
    requests = _api_requests()
    operator = client_context(pki.ca, ssl.TLSVersion.MAXIMUM_SUPPORTED, pki.client)
    for what, request in requests.items():
        if refused(port, operator, request):
            raise ControlFailed(f"the operator's certificate got no answer to {what}")
    v12, v13 = ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3
    clients: dict[str, dict[str, ssl.SSLContext | None]] = {
        "no cert": {
            "plain HTTP": None,
            "TLS 1.2": client_context(pki.ca, v12),
            "TLS 1.3": client_context(pki.ca, v13),
        },
        "other CA's cert": {
            "TLS 1.2": client_context(pki.ca, v12, pki.stranger),
            "TLS 1.3": client_context(pki.ca, v13, pki.stranger),
        },
    }
    outcomes = []
    for who, contexts in clients.items():
        out = Outcome(f"unauthenticated: Engine API --tlsverify, {who}", label="ok")
        for how, context in contexts.items():
            for what, request in requests.items():
                out.tries += 1
                if not refused(port, context, request):
                    out.escapes += 1
                    out.notes.append(f"{how} {what} answered")
        if not out.escapes:
            out.notes.append(f"{', '.join(contexts)}: no answer; control answered")
        outcomes.append(out)
    return outcomes


def unauth_etcd_fake_node(pki: Pki, etcd: EtcdServer) -> Outcome:
    """A fake node record written into the secured manager's etcd prefix in plaintext, over
    TLS without a client certificate and with another CA's; a real node's is the control."""
    from proto.nodes import list_nodes

    out = Outcome("unauthenticated: fake node in etcd (client-cert auth)", label="ok")
    good = pki.etcd_security(pki.node)
    attempts = {
        "plaintext": None,
        "TLS, no cert": pki.etcd_security(None),
        "other CA's cert": pki.etcd_security(pki.stranger),
    }

    async def go() -> set[str]:
        await register_node(etcd.endpoint, good, SECURED_PREFIX, "control")
        for i, (how, security) in enumerate(attempts.items()):
            out.tries += 1
            try:
                await register_node(etcd.endpoint, security, SECURED_PREFIX, f"fake-{i}")
            except Exception as e:  # noqa: BLE001 - any refusal (auth, TLS) is the result sought
                out.notes.append(f"{how}: {type(e).__name__}")
        return {n.name for n in await list_nodes([etcd.endpoint], SECURED_PREFIX, good)}

    listed = asyncio.run(go())
    if "control" not in listed:
        raise ControlFailed("a node with the cluster's certificate could not register")
    out.escapes = len(listed - {"control"})
    if out.escapes:
        out.notes.append(f"registered: {sorted(listed - {'control'})}")
    return out


def dev_plaintext_engine_api() -> Outcome:
    """The dev cluster's own Engine API: a container create with no certificate at all."""
    out = Outcome("dev cluster: Engine API, no cert", tries=1, label="plaintext")
    conn = _manager_conn()
    try:
        body = json.dumps({"Image": "busybox", "Cmd": ["true"]})
        try:
            conn.request("POST", f"{API}/containers/create?name={PREFIX}intruder-api", body,
                         {"Content-Type": "application/json"})  # fmt: skip
            resp = conn.getresponse()
            resp.read()
        except (OSError, http.client.HTTPException) as e:
            out.notes.append(f"refused: {e!r}")
            return out
        out.escapes = int(resp.status == 201)
        out.notes.append(f"HTTP {resp.status} on {devcluster.docker_host()}: {DEV_PLAINTEXT}")
    finally:
        conn.close()
        docker("rm", "-f", f"{PREFIX}intruder-api", check=False)
    return out


def unauth_agent_grpc() -> Outcome:
    """A gRPC client without a certificate (plaintext, and TLS without a client certificate
    when the cluster has a CA) calls ContainerCreate on every agent."""
    import grpc

    from proto import agent_pb2 as pb
    from proto import agent_pb2_grpc
    from proto.rpc import CHANNEL_OPTIONS

    out = Outcome("unauthenticated: dev agents' gRPC (mTLS), no cert", label="ok")
    nodes = devcluster.load_state().get("nodes", {})
    ca = os.path.join(devcluster.ROOT, "certs", "ca.pem")
    create = pb.ContainerCreateRequest(
        json=json.dumps({"Image": "busybox", "Cmd": ["true"]}).encode(), name=f"{PREFIX}intruder"
    )

    async def attempt(make: Callable[[], grpc.aio.Channel]) -> bool:
        channel = make()
        try:
            stub = agent_pb2_grpc.AgentStub(channel)
            reply = await stub.ContainerCreate(create, timeout=10)
            await stub.ContainerRemove(pb.ContainerRemoveRequest(id=reply.id, force=True))
            return True
        except grpc.aio.AioRpcError as e:
            out.notes.append(f"{e.code().name}")
            return False
        finally:
            await channel.close()

    for name in sorted(nodes):
        addr = f"{nodes[name]['ip']}:{AGENT_PORT}"
        makers: list[Callable[[], grpc.aio.Channel]] = [
            lambda a=addr: grpc.aio.insecure_channel(a, options=CHANNEL_OPTIONS)
        ]
        if os.path.exists(ca):
            with open(ca, "rb") as f:
                creds = grpc.ssl_channel_credentials(f.read())
            makers.append(lambda a=addr, c=creds: grpc.aio.secure_channel(a, c, CHANNEL_OPTIONS))
        for make in makers:
            out.tries += 1
            if asyncio.run(attempt(make)):
                out.escapes += 1
                out.notes.append(f"{name}: ContainerCreate succeeded")
    return out


def dev_plaintext_etcd() -> Outcome:
    """The dev cluster's own etcd: a fake node record written with no credentials at all."""
    from proto.keys import Keys
    from proto.kv import KV, KVError
    from proto.nodes import list_nodes
    from proto.records_pb2 import NodeRecord

    out = Outcome("dev cluster: fake node in etcd, no creds", tries=1, label="plaintext")
    fake = f"FLTATK{secrets.token_hex(4).upper()}"
    endpoints = [devcluster.etcd_endpoint()]

    async def go() -> bool:
        rec = NodeRecord(id=fake, name=f"{PREFIX}fake", addr="127.0.0.1:1", ncpu=1)
        async with await KV.connect(endpoints) as kv:
            lease = None
            try:
                lease = await kv.lease_grant(5)
                await kv.put(Keys(devcluster.PREFIX).node(fake), rec.SerializeToString(), lease)
                listed = await list_nodes(endpoints, devcluster.PREFIX)
                return any(n.id == fake for n in listed)
            finally:
                if lease is not None:
                    with contextlib.suppress(KVError):
                        await kv.lease_revoke(lease)

    try:
        out.escapes = int(asyncio.run(go()))
    except Exception as e:  # noqa: BLE001 - any refusal (auth, TLS) is the result sought
        out.notes.append(f"refused: {e!r:.120}")
    if out.escapes:
        out.notes.append(f"registered on etcd://{devcluster.etcd_endpoint()}: {DEV_PLAINTEXT}")
    return out


# ----------------------------------------------------------------------------- main


def run_all(race_tries: int, fuzz_cases: int) -> tuple[list[Outcome], dict[str, int]]:
    outcomes: list[Outcome] = []
    counts = {"fuzz_cases": 0, "fuzz_5xx": 0}

    def done(*results: Outcome) -> None:
        for r in results:
            outcomes.append(r)
            print(r.line(), flush=True)

    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix=PREFIX))
        busybox_tar = build_rootfs_tar(os.path.join(tmp, "busybox.tar"))
        host = stack.enter_context(Host.make())
        lp = stack.enter_context(loop_device())
        done(attack_device_mknod(lp), attack_device_layer(lp, busybox_tar), attack_device_cp(lp))
        done(attack_cp_race(race_tries))
        done(*attack_crafted_images(host, busybox_tar))
        done(*attack_whiteouts(busybox_tar))
        done(*attack_tar_entries(host, busybox_tar))
        done(attack_setuid(host, busybox_tar))
        fuzz, counts["fuzz_cases"], counts["fuzz_5xx"] = attack_api_fuzz(fuzz_cases)
        done(fuzz)
        pki, etcd, port = stack.enter_context(secured_control_plane())
        done(*unauth_engine_api(pki, port), unauth_etcd_fake_node(pki, etcd))
        done(unauth_agent_grpc())
        done(dev_plaintext_engine_api(), dev_plaintext_etcd())
    return outcomes, counts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--race-tries", type=int, default=2000, help="cp race PUT+GET pairs")
    ap.add_argument("--fuzz-cases", type=int, default=300, help="API fuzz cases")
    ap.add_argument(
        "--use-running", action="store_true", help="use the dev cluster that is up (left up)"
    )
    args = ap.parse_args()

    if args.use_running and not devcluster.is_up():
        ap.error("--use-running: no dev cluster is up")
    ours_cluster = not args.use_running
    config = tempfile.mkdtemp(prefix=f"{PREFIX}docker-config-")
    os.environ["DOCKER_CONFIG"] = config
    try:
        if ours_cluster:
            log("dev cluster of 1 node")
            devcluster.up(1, timeout=60)
        cleanup()  # a crashed earlier run's leftovers
        try:
            outcomes, counts = run_all(args.race_tries, args.fuzz_cases)
        finally:
            cleanup()
    finally:
        if ours_cluster:
            devcluster.down()
        shutil.rmtree(config, ignore_errors=True)
    unauth = [o for o in outcomes if o.label == "ok"]
    contained = [o for o in outcomes if o.label == "escapes"]
    print(f"note: the dev cluster's own Engine API ({devcluster.docker_host()}) and etcd are "
          f"{DEV_PLAINTEXT}: dev_plaintext_listeners, not unauthenticated_ok")  # fmt: skip
    res = {
        "attacks": len(outcomes),
        "escapes": sum(o.escapes for o in contained),
        "fuzz_cases": counts["fuzz_cases"],
        "fuzz_5xx": counts["fuzz_5xx"],
        "unauthenticated_ok": sum(o.escapes for o in unauth),
        "dev_plaintext_listeners": sum(o.escapes for o in outcomes if o.label == "plaintext"),
    }
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
