"""Restart policies: whether a container that stopped by itself comes back, and when."""

from __future__ import annotations

from dataclasses import dataclass

# dockerd's back-off: 100 ms, doubling, capped at one minute, reset after 10 s of good running.
INITIAL_DELAY_S = 0.1
MAX_DELAY_S = 60.0
RESET_AFTER_S = 10.0


@dataclass
class RestartDecision:
    restart: bool
    delay_s: float


def decide(
    policy: str,
    max_retries: int,
    exit_code: int,
    restart_count: int,
    manually_stopped: bool,
    ran_for_s: float,
    previous_delay_s: float,
) -> RestartDecision:
    """What to do after a container's main process ended without a `stop`/`kill` from us."""
    if manually_stopped or policy in ("", "no"):
        return RestartDecision(False, 0.0)
    if policy == "on-failure":
        if exit_code == 0 or (max_retries > 0 and restart_count >= max_retries):
            return RestartDecision(False, 0.0)
    elif policy not in ("always", "unless-stopped"):
        return RestartDecision(False, 0.0)
    if ran_for_s >= RESET_AFTER_S or previous_delay_s <= 0:
        delay = INITIAL_DELAY_S
    else:
        delay = min(previous_delay_s * 2, MAX_DELAY_S)
    return RestartDecision(True, delay)


def restart_on_boot(policy: str, manually_stopped: bool, was_running: bool) -> bool:
    """Whether a runtime starting up (after a reboot or crash of the host) starts the container."""
    if policy == "always":
        return True
    if policy == "unless-stopped":
        return not manually_stopped
    return policy == "on-failure" and was_running
