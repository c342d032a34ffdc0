"""A whole agent (run_agent) against a real etcd: its heartbeat — and so its fence deadline —
is never starved by blocking work (a long image import, a full worker-thread pool), and
`members/<id>` is written at registration."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator

import pytest

from agent import nodeid
from agent.fencing import FENCE_FILE
from agent.main import AgentConfig, run_agent
from deploy.etcd import EtcdServer, free_port
from proto import agent_pb2
from proto.keys import Keys
from proto.kv import KV
from proto.records_pb2 import NodeRecord
from proto.rpc import agent_client
from runtime.cgroups import Cgroups

pytestmark = pytest.mark.timeout(180)

KEYS = Keys("/flotilla")
BIG_LAYER = 256 * 1024 * 1024


def read_deadline(root: str) -> int:
    with contextlib.suppress(OSError, ValueError), open(os.path.join(root, FENCE_FILE)) as f:
        return int(f.read())
    return 0


class Watch:
    """Samples the fence file every 20 ms: it must never have passed, and must advance."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.values: set[int] = set()
        self.expired_at: list[int] = []

    async def run(self) -> None:
        while True:
            deadline = read_deadline(self.root)
            now = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
            self.values.add(deadline)
            if deadline <= now:
                self.expired_at.append(now)
            await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def agent(etcd: EtcdServer) -> AsyncIterator[tuple[AgentConfig, str]]:
    root = tempfile.mkdtemp(prefix="flt-agent-f-")
    name = f"f{secrets.token_hex(3)}"
    config = AgentConfig(
        etcd_endpoints=[etcd.endpoint],
        advertise=f"127.0.0.1:{free_port()}",
        name=name,
        data_root=root,
        bridge_subnet="10.79.1.0/24",
        metrics_listen=f"127.0.0.1:{free_port()}",
    )
    stop = asyncio.Event()
    task = asyncio.create_task(run_agent(config, stop))
    try:
        end = time.monotonic() + 20
        while read_deadline(root) <= time.clock_gettime_ns(time.CLOCK_BOOTTIME):
            assert time.monotonic() < end, "agent did not register"
            assert not task.done(), task.exception() if task.done() else ""
            await asyncio.sleep(0.05)
        yield config, root
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        Cgroups(f"flotilla/{name}").remove_parent()
        shutil.rmtree(root, ignore_errors=True)


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read().decode()


def big_tar(path: str) -> None:
    """A rootfs tar with one large incompressible file, written in pieces."""
    import tarfile

    class Random:
        def __init__(self, size: int) -> None:
            self.left = size

        def read(self, n: int = -1) -> bytes:
            n = self.left if n < 0 else min(n, self.left)
            self.left -= n
            return os.urandom(n)

    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("big")
        info.size = BIG_LAYER
        tar.addfile(info, Random(BIG_LAYER))  # type: ignore[arg-type]


async def test_members_record_and_fence_metrics(etcd: EtcdServer) -> None:
    async with agent(etcd) as (config, root), await KV.connect([etcd.endpoint]) as kv:
        body = await asyncio.to_thread(_get, f"http://{config.metrics_listen}/metrics")
        for name in (
            "flotilla_fence_deadline_seconds",
            "flotilla_fence_remaining_seconds",
            "flotilla_fence_actions_total",
            "flotilla_peer_checks_total",
        ):
            assert name in body or name.removesuffix("_total") in body, name
        remaining = [
            float(line.split()[1])
            for line in body.splitlines()
            if line.startswith("flotilla_fence_remaining_seconds ")
        ]
        assert remaining and remaining[0] > 0  # renewed: the deadline is ahead
        node_id = nodeid.load_or_create(root)
        entry = await kv.get(KEYS.member(node_id))
        assert entry is not None and entry.lease == 0  # outlives the agent's lease
        rec = NodeRecord()
        rec.ParseFromString(entry.value)
        assert rec.id == node_id and rec.name == config.name


async def test_heartbeat_not_starved_by_load_or_busy_workers(etcd: EtcdServer) -> None:
    tar_path = os.path.join(tempfile.mkdtemp(prefix="flt-big-"), "big.tar")
    await asyncio.to_thread(big_tar, tar_path)
    try:
        async with agent(etcd) as (config, root):
            watch = Watch(root)
            watcher = asyncio.create_task(watch.run())
            try:
                # Every default worker thread busy for longer than the TTL (the pool the
                # agent's blocking calls run in).
                loop = asyncio.get_running_loop()
                busy = [loop.run_in_executor(None, time.sleep, 4) for _ in range(12)]
                await asyncio.gather(*busy)
                during_busy = len(watch.values)
                # A large import streamed through gRPC, read and unpacked in a worker thread.
                stub = agent_client(config.advertise)
                try:

                    async def chunks() -> AsyncIterator[agent_pb2.ImageImportInput]:
                        yield agent_pb2.ImageImportInput(
                            options=agent_pb2.ImageImportOptions(reference="big:latest")
                        )
                        with open(tar_path, "rb") as f:
                            while data := await asyncio.to_thread(f.read, 1 << 20):
                                yield agent_pb2.ImageImportInput(data=data)

                    t0 = time.monotonic()
                    await stub.ImageImport(chunks(), timeout=120)
                    load_s = time.monotonic() - t0
                finally:
                    await stub.channel.close()
            finally:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            assert watch.expired_at == [], "the fence deadline passed while the agent was busy"
            assert during_busy >= 3, "the deadline did not advance while the workers were busy"
            assert len(watch.values) > during_busy, "the deadline did not advance during the load"
            print(f"import of {BIG_LAYER >> 20} MiB took {load_s:.1f}s")
    finally:
        shutil.rmtree(os.path.dirname(tar_path), ignore_errors=True)
