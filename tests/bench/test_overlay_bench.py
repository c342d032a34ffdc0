"""The overlay bench's reading of iperf3 and ping output (bench/netns_probes.py), on output
captured from iperf3 3.12 and iputils 20221126 (Debian 12), and the tools run on loopback."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from bench import netns_probes as probe

# `iperf3 -c … -P 2 -J`, trimmed to the keys iperf3 writes around the one the bench reads.
IPERF3_JSON = {
    "start": {"test_start": {"protocol": "TCP", "num_streams": 2, "duration": 4}},
    "intervals": [],
    "end": {
        "sum_sent": {"bytes": 10_000_000_000, "bits_per_second": 20.1e9, "retransmits": 3},
        "sum_received": {"bytes": 9_990_000_000, "bits_per_second": 19.98e9},
    },
}

PING_OUT = """PING 10.99.0.11 (10.99.0.11) 56(84) bytes of data.

--- 10.99.0.11 ping statistics ---
50 packets transmitted, 50 received, 0% packet loss, time 2502ms
rtt min/avg/max/mdev = 0.041/0.063/0.152/0.019 ms
"""


def test_iperf3_reads_the_receivers_sum_in_gbits() -> None:
    assert probe.iperf3_gbps(json.dumps(IPERF3_JSON)) == pytest.approx(19.98)


def test_iperf3_error_and_garbage_are_errors() -> None:
    refused = {"start": {}, "intervals": [], "end": {}, "error": "unable to connect to server"}
    with pytest.raises(probe.ProbeError, match="unable to connect"):
        probe.iperf3_gbps(json.dumps(refused))
    with pytest.raises(probe.ProbeError, match="not JSON"):
        probe.iperf3_gbps("iperf3: error - unable to connect")
    with pytest.raises(probe.ProbeError, match="sum_received"):
        probe.iperf3_gbps(json.dumps({"end": {"sum_sent": {"bits_per_second": 1.0}}}))


def test_ping_average_from_the_summary() -> None:
    assert probe.ping_avg_ms(PING_OUT) == 0.063
    # Old iputils and busybox word it differently; the numbers are what matters.
    assert probe.ping_avg_ms("round-trip min/avg/max = 0.1/1.25/3.0/0.5 ms") == 1.25


def test_ping_without_replies_is_an_error() -> None:
    lost = PING_OUT.split("rtt")[0].replace("50 received, 0%", "0 received, 100%")
    with pytest.raises(probe.ProbeError, match="no rtt line"):
        probe.ping_avg_ms(lost)


@pytest.mark.skipif(not shutil.which("iperf3") or not shutil.which("ping"), reason="no tools")
def test_the_tools_run_in_a_netns_on_loopback() -> None:
    """The test session's own netns (tests/conftest.py), entered through /proc like a
    container's."""
    netns = f"/proc/{os.getpid()}/ns/net"
    server = probe.start_iperf3_server(netns)
    try:
        assert probe.iperf3_client(netns, "127.0.0.1", 2, 1) > 0
    finally:
        probe.stop(server)
    assert server.poll() is not None
    assert probe.ping_avg(netns, "127.0.0.1", count=3, interval=0.01) > 0
    assert probe.first_reply(netns, "127.0.0.1", 2)
