"""iperf3 and ping run inside a network namespace from the host, and the reading of their output.

A namespace is named by its file (/run/netns/node-0, /proc/<pid>/ns/net) and entered with
nsenter, so the same code measures a node's underlay and a container's overlay interface, and
the container image needs neither tool.
"""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import time

IPERF_PORT = 5301  # not iperf3's 5201, in case someone runs one in a node's netns
_RTT = re.compile(r"=\s*([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+)\s*ms")


class ProbeError(Exception):
    """A measuring tool failed or printed something this module cannot read."""


def in_netns(netns: str, *cmd: str) -> list[str]:
    return ["nsenter", f"--net={netns}", *cmd]


# --------------------------------------------------------------------------- parsing


def iperf3_gbps(report: str) -> float:
    """Receiver throughput in Gbit/s from `iperf3 -J` client output (all streams summed)."""
    try:
        data = json.loads(report)
    except ValueError as e:
        raise ProbeError(f"iperf3 output is not JSON: {report[:200]!r}") from e
    if data.get("error"):
        raise ProbeError(f"iperf3: {data['error']}")
    try:
        bps = float(data["end"]["sum_received"]["bits_per_second"])
    except (KeyError, TypeError, ValueError) as e:
        raise ProbeError("iperf3 JSON has no end.sum_received.bits_per_second") from e
    return bps / 1e9


def ping_avg_ms(summary: str) -> float:
    """The average RTT in ms from ping's summary (`rtt min/avg/max/mdev = a/b/c/d ms`)."""
    m = _RTT.search(summary)
    if not m:
        raise ProbeError(f"no rtt line in ping output: {summary.strip()[-200:]!r}")
    return float(m.group(2))


# --------------------------------------------------------------------------- running


def start_iperf3_server(netns: str, timeout: float = 10.0) -> subprocess.Popen[bytes]:
    """An iperf3 server in `netns`, returned once it listens (nsenter execs iperf3, so killing
    the process kills the server)."""
    proc = subprocess.Popen(
        in_netns(netns, "iperf3", "-s", "-p", str(IPERF_PORT), "--forceflush"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + timeout
    seen = b""
    # os.read, not readline: a buffered reader would hold the line select() waits for.
    while b"listening" not in seen and time.monotonic() < deadline:
        if select.select([fd], [], [], 0.2)[0]:
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            seen += chunk
    if b"listening" in seen:
        return proc
    stop(proc)
    raise ProbeError(f"iperf3 server in {netns} did not start: {seen.decode(errors='replace')!r}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def iperf3_client(netns: str, server: str, streams: int, seconds: int) -> float:
    """TCP throughput from `netns` to `server` in Gbit/s, `streams` parallel streams."""
    cmd = in_netns(
        netns, "iperf3", "-c", server, "-p", str(IPERF_PORT), "-t", str(seconds),
        "-P", str(streams), "-J",
    )  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30, check=False)
    if done.returncode != 0 and not done.stdout:
        raise ProbeError(f"iperf3 -c {server} from {netns}: {done.stderr.strip()}")
    return iperf3_gbps(done.stdout)


def ping_avg(netns: str, target: str, count: int = 50, interval: float = 0.05) -> float:
    """Average RTT in ms of `count` pings from `netns` to `target`."""
    cmd = in_netns(netns, "ping", "-q", "-n", "-c", str(count), "-i", str(interval), target)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=count * 2, check=False)
    if done.returncode != 0:
        raise ProbeError(f"ping {target} from {netns}: {(done.stdout + done.stderr).strip()}")
    return ping_avg_ms(done.stdout)


def first_reply(netns: str, target: str, deadline_s: float) -> bool:
    """Ping `target` from `netns` every 10 ms until one reply comes back (True) or the deadline
    passes (False); returns as soon as the reply arrives."""
    deadline = time.monotonic() + deadline_s
    while (left := deadline - time.monotonic()) > 0:
        # ping gives up at once on some errors (no route yet): then it is started again.
        wait = str(max(1, round(left)))
        cmd = in_netns(netns, "ping", "-q", "-n", "-c", "1", "-i", "0.01", "-w", wait, target)
        if subprocess.run(cmd, capture_output=True, timeout=left + 10, check=False).returncode == 0:
            return True
        time.sleep(0.01)
    return False
