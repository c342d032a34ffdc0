"""Memory of hollow nodes: one `flotilla hollow` process with N nodes (own etcd, mutual TLS as
the dev cluster serves), its RSS once every node is registered, and per node.

    python bench/hollow.py [--counts 100,1000] [--containers 0] [--insecure]

`--containers K` starts K containers (busybox, `sleep 100000`) on every node through the nodes'
gRPC service before measuring. Last line, JSON: the largest N's figures, e.g.
{"hollow_nodes": 1000, "rss_mib": …, "rss_mib_per_node": …, "marginal_mib_per_node": …}
(`marginal`: the RSS growth per node between the smallest and the largest N).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from deploy import certs  # noqa: E402
from deploy.etcd import EtcdServer  # noqa: E402
from proto import cert_roles  # noqa: E402
from proto.kv import KVError  # noqa: E402
from proto.nodes import list_nodes  # noqa: E402
from proto.rpc import TlsConfig  # noqa: E402

PREFIX = "/hollow-bench"
SETTLE_S = 10.0  # after the last registration: keep-alives and resyncs have run a few times


def cpu_s(pid: int) -> float:
    """User + system CPU seconds the process used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


async def wait_registered(endpoint: str, count: int, proc: subprocess.Popen[bytes]) -> list:
    deadline = time.monotonic() + 60 + count * 0.1
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"flotilla hollow exited ({proc.returncode})")
        try:
            nodes = await list_nodes([endpoint], PREFIX)
        except KVError:  # etcd busy with a thousand registrations: ask again
            nodes = []
        if len(nodes) >= count:
            return nodes
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(nodes)} of {count} hollow nodes registered")
        await asyncio.sleep(0.5)


async def retried(call):  # noqa: ANN001, ANN201 - a gRPC call, made again while UNAVAILABLE
    """A busy hollow host (1,000 nodes on 2 cores) may miss a TLS handshake's deadline."""
    import grpc

    for attempt in range(5):
        try:
            return await call()
        except grpc.aio.AioRpcError as e:
            if e.code() != grpc.StatusCode.UNAVAILABLE or attempt == 4:
                raise
            await asyncio.sleep(1 + attempt)
    return None


async def fill(nodes: list, per_node: int, tls: TlsConfig | None) -> None:
    from proto import agent_pb2 as pb
    from proto.rpc import agent_client

    body = json.dumps({"Image": "busybox", "Cmd": ["sleep", "100000"]}).encode()
    gate = asyncio.Semaphore(8)

    async def one(addr: str) -> None:
        async with gate:
            stub = agent_client(addr, tls)
            try:
                for _ in range(per_node):
                    created = await retried(
                        lambda: stub.ContainerCreate(pb.ContainerCreateRequest(json=body))
                    )
                    await retried(
                        lambda cid=created.id: stub.ContainerStart(pb.ContainerStartRequest(id=cid))
                    )
            finally:
                await stub.channel.close()  # type: ignore[attr-defined]

    await asyncio.gather(*(one(n.addr) for n in nodes))


def measure(
    count: int, per_node: int, tls: TlsConfig | None, client: TlsConfig | None
) -> dict[str, float]:
    with EtcdServer() as etcd:
        cmd = [sys.executable, "-m", "deploy.cli", "hollow", "--etcd", etcd.endpoint]
        cmd += ["--prefix", PREFIX, "--count", str(count)]
        if tls is None:
            cmd.append("--insecure-grpc")
        else:
            cmd += ["--tlscacert", tls.ca, "--tlscert", tls.cert, "--tlskey", tls.key]
        env = dict(os.environ, PYTHONPATH=REPO)
        # Its log to a file: a pipe nobody reads would block the whole process once full.
        log = open(os.path.join(etcd._tmp, "hollow.log"), "wb")  # noqa: SIM115 - closed below
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=log)
        try:
            started = time.monotonic()
            nodes = asyncio.run(wait_registered(etcd.endpoint, count, proc))
            up_s = time.monotonic() - started
            if per_node:
                asyncio.run(fill(nodes, per_node, client))
            cpu_before = cpu_s(proc.pid)
            time.sleep(SETTLE_S)
            idle_cpu = (cpu_s(proc.pid) - cpu_before) / SETTLE_S
            rss = rss_mib(proc.pid)
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()
    return {
        "hollow_nodes": count,
        "rss_mib": round(rss, 1),
        "up_s": round(up_s, 1),
        "idle_cpu_percent": round(100 * idle_cpu, 1),  # keep-alives, one core = 100
    }


def bench_tls(directory: str) -> TlsConfig:
    certs.make_ca(directory, name="hollow-bench-ca")
    certs.make_cert(directory, "hollow", ["127.0.0.1"], role=cert_roles.NODE)
    certs.make_cert(directory, "client", [], server=False, role=cert_roles.MANAGER)
    return TlsConfig(
        cert=os.path.join(directory, "hollow.pem"),
        key=os.path.join(directory, "hollow-key.pem"),
        ca=os.path.join(directory, "ca.pem"),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--counts", default="100,1000")
    parser.add_argument("--containers", type=int, default=0, help="containers per node")
    parser.add_argument("--insecure", action="store_true", help="plain gRPC, no mutual TLS")
    args = parser.parse_args()
    counts = sorted(int(c) for c in args.counts.split(","))
    with tempfile.TemporaryDirectory(prefix="flt-hollow-bench-") as tmp:
        tls = None if args.insecure else bench_tls(tmp)
        # The bench's own calls (--containers) go in with the manager's role.
        client = None
        if tls is not None:
            client = TlsConfig(
                os.path.join(tmp, "client.pem"), os.path.join(tmp, "client-key.pem"), tls.ca
            )
        results = []
        for count in counts:
            r = measure(count, args.containers, tls, client)
            r["rss_mib_per_node"] = round(r["rss_mib"] / count, 3)
            results.append(r)
            print(
                f"{count:5d} hollow nodes ({args.containers} containers each): "
                f"RSS {r['rss_mib']:.1f} MiB, {r['rss_mib_per_node']:.3f} MiB/node, "
                f"all registered in {r['up_s']:.1f}s, {r['idle_cpu_percent']}% CPU at rest",
                flush=True,
            )
    last = dict(results[-1], containers_per_node=args.containers, tls=not args.insecure)
    if len(results) > 1:
        first = results[0]
        growth = (last["rss_mib"] - first["rss_mib"]) / (
            last["hollow_nodes"] - first["hollow_nodes"]
        )
        last["marginal_mib_per_node"] = round(growth, 3)
    print(json.dumps(last))


if __name__ == "__main__":
    main()
