"""Images from a registry and a Dockerfile, through the manager and on dockerd, in one run.

- A real registry (Debian's docker-registry via tests/registry_kit.py, TLS from a test CA the
  nodes trust) holding a generated image of `--image-mib` MiB of random (incompressible) bytes
  in `--layers` layers, made here and pushed with the kit's pusher.
- Pull through the manager (`POST /images/create`, the stream read to its end): onto one node
  (`filters={"constraint":["node==node-0"]}`) and onto every node; the image is removed from
  the nodes after each pull. `--warmup` rounds first, not counted, then `--rounds` rounds;
  medians. Dirty pages are written back (sync) before each timed step.
- A 6-step build (FROM busybox, COPY of `--copy-mib` MiB, RUN, ENV, RUN, CMD) through the
  manager on node-0 (`--build-arg constraint:node==node-0`): cold (`nocache=1`), then cached
  (every step a cache hit, checked), in the same rounds.
- The same pull and build (legacy builder, `POST /build`) on a private dockerd (Debian's
  docker.io; bench/dockerd.py: its own network namespace, data root and exec root) that reaches
  the registry over a veth pair and treats it as an insecure registry (TLS, unverified).
  Ratios = flotilla / dockerd (the 1-node pull against dockerd's pull); ≤ 1.0 is the target.

Both sides are timed the same way: one HTTP request from this process, to the end of its
stream. Uses the dev cluster when one is up (and leaves it up), else brings up `--nodes` nodes
and takes them down at the end; run it from the checkout's root under the shared lock:
`flock /tmp/flt-dev.lock /opt/flotilla/venv/bin/python bench/images.py`. Last line: JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import socket
import statistics
import sys
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from bench import dockerd  # noqa: E402
from deploy import devcluster  # noqa: E402
from tests import registry_kit as kit  # noqa: E402
from tests.tarballs import tar_of  # noqa: E402

REPO = "bench/big"
BUILD_TAG = "flt-bench-build:latest"
DOCKERFILE = """FROM busybox
COPY data /data
RUN md5sum /data > /data.md5
ENV FLT_BENCH=images
RUN echo "$FLT_BENCH" > /bench.txt
CMD ["cat", "/data.md5"]
"""
CACHED_STEPS = 5  # every step after FROM
API = "/v1.41"
ONE_NODE = "node-0"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class BenchError(Exception):
    """An engine refused or failed what the bench asked: the figures would mean nothing."""


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.socket_path)
        self.sock = sock


class Engine:
    """An Engine API at `tcp://host:port` or `unix:///path`, spoken to by plain HTTP/1.1."""

    def __init__(self, host: str, timeout: float = 900) -> None:
        self.host = host
        self.timeout = timeout

    def _connection(self) -> http.client.HTTPConnection:
        if self.host.startswith("unix://"):
            return _UnixConnection(self.host.removeprefix("unix://"), self.timeout)
        address = self.host.removeprefix("tcp://")
        name, _, port = address.rpartition(":")
        return http.client.HTTPConnection(name, int(port), timeout=self.timeout)

    def call(
        self,
        method: str,
        path: str,
        query: dict[str, str] | None = None,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:
        url = API + path + ("?" + urllib.parse.urlencode(query) if query else "")
        conn = self._connection()
        try:
            conn.request(method, url, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def stream(
        self,
        method: str,
        path: str,
        query: dict[str, str] | None = None,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> list[dict[str, Any]]:
        """A JSON-stream call read to its end; BenchError on an HTTP error or an error line."""
        status, data = self.call(method, path, query, body, headers)
        if status != 200:
            raise BenchError(f"{method} {path}: {status} {data[:500]!r}")
        lines = [json.loads(line) for line in data.splitlines() if line.strip()]
        for line in lines:
            if "error" in line or "errorDetail" in line:
                raise BenchError(f"{method} {path}: {line}")
        return lines

    def remove_image(self, ref: str) -> None:
        status, data = self.call("DELETE", f"/images/{ref}", {"force": "1"})
        if status not in (200, 404):
            raise BenchError(f"rmi {ref}: {status} {data[:300]!r}")


# --------------------------------------------------------------------------- inputs


def build_context(copy_mib: int) -> bytes:
    return tar_of({"Dockerfile": DOCKERFILE.encode(), "data": os.urandom(copy_mib << 20)})


# --------------------------------------------------------------------------- measuring


@dataclass
class Figures:
    """Seconds per round of each measurement, and what the runs saw."""

    times: dict[str, list[float]] = field(default_factory=dict)
    nodes: int = 0
    driver: str = ""  # the engine's storage driver, as /info says

    def add(self, key: str, seconds: float) -> None:
        self.times.setdefault(key, []).append(seconds)

    def median(self, key: str) -> float | None:
        values = self.times.get(key)
        return round(statistics.median(values), 3) if values else None


def timed_pull(engine: Engine, ref: str, query: dict[str, str]) -> tuple[float, list[dict]]:
    name, _, tag = ref.rpartition(":")
    start = time.perf_counter()
    lines = engine.stream("POST", "/images/create", {"fromImage": name, "tag": tag, **query})
    return time.perf_counter() - start, lines


def pulled_nodes(lines: list[dict[str, Any]], ref: str) -> int:
    """How many nodes said `downloaded` in the manager's merged stream."""
    done = f"Pulling {ref}... : downloaded"
    return len({line.get("id") for line in lines if line.get("status") == done})


def timed_build(
    engine: Engine, context: bytes, nocache: bool, buildargs: dict[str, str]
) -> tuple[float, list[dict]]:
    query = {"t": BUILD_TAG, "rm": "1"}
    if nocache:
        query["nocache"] = "1"
    if buildargs:
        query["buildargs"] = json.dumps(buildargs)
    headers = {"Content-Type": "application/x-tar"}
    start = time.perf_counter()
    lines = engine.stream("POST", "/build", query, context, headers)
    took = time.perf_counter() - start
    cached = sum(1 for line in lines if line.get("stream") == " ---> Using cache\n")
    if cached != (0 if nocache else CACHED_STEPS):
        raise BenchError(f"build ({nocache=}) had {cached} cache hits: {lines}")
    return took, lines


def built_ids(lines: list[dict[str, Any]]) -> list[str]:
    return [line["aux"]["ID"] for line in lines if isinstance(line.get("aux"), dict)]


def settle() -> None:
    """Before each timed step: the previous step's dirty pages written back (os.sync), so
    one step's writeback does not land in the next one's time (both engines alike)."""
    os.sync()


def measure(
    engine: Engine,
    ref: str,
    pulls: dict[str, dict[str, str]],
    context: bytes,
    buildargs: dict[str, str],
    rounds: tuple[int, int],
    label: str,
) -> Figures:
    """(warm-up, timed) rounds of: each pull (the image removed after it), a cold build, a
    cached build. The warm-up rounds are not counted: a process's first pull and build pay
    for its lazy imports, connection setup and the page cache's first use, once."""
    warmup, timed = rounds
    figures = Figures()
    made: list[str] = []
    engine.remove_image(ref)
    try:
        for r in range(warmup + timed):
            name = f"{label} round {r + 1 - warmup}" if r >= warmup else f"{label} warm-up"
            steps: list[tuple[str, float]] = []
            for key, query in pulls.items():
                settle()
                took, lines = timed_pull(engine, ref, query)
                nodes = pulled_nodes(lines, ref)
                if key == "pull_all_nodes":
                    figures.nodes = nodes
                elif key == "pull_1node" and nodes != 1:
                    raise BenchError(f"the 1-node pull ran on {nodes} nodes")
                steps.append((key, took))
                engine.remove_image(ref)
            for key, nocache in (("build_cold", True), ("build_cached", False)):
                settle()
                took, lines = timed_build(engine, context, nocache, buildargs)
                made += built_ids(lines)
                steps.append((key, took))
            for key, took in steps:
                if r >= warmup:
                    figures.add(key, took)
            log(f"{name}: " + ", ".join(f"{key} {took:.2f} s" for key, took in steps))
    finally:
        engine.remove_image(ref)
        for image_id in reversed(made):
            engine.remove_image(image_id)
    return figures


def flotilla_figures(args: argparse.Namespace, reg: kit.Registry, ref: str, ctx: bytes) -> Figures:
    ours = not devcluster.is_up()
    if ours:
        log(f"dev cluster of {args.nodes} nodes")
        devcluster.up(args.nodes, timeout=60)
    try:
        with kit.trusted_by_dev_agents(reg):
            pulls = {
                "pull_1node": {"filters": json.dumps({"constraint": [f"node=={ONE_NODE}"]})},
                "pull_all_nodes": {},
            }
            # The build on node-0 every time, so the cached build finds the cold one's images.
            buildargs = {"constraint:node": f"={ONE_NODE}"}
            engine = Engine(devcluster.docker_host())
            rounds = (args.warmup, args.rounds)
            return measure(engine, ref, pulls, ctx, buildargs, rounds, "flotilla")
    finally:
        if ours:
            devcluster.down()


def dockerd_figures(
    args: argparse.Namespace, netns: str, reg: kit.Registry, ref: str, ctx: bytes
) -> Figures:
    with dockerd.private_dockerd(netns, ["--insecure-registry", reg.address]) as host:
        dockerd.ensure_busybox(host)
        engine = Engine(host)
        rounds = (args.warmup, args.rounds)
        figures = measure(engine, ref, {"pull": {}}, ctx, {}, rounds, "dockerd")
        figures.driver = json.loads(engine.call("GET", "/info")[1]).get("Driver", "")
        return figures


@contextlib.contextmanager
def pushed_registry(args: argparse.Namespace) -> Iterator[tuple[kit.Registry, str]]:
    """The registry (on the veth's host side, which the nodes and the private dockerd reach)
    with the generated image; yields it and the image's reference."""
    with kit.registry(dockerd.LINK_HOST_IP, tls=True) as reg:
        log(f"generating {args.image_mib} MiB in {args.layers} layers")
        layers = kit.random_layers(args.image_mib, args.layers)
        start = time.perf_counter()
        kit.push_image(reg, REPO, "latest", layers, ["true"])
        log(f"pushed to {reg.address} in {time.perf_counter() - start:.1f} s")
        yield reg, f"{reg.address}/{REPO}:latest"


def ratio(ours: float | None, theirs: float | None) -> float | None:
    return round(ours / theirs, 3) if ours and theirs else None


def summary(args: argparse.Namespace, flt: Figures, dkd: Figures | None) -> dict[str, Any]:
    d = dkd or Figures()
    res: dict[str, Any] = {
        "pull_1node_s": flt.median("pull_1node"),
        "pull_all_nodes_s": flt.median("pull_all_nodes"),
        "build_cold_s": flt.median("build_cold"),
        "build_cached_s": flt.median("build_cached"),
        "dockerd_pull_s": d.median("pull"),
        "dockerd_build_cold_s": d.median("build_cold"),
        "dockerd_build_cached_s": d.median("build_cached"),
    }
    res["pull_ratio_vs_dockerd"] = ratio(res["pull_1node_s"], res["dockerd_pull_s"])
    res["build_cold_ratio_vs_dockerd"] = ratio(res["build_cold_s"], res["dockerd_build_cold_s"])
    res["build_cached_ratio_vs_dockerd"] = ratio(
        res["build_cached_s"], res["dockerd_build_cached_s"]
    )
    res.update(
        nodes=flt.nodes,
        dockerd_storage_driver=d.driver or None,
        image_mib=args.image_mib,
        layers=args.layers,
        copy_mib=args.copy_mib,
        rounds=args.rounds,
        warmup=args.warmup,
        runs={"flotilla": flt.times, "dockerd": d.times},
    )
    return res


def table(res: dict[str, Any]) -> list[str]:
    def cell(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    rows = [
        (f"pull {res['image_mib']} MiB, 1 node", "pull_1node_s", "dockerd_pull_s",
         "pull_ratio_vs_dockerd"),
        (f"pull, all {res['nodes']} nodes", "pull_all_nodes_s", "", ""),
        ("build 6 steps, cold", "build_cold_s", "dockerd_build_cold_s",
         "build_cold_ratio_vs_dockerd"),
        ("build 6 steps, cached", "build_cached_s", "dockerd_build_cached_s",
         "build_cached_ratio_vs_dockerd"),
    ]  # fmt: skip
    out = [f"{'(seconds, median)':<24} {'flotilla':>9} {'dockerd':>9} {'ratio':>7}"]
    for label, ours, theirs, r in rows:
        out.append(
            f"{label:<24} {cell(res[ours]):>9} {cell(res.get(theirs)):>9} {cell(res.get(r)):>7}"
        )
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds (default 5)")
    ap.add_argument("--warmup", type=int, default=1, help="rounds not timed (default 1)")
    ap.add_argument("--image-mib", type=int, default=100, help="pulled image size (default 100)")
    ap.add_argument("--layers", type=int, default=5, help="its layers (default 5)")
    ap.add_argument("--copy-mib", type=int, default=4, help="the build's COPY (default 4)")
    ap.add_argument("--nodes", type=int, default=3, help="dev cluster size when none is up")
    ap.add_argument("--no-dockerd", action="store_true", help="skip the dockerd comparison")
    args = ap.parse_args()

    context = build_context(args.copy_mib)
    with dockerd.dockerd_netns(link=True) as netns, pushed_registry(args) as (reg, ref):
        flt = flotilla_figures(args, reg, ref, context)
        dkd = None
        if dockerd.installed() and not args.no_dockerd:
            dkd = dockerd_figures(args, netns, reg, ref, context)
        else:
            log("dockerd: not measured")
    res = summary(args, flt, dkd)
    for line in table(res):
        print(line)
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
