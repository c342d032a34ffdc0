"""What a container start sets up outside the container's own namespaces, and its undoing.

`Preparer.prepare` makes the cgroups, the network (bridge address, netns, veth, published ports,
the user networks' interfaces; or host / none / another container's netns), the link
environment, the /etc files, /dev/shm (a shareable container's tmpfs on the host) and the
volume, bind and tmpfs mounts, and returns the shim's inputs. `teardown` undoes all of it
after an exit or a failed start; `remove_stale_network` removes what a crash left between two
steps.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import TYPE_CHECKING

from proto.docker.errors import Conflict, InvalidParameter
from runtime import config as cfg
from runtime import container_mounts, etcfiles, launch, links, mounts, shm
from runtime.cgroups import Resources as CgroupResources
from runtime.config_caps import effective_caps
from runtime.config_logs import log_limits
from runtime.config_mounts import check_bind_source
from runtime.config_network import is_user_defined_network
from runtime.config_types import ContainerSpec, HostConfig
from runtime.devices import container_devices
from runtime.fileio import write_atomic
from runtime.netns import create_netns, delete_netns
from runtime.overlay import bridge_name as overlay_bridge
from runtime.ports import PortMapper
from runtime.record import ContainerRecord, NetState
from runtime.security import shim_security

if TYPE_CHECKING:
    from runtime.containers import Runtime


class Preparer:
    """Sets up and tears down what a start makes outside the container's own namespaces."""

    def __init__(self, rt: Runtime) -> None:
        self._rt = rt
        self._bridge_ready = False
        # Concurrent first starts (a reschedule lands several at once) must not race to create
        # the bridge: the loser's link add fails with EEXIST.
        self._bridge_lock = asyncio.Lock()

    async def prepare(self, rec: ContainerRecord, spec: ContainerSpec) -> launch.ShimInputs:
        hc = spec.host_config
        bundle = self._rt.paths.container(rec.id)
        lowerdirs = self._rt.lowerdirs(rec)
        # First: a bad --device or --device-cgroup-rule fails the start before anything exists.
        device_config = await asyncio.to_thread(
            container_devices, hc.devices, hc.device_cgroup_rules, hc.privileged
        )
        cgroup_dirs = await asyncio.to_thread(self._rt.cgroups.create, rec.id, cgroup_resources(hc))
        inputs = launch.ShimInputs(
            bundle=bundle,
            lowerdirs=lowerdirs,
            cgroup_dirs=cgroup_dirs,
            netns="new",
            log_path=os.path.join(bundle, f"{rec.id}-json.log"),
            devices=device_config.records(),
        )
        hostname = spec.hostname
        extra_env: list[str] = []
        link_hosts: list[tuple[list[str], str]] = []
        for link in hc.links:
            target_name, alias = links.parse_link(link)
            target = self._rt.get(target_name)
            if not target.running:
                raise InvalidParameter(
                    f"Cannot link to a non running container: /{target.name} AS /{rec.name}/{alias}"
                )
            tspec = self._rt.spec(target)
            extra_env += links.link_env(
                alias, rec.name, target.net.ip, sorted(tspec.exposed_ports), tspec.env
            )
            link_hosts.append(([alias, target.name, target.id[:12]], target.net.ip))
        mode = hc.network_mode
        rec.net = NetState(mode=mode)
        rec.joined_hostname = rec.joined_domainname = ""
        if mode == "host":
            inputs.netns = "host"
            hostname = launch.host_hostname()
        elif mode == "none":
            inputs.netns = "new"
        elif mode.startswith("container:"):
            target = self._rt.get(mode.split(":", 1)[1])
            if not target.running:
                raise Conflict(f"cannot join network of a non running container: {target.id}")
            inputs.netns = f"/proc/{target.pid}/ns/net"
            rec.net.ip = target.net.ip
            hostname, rec.joined_domainname = self._identity(target)
            rec.joined_hostname = hostname
        elif is_user_defined_network(mode):
            # Only user networks: their interfaces are all the container has besides lo.
            rec.net.netns_path = os.path.join(self._rt.paths.netns, rec.id)
            rec.save(bundle)
            await asyncio.to_thread(create_netns, rec.net.netns_path)
            inputs.netns = rec.net.netns_path
        else:
            await self._ensure_bridge()
            ip, prefix, gateway, mac = await asyncio.to_thread(self._rt.bridge.allocate, rec.id)
            rec.net = NetState(mode=mode, ip=ip, prefix=prefix, gateway=gateway, mac=mac)
            netns_path = os.path.join(self._rt.paths.netns, rec.id)
            rec.net.netns_path = netns_path
            rec.save(bundle)  # a crash from here on is cleaned up by reconcile
            await asyncio.to_thread(create_netns, netns_path)
            rec.net.host_veth = await asyncio.to_thread(
                self._rt.bridge.attach, rec.id, netns_path, ip, mac
            )
            inputs.netns = netns_path
            inputs.net_ip, inputs.net_prefix, inputs.net_gw = ip, prefix, gateway
            bindings = _port_bindings(spec)
            if bindings:
                rec.net.ports = await asyncio.to_thread(
                    self._rt.ports.publish, rec.id, ip, bindings, rec.name
                )
        if rec.net.netns_path:
            await self._rt.user_nets.attach_all(rec, rec.net.netns_path, bool(rec.net.host_veth))
            bindings = _port_bindings(spec)
            if bindings and rec.networks and not rec.net.host_veth:
                # Published ports of a container on user networks reach its first address.
                first = rec.networks[0]
                rec.net.ports_bridge = overlay_bridge(first.spec["vni"])
                mapper = self._ports(rec.net.ports_bridge)
                rec.net.ports = await asyncio.to_thread(
                    mapper.publish, rec.id, first.ip, bindings, rec.name
                )
        inputs.hostname = hostname
        inputs.env = cfg.process_env(spec, hostname, extra_env)
        inputs.caps = effective_caps(hc.cap_add, hc.cap_drop, hc.privileged)
        sec = shim_security(self._rt, spec, bundle, inputs.caps)
        inputs.ipcns, inputs.pidns = sec.ipcns, sec.pidns
        inputs.seccomp, inputs.no_new_privs = sec.seccomp_path, sec.no_new_privs
        inputs.log_max_size, inputs.log_max_file = log_limits(spec.host_config.log_config)
        inputs.mounts = self._etc_mounts(rec, spec, hostname, link_hosts)
        shm_mount, rec.shm_path = await asyncio.to_thread(
            shm.setup, spec, bundle, sec.shm_source, rec.volumes_from
        )
        if shm_mount is not None:
            inputs.mounts.append(shm_mount)
        inputs.mounts += await self._volume_mounts(rec, spec, lowerdirs)
        rec.save(bundle)
        return inputs

    def _identity(self, rec: ContainerRecord) -> tuple[str, str]:
        """The hostname and domainname a running container has."""
        if rec.joined_hostname:
            return rec.joined_hostname, rec.joined_domainname
        spec = self._rt.spec(rec)
        if spec.host_config.network_mode == "host":
            return launch.host_hostname(), spec.domainname
        return spec.hostname, spec.domainname

    async def _ensure_bridge(self) -> None:
        async with self._bridge_lock:
            if not self._bridge_ready:
                await asyncio.to_thread(self._rt.bridge.ensure)
                self._bridge_ready = True

    def _etc_mounts(
        self,
        rec: ContainerRecord,
        spec: ContainerSpec,
        hostname: str,
        link_hosts: list[tuple[list[str], str]],
    ) -> list[launch.MountSpec]:
        hc = spec.host_config
        bundle = self._rt.paths.container(rec.id)
        if hc.network_mode.startswith("container:"):
            target = self._rt.get(hc.network_mode.split(":", 1)[1])
            source_dir = self._rt.paths.container(target.id)
        else:
            source_dir = bundle
            try:
                with open(etcfiles.host_resolv_path()) as f:
                    host_resolv = f.read()
            except OSError:
                host_resolv = ""
            files = {
                "hostname": etcfiles.hostname_file(hostname),
                "hosts": etcfiles.hosts_file(
                    hostname, spec.domainname, _own_ip(rec), hc.extra_hosts, link_hosts
                ),
                "resolv.conf": etcfiles.resolv_conf(
                    host_resolv,
                    hc.dns,
                    hc.dns_search,
                    hc.dns_options,
                    hc.network_mode,
                    embedded_dns=any(ep.host_veth for ep in rec.networks),
                ),
            }
            if hc.network_mode == "host":
                with open("/etc/hosts") as f:
                    files["hosts"] = f.read()
            for fname, text in files.items():
                # Bound into the container: any of its users reads them, as with dockerd.
                write_atomic(os.path.join(bundle, fname), text.encode(), 0o644)
        return [
            launch.bind(os.path.join(source_dir, f), f"/etc/{f}", readonly=hc.readonly_rootfs)
            for f in ("hostname", "hosts", "resolv.conf")
        ]

    async def _volume_mounts(
        self, rec: ContainerRecord, spec: ContainerSpec, lowerdirs: list[str]
    ) -> list[launch.MountSpec]:
        out: list[launch.MountSpec] = []
        for mount in spec.host_config.mounts:
            check_bind_source(mount)  # `--mount type=bind` refuses a missing source
        async with contextlib.AsyncExitStack() as stack:
            view: str | None = None
            for m in container_mounts.mounts(self._rt, rec, spec):
                dest = m["Destination"]
                if m["Type"] == "bind":
                    if m.get("CreateSource"):
                        os.makedirs(m["Source"], exist_ok=True)  # `-v /src:/dst` creates it
                    out.append(launch.bind(m["Source"], dest, readonly=not m["RW"]))
                elif m["Type"] == "volume":
                    existed = self._rt.volumes.exists(m["Name"])
                    self._rt.volumes.create(m["Name"])
                    source = await asyncio.to_thread(self._rt.volumes.mount, m["Name"])
                    if (not existed or not os.listdir(source)) and not m.get("NoCopy"):
                        if view is None:
                            bundle = self._rt.paths.container(rec.id)
                            view = await stack.enter_async_context(
                                mounts.overlay_view(bundle, lowerdirs, writable=False)
                            )
                        await asyncio.to_thread(self._rt.volumes.copy_up, m["Name"], view, dest)
                    out.append(launch.bind(source, dest, readonly=not m["RW"]))
                elif m["Type"] == "tmpfs":
                    out.append(launch.tmpfs(dest, m.get("Options", "")))
        return out

    async def teardown(self, rec: ContainerRecord) -> None:
        """Undo everything `prepare` made outside the container's own namespaces; the cgroups
        go even when undoing the network fails (the error is raised after)."""
        try:
            await asyncio.to_thread(shm.release, self._rt.paths.container(rec.id))
            rec.shm_path = ""
            await self._teardown_network(rec)
        finally:
            await asyncio.to_thread(self._rt.cgroups.remove, rec.id)

    async def _teardown_network(self, rec: ContainerRecord) -> None:
        net = rec.net
        await self._rt.user_nets.detach(rec, rec.networks)
        if net.ports:
            await asyncio.to_thread(self._ports(net.ports_bridge).unpublish, rec.id)
            net.ports, net.ports_bridge = {}, ""
        if net.netns_path:
            # The veth pair dies with the namespace; deleting it ourselves would wait ~15 ms
            # for the kernel's RCU grace period on every container stop.
            await asyncio.to_thread(delete_netns, net.netns_path)
            net.netns_path = ""
        elif net.host_veth:
            await asyncio.to_thread(self._rt.bridge.detach, net.host_veth)
        net.host_veth = ""
        if net.ip and net.mode not in ("host", "none") and not net.mode.startswith("container:"):
            await asyncio.to_thread(self._rt.bridge.release, rec.id)
        net.ip = net.gateway = net.mac = ""
        net.prefix = 0

    def _ports(self, bridge: str) -> PortMapper:
        """The published ports through `bridge` ("" = the default bridge)."""
        if not bridge or bridge == self._rt.ports.bridge:
            return self._rt.ports
        return PortMapper(self._rt.ports.data_dir, bridge)

    def _port_mappers(self) -> list[PortMapper]:
        """The default bridge's and every user network bridge's that has allocations."""
        try:
            bridges = [b for b in os.listdir(self._rt.ports.root) if not b.startswith(".")]
        except FileNotFoundError:
            bridges = []
        others = [self._ports(b) for b in sorted(bridges) if b != self._rt.ports.bridge]
        return [self._rt.ports, *others]

    def remove_stale_network(self) -> None:
        """Undo network state a crash left between two steps of a start or a teardown."""
        records = self._rt.list()
        running = {rec.id for rec in records if rec.running}
        for name in os.listdir(self._rt.paths.netns):
            if name not in running:
                delete_netns(os.path.join(self._rt.paths.netns, name))
        for cid in self._rt.bridge.list_allocations():
            if cid not in running:
                self._rt.bridge.release(cid)
        for mapper in self._port_mappers():
            port_owners = set(mapper.allocations())
            for cid in port_owners - running:
                mapper.unpublish(cid)
            if port_owners & running:
                mapper.restore()  # rules may be gone after a reboot or a firewall reload
        self._rt.bridge.remove_stale_veths({rec.net.host_veth for rec in records if rec.running})
        self._rt.user_nets.remove_stale()


def cgroup_resources(hc: HostConfig) -> CgroupResources:
    """The container's limits as the cgroups take them (at start and on `docker update`)."""
    r = hc.resources
    return CgroupResources(
        memory=r.memory,
        memory_swap=r.memory_swap,
        memory_reservation=r.memory_reservation,
        nano_cpus=r.nano_cpus,
        cpu_shares=r.cpu_shares,
        cpu_period=r.cpu_period,
        cpu_quota=r.cpu_quota,
        cpuset_cpus=r.cpuset_cpus,
        pids_limit=r.pids_limit or 0,
    )


def _port_bindings(spec: ContainerSpec) -> dict[str, list[dict[str, str]]]:
    bindings = {k: list(v or []) for k, v in spec.host_config.port_bindings.items()}
    if spec.host_config.publish_all:
        for port in spec.exposed_ports:
            bindings.setdefault(port, [{"HostIp": "", "HostPort": ""}])
    return {k: v for k, v in bindings.items() if v}


def _own_ip(rec: ContainerRecord) -> str | None:
    """The address /etc/hosts gives the container's own name: the default bridge's, else its
    first user network's."""
    if rec.net.ip:
        return rec.net.ip
    return next((ep.ip for ep in rec.networks if ep.ip), None)
