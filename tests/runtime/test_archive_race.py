"""`docker cp` against a container that swaps a directory for a symlink to "/" in a loop.

Resolving a path on the host side and then using the joined host path lets the swap land in
between: the kernel then follows the container's "/" link to the host's root. The copy must stay
inside the container's root on every try (runtime/inroot.py).
"""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import tarfile
from collections.abc import AsyncIterator

import pytest

from proto.docker.errors import DockerError
from runtime import container_fs
from runtime.containers import Runtime
from tests.attack_kit import swap_script
from tests.fixtures import runtime_for_tests

# FLT_CP_RACE_TRIES raises the count for a longer hunt (the test asks for at least 2,000).
TRIES = max(2000, int(os.environ.get("FLT_CP_RACE_TRIES", "0")))


@pytest.fixture
async def rt(busybox_tar: str) -> AsyncIterator[Runtime]:
    async with runtime_for_tests(busybox_tar) as runtime:
        yield runtime


def _one_file(name: str, data: bytes) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return buf


def _content(buf: io.BytesIO) -> bytes:
    buf.seek(0)
    with tarfile.open(fileobj=buf) as tar:
        member = tar.next()
        f = tar.extractfile(member) if member else None
        return f.read() if f else b""


async def test_cp_survives_symlink_swap(rt: Runtime) -> None:
    token = secrets.token_hex(4)
    escape_name = f"flt-escape-{token}"
    secret_name = f"flt-hostonly-{token}"
    # Both names sit in the host's "/": that is where /d leads when the swapped-in link
    # `d -> /` is followed by the host's kernel instead of inside the container.
    host_escape = f"/{escape_name}"
    host_secret = f"/{secret_name}"
    with open(host_secret, "wb") as f:
        f.write(b"HOST-ONLY\n")
    swap = swap_script(secret_name)
    writes_out = reads_out = found = missing = os_errors = 0
    try:
        rec = await rt.create({"Image": "busybox", "Cmd": ["sh", "-c", swap]})
        await rt.start(rec.id)
        for i in range(TRIES):
            try:
                await container_fs.archive_put(rt, rec.id, "/d", _one_file(escape_name, b"x"))
            except DockerError:
                pass
            except OSError:
                os_errors += 1  # a 500 for the client: a lookup that raced and lost
            if os.path.lexists(host_escape):
                writes_out += 1
                os.unlink(host_escape)
            out = io.BytesIO()
            try:
                await container_fs.archive_get(rt, rec.id, f"/d/{secret_name}", out)
            except DockerError:
                missing += 1
                continue
            except OSError:
                os_errors += 1
                continue
            data = _content(out)
            found += data == b"CONTAINER\n"
            reads_out += data == b"HOST-ONLY\n"
            if i % 500 == 0:
                assert rt.get(rec.id).running
        print(
            f"cp race: {TRIES} puts, {TRIES} gets, {writes_out} writes and {reads_out} reads "
            f"outside the root, {found} found, {missing} missing, {os_errors} OS errors"
        )
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(host_secret)
        if os.path.lexists(host_escape):
            os.unlink(host_escape)
    assert (writes_out, reads_out, os_errors) == (0, 0, 0)
    # The swap really raced the copies: some gets met the directory, some did not.
    assert found > 0 and missing > 0
