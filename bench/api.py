"""The manager through the real docker CLI: `docker run --rm`, `docker run -d`, `docker ps`.

Brings up a 3-node dev cluster (unless one is already up: then it uses it and leaves it up),
times each command as a user sees it (CLI process included), and, when a dockerd is installed
(Debian `docker.io`), measures it in the same run for the ratio: the running one at
/var/run/docker.sock, or else a private dockerd started for the run in a network namespace of
its own (its bridge and iptables rules stay there) with a throwaway data root, removed after.
Run as root: `python bench/api.py [--runs 30] [--ps-containers 300]`. The last line is JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from deploy import devcluster  # noqa: E402
from deploy.busybox_image import build_rootfs_tar  # noqa: E402

DOCKER = shutil.which("docker") or "/usr/local/bin/docker"
MANAGER = "tcp://127.0.0.1:2375"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def docker(host: str, *args: str) -> str:
    env = dict(os.environ, DOCKER_HOST=host)
    done = subprocess.run([DOCKER, *args], env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def timed(host: str, runs: int, *args: str) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        docker(host, *args)
        times.append((time.perf_counter() - start) * 1000)
    return times


def measure(host: str, runs: int, network: str) -> dict[str, list[float]]:
    net = ["--network", network] if network else []
    run_rm = timed(host, runs, "run", "--rm", *net, "busybox", "true")
    run_d: list[float] = []
    for _ in range(runs):
        start = time.perf_counter()
        cid = docker(host, "run", "-d", *net, "busybox", "sleep", "600").strip()
        run_d.append((time.perf_counter() - start) * 1000)
        docker(host, "rm", "-f", cid)
    return {"run_rm": run_rm, "run_d": run_d}


def ps_with(host: str, count: int, runs: int) -> list[float]:
    ids = []
    try:
        for _ in range(count):
            ids.append(docker(host, "create", "--network", "none", "busybox", "true").strip())
        return timed(host, runs, "ps", "-a")
    finally:
        for i in range(0, len(ids), 50):
            docker(host, "rm", "-f", *ids[i : i + 50])


BENCH_NETNS = "flt-bench-dockerd"


@contextlib.contextmanager
def dockerd_host() -> Iterator[str | None]:
    """A dockerd with busybox:latest to compare with: the system's, or a private one."""
    if not shutil.which("dockerd"):
        yield None
        return
    system = "unix:///var/run/docker.sock"
    if os.path.exists("/var/run/docker.sock") and _answers(system):
        _ensure_busybox(system)
        yield system
        return
    with _private_dockerd() as host:
        _ensure_busybox(host)
        yield host


def _answers(host: str) -> bool:
    env = dict(os.environ, DOCKER_HOST=host)
    done = subprocess.run([DOCKER, "version"], env=env, capture_output=True, check=False)
    return done.returncode == 0


def _ensure_busybox(host: str) -> None:
    if "busybox:latest" in docker(host, "images", "--format", "{{.Repository}}:{{.Tag}}"):
        return
    with tempfile.TemporaryDirectory(prefix="flt-bench-bb-") as tmp:
        tar = build_rootfs_tar(os.path.join(tmp, "busybox.tar"))
        docker(host, "import", "--change", 'CMD ["sh"]', tar, "busybox:latest")


@contextlib.contextmanager
def _private_dockerd() -> Iterator[str]:
    root = tempfile.mkdtemp(prefix="flt-bench-dockerd-")
    sock = os.path.join(root, "docker.sock")
    host = f"unix://{sock}"
    subprocess.run(["ip", "netns", "add", BENCH_NETNS], check=True)
    log = open(os.path.join(root, "dockerd.log"), "wb")  # noqa: SIM115 - closed below
    proc = None
    try:
        subprocess.run(
            ["ip", "netns", "exec", BENCH_NETNS, "ip", "link", "set", "lo", "up"], check=True
        )
        # A mount namespace of its own too (not `ip netns exec`: its fresh /sys hides the
        # cgroup mounts): dockerd's mounts die with it.
        proc = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{BENCH_NETNS}",
             "unshare", "--mount", "--propagation", "slave", "dockerd", "-H", host,
             "--data-root", os.path.join(root, "data"), "--exec-root", os.path.join(root, "exec"),
             "--pidfile", os.path.join(root, "dockerd.pid")],
            stdout=log, stderr=log, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while not (os.path.exists(sock) and _answers(host)):
            if proc.poll() is not None or time.monotonic() > deadline:
                with open(os.path.join(root, "dockerd.log"), errors="replace") as f:
                    raise RuntimeError(f"private dockerd did not start:\n{f.read()[-2000:]}")
            time.sleep(0.2)
        yield host
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
        subprocess.run(["ip", "netns", "delete", BENCH_NETNS], check=False)
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--ps-containers", type=int, default=300)
    args = parser.parse_args()

    ours = not devcluster.is_up()
    if ours:
        devcluster.up(nodes=3)
    try:
        figures_bridge = measure(MANAGER, args.runs, "")
        figures_none = measure(MANAGER, args.runs, "none")
        ps = ps_with(MANAGER, args.ps_containers, 10)
    finally:
        if ours:
            devcluster.down()

    dockerd_p50 = None
    with dockerd_host() as host:
        if host is not None:
            dockerd_p50 = statistics.median(measure(host, args.runs, "")["run_rm"])

    result = {
        "run_rm_p50_ms": round(statistics.median(figures_bridge["run_rm"]), 1),
        "run_rm_p99_ms": round(percentile(figures_bridge["run_rm"], 99), 1),
        "run_d_p50_ms": round(statistics.median(figures_bridge["run_d"]), 1),
        "run_rm_none_p50_ms": round(statistics.median(figures_none["run_rm"]), 1),
        "run_d_none_p50_ms": round(statistics.median(figures_none["run_d"]), 1),
        "ps300_p50_ms": round(statistics.median(ps), 1),
        "dockerd_run_rm_p50_ms": round(dockerd_p50, 1) if dockerd_p50 else None,
        "ratio_vs_dockerd": (
            round(statistics.median(figures_bridge["run_rm"]) / dockerd_p50, 2)
            if dockerd_p50
            else None
        ),
        "runs": args.runs,
        "ps_containers": args.ps_containers,
    }
    print(
        f"docker run --rm busybox true  p50 {result['run_rm_p50_ms']} ms, "
        f"p99 {result['run_rm_p99_ms']} ms (network none: {result['run_rm_none_p50_ms']} ms)"
    )
    print(
        f"docker run -d busybox sleep   p50 {result['run_d_p50_ms']} ms "
        f"(network none: {result['run_d_none_p50_ms']} ms)"
    )
    print(f"docker ps -a, {args.ps_containers} containers  p50 {result['ps300_p50_ms']} ms")
    if dockerd_p50 is None:
        print("dockerd: not installed here, no ratio (anchors: 263 ms median with its bridge)")
    else:
        print(
            f"dockerd docker run --rm: p50 {result['dockerd_run_rm_p50_ms']} ms; "
            f"ratio {result['ratio_vs_dockerd']}"
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
