"""Which containers the node fence applies to, and how a fenced exit shows (docs/failover.md).

A reschedulable container (label `com.docker.swarm.reschedule-policies` holding
"on-node-failure", as classic Swarm spells it) may be started again on another node when this
node's lease expires, so its shim kills it once the agent's fence deadline has passed. A fenced
container is never restarted by this runtime (restart policy or restart-on-boot): only the
manager may start it again.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

RESCHEDULE_LABEL = "com.docker.swarm.reschedule-policies"
ON_NODE_FAILURE = "on-node-failure"
# State.Error of a fenced container.
FENCED_ERROR = "fenced: node lease expired"


def is_reschedulable(labels: dict[str, str]) -> bool:
    value = labels.get(RESCHEDULE_LABEL, "")
    try:
        policies = json.loads(value)
    except ValueError:
        return value == ON_NODE_FAILURE
    if isinstance(policies, str):
        return policies == ON_NODE_FAILURE
    return isinstance(policies, list) and ON_NODE_FAILURE in policies


class _Fenceable(Protocol):
    fenced: bool
    error: str


def apply_exit(rec: _Fenceable, exit_info: dict[str, Any] | None) -> None:
    """Mark a record fenced when its shim's exit.json says the fence killed it."""
    if exit_info and exit_info.get("fenced"):
        rec.fenced = True
        rec.error = FENCED_ERROR
