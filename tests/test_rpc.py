"""proto/rpc.py: the agent stub made method by method, and TLS files read once per change."""

from __future__ import annotations

import os
from pathlib import Path

from proto import agent_pb2_grpc
from proto.rpc import TlsConfig, agent_client, channel_credentials


def test_channel_credentials_are_read_again_only_when_a_file_changes(tmp_path: Path) -> None:
    paths = []
    for name in ("cert.pem", "key.pem", "ca.pem"):
        (tmp_path / name).write_bytes(b"not checked before a handshake")
        paths.append(str(tmp_path / name))
    tls = TlsConfig(*paths)
    first = channel_credentials(tls)
    assert channel_credentials(tls) is first
    st = os.stat(paths[0])
    os.utime(paths[0], ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # a renewal
    assert channel_credentials(tls) is not first


async def test_lazy_stub_has_every_method_of_the_generated_stub() -> None:
    stub = agent_client("127.0.0.1:1")
    try:
        generated = agent_pb2_grpc.AgentStub(stub.channel)  # type: ignore[attr-defined]
        names = [n for n in vars(generated) if not n.startswith("_")]
        assert len(names) > 40
        for name in names:
            assert type(getattr(stub, name)) is type(getattr(generated, name)), name
        assert stub.Ping is stub.Ping  # made once, then kept
    finally:
        await stub.channel.close()  # type: ignore[attr-defined]
