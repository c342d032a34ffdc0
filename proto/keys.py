"""The etcd key layout, in one place: every other module asks `Keys` for keys and prefixes.

<prefix>/nodes/<node-id>              NodeRecord, under the node's lease
<prefix>/members/<node-id>            NodeRecord, no lease: every node that joined (Unhealthy when
                                      its nodes/ key is gone)
<prefix>/logical/<swarm-id>           LogicalContainer: placement and generation (manager)
<prefix>/containers/<id>              ContainerDesired (manager)
<prefix>/names/<name>                 cluster-wide name claim, value = container id
<prefix>/status/<node-id>/<id>        ContainerStatus (agent)
<prefix>/images/<node-id>             NodeImages: the node's `docker images` rows (agent, under
                                      its lease)
<prefix>/networks/<id>                NetworkRecord (manager)
<prefix>/network-names/<name>         network name claim, value = network id
<prefix>/network-names/<node-id>/<name>  a node-local network's name claim (unique on its node)
<prefix>/vnis/<vni>                   VNI claim, value = network id
<prefix>/network-seq                  rewritten by every network create: creates compare its mod
                                      revision, so they commit one at a time (no shared subnet)
<prefix>/endpoints/<net-id>/<ip>      EndpointRecord, the address claim (agent, under its lease)
<prefix>/reserved/<net-id>/<ip>       "<node-id>/<container-id>": the address of a container that is
                                      not reschedulable, kept (no lease) while its node is away
<prefix>/addresses/<swarm-id>/<net-id>  the address a logical container last had on a network
                                      (agent, no lease: its replacement asks for it again)
<prefix>/leader                       manager election
"""

from __future__ import annotations

DEFAULT_PREFIX = "/flotilla"


class Keys:
    def __init__(self, prefix: str = DEFAULT_PREFIX) -> None:
        # One canonical form ("/x", no trailing slash) so prefix scans never overlap siblings.
        self.prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""

    def _join(self, *parts: str) -> str:
        for part in parts:
            if not part or "/" in part:
                raise ValueError(f"invalid key component {part!r}")
        return "/".join((self.prefix, *parts))

    def _dir(self, *parts: str) -> str:
        return "/".join((self.prefix, *parts)) + "/"

    # ------------------------------------------------------------- keys
    def node(self, node_id: str) -> str:
        return self._join("nodes", node_id)

    def member(self, node_id: str) -> str:
        return self._join("members", node_id)

    def logical(self, swarm_id: str) -> str:
        return self._join("logical", swarm_id)

    def container(self, cid: str) -> str:
        return self._join("containers", cid)

    def name(self, name: str) -> str:
        return self._join("names", name.lstrip("/"))

    def status(self, node_id: str, cid: str) -> str:
        return self._join("status", node_id, cid)

    def images(self, node_id: str) -> str:
        return self._join("images", node_id)

    def network(self, net_id: str) -> str:
        return self._join("networks", net_id)

    def network_name(self, name: str, node_id: str = "") -> str:
        """An overlay network's name claim, or (node_id) a node-local network's."""
        if node_id:
            return self._join("network-names", node_id, name)
        return self._join("network-names", name)

    def vni(self, vni: int) -> str:
        return self._join("vnis", str(vni))

    def network_seq(self) -> str:
        return self._join("network-seq")

    def reservation(self, net_id: str, ip: str) -> str:
        return self._join("reserved", net_id, ip)

    def last_address(self, swarm_id: str, net_id: str) -> str:
        return self._join("addresses", swarm_id, net_id)

    def endpoint(self, net_id: str, ip: str) -> str:
        return self._join("endpoints", net_id, ip)

    def leader(self) -> str:
        return self._join("leader")

    # ------------------------------------------------------------- prefixes (end in "/")
    def nodes_prefix(self) -> str:
        return self._dir("nodes")

    def members_prefix(self) -> str:
        return self._dir("members")

    def logical_prefix(self) -> str:
        return self._dir("logical")

    def containers_prefix(self) -> str:
        return self._dir("containers")

    def names_prefix(self) -> str:
        return self._dir("names")

    def status_prefix(self, node_id: str | None = None) -> str:
        if node_id is None:
            return self._dir("status")
        self._join(node_id)  # validates
        return self._dir("status", node_id)

    def images_prefix(self) -> str:
        return self._dir("images")

    def networks_prefix(self) -> str:
        return self._dir("networks")

    def network_names_prefix(self) -> str:
        return self._dir("network-names")

    def vnis_prefix(self) -> str:
        return self._dir("vnis")

    def reservations_prefix(self, net_id: str | None = None) -> str:
        return self._dir("reserved") if net_id is None else self._dir("reserved", net_id)

    def last_addresses_prefix(self, swarm_id: str) -> str:
        self._join(swarm_id)  # validates
        return self._dir("addresses", swarm_id)

    def endpoints_prefix(self, net_id: str | None = None) -> str:
        return self._dir("endpoints") if net_id is None else self._dir("endpoints", net_id)

    # ------------------------------------------------------------- parsers
    def _rest(self, key: str | bytes, prefix: str) -> list[str]:
        text = key.decode() if isinstance(key, bytes) else key
        if not text.startswith(prefix):
            raise ValueError(f"{text!r} is not under {prefix!r}")
        return text[len(prefix) :].split("/")

    def _one(self, key: str | bytes, prefix: str) -> str:
        parts = self._rest(key, prefix)
        if len(parts) != 1 or not parts[0]:
            raise ValueError(f"malformed key {key!r}")
        return parts[0]

    def _two(self, key: str | bytes, prefix: str) -> tuple[str, str]:
        parts = self._rest(key, prefix)
        if len(parts) != 2 or not all(parts):
            raise ValueError(f"malformed key {key!r}")
        return parts[0], parts[1]

    def node_id(self, key: str | bytes) -> str:
        return self._one(key, self.nodes_prefix())

    def member_id(self, key: str | bytes) -> str:
        return self._one(key, self.members_prefix())

    def swarm_id(self, key: str | bytes) -> str:
        return self._one(key, self.logical_prefix())

    def container_id(self, key: str | bytes) -> str:
        return self._one(key, self.containers_prefix())

    def name_of(self, key: str | bytes) -> str:
        return self._one(key, self.names_prefix())

    def images_node_id(self, key: str | bytes) -> str:
        """The node ID of an `images/<node-id>` key."""
        return self._one(key, self.images_prefix())

    def network_id(self, key: str | bytes) -> str:
        return self._one(key, self.networks_prefix())

    def status_ids(self, key: str | bytes) -> tuple[str, str]:
        """(node_id, container_id) of a status key."""
        return self._two(key, self.status_prefix())

    def reservation_ids(self, key: str | bytes) -> tuple[str, str]:
        """(network_id, ip) of a reservation key."""
        return self._two(key, self.reservations_prefix())

    def endpoint_ids(self, key: str | bytes) -> tuple[str, str]:
        """(network_id, ip) of an endpoint key."""
        return self._two(key, self.endpoints_prefix())
