"""Test helpers shared by several test packages."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator

from runtime.containers import EventSink, Runtime
from runtime.errors import DockerError

SUBNET = "10.77.0.0/24"


@contextlib.asynccontextmanager
async def runtime_for_tests(
    busybox_tar: str, events: EventSink | None = None
) -> AsyncIterator[Runtime]:
    """A Runtime on a throwaway data root with busybox imported; afterwards every container is
    removed and nothing may be left: no mount, cgroup or netns file."""
    root = tempfile.mkdtemp(prefix="flt-rt-")
    node = f"t{secrets.token_hex(3)}"
    runtime = Runtime(
        root, node_name=node, bridge_name=f"flt{node}", bridge_subnet=SUBNET, events=events
    )
    await runtime.open()
    with open(busybox_tar, "rb") as f:
        runtime.images.import_tarball(f, "busybox:latest", ['CMD ["sh"]'])
    try:
        yield runtime
    finally:
        for rec in runtime.list():
            if not os.path.isdir(runtime.paths.container(rec.id)):
                continue  # removed by a second Runtime on the same root
            with contextlib.suppress(DockerError):
                await runtime.remove(rec.id, force=True)
        await runtime.close()
        await asyncio.to_thread(runtime.bridge.teardown)
        runtime.cgroups.remove_parent()
        with open("/proc/self/mountinfo") as f:
            assert root not in f.read()
        assert runtime.cgroups.list_ids() == []
        assert os.listdir(runtime.paths.netns) == []
        shutil.rmtree(root, ignore_errors=True)
