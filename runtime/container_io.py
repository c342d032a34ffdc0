"""A container's I/O for the Runtime: attach and resize through its shim, and its log file
(read, or followed while it runs). Mixed into `Runtime` (runtime/containers.py)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

from proto.docker.errors import Conflict
from runtime import logs, shim
from runtime.paths import DataRoot
from runtime.record import ContainerRecord


class ContainerIO:
    paths: DataRoot
    _records: dict[str, ContainerRecord]

    def get(self, ref: str) -> ContainerRecord:
        raise NotImplementedError

    async def attach(
        self, ref: str, stdin: bool, stdout: bool, stderr: bool
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Connect to a running container's stdio via its shim (raw or multiplexed frames)."""
        rec = self.get(ref)
        if not rec.running:
            raise Conflict(f"Container {rec.id} is not running")
        sock = os.path.join(self.paths.container(rec.id), "attach.sock")
        return await shim.open_attach(sock, stdin, stdout, stderr)

    async def resize(self, ref: str, height: int, width: int) -> None:
        rec = self.get(ref)
        if not rec.running:
            raise Conflict(f"Container {rec.id} is not running")
        await shim.resize(os.path.join(self.paths.container(rec.id), "attach.sock"), height, width)

    def log_path(self, rec: ContainerRecord) -> str:
        return os.path.join(self.paths.container(rec.id), f"{rec.id}-json.log")

    async def logs(
        self,
        ref: str,
        stdout: bool = True,
        stderr: bool = True,
        follow: bool = False,
        tail: int | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> AsyncIterator[logs.LogEntry]:
        rec = self.get(ref)
        path = self.log_path(rec)
        if not follow:
            entries = await asyncio.to_thread(
                logs.read_logs,
                path,
                stdout=stdout,
                stderr=stderr,
                tail=tail,
                since=since,
                until=until,
            )
            for entry in entries:
                yield entry
            return

        def stopped() -> bool:
            current = self._records.get(rec.id)
            return current is None or not (current.running or current.status == "restarting")

        async for entry in logs.follow_logs(
            path, stdout=stdout, stderr=stderr, tail=tail, since=since, until=until, stop=stopped
        ):
            yield entry
