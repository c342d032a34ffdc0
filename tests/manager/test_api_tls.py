"""The manager's Engine API listener against clients without credentials, as real processes:
`flotilla manage --tlsverify` turns away a client without a certificate (and one from another
CA) in the TLS handshake while the docker CLI with its certificate works; plain TCP on a
non-loopback address is refused unless asked for with --insecure-tcp."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from deploy.etcd import EtcdServer, free_port, terminate
from tests.fixtures import DOCKER
from tests.secured_kit import (
    PING,
    Pki,
    api_request,
    client_context,
    make_pki,
    manage_command,
    refused,
    wait_listening,
)
from tests.secured_kit import tls_manager as secured_manager


def _manage(etcd: EtcdServer, *flags: str) -> list[str]:
    return manage_command(f"etcd://{etcd.endpoint}/tls", *flags)


@pytest.fixture
def pki(tmp_path: Any) -> Pki:
    return make_pki(str(tmp_path))


@pytest.fixture
def tls_manager(etcd: EtcdServer, pki: Pki, tmp_path: Any) -> Iterator[int]:
    with secured_manager(f"etcd://{etcd.endpoint}/tls", pki, str(tmp_path / "manager.log")) as port:
        yield port


def test_tlsverify_refuses_clients_without_a_certificate(tls_manager: int, pki: Pki) -> None:
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        trusting = client_context(pki.ca, version)
        if version == ssl.TLSVersion.TLSv1_2:
            with pytest.raises(ssl.SSLError):  # in the handshake itself
                api_request(tls_manager, trusting)
        assert refused(tls_manager, trusting)
        assert refused(tls_manager, client_context(pki.ca, version, pki.stranger))
    # Plain HTTP to the TLS port gets no API answer.
    assert refused(tls_manager, None)
    client = client_context(pki.ca, ssl.TLSVersion.MAXIMUM_SUPPORTED, pki.client)
    assert api_request(tls_manager, client).endswith(b"OK")


@pytest.mark.skipif(not os.path.exists(DOCKER), reason="needs the docker CLI")
def test_docker_cli_with_tlsverify(tls_manager: int, pki: Pki) -> None:
    c = pki.client
    tls = ["--tlsverify", "--tlscacert", pki.ca, "--tlscert", c.cert, "--tlskey", c.key]
    host = ["-H", f"tcp://127.0.0.1:{tls_manager}"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    ok = subprocess.run(
        [DOCKER, *host, *tls, "info"], capture_output=True, text=True, env=env, timeout=60
    )
    assert ok.returncode == 0, ok.stderr
    assert "Nodes: 0" in ok.stdout
    # The same CLI without its certificate gets nowhere.
    bare = ["--tlsverify", "--tlscacert", pki.ca]
    refused = subprocess.run(
        [DOCKER, *host, *bare, "version"], capture_output=True, text=True, env=env, timeout=60
    )
    assert refused.returncode != 0 and "Server:" not in refused.stdout


def test_a_node_certificate_cannot_drive_the_cluster(tls_manager: int, pki: Pki) -> None:
    """A node's certificate is the cluster CA's too, and root on that node can read its key:
    the Engine API answers it 403 (as dockerd answers a request an authorization plugin
    denies), while the operator's client certificate gets in."""
    node = client_context(pki.ca, ssl.TLSVersion.MAXIMUM_SUPPORTED, pki.node)
    create = (
        b"POST /containers/create HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Content-Type: application/json\r\nContent-Length: 19\r\n\r\n"
        b'{"Image":"busybox"}'
    )
    for request in (create, PING):
        answer = api_request(tls_manager, node, request)
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 403"), answer
        assert json.loads(body)["message"] == (
            "authorization denied: certificate 'node-1' is a node's (flotilla-node); "
            "use a client certificate (flotilla certs client)"
        )
    if os.path.exists(DOCKER):
        n = pki.node
        tls = ["--tlsverify", "--tlscacert", pki.ca, "--tlscert", n.cert, "--tlskey", n.key]
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        res = subprocess.run(
            [DOCKER, "-H", f"tcp://127.0.0.1:{tls_manager}", *tls, "ps"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert res.returncode != 0 and "authorization denied" in res.stderr, res.stderr


@pytest.mark.parametrize("address", ["0.0.0.0", "10.1.2.3", ""])
def test_plain_tcp_off_loopback_is_refused(etcd: EtcdServer, address: str) -> None:
    res = subprocess.run(
        _manage(etcd, "-H", f"tcp://{address}:2375"), capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 2
    assert "without --tlsverify is insecure" in res.stderr and "--insecure-tcp" in res.stderr


def test_insecure_tcp_flag_allows_it(etcd: EtcdServer, pki: Pki) -> None:
    port = free_port()
    # --tls alone authenticates the server, not the clients: refused off loopback as well.
    m = pki.manager
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
        wait_listening(port, proc)
    finally:
        terminate(proc.pid)
        proc.wait()
