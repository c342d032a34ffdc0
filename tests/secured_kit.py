"""The secured control plane as an operator deploys it (docs/install.md "Certificates"),
started for real: a PKI from deploy/certs.py, an etcd that wants client certificates, a
`flotilla manage --tlsverify` and raw clients with and without certificates. Shared by
tests/agent/test_etcd_auth.py, tests/manager/test_api_tls.py and bench/attacks.py, so the
bench attacks exactly what the tests check."""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

from deploy import certs
from deploy.dev_layout import REPO
from deploy.etcd import EtcdServer, free_port, terminate
from proto import cert_roles
from proto.keys import Keys
from proto.kv import KV, EtcdSecurity
from proto.records_pb2 import NodeRecord

PING = b"GET /_ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


@dataclass(frozen=True)
class Pki:
    """The cluster's CA with etcd's, the manager's, a node's and an operator's certificates,
    and a stranger's certificate from another CA (with a node's names, usable both ways)."""

    ca: str
    etcd: certs.CertFiles
    manager: certs.CertFiles
    node: certs.CertFiles
    client: certs.CertFiles
    stranger: certs.CertFiles

    def etcd_flags(self, who: certs.CertFiles) -> list[str]:
        return ["--etcd-cacert", self.ca, "--etcd-cert", who.cert, "--etcd-key", who.key]

    def etcd_security(self, who: certs.CertFiles | None) -> EtcdSecurity:
        if who is None:
            return EtcdSecurity(ca=self.ca)
        return EtcdSecurity(ca=self.ca, cert=who.cert, key=who.key)


def make_pki(directory: str) -> Pki:
    d, other = os.path.join(directory, "ca"), os.path.join(directory, "other")
    certs.make_ca(d)
    certs.make_ca(other)
    return Pki(
        ca=certs.ca_files(d)[0],
        etcd=certs.make_cert(d, "etcd", ["127.0.0.1"]),
        manager=certs.make_cert(d, "manager", ["127.0.0.1", "localhost"], role=cert_roles.MANAGER),
        node=certs.make_cert(d, "node-1", ["node-1", "127.0.0.1"], role=cert_roles.NODE),
        client=certs.make_cert(d, "operator", server=False, role=cert_roles.CLIENT),
        stranger=certs.make_cert(other, "node-1", ["node-1", "127.0.0.1"], role=cert_roles.NODE),
    )


def tls_etcd(pki: Pki) -> EtcdServer:
    """An etcd (not started) whose clients must present a certificate from the cluster's CA."""
    return EtcdServer(client_tls=(pki.etcd.cert, pki.etcd.key, pki.ca))


async def register_node(
    endpoint: str, security: EtcdSecurity | None, prefix: str, name: str
) -> None:
    """What an agent's registration writes: its node record under a lease."""
    async with await KV.connect([endpoint], timeout=3.0, security=security) as kv:
        lease = await kv.lease_grant(60)
        record = NodeRecord(id=name, name=name, addr="127.0.0.1:4243")
        await kv.put(Keys(prefix).node(name), record.SerializeToString(), lease=lease)


def manage_command(discovery: str, *flags: str) -> list[str]:
    return [sys.executable, "-m", "deploy.cli", "manage", discovery, *flags]


def wait_listening(port: int, proc: subprocess.Popen[bytes], log: str = "") -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else b""
            if log and os.path.exists(log):
                with open(log, "rb") as f:
                    out += f.read()
            text = out.decode(errors="replace")
            raise AssertionError(f"manager exited {proc.returncode}: {text}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"manager not listening on {port}")


@contextlib.contextmanager
def tls_manager(discovery: str, pki: Pki, log: str, *flags: str) -> Iterator[int]:
    """`flotilla manage --tlsverify` with the manager's certificate on a free loopback port
    (yielded); its output goes to `log` so a long run never blocks on a full pipe."""
    port = free_port()
    m = pki.manager
    cmd = manage_command(discovery, "-H", f"tcp://127.0.0.1:{port}", "--tlsverify", *flags)
    cmd += ["--tlscacert", pki.ca, "--tlscert", m.cert, "--tlskey", m.key]
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
    try:
        wait_listening(port, proc, log)
        yield port
    finally:
        terminate(proc.pid)
        proc.wait()


def client_context(
    ca: str, version: ssl.TLSVersion, cert: certs.CertFiles | None = None
) -> ssl.SSLContext:
    """A client trusting `ca` (so only the client's side is missing), capped at `version`."""
    context = ssl.create_default_context(cafile=ca)
    context.maximum_version = version
    if cert is not None:
        context.load_cert_chain(cert.cert, cert.key)
    return context


def api_request(port: int, context: ssl.SSLContext | None, request: bytes = PING) -> bytes:
    """The raw answer to one HTTP request (plain when `context` is None); b"" when the server
    closes without one."""
    with contextlib.ExitStack() as stack:
        sock = stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=10))
        if context is not None:
            sock = stack.enter_context(context.wrap_socket(sock, server_hostname="127.0.0.1"))
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
        return data


def refused(port: int, context: ssl.SSLContext | None, request: bytes = PING) -> bool:
    """No API answer: the handshake fails (TLS 1.2), or the server's alert closes the
    connection before the request is read (TLS 1.3 completes the client's side first)."""
    try:
        return not api_request(port, context, request).startswith(b"HTTP/")
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
        return True
