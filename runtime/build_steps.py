"""What a build step does to files, with the runtime's own primitives: RUN in a container made
from the current image (create, start, its output through the shim's attach socket, wait,
commit of its rw layer, remove), and COPY/ADD/WORKDIR on a temporary overlay of the image's
layers whose upper directory becomes the step's layer.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import struct
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from runtime import build_images, mounts

if TYPE_CHECKING:
    from runtime.containers import Runtime

Emit = Callable[[dict[str, Any]], None]


async def run_container(
    rt: Runtime, body: dict[str, Any], emit: Emit, on_created: Callable[[str], None]
) -> tuple[str, int]:
    """Run `body` to its end, its stdout and stderr sent as build output; (id, exit code)."""
    rec = await rt.create(body)
    on_created(rec.id)
    emit({"stream": f" ---> Running in {rec.id[:12]}\n"})
    await rt.start(rec.id, hold_output=True)
    reader, writer = await rt.attach(rec.id, stdin=False, stdout=True, stderr=True)
    try:
        await _relay_frames(reader, emit)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    status = await rt.wait(rec.id, "not-running")
    return rec.id, int(status["StatusCode"])


async def _relay_frames(reader: asyncio.StreamReader, emit: Emit) -> None:
    """stdcopy frames (no TTY) to `{"stream": …}` messages, as the legacy builder sends both."""
    while True:
        try:
            header = await reader.readexactly(8)
        except asyncio.IncompleteReadError:
            return
        _, size = struct.unpack(">BxxxI", header)
        data = await reader.readexactly(size) if size else b""
        if data:
            emit({"stream": data.decode("utf-8", "replace")})


async def commit_container(
    rt: Runtime,
    cid: str,
    parent: str,
    config: dict[str, Any],
    container_config: dict[str, Any],
    author: str,
) -> str:
    upper = os.path.join(rt.paths.container(cid), "upper")
    return await asyncio.to_thread(
        build_images.commit_step,
        rt.images,
        parent,
        config,
        container_config,
        upper,
        author,
        cid,
    )


@contextlib.asynccontextmanager
async def image_view(rt: Runtime, image_id: str, writable: bool) -> AsyncIterator[tuple[str, str]]:
    """The image's files on a private overlay: (mounted root, upper dir of the changes)."""
    work = await asyncio.to_thread(rt.images.tmp_dir, "step-")
    try:
        for sub in ("upper", "work", "empty"):
            os.mkdir(os.path.join(work, sub), 0o755)
        lowers = rt.images.layer_dirs(image_id) if image_id else []
        lowers = lowers or [os.path.join(work, "empty")]
        if image_id:
            rt.images.hold_layers(work, image_id)
        try:
            async with mounts.overlay_view(work, lowers, writable) as root:
                yield root, os.path.join(work, "upper")
        finally:
            if image_id:
                await asyncio.to_thread(rt.images.release_layers, work)
    finally:
        await asyncio.to_thread(_rmtree, work)


def _rmtree(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)
