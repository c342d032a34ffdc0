"""Restart policies and dockerd's back-off, and the time formats `docker ps`/inspect show."""

from __future__ import annotations

from proto.ps_status import human_duration
from runtime import restart
from runtime.timefmt import ZERO_TIME, parse_rfc3339, rfc3339nano


def test_policies() -> None:
    assert not restart.decide("no", 0, 1, 0, False, 1.0, 0.0).restart
    assert not restart.decide("always", 0, 1, 0, True, 1.0, 0.0).restart  # stopped by hand
    assert restart.decide("unless-stopped", 0, 0, 0, False, 1.0, 0.0).restart
    assert not restart.decide("on-failure", 0, 0, 0, False, 1.0, 0.0).restart  # exit 0
    assert restart.decide("on-failure", 2, 1, 1, False, 1.0, 0.0).restart
    assert not restart.decide("on-failure", 2, 1, 2, False, 1.0, 0.0).restart  # retries used


def test_back_off_doubles_caps_and_resets() -> None:
    delay, delays = 0.0, []
    for count in range(12):
        decision = restart.decide("always", 0, 1, count, False, 0.5, delay)
        delay = decision.delay_s
        delays.append(delay)
    assert delays[:4] == [0.1, 0.2, 0.4, 0.8]
    assert max(delays) == restart.MAX_DELAY_S
    # Ten seconds of good running start the back-off over.
    assert restart.decide("always", 0, 1, 12, False, 10.0, delay).delay_s == 0.1


def test_restart_on_boot() -> None:
    assert restart.restart_on_boot("always", True, False)
    assert not restart.restart_on_boot("unless-stopped", True, True)
    assert restart.restart_on_boot("on-failure", False, True)
    assert not restart.restart_on_boot("no", False, True)


def test_time_formats() -> None:
    ns = 1_795_000_000 * 10**9 + 120_000_000
    assert rfc3339nano(ns) == "2026-11-18T11:06:40.12Z"
    assert parse_rfc3339("2026-11-18T11:06:40.12Z") == ns
    assert rfc3339nano(0) == ZERO_TIME and parse_rfc3339(ZERO_TIME) == 0
    assert [human_duration(s) for s in (0.5, 1, 59, 60, 3599, 3600, 86400 * 3)] == [
        "Less than a second",
        "1 second",
        "59 seconds",
        "About a minute",
        "59 minutes",
        "About an hour",
        "3 days",
    ]
