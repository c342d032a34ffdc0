"""`docker cp` through the real docker CLI and a real dev cluster, against a container that
swaps its /d for a symlink to "/" in a loop, and against a crafted tar that climbs with `../`.

The dev cluster's agents share this machine's filesystem, so "/" of the node's host is this
machine's "/": a copy that followed the container's `d -> /` link on the host side would write or
read a marker there. tests/runtime/test_archive_race.py runs the same race 2,000 times under the
runtime; here it goes through the manager, the agent and the CLI's own stat-then-copy.
"""

from __future__ import annotations

import contextlib
import io
import os
import pathlib
import secrets
import subprocess
import tarfile
from collections.abc import Iterator

import pytest

from deploy import devcluster
from tests.attack_kit import swap_script
from tests.fixtures import DOCKER, dev_cluster, docker

TRIES = 50


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, object]]:
    with dev_cluster(1) as nodes:
        yield nodes


@pytest.fixture
def token() -> str:
    return secrets.token_hex(4)


@contextlib.contextmanager
def container(name: str, script: str) -> Iterator[str]:
    docker("run", "-d", "--name", name, "busybox", "sh", "-c", script)
    try:
        yield name
    finally:
        docker("rm", "-f", name, check=False)


@contextlib.contextmanager
def removed_afterwards(*paths: str) -> Iterator[None]:
    """Host markers are removed whatever the test did (lexists: a planted link counts too)."""
    try:
        yield
    finally:
        for path in paths:
            if os.path.lexists(path):
                os.unlink(path)


def docker_bytes(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """The docker CLI with binary stdin/stdout: tars go through `docker cp -`."""
    env = dict(os.environ, DOCKER_HOST=devcluster.docker_host())
    return subprocess.run(
        [DOCKER, *args], input=stdin, capture_output=True, timeout=60, env=env, check=False
    )


def one_file_tar(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def first_file(tar_bytes: bytes) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        member = tar.next()
        f = tar.extractfile(member) if member else None
        return f.read() if f else b""


def test_cp_against_symlink_swap(
    cluster: dict[str, object], token: str, tmp_path: pathlib.Path
) -> None:
    escape_name = f"flt-escape-{token}"
    secret_name = f"flt-hostonly-{token}"
    # Where /d/<name> lands when the container's `d -> /` is followed by the host's kernel.
    host_escape = f"/{escape_name}"
    host_secret = f"/{secret_name}"
    src = os.path.join(tmp_path, escape_name)
    with open(src, "wb") as f:
        f.write(b"x")
    # The swap waits for /go: first one put and one get must work with /d left alone.
    swap = swap_script(secret_name, wait="until [ -e /go ]; do sleep 0.1; done; ")
    writes_out = reads_out = found = missing = cut = 0
    with removed_afterwards(host_escape, host_secret), container(f"cprace-{token}", swap) as name:
        with open(host_secret, "wb") as f:
            f.write(b"HOST-ONLY\n")
        wait = f"until [ -e /d/{secret_name} ]; do sleep 0.1; done"
        docker("exec", name, "sh", "-c", wait)
        docker("cp", src, f"{name}:/d")
        docker("exec", name, "rm", f"/d/{escape_name}")
        assert first_file(docker_bytes("cp", f"{name}:/d/{secret_name}", "-").stdout) == (
            b"CONTAINER\n"
        )
        docker("exec", name, "touch", "/go")
        for _ in range(TRIES):
            # Failures are expected (/d missing or a link at that moment); only where a copy
            # that succeeded put or found its file matters.
            docker("cp", src, f"{name}:/d", check=False)
            if os.path.lexists(host_escape):
                writes_out += 1
                os.unlink(host_escape)
            res = docker_bytes("cp", f"{name}:/d/{secret_name}", "-")
            if res.returncode != 0:
                missing += 1
                continue
            # A copy that succeeded carries the file its header described: the agent stats and
            # archives one lookup, so a swap in between fails the copy instead of cutting it.
            data = first_file(res.stdout) if res.stdout else b""
            found += data == b"CONTAINER\n"
            reads_out += data == b"HOST-ONLY\n"
            cut += data not in (b"CONTAINER\n", b"HOST-ONLY\n")
        assert docker("inspect", "-f", "{{.State.Running}}", name).stdout == "true\n"
    assert (writes_out, reads_out) == (0, 0), f"{writes_out} writes, {reads_out} reads on host"
    assert cut == 0, f"{cut} copies answered success with a body cut short"
    # The swap really ran under the copies. How many gets met the directory depends on the
    # scheduler (0 of 50 happens on a loaded machine), so that count is reported, not asserted.
    assert missing > 0, f"{found} found, {missing} missing"
    print(f"cp race through the CLI: {TRIES} puts, {TRIES} gets, {found} found, {missing} missing")


def test_cp_refuses_dotdot_entry(cluster: dict[str, object], token: str) -> None:
    escape_name = f"flt-dotdot-{token}"
    # From /cpdst, "../<name>" would land in the container's "/"; "../../.." would not go
    # further (the root's parent is itself), so the host's "/" is checked as well.
    host_escape = f"/{escape_name}"
    with (
        removed_afterwards(host_escape),
        container(f"cpdotdot-{token}", "mkdir /cpdst && exec sleep 300") as name,
    ):
        docker("exec", name, "sh", "-c", "until [ -d /cpdst ]; do sleep 0.1; done")
        for entry in (f"../{escape_name}", f"../../../{escape_name}"):
            res = docker_bytes("cp", "-", f"{name}:/cpdst", stdin=one_file_tar(entry, b"!"))
            assert res.returncode == 1
            assert f'"{entry}" is outside of "/cpdst"' in res.stderr.decode(), res.stderr
            assert res.stderr.decode().startswith("Error response from daemon: "), res.stderr
        listing = docker(
            "exec", name, "sh", "-c", f"ls -A /cpdst; ls -A / | grep -c {token} || true"
        )
        assert listing.stdout == "0\n", listing.stdout  # no entry in /cpdst, none in "/"
        assert not os.path.lexists(host_escape)
