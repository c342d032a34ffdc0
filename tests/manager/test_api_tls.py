"""The manager's Engine API listener against clients without credentials, as real processes:
`flotilla manage --tlsverify` turns away a client without a certificate (and one from another
CA) in the TLS handshake while the docker CLI with its certificate works; plain TCP on a
non-loopback address is refused unless asked for with --insecure-tcp."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from deploy import certs
from deploy.etcd import EtcdServer, free_port, terminate
from tests.fixtures import DOCKER


def _manage(etcd: EtcdServer, *flags: str) -> list[str]:
    return [sys.executable, "-m", "deploy.cli", "manage", f"etcd://{etcd.endpoint}/tls", *flags]


@pytest.fixture
def pki(tmp_path: Any) -> dict[str, Any]:
    d, other = str(tmp_path / "ca"), str(tmp_path / "other")
    certs.make_ca(d)
    certs.make_cert(d, "manager", ["127.0.0.1", "localhost"])
    certs.make_ca(other)
    return {
        "ca": certs.ca_files(d)[0],
        "manager": certs.files(d, "manager"),
        "client": certs.make_cert(d, "operator", server=False),
        "stranger": certs.make_cert(other, "operator", server=False),
    }


def _wait_listening(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"manager not listening on {port}")


@pytest.fixture
def tls_manager(etcd: EtcdServer, pki: dict[str, Any]) -> Iterator[int]:
    port = free_port()
    m = pki["manager"]
    cmd = _manage(etcd, "-H", f"tcp://127.0.0.1:{port}", "--tlsverify")
    cmd += ["--tlscacert", pki["ca"], "--tlscert", m.cert, "--tlskey", m.key]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        _wait_listening(port, proc)
        yield port
    finally:
        terminate(proc.pid)
        proc.wait()


def _get_ping(port: int, context: ssl.SSLContext) -> bytes:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        tls.sendall(b"GET /_ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := tls.recv(4096):
            data += chunk
        return data


def _refused(port: int, context: ssl.SSLContext) -> bool:
    """No API answer: the handshake fails (TLS 1.2), or the server's alert closes the
    connection before the request is read (TLS 1.3 completes the client's side first)."""
    try:
        return _get_ping(port, context) == b""
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
        return True


def test_tlsverify_refuses_clients_without_a_certificate(
    tls_manager: int, pki: dict[str, Any]
) -> None:
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        trusting = ssl.create_default_context(cafile=pki["ca"])
        trusting.maximum_version = version
        if version == ssl.TLSVersion.TLSv1_2:
            with pytest.raises(ssl.SSLError):  # in the handshake itself
                _get_ping(tls_manager, trusting)
        assert _refused(tls_manager, trusting)
        stranger = ssl.create_default_context(cafile=pki["ca"])
        stranger.maximum_version = version
        stranger.load_cert_chain(pki["stranger"].cert, pki["stranger"].key)
        assert _refused(tls_manager, stranger)
    # Plain HTTP to the TLS port gets no API answer.
    with socket.create_connection(("127.0.0.1", tls_manager), timeout=10) as s:
        s.sendall(b"GET /_ping HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b"OK" not in s.recv(4096)
    client = ssl.create_default_context(cafile=pki["ca"])
    client.load_cert_chain(pki["client"].cert, pki["client"].key)
    assert _get_ping(tls_manager, client).endswith(b"OK")


@pytest.mark.skipif(not os.path.exists(DOCKER), reason="needs the docker CLI")
def test_docker_cli_with_tlsverify(tls_manager: int, pki: dict[str, Any]) -> None:
    c = pki["client"]
    tls = ["--tlsverify", "--tlscacert", pki["ca"], "--tlscert", c.cert, "--tlskey", c.key]
    host = ["-H", f"tcp://127.0.0.1:{tls_manager}"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    ok = subprocess.run(
        [DOCKER, *host, *tls, "info"], capture_output=True, text=True, env=env, timeout=60
    )
    assert ok.returncode == 0, ok.stderr
    assert "Nodes: 0" in ok.stdout
    # The same CLI without its certificate gets nowhere.
    bare = ["--tlsverify", "--tlscacert", pki["ca"]]
    refused = subprocess.run(
        [DOCKER, *host, *bare, "version"], capture_output=True, text=True, env=env, timeout=60
    )
    assert refused.returncode != 0 and "Server:" not in refused.stdout


@pytest.mark.parametrize("address", ["0.0.0.0", "10.1.2.3", ""])
def test_plain_tcp_off_loopback_is_refused(etcd: EtcdServer, address: str) -> None:
    res = subprocess.run(
        _manage(etcd, "-H", f"tcp://{address}:2375"), capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 2
    assert "without --tlsverify is insecure" in res.stderr and "--insecure-tcp" in res.stderr


def test_insecure_tcp_flag_allows_it(etcd: EtcdServer, pki: dict[str, Any]) -> None:
    port = free_port()
    # --tls alone authenticates the server, not the clients: refused off loopback as well.
    m = pki["manager"]
    server_only = ["--tls", "--tlscert", m.cert, "--tlskey", m.key]
    res = subprocess.run(
        _manage(etcd, "-H", f"tcp://0.0.0.0:{port}", *server_only),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 2 and "--insecure-tcp" in res.stderr
    proc = subprocess.Popen(
        _manage(etcd, "-H", f"tcp://0.0.0.0:{port}", "--insecure-tcp"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_listening(port, proc)
    finally:
        terminate(proc.pid)
        proc.wait()
