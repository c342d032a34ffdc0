"""What both sides read in a logical container (`logical/<swarm-id>`, docs/failover.md): its
labels and states, the rule that tells a stale copy (an agent removes such copies when it
registers, the manager never shows nor resolves them meanwhile) and the one that tells the copy a
reschedule is moving away from (an agent that comes back in time keeps it)."""

from __future__ import annotations

from collections.abc import Mapping

from proto.records_pb2 import LogicalContainer

SWARM_ID_LABEL = "com.docker.swarm.id"
GENERATION_LABEL = "com.docker.swarm.generation"
FIRST_GENERATION = 1  # a container's own create; every reschedule adds one

# LogicalContainer.state
PLACED = "placed"
FAILED = "failed"
PLACING = "placing"
PENDING = "pending"
UNSETTLED = (FAILED, PLACING, PENDING)


def is_stale(
    logical: LogicalContainer | None, node_id: str, cid: str, fenced: bool = False
) -> bool:
    """Whether the container `cid` on node `node_id` is a stale copy: its logical record names
    another node or another container. No record: a fenced copy is stale (the manager deleted the
    record when the moved container was removed while this node was away); any other is not ours
    to judge (not made by a manager)."""
    if logical is None:
        return fenced
    if logical.node_id != node_id:
        return True
    # Placing here with the create not yet recorded: this may be that very create.
    return bool(logical.container_id) and logical.container_id != cid


def names_copy(logical: LogicalContainer, node_id: str, cid: str) -> bool:
    """The record names this very copy: placed on `node_id` as `cid`, or being rescheduled away
    from there (failed, or pending: no node fits) and not yet placed anywhere else."""
    if logical.state == PLACED:
        return logical.node_id == node_id and logical.container_id == cid
    return (
        logical.state in (FAILED, PENDING)
        and logical.previous_node_id == node_id
        and logical.previous_container_id == cid
    )


def is_replacement(labels: Mapping[str, str]) -> bool:
    """Made by a reschedule (generation past the first): an older copy existed elsewhere."""
    try:
        return int(labels.get(GENERATION_LABEL) or FIRST_GENERATION) > FIRST_GENERATION
    except ValueError:
        return False
