"""Derived identities of overlay endpoints, shared by the manager (network inspect) and the
runtime (container inspect), so both show the same values for one endpoint."""

from __future__ import annotations

import hashlib


def endpoint_id(network_id: str, container_id: str) -> str:
    """dockerd's 64-hex EndpointID, derived from the network and the container: stable across
    readers and restarts without being stored (EndpointRecord has no field for it)."""
    return hashlib.sha256(f"{network_id}/{container_id}".encode()).hexdigest()
