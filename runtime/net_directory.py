"""What the runtime needs to know and to tell about user-defined (overlay) networks.

The runtime does not know where networks and addresses live (the agent keeps them in etcd): it
is given a `NetworkDirectory`. The calls, in the order a container start makes them:

    lookup(ref)                      the network a create body or a connect names
    claim(spec, request) -> ip       for each network, before its interface is made
    joined(cid, netns, specs)        once the interfaces are up, before the process runs
    ...
    left(cid, specs)                 when the container stops (or disconnects), then
    release(spec, ip)                for each address it had

A hot-plug (connect / disconnect of a running container) makes the same calls for the one
network. `joined`/`left` name only the networks joined or left by that call; the directory keeps
the union per container. All calls are coroutines; errors they raise reach the Docker client as
they are, so a directory raises them in dockerd's words (see `address_in_use`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from proto.docker.errors import DockerError
from runtime.overlay import OverlaySpec

ADDRESS_IN_USE = "Address already in use"


@dataclass(frozen=True)
class UserNetwork:
    """A user-defined network as `lookup` finds it."""

    spec: OverlaySpec
    # The client gave the subnet (`--subnet`): only then may a container ask for an address
    # (`--ip`), as dockerd's validateNetworkingConfig rules.
    user_subnet: bool = True
    # Addresses are handed out from here ("" = the whole subnet); an `--ip` may still be any
    # address of the subnet.
    ip_range: str = ""


@dataclass(frozen=True)
class EndpointRequest:
    """Who asks for an address on a network, and which one it would like."""

    container_id: str
    container_name: str  # without "/"
    # The names other containers resolve to this address on the network: the network aliases,
    # the short container ID and the hostname when it differs from the name (dockerd's
    # Aliases); the container name itself is `container_name`.
    aliases: tuple[str, ...]
    wanted_ip: str  # `--ip` (IPAMConfig.IPv4Address): this one or an error; "" = any
    previous_ip: str  # the address it had the last time: preferred when free; "" = none


class NetworkDirectory(Protocol):
    """The cluster's view of user networks and their addresses (the agent implements it).

    The MAC of an endpoint is always `runtime.network.mac_for_ip(ip)` (02:42 + the octets).
    """

    async def lookup(self, name_or_id: str) -> UserNetwork | None:
        """The network by name, full ID or unique ID prefix; None when there is none."""
        ...

    async def claim(self, spec: OverlaySpec, request: EndpointRequest) -> str:
        """Reserve an IPv4 address on the network for the request and return it.

        `wanted_ip` taken: raise `address_in_use()`. Else `previous_ip` when free, else the
        first free address of the range (never the network, gateway or broadcast address).
        No free address: raise dockerd's `no available IPv4 addresses on this network's address
        pools: NAME (ID)` (SystemError_)."""
        ...

    async def release(self, spec: OverlaySpec, ip: str) -> None:
        """Give the address back (idempotent: an address not held is fine)."""
        ...

    async def joined(self, container_id: str, netns_path: str, specs: list[OverlaySpec]) -> None:
        """The container's interfaces on `specs` are up in `netns_path`: program the peers of
        those networks and serve the embedded DNS (127.0.0.11) in the namespace. Also called
        for each running container after a runtime restart (`Runtime.open`)."""
        ...

    async def left(self, container_id: str, specs: list[OverlaySpec]) -> None:
        """The container left `specs` (stopped or disconnected): stop answering for it there;
        once it is on no network any more, stop its embedded DNS."""
        ...


def address_in_use() -> DockerError:
    """dockerd's answer to an `--ip` another endpoint holds (ipamapi.ErrIPAlreadyAllocated)."""
    return DockerError(ADDRESS_IN_USE, 403)
