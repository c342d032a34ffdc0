"""Containers on user-defined (overlay) networks: their configuration, their interfaces while
they run, and connect / disconnect, in dockerd's shapes and words.

A container's configured networks are `ContainerRecord.networks` (from the create body's
NetworkMode and EndpointsConfig, then connect / disconnect), in connect order. While it runs
each has an address claimed from the `NetworkDirectory` and an interface (eth0, eth1, … after
the default bridge's eth0 if any) made by the `OverlayPlane`. A network's bridge lives on the
node while at least one local container is attached to it: the last one leaving tears it down,
under a per-network lock, so a concurrent start never loses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import threading
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from proto.docker.endpoints import endpoint_id
from proto.docker.errors import DockerError, InvalidParameter, NotFound, SystemError_
from runtime.config_network import is_user_defined_network
from runtime.config_types import ContainerSpec
from runtime.fileio import write_atomic
from runtime.net_directory import EndpointRequest, NetworkDirectory, UserNetwork
from runtime.network import mac_for_ip
from runtime.overlay import OverlayPlane, OverlaySpec
from runtime.record import ContainerRecord, Endpoint

if TYPE_CHECKING:
    from runtime.containers import Runtime

log = logging.getLogger(__name__)

KNOWN = "overlays.json"
SHARED_NETNS = (
    "container sharing network namespace with another container or host cannot be connected "
    "to any other network"
)
NONE_MODE = (
    "container cannot be connected to multiple networks with one of the networks in private "
    "(none) mode"
)


def spec_of(ep: Endpoint) -> OverlaySpec:
    return OverlaySpec(**ep.spec)


def dns_aliases(rec: ContainerRecord, ep: Endpoint, hostname: str) -> list[str]:
    """dockerd 20.10's Aliases of a started endpoint: the given aliases, the short ID, and the
    hostname when it is not the container's name."""
    names = list(ep.aliases)
    for extra in (rec.id[:12], hostname if hostname != rec.name else ""):
        if extra and extra not in names:
            names.append(extra)
    return names


def endpoint_view(rec: ContainerRecord, ep: Endpoint, hostname: str) -> dict[str, Any]:
    """NetworkSettings.Networks.<name> as dockerd shows it (address fields only while running)."""
    up = bool(ep.host_veth)
    if ep.activated:
        aliases: list[str] | None = dns_aliases(rec, ep, hostname)
    else:
        aliases = list(ep.aliases) or None
    return {
        "IPAMConfig": ep.ipam,
        "Links": None,
        "Aliases": aliases,
        "NetworkID": ep.network_id if ep.activated else "",
        "EndpointID": ep.endpoint_id,
        "Gateway": ep.spec["gateway"] if up else "",
        "IPAddress": ep.ip if up else "",
        "IPPrefixLen": spec_of(ep).prefixlen if up else 0,
        "IPv6Gateway": "",
        "GlobalIPv6Address": "",
        "GlobalIPv6PrefixLen": 0,
        "MacAddress": ep.mac if up else "",
        "DriverOpts": ep.driver_opts,
    }


def _ipam(config: dict[str, Any]) -> dict[str, Any] | None:
    """EndpointIPAMConfig as dockerd keeps it (its fields are omitempty)."""
    ipam = config.get("IPAMConfig")
    if not isinstance(ipam, dict):
        return None
    keep = ("IPv4Address", "IPv6Address", "LinkLocalIPs")
    return {k: ipam[k] for k in keep if ipam.get(k)}


def check_builtin_endpoint(config: dict[str, Any]) -> None:
    """validateNetworkingConfig for a built-in network (the default bridge)."""
    ipam = _ipam(config) or {}
    if ipam.get("IPv4Address") or ipam.get("IPv6Address"):
        raise InvalidParameter(
            "user specified IP address is supported on user defined networks only"
        )
    if config.get("Aliases"):
        raise InvalidParameter(
            "network-scoped alias is supported only for containers in user defined networks"
        )


def check_attachable(mode: str) -> None:
    """Can a container in network mode `mode` be on a user network too (updateNetworkSettings)?"""
    if mode == "host" or mode.startswith("container:"):
        raise InvalidParameter(SHARED_NETNS)
    if mode == "none":
        raise InvalidParameter(NONE_MODE)


class UserNetworks:
    """The runtime's side of user networks; inert (every network "not found") without a
    directory and a plane."""

    def __init__(
        self,
        rt: Runtime,
        directory: NetworkDirectory | None,
        plane: OverlayPlane | None,
        state_dir: str,
    ) -> None:
        self._rt = rt
        self.directory = directory
        self.plane = plane
        self._known_path = os.path.join(state_dir, KNOWN)
        self._known_lock = threading.Lock()
        self._locks: dict[int, asyncio.Lock] = {}
        self._ensured: set[int] = set()
        # Containers between `ensure` and their claim: users of the network all the same.
        self._attaching: dict[int, set[str]] = {}

    # ---- configuration -----------------------------------------------------------------------

    async def lookup(self, ref: str) -> UserNetwork:
        found = await self.directory.lookup(ref) if self.directory and self.plane else None
        if found is None:
            raise NotFound(f"network {ref} not found")
        return found

    async def configure(self, spec: ContainerSpec) -> list[Endpoint]:
        """The user networks of a create body (NetworkMode first, then EndpointsConfig)."""
        mode = spec.host_config.network_mode
        configs = dict((spec.networking_config or {}).get("EndpointsConfig") or {})
        out: list[Endpoint] = []
        if is_user_defined_network(mode):
            net = await self.lookup(mode)
            config = configs.pop(mode, None) or configs.pop(net.spec.name, None) or {}
            out.append(self.endpoint(net, config))
        for name, config in configs.items():
            if not is_user_defined_network(name):
                check_builtin_endpoint(config or {})
                continue
            net = await self.lookup(name)
            check_attachable(mode)
            if not any(ep.network_id == net.spec.id for ep in out):
                out.append(self.endpoint(net, config or {}))
        return out

    def endpoint(self, net: UserNetwork, config: dict[str, Any]) -> Endpoint:
        """A configured endpoint from Docker's EndpointSettings, validated as dockerd does."""
        ipam = _ipam(config)
        wanted = (ipam or {}).get("IPv4Address") or ""
        if wanted:
            if not net.user_subnet:
                raise InvalidParameter(
                    "user specified IP address is supported only when connecting to networks "
                    "with user configured subnets"
                )
            if ipaddress.ip_address(wanted) not in ipaddress.ip_network(net.spec.subnet):
                raise InvalidParameter(
                    f"no configured subnet or ip-range contain the IP address {wanted}"
                )
        return Endpoint(
            network=net.spec.name,
            spec=asdict(net.spec),
            aliases=[str(a) for a in config.get("Aliases") or []],
            ipam=ipam,
            driver_opts=config.get("DriverOpts") or None,
        )

    # ---- start / stop ------------------------------------------------------------------------

    async def attach_all(self, rec: ContainerRecord, netns_path: str, has_bridge: bool) -> None:
        """At start: an interface on every configured network, then `joined`. On an error the
        caller's teardown (`detach`) undoes what was done."""
        if not rec.networks:
            return
        has_default = has_bridge
        index = 1 if has_bridge else 0
        for ep in rec.networks:
            net = await self.lookup(ep.network_id)
            ep.spec, ep.network = asdict(net.spec), net.spec.name
            route = not has_default and not net.spec.internal
            await self._attach(rec, ep, netns_path, f"eth{index}", route)
            has_default = has_default or route
            index += 1
        await self.directory.joined(rec.id, netns_path, [spec_of(ep) for ep in rec.networks])

    async def detach(self, rec: ContainerRecord, endpoints: list[Endpoint]) -> None:
        """At stop, a failed start or a disconnect: `left`, then the interfaces and addresses
        of `endpoints` go."""
        attached = [ep for ep in endpoints if ep.ip or ep.host_veth]
        if not attached:
            return
        try:
            if self.directory is not None:
                await self.directory.left(rec.id, [spec_of(ep) for ep in attached])
        finally:
            for ep in attached:
                await self._detach(rec, ep)

    async def _attach(
        self, rec: ContainerRecord, ep: Endpoint, netns_path: str, ifname: str, route: bool
    ) -> None:
        assert self.directory is not None and self.plane is not None
        spec = spec_of(ep)
        await self._use(spec, rec.id)
        try:
            ip = await self.directory.claim(spec, self._request(rec, ep))
            ep.ip = ep.last_ip = ip
        finally:
            self._attaching[spec.vni].discard(rec.id)
            if not ep.ip:
                await self._maybe_teardown(spec)
        ep.mac, ep.ifname, ep.default_route = mac_for_ip(ip), ifname, route
        ep.activated = True
        self._save(rec)  # the claim is on record before anything can crash
        ep.host_veth = await asyncio.to_thread(
            self.plane.attach, spec, netns_path, ifname, ip, ep.mac, route
        )
        ep.endpoint_id = endpoint_id(ep.network_id, rec.id)
        self._save(rec)

    def _request(self, rec: ContainerRecord, ep: Endpoint) -> EndpointRequest:
        return EndpointRequest(
            container_id=rec.id,
            container_name=rec.name,
            aliases=tuple(dns_aliases(rec, ep, self._rt.spec(rec).hostname)),
            wanted_ip=ep.wanted_ip,
            previous_ip=ep.last_ip,
        )

    def held(self) -> list[tuple[OverlaySpec, EndpointRequest, str]]:
        """(network, request, address) of every address a container here holds, from its
        claim on (still starting, or running) until its detach: what the directory asserts
        again after a registration."""
        return [
            (spec_of(ep), self._request(rec, ep), ep.ip)
            for rec in self._rt.list()
            for ep in rec.networks
            if ep.ip
        ]

    def in_use(self) -> set[str]:
        """IDs of the networks a container here holds an address on, from the moment of its
        claim (still starting, or running): their peers must be programmed from then on."""
        return {ep.network_id for rec in self._rt.list() for ep in rec.networks if ep.ip}

    async def _detach(self, rec: ContainerRecord, ep: Endpoint) -> None:
        spec, ip, veth = spec_of(ep), ep.ip, ep.host_veth
        try:
            if veth and self.plane is not None:
                await asyncio.to_thread(self.plane.detach, veth)
            if ip and self.directory is not None:
                await self.directory.release(spec, ip)
        finally:
            ep.clear_running()
            self._save(rec)
            await self._maybe_teardown(spec)

    async def _use(self, spec: OverlaySpec, cid: str) -> None:
        """Make sure the network is set up here and count `cid` as one of its users."""
        assert self.plane is not None
        async with self._lock(spec.vni):
            if spec.vni not in self._ensured:
                await asyncio.to_thread(self._remember, spec)
                await asyncio.to_thread(self.plane.ensure, spec)
                self._ensured.add(spec.vni)
            self._attaching.setdefault(spec.vni, set()).add(cid)

    async def _maybe_teardown(self, spec: OverlaySpec) -> None:
        """Remove the network's devices once no local container is attached to it."""
        if self.plane is None:
            return
        async with self._lock(spec.vni):
            if self._users(spec.vni):
                return
            await asyncio.to_thread(self.plane.teardown, spec)
            self._ensured.discard(spec.vni)
            await asyncio.to_thread(self._forget, spec.vni)

    def _users(self, vni: int) -> set[str]:
        users = set(self._attaching.get(vni, ()))
        for rec in self._rt.list():
            if any(ep.spec["vni"] == vni and (ep.ip or ep.host_veth) for ep in rec.networks):
                users.add(rec.id)
        return users

    def _lock(self, vni: int) -> asyncio.Lock:
        return self._locks.setdefault(vni, asyncio.Lock())

    def _save(self, rec: ContainerRecord) -> None:
        bundle = self._rt.paths.container(rec.id)
        if os.path.isdir(bundle):
            rec.save(bundle)

    # ---- connect / disconnect ----------------------------------------------------------------

    async def connect(self, rec: ContainerRecord, ref: str, config: dict[str, Any]) -> None:
        """`docker network connect`: recorded for a stopped container, hot-plugged into a
        running one."""
        net = await self.lookup(ref)
        check_attachable(rec.net.mode)
        existing = next((ep for ep in rec.networks if ep.network_id == net.spec.id), None)
        if existing is not None:
            if rec.running:
                raise DockerError(
                    f"endpoint with name {rec.name} already exists in network {net.spec.name}",
                    403,
                )
            return  # dockerd keeps the configuration it has ("avoid duplicate config")
        ep = self.endpoint(net, config or {})
        rec.networks.append(ep)
        if not rec.running:
            ep.activated = True
            self._save(rec)
        else:
            try:
                await self._hot_plug(rec, ep)
            except BaseException:
                with contextlib.suppress(DockerError):
                    await self.detach(rec, [ep])
                rec.networks.remove(ep)
                self._save(rec)
                raise
        self._event("connect", rec, ep)

    async def _hot_plug(self, rec: ContainerRecord, ep: Endpoint) -> None:
        assert self.directory is not None
        netns = rec.net.netns_path
        if not netns:
            raise SystemError_(f"container {rec.id} has no network namespace")
        used = {e.ifname for e in rec.networks if e.ifname}
        if rec.net.host_veth:
            used.add("eth0")
        index = next(i for i in range(len(used) + 1) if f"eth{i}" not in used)
        has_default = bool(rec.net.host_veth) or any(e.default_route for e in rec.networks)
        route = not has_default and not ep.spec["internal"]
        await self._attach(rec, ep, netns, f"eth{index}", route)
        await self.directory.joined(rec.id, netns, [spec_of(ep)])

    async def disconnect(self, rec: ContainerRecord, ref: str, force: bool) -> None:
        """`docker network disconnect`: the interface goes now when the container runs."""
        net: UserNetwork | None = None
        try:
            net = await self.lookup(ref)
        except NotFound:
            if not force:
                raise
        ep = self._find(rec, net, ref)
        name = net.spec.name if net is not None else ref
        if ep is None:
            if rec.running and net is not None:
                raise SystemError_(f"container {rec.id} is not connected to network {name}")
            raise SystemError_(f"container {rec.id} is not connected to the network {name}")
        if rec.running:
            await self.detach(rec, [ep])
        rec.networks.remove(ep)
        self._save(rec)
        self._event("disconnect", rec, ep)

    def _find(self, rec: ContainerRecord, net: UserNetwork | None, ref: str) -> Endpoint | None:
        for ep in rec.networks:
            if net is not None and ep.network_id == net.spec.id:
                return ep
            if net is None and ref in (ep.network, ep.network_id):
                return ep
        return None

    def _event(self, action: str, rec: ContainerRecord, ep: Endpoint) -> None:
        sink = self._rt._events
        if sink is None:
            return
        driver = "bridge" if ep.spec.get("local") else "overlay"  # dockerd's `type` attribute
        attrs = {"container": rec.id, "name": ep.network, "type": driver}
        try:
            sink("network", action, ep.network_id, attrs)
        except Exception:  # an observer's bug must not break the lifecycle
            log.exception("event sink failed")

    # ---- restart of the runtime --------------------------------------------------------------

    async def rejoin(self, rec: ContainerRecord) -> None:
        """An adopted running container: the directory serves it again (peers, DNS)."""
        attached = [ep for ep in rec.networks if ep.host_veth]
        if attached and self.directory is not None:
            await self.directory.joined(
                rec.id, rec.net.netns_path, [spec_of(ep) for ep in attached]
            )

    def remove_stale(self) -> None:
        """After a crash: networks set up here that no running container uses any more go
        (blocking; `Preparer.remove_stale_network` runs it on a worker thread)."""
        if self.plane is None:
            return
        known = self._load_known()
        in_use: set[int] = set()
        for rec in self._rt.list():
            for ep in rec.networks:
                known.setdefault(ep.spec["vni"], ep.spec)
                if rec.running and ep.host_veth:
                    in_use.add(ep.spec["vni"])
        for vni in self.plane.present():
            if vni in in_use:
                continue
            spec = known.get(vni)
            if spec is None:
                log.warning("overlay network with VNI %d left on this node, spec unknown", vni)
                continue
            self.plane.teardown(OverlaySpec(**spec))
            self._forget(vni)

    # ---- networks set up here (to tear them down after a crash) ------------------------------

    def _load_known(self) -> dict[int, dict[str, Any]]:
        try:
            with open(self._known_path) as f:
                return {int(k): v for k, v in json.load(f).items()}
        except (FileNotFoundError, ValueError):
            return {}

    def _remember(self, spec: OverlaySpec) -> None:
        with self._known_lock:
            known = self._load_known()
            if known.get(spec.vni) != asdict(spec):
                known[spec.vni] = asdict(spec)
                os.makedirs(os.path.dirname(self._known_path), exist_ok=True)
                write_atomic(self._known_path, json.dumps(known).encode())

    def _forget(self, vni: int) -> None:
        with self._known_lock:
            known = self._load_known()
            if known.pop(vni, None) is not None:
                write_atomic(self._known_path, json.dumps(known).encode())
