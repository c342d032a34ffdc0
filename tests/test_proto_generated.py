"""The committed generated code matches what proto/generate.py makes from the .proto files."""

from __future__ import annotations

import os
import tempfile

from proto import generate


def test_generated_code_is_fresh() -> None:
    assert generate.proto_files(), "no proto/*.proto found"
    with tempfile.TemporaryDirectory(prefix="flt-proto-test-") as tmp:
        names = generate.generate(tmp)
        stale = []
        for name in names:
            committed = os.path.join(generate.REPO, name)
            with open(os.path.join(tmp, name), "rb") as f:
                fresh = f.read()
            try:
                with open(committed, "rb") as f:
                    current = f.read()
            except FileNotFoundError:
                current = None
            if current != fresh:
                stale.append(name)
    assert not stale, f"generated code is stale or missing: {stale}; run python proto/generate.py"


def test_agent_stub_has_every_rpc() -> None:
    from proto import agent_pb2, agent_pb2_grpc

    service = agent_pb2.DESCRIPTOR.services_by_name["Agent"]
    servicer = agent_pb2_grpc.AgentServicer
    missing = [m.name for m in service.methods if not hasattr(servicer, m.name)]
    assert not missing
