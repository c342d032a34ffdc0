"""etcd's own checks against a fake node: an etcd that wants client certificates (or a user)
turns away a client without them — it cannot register a node — and lets flotilla's clients in
when they have them (proto/kv.py's EtcdSecurity, the --etcd-* flags)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from deploy.etcd import EtcdServer
from proto.keys import Keys
from proto.kv import KV, EtcdSecurity, KVError
from proto.nodes import list_nodes
from proto.records_pb2 import NodeRecord
from tests.secured_kit import Pki, make_pki, register_node
from tests.secured_kit import tls_etcd as secured_etcd

PREFIX = "/auth-test"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(str(tmp_path_factory.mktemp("pki")))


@pytest.fixture(scope="module")
def tls_etcd(pki: Pki) -> Iterator[EtcdServer]:
    with secured_etcd(pki) as server:
        yield server


async def _register(endpoint: str, security: EtcdSecurity | None, name: str) -> None:
    await register_node(endpoint, security, PREFIX, name)


async def test_a_fake_node_without_a_certificate_cannot_register(
    tls_etcd: EtcdServer, pki: Pki
) -> None:
    good = pki.etcd_security(pki.node)
    await _register(tls_etcd.endpoint, good, "real")
    attempts = {
        "plaintext": None,
        "TLS without a client certificate": pki.etcd_security(None),
        "a certificate from another CA": pki.etcd_security(pki.stranger),
    }
    for what, security in attempts.items():
        with pytest.raises(KVError):
            await _register(tls_etcd.endpoint, security, "fake")
            pytest.fail(f"registered with {what}")
    names = [n.name for n in await list_nodes([tls_etcd.endpoint], PREFIX, good)]
    assert names == ["real"]


def test_flotilla_list_takes_the_etcd_flags(tls_etcd: EtcdServer, pki: Pki) -> None:
    url = f"etcd://{tls_etcd.endpoint}{PREFIX}"
    base = [sys.executable, "-m", "deploy.cli", "list", url]
    flags = pki.etcd_flags(pki.node)
    ok = subprocess.run(base + flags, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    refused = subprocess.run(base, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and "cannot read" in refused.stderr


@pytest.fixture
def auth_etcd() -> Iterator[EtcdServer]:
    """A plaintext etcd with authentication on: root's password is 'sesame'."""
    import asyncio

    from etcd3aio import Etcd3Client

    async def enable(endpoint: str) -> None:
        async with Etcd3Client([endpoint]) as client:
            assert client.auth is not None
            await client.auth.user_add("root", "sesame")
            await client.auth.user_grant_role("root", "root")
            await client.auth.auth_enable()

    with EtcdServer() as server:
        asyncio.run(enable(server.endpoint))
        yield server


async def test_etcd_user_and_password(auth_etcd: EtcdServer) -> None:
    with pytest.raises(KVError):
        await _register(auth_etcd.endpoint, None, "fake")
    with pytest.raises(KVError):
        await _register(auth_etcd.endpoint, EtcdSecurity(user="root", password="guess"), "fake")
    root = EtcdSecurity(user="root", password="sesame")
    await _register(auth_etcd.endpoint, root, "real")
    async with await KV.connect([auth_etcd.endpoint], security=root) as kv:
        # The watch stream carries the token too.
        _, revision = await kv.snapshot(Keys(PREFIX).nodes_prefix())
        events = kv.watch_prefix(Keys(PREFIX).nodes_prefix(), revision + 1)
        await kv.put(Keys(PREFIX).node("later"), NodeRecord(name="later").SerializeToString())
        event = await anext(events)
        assert event.key.endswith("/later")
        await events.aclose()
    assert [n.name for n in await list_nodes([auth_etcd.endpoint], PREFIX, root)] == [
        "later",
        "real",
    ]


def test_password_never_on_the_command_line(tmp_path: Any) -> None:
    import argparse

    from proto.etcd_flags import add_etcd_security_arguments, etcd_security_from_args

    parser = argparse.ArgumentParser()
    add_etcd_security_arguments(parser)
    with pytest.raises(ValueError, match="never on the command line"):
        etcd_security_from_args(parser.parse_args(["--etcd-user", "root:sesame"]), {})
    with pytest.raises(ValueError, match="needs a password"):
        etcd_security_from_args(parser.parse_args(["--etcd-user", "root"]), {})
    env = {"FLOTILLA_ETCD_PASSWORD": "sesame"}
    sec = etcd_security_from_args(parser.parse_args(["--etcd-user", "root"]), env)
    assert sec is not None and sec.password == "sesame" and "sesame" not in repr(sec)
    (tmp_path / "pw").write_text("from-file\n")
    args = parser.parse_args(["--etcd-user", "root", "--etcd-password-file", str(tmp_path / "pw")])
    assert etcd_security_from_args(args, env).password == "from-file"  # type: ignore[union-attr]
