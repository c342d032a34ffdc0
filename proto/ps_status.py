"""`docker ps`'s STATUS column ("Up 3 minutes (healthy)", "Exited (0) 2 hours ago", …): it
depends on the time it is read, so neither the agent's row nor the status record can hold it.
Both sides write it with this one function: the agent in its own rows (runtime/views.py), the
manager at request time from a status record (manager/api/ps_rows.py)."""

from __future__ import annotations

NO_HEALTH = "none"  # dockerd's health filter value for a container without a healthcheck
STARTING = "starting"


def human_duration(seconds: float) -> str:
    """Docker's units.HumanDuration, as `docker ps` shows it in STATUS."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    minutes = s // 60
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = round(s / 3600)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{hours // 24 // 365} years"


def health_suffix(health_status: str) -> str:
    """What `docker ps` appends to `Up …` (dockerd's Health.String())."""
    if not health_status or health_status == NO_HEALTH:
        return ""
    return " (health: starting)" if health_status == STARTING else f" ({health_status})"


def status_text(
    state: str,
    started_ns: int,
    finished_ns: int,
    exit_code: int,
    health_status: str,
    now_ns: int,
) -> str:
    """The STATUS of a container in `state` at `now_ns` (dockerd's State.String())."""
    if state == "running":
        return f"Up {human_duration((now_ns - started_ns) / 1e9)}{health_suffix(health_status)}"
    if state == "paused":
        return f"Up {human_duration((now_ns - started_ns) / 1e9)} (Paused)"
    if state == "restarting":
        return f"Restarting ({exit_code}) {human_duration((now_ns - finished_ns) / 1e9)} ago"
    if state == "exited" or (state == "created" and finished_ns):
        return f"Exited ({exit_code}) {human_duration((now_ns - finished_ns) / 1e9)} ago"
    if state == "dead":
        return "Dead"
    return "Created"
