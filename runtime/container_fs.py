"""A container's filesystem from outside: `docker cp` (archive stat/get/put), `export`,
`diff` (changes against the image) and `commit`.

A running container is read through `/proc/<pid>/root` (its mounts included); a stopped one, and
`export` always, through a temporary overlay of its layers (runtime/mounts.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, BinaryIO

from proto.docker.errors import DockerError
from runtime import archive_pack, archive_unpack, layers, mounts
from runtime.archive_stat import stat_path
from runtime.record import ContainerRecord

if TYPE_CHECKING:
    from runtime.containers import Runtime


@contextlib.asynccontextmanager
async def _root_view(rt: Runtime, rec: ContainerRecord, writable: bool) -> AsyncIterator[str]:
    """A host path showing the container's root: its live root, or a temporary overlay."""
    if rec.running and rec.pid:
        yield f"/proc/{rec.pid}/root"
        return
    async with _overlay_view(rt, rec, writable) as root:
        yield root


def _overlay_view(rt: Runtime, rec: ContainerRecord, writable: bool):  # noqa: ANN202
    """The container's layers on a temporary directory (runtime/mounts.overlay_view)."""
    return mounts.overlay_view(rt.paths.container(rec.id), rt.lowerdirs(rec), writable)


async def archive_stat(rt: Runtime, ref: str, path: str) -> dict[str, Any]:
    rec = rt.get(ref)
    async with _root_view(rt, rec, writable=False) as root:
        return await asyncio.to_thread(stat_path, root, path)


async def archive_get(
    rt: Runtime,
    ref: str,
    path: str,
    out: BinaryIO,
    on_stat: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """The tar of `path` into `out`; `on_stat` (called from a worker thread) gets its stat first."""
    rec = rt.get(ref)
    async with _root_view(rt, rec, writable=False) as root:
        return await asyncio.to_thread(archive_pack.get_archive, root, path, out, on_stat=on_stat)


async def archive_put(
    rt: Runtime, ref: str, path: str, src: BinaryIO, no_overwrite_dir_non_dir: bool = False
) -> None:
    rec = rt.get(ref)
    if rt.spec(rec).host_config.readonly_rootfs:
        raise DockerError("container rootfs is marked read-only", 403)
    async with _root_view(rt, rec, writable=True) as root:
        await asyncio.to_thread(
            archive_unpack.put_archive, root, path, src, no_overwrite_dir_non_dir
        )


async def export(rt: Runtime, ref: str, out: BinaryIO) -> None:
    rec = rt.get(ref)
    async with _overlay_view(rt, rec, writable=False) as root:
        await asyncio.to_thread(archive_pack.export_tree, root, out)
    rt.emit("export", rec)


async def changes(rt: Runtime, ref: str) -> list[dict[str, Any]]:
    rec = rt.get(ref)
    upper = os.path.join(rt.paths.container(rec.id), "upper")
    return await asyncio.to_thread(layers.changes, upper, rt.lowerdirs(rec))


async def commit(
    rt: Runtime,
    ref: str,
    config: dict[str, Any] | None = None,
    comment: str = "",
    author: str = "",
    reference: str | None = None,
    changes: list[str] | None = None,
    pause: bool = True,
) -> str:
    rec = rt.get(ref)
    paused_here = False
    if pause and rec.status == "running":
        await asyncio.to_thread(rt.cgroups.freeze, rec.id)
        paused_here = True
    try:
        merged = dict(rec.body)
        merged.pop("HostConfig", None)
        merged.pop("NetworkingConfig", None)
        merged.update(config or {})
        upper = os.path.join(rt.paths.container(rec.id), "upper")
        args = rt.spec(rec).args
        image_id = await asyncio.to_thread(
            rt.images.commit,
            upper,
            rec.image_id,
            merged,
            comment,
            author,
            reference,
            " ".join(args),
            changes or [],
        )
    finally:
        if paused_here:
            await asyncio.to_thread(rt.cgroups.thaw, rec.id)
    rt.emit("commit", rec)
    return image_id
