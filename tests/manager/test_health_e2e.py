"""Health checks through the whole stack: the real docker CLI against a dev cluster (manager →
agent → runtime → probes as execs in real containers). No timing assertions: every wait polls
until a state is reached within a generous deadline."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from tests.fixtures import dev_cluster, docker
from tests.manager.swarm_compat import inspect, ps_ids, reset, wait_for

DEADLINE_S = 60


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, object]]:
    with dev_cluster(1) as nodes:
        yield nodes


@pytest.fixture(autouse=True)
def clean(cluster: dict[str, object]) -> Iterator[None]:
    yield
    reset(cluster)


def status_of(name: str) -> str:
    return docker("ps", "-a", "--filter", f"name={name}", "--format", "{{.Status}}").stdout.strip()


def health_json(name: str) -> object:
    return json.loads(docker("inspect", "--format", "{{json .State.Health}}", name).stdout)


def run(name: str, *args: str, image: str = "busybox") -> str:
    return docker("run", "-d", "--name", name, *args, image, "sleep", "300").stdout.strip()


def events(since: float, *filters: str) -> list[str]:
    args = ["events", "--since", f"{since:.3f}", "--until", f"{time.time():.3f}"]
    for f in filters:
        args += ["--filter", f]
    return docker(*args, "--format", "{{.Status}}").stdout.splitlines()


def test_healthy_in_ps_inspect_and_events() -> None:
    since = time.time() - 1
    cid = run("hc-ok", "--health-cmd", "echo fine", "--health-interval", "200ms")
    wait_for(lambda: status_of("hc-ok").endswith(" (healthy)"), DEADLINE_S, "(healthy) in ps")
    assert status_of("hc-ok").startswith("Up ")
    h = health_json("hc-ok")
    assert isinstance(h, dict) and h["Status"] == "healthy" and h["FailingStreak"] == 0
    assert 1 <= len(h["Log"]) <= 5
    assert h["Log"][-1]["ExitCode"] == 0 and h["Log"][-1]["Output"] == "fine\n"
    config = inspect("hc-ok")["Config"]["Healthcheck"]
    assert config == {"Test": ["CMD-SHELL", "echo fine"], "Interval": 200_000_000}
    assert ps_ids("--filter", "health=healthy") == [cid]
    assert ps_ids("--filter", "health=unhealthy") == []
    # dockerd's events: the probe is an exec (with its command), then the status change.
    seen = events(since, f"container={cid}")
    assert "exec_create: /bin/sh -c echo fine" in seen
    assert "exec_start: /bin/sh -c echo fine" in seen
    assert "exec_die" in seen
    assert events(since, "event=health_status", f"container={cid}") == ["health_status: healthy"]


def test_unhealthy_and_the_health_filter() -> None:
    since = time.time() - 1
    bad = run(
        "hc-bad", "--health-cmd", "false", "--health-retries", "2", "--health-interval", "200ms"
    )
    waiting = run("hc-wait", "--health-cmd", "true", "--health-interval", "1h")
    plain = run("hc-none")
    wait_for(lambda: ps_ids("--filter", "health=unhealthy") == [bad], DEADLINE_S, "unhealthy in ps")
    assert status_of("hc-bad").endswith(" (unhealthy)")
    h = health_json("hc-bad")
    assert isinstance(h, dict) and h["Status"] == "unhealthy" and h["FailingStreak"] >= 2
    assert h["Log"][-1]["ExitCode"] == 1
    assert status_of("hc-wait").endswith(" (health: starting)")
    assert ps_ids("--filter", "health=starting") == [waiting]
    assert ps_ids("--filter", "health=none") == [plain]
    assert "(" not in status_of("hc-none")
    assert health_json("hc-none") is None
    wait_for(
        lambda: "health_status: unhealthy" in events(since, "event=health_status"),
        DEADLINE_S,
        "health_status event",
    )
    res = docker("ps", "--filter", "health=bogus", check=False)
    assert res.returncode != 0
    assert "Unrecognised filter value for health: bogus" in res.stderr


def test_timeout_counts_as_failure() -> None:
    run(
        "hc-slow",
        "--health-cmd", "sleep 30",
        "--health-timeout", "300ms",
        "--health-interval", "200ms",
        "--health-retries", "1",
    )  # fmt: skip
    wait_for(lambda: status_of("hc-slow").endswith(" (unhealthy)"), DEADLINE_S, "unhealthy")
    h = health_json("hc-slow")
    assert isinstance(h, dict)
    assert h["Log"][-1]["ExitCode"] == -1
    assert h["Log"][-1]["Output"] == "Health check exceeded timeout (300ms)"


def test_image_healthcheck_override_and_no_healthcheck() -> None:
    docker("run", "-d", "--name", "hc-base", "busybox", "sleep", "300")
    docker("commit", "--change", "HEALTHCHECK --interval=200ms CMD echo from-image", "hc-base",
           "hc-image:v1")  # fmt: skip
    image_hc = json.loads(
        docker("image", "inspect", "--format", "{{json .Config.Healthcheck}}", "hc-image:v1").stdout
    )
    assert image_hc == {"Test": ["CMD-SHELL", "echo from-image"], "Interval": 200_000_000}

    run("hc-img", image="hc-image:v1")
    wait_for(lambda: status_of("hc-img").endswith(" (healthy)"), DEADLINE_S, "image healthcheck")
    h = health_json("hc-img")
    assert isinstance(h, dict) and h["Log"][-1]["Output"] == "from-image\n"

    # The container's settings override the image's field by field (interval kept).
    run("hc-over", "--health-cmd", "false", "--health-retries", "1", image="hc-image:v1")
    wait_for(lambda: status_of("hc-over").endswith(" (unhealthy)"), DEADLINE_S, "override")
    over = inspect("hc-over")["Config"]["Healthcheck"]
    assert over == {"Test": ["CMD-SHELL", "false"], "Interval": 200_000_000, "Retries": 1}

    run("hc-off", "--no-healthcheck", image="hc-image:v1")
    assert inspect("hc-off")["Config"]["Healthcheck"]["Test"] == ["NONE"]
    time.sleep(1)  # five intervals of the image's healthcheck: none may run
    assert health_json("hc-off") is None
    assert "(" not in status_of("hc-off")


def test_restart_resets_to_starting() -> None:
    since = time.time() - 1
    cid = run(
        "hc-rs", "--health-cmd", "false", "--health-retries", "1", "--health-interval", "200ms"
    )
    wait_for(lambda: status_of("hc-rs").endswith(" (unhealthy)"), DEADLINE_S, "unhealthy")
    docker("stop", "-t", "0", "hc-rs")
    h = health_json("hc-rs")
    assert isinstance(h, dict) and h["Status"] == "unhealthy"  # kept while stopped
    docker("start", "hc-rs")
    # The start resets the status to `starting`, so turning unhealthy again is a new event.
    wait_for(
        lambda: (
            events(since, "event=health_status", f"container={cid}")
            == ["health_status: unhealthy", "health_status: unhealthy"]
        ),
        DEADLINE_S,
        "a second health_status: unhealthy",
    )


def test_invalid_healthcheck_settings() -> None:
    res = docker("run", "-d", "--health-interval", "10us", "busybox", check=False)
    assert res.returncode != 0
    assert "Interval in Healthcheck cannot be less than 1ms" in res.stderr
    res = docker("run", "-d", "--health-timeout", "1ns", "busybox", check=False)
    assert res.returncode != 0
    assert "Timeout in Healthcheck cannot be less than 1ms" in res.stderr
