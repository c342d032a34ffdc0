"""Fixtures of the agent tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from deploy.etcd import EtcdServer
from proto.kv import KV


@pytest.fixture
async def kv(etcd: EtcdServer) -> AsyncIterator[KV]:
    client = await KV.connect([etcd.endpoint], timeout=2.0)
    try:
        yield client
    finally:
        await client.close()
