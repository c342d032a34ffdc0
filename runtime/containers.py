"""The runtime: containers on one host, from create to remove, surviving its own restarts.

Each running container (and each exec) is supervised by its own `flotilla-shim` process, which
outlives this one. The runtime keeps a pidfd on every shim and reacts when it exits; on start it
re-adopts the shims still alive and reconciles everything else (see docs/runtime.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from proto.docker.errors import Conflict, DockerError, InvalidParameter, NotFound, NotModified
from runtime import archive, etcfiles, launch, layers, links, logs, mounts, restart, shim
from runtime import config as cfg
from runtime.cgroups import Cgroups
from runtime.cgroups import Resources as CgroupResources
from runtime.images import ImageStore
from runtime.netns import create_netns, delete_netns
from runtime.network import Bridge, net_stats
from runtime.networks import BuiltinNetworks
from runtime.paths import DataRoot
from runtime.ports import PortMapper
from runtime.record import ContainerRecord, NetState
from runtime.timefmt import now_ns
from runtime.volumes import VolumeStore

log = logging.getLogger(__name__)

KILL_WAIT_S = 10.0
NAME_RE = re.compile(r"^/?[a-zA-Z0-9][a-zA-Z0-9_.-]+$")

EventSink = Callable[[str, str, str, dict[str, str]], None]


@dataclass
class _Live:
    """In-memory companion of a running container: its shim's pidfd and who waits on it."""

    shim_pidfd: int
    exited: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class ExecRecord:
    id: str
    container_id: str
    args: list[str]
    env: list[str]
    user: str
    working_dir: str
    tty: bool
    attach_stdin: bool
    attach_stdout: bool
    attach_stderr: bool
    privileged: bool
    running: bool = False
    exit_code: int | None = None
    pid: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)


class Runtime:
    """All containers of one node. Methods are coroutines; call them from one event loop."""

    def __init__(
        self,
        root: str,
        node_name: str = "local",
        cgroup_parent: str | None = None,
        bridge_name: str = "flotilla0",
        bridge_subnet: str = "172.17.0.0/16",
        events: EventSink | None = None,
    ) -> None:
        self.paths = DataRoot(root)
        self.paths.ensure()
        self.node_name = node_name
        self.images = ImageStore(self.paths)
        self.volumes = VolumeStore(self.paths)
        self.cgroups = Cgroups(cgroup_parent or f"flotilla/{node_name}")
        netdir = os.path.join(root, "network")
        self.bridge = Bridge(netdir, bridge_name, bridge_subnet)
        self.networks = BuiltinNetworks(netdir, self.bridge)
        self.ports = PortMapper(netdir, bridge_name)
        self._events = events
        self._records: dict[str, ContainerRecord] = {}
        self._live: dict[str, _Live] = {}
        self._execs: dict[str, ExecRecord] = {}
        self._lock = asyncio.Lock()
        self._bridge_ready = False
        self._restart_tasks: dict[str, asyncio.Task[None]] = {}
        self._stopping: set[str] = set()
        self._exit_waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._specs: dict[str, tuple[dict[str, Any], cfg.ContainerSpec]] = {}

    # ----------------------------------------------------------------- start-up / reconcile

    async def open(self) -> None:
        """Load every container, re-adopt running ones, clean up what a crash left behind."""
        await asyncio.to_thread(shim.shim_binary)
        live_cgroups = set(await asyncio.to_thread(self.cgroups.list_ids))
        for cid in sorted(os.listdir(self.paths.containers)):
            bundle = self.paths.container(cid)
            try:
                rec = ContainerRecord.load(bundle)
            except (FileNotFoundError, ValueError):
                log.warning("removing half-created container %s", cid)
                await asyncio.to_thread(shutil.rmtree, bundle, True)
                await asyncio.to_thread(self.cgroups.remove, cid)
                continue
            self._records[cid] = rec
            with contextlib.suppress(NotFound):
                self.images.hold_layers(cid, rec.image_id)
            await self._reconcile(rec)
            live_cgroups.discard(cid)
        for cid in live_cgroups:
            await asyncio.to_thread(self.cgroups.remove, cid)
        await asyncio.to_thread(self._remove_stale_network)
        for rec in list(self._records.values()):
            was_running = rec.status in ("running", "paused", "restarting")
            if (
                not rec.running
                and rec.has_been_started
                and restart.restart_on_boot(self._policy(rec)[0], rec.manually_stopped, was_running)
            ):
                with contextlib.suppress(DockerError):
                    await self.start(rec.id)

    async def _reconcile(self, rec: ContainerRecord) -> None:
        bundle = self.paths.container(rec.id)
        if rec.running and rec.shim_pid and _is_our_shim(rec.shim_pid, bundle):
            self._watch(rec)
            return
        if rec.running or rec.status == "restarting":
            exit_info = shim.read_exit(os.path.join(bundle, "exit.json"))
            rec.exit_code = int(exit_info["exit_code"]) if exit_info else 255
            rec.finished_ns = now_ns()
            rec.status = "exited"
            rec.pid = rec.shim_pid = 0
        await self._teardown(rec)
        rec.save(bundle)

    def _remove_stale_network(self) -> None:
        """Undo network state a crash left between two steps of a start or a teardown."""
        running = {cid for cid, rec in self._records.items() if rec.running}
        for name in os.listdir(self.paths.netns):
            if name not in running:
                delete_netns(os.path.join(self.paths.netns, name))
        for cid in self.bridge.list_allocations():
            if cid not in running:
                self.bridge.release(cid)
        port_owners = set(self.ports.allocations())
        for cid in port_owners - running:
            self.ports.unpublish(cid)
        if port_owners & running:
            self.ports.restore()  # rules may be gone after a reboot or a firewall reload
        self.bridge.remove_stale_veths(
            {rec.net.host_veth for rec in self._records.values() if rec.running}
        )

    async def close(self) -> None:
        """Stop watching shims; containers keep running (they belong to their shims)."""
        loop = asyncio.get_running_loop()
        for task in self._restart_tasks.values():
            task.cancel()
        for live in self._live.values():
            with contextlib.suppress(ValueError, OSError):
                loop.remove_reader(live.shim_pidfd)
            with contextlib.suppress(OSError):
                os.close(live.shim_pidfd)
        self._live.clear()

    # ----------------------------------------------------------------- lookup

    def get(self, ref: str) -> ContainerRecord:
        """Resolve a full ID, a name (with or without '/'), or a unique ID prefix."""
        rec = self._records.get(ref)
        if rec is not None:
            return rec
        name = ref.lstrip("/")
        for rec in self._records.values():
            if rec.name == name:
                return rec
        if ref and re.fullmatch(r"[0-9a-f]+", ref):
            found = [r for r in self._records.values() if r.id.startswith(ref)]
            if len(found) == 1:
                return found[0]
            if len(found) > 1:
                raise NotFound(f"Multiple IDs found with provided prefix: {ref}")
        raise NotFound(f"No such container: {ref}")

    def list(self) -> list[ContainerRecord]:
        return sorted(self._records.values(), key=lambda r: r.created_ns, reverse=True)

    def spec(self, rec: ContainerRecord) -> cfg.ContainerSpec:
        """The parsed create body; cached, as every lifecycle step needs it."""
        cached = self._specs.get(rec.id)
        if cached is not None and cached[0] is rec.body:
            return cached[1]
        spec = cfg.parse_create(rec.body, self.images.config(rec.image_id), rec.id)
        self._specs[rec.id] = (rec.body, spec)
        return spec

    # ----------------------------------------------------------------- create / remove / rename

    async def create(self, body: dict[str, Any], name: str | None = None) -> ContainerRecord:
        image_ref = body.get("Image") or ""
        if not image_ref:
            raise InvalidParameter("No image specified")  # dockerd: config.Image is required
        image_id = self._resolve_image(image_ref)
        cid = secrets.token_hex(32)
        spec = cfg.parse_create(body, self.images.config(image_id), cid)  # validates too
        mode = spec.host_config.network_mode
        if cfg.is_user_defined_network(mode):
            # Only the built-in networks exist on a node (user-defined ones: not yet).
            raise NotFound(f"network {mode} not found")
        self._specs[cid] = (body, spec)
        async with self._lock:
            name = self._claim_name(name, cid)
            bundle = self.paths.container(cid)
            os.makedirs(bundle)
            for sub in ("upper", "work", "rootfs", "execs"):
                os.mkdir(os.path.join(bundle, sub))
            rec = ContainerRecord(
                id=cid,
                name=name,
                created_ns=now_ns(),
                image_id=image_id,
                image_ref=image_ref,
                body=body,
                net=NetState(mode=spec.host_config.network_mode),
            )
            rec.save(bundle)
            self._records[cid] = rec
            self.images.hold_layers(cid, image_id)
        self._emit("create", rec)
        return rec

    def _resolve_image(self, ref: str) -> str:
        try:
            return self.images.resolve(ref)
        except NotFound:
            shown = ref if (":" in ref.rsplit("/", 1)[-1] or "@" in ref) else f"{ref}:latest"
            raise NotFound(f"No such image: {shown}") from None

    def _claim_name(self, name: str | None, cid: str) -> str:
        if not name:
            return _generate_name({r.name for r in self._records.values()})
        if not NAME_RE.match(name):
            raise InvalidParameter(
                f"Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
            )
        name = name.lstrip("/")
        for other in self._records.values():
            if other.name == name:
                raise Conflict(
                    f'Conflict. The container name "/{name}" is already in use by container '
                    f'"{other.id}". You have to remove (or rename) that container to be able '
                    "to reuse that name."
                )
        return name

    async def remove(self, ref: str, force: bool = False, volumes: bool = False) -> None:
        rec = self.get(ref)
        if rec.running or rec.status == "restarting":
            if not force:
                if rec.status == "paused":
                    raise Conflict(
                        f"You cannot remove a paused container {rec.id}. Unpause and then stop "
                        "the container before attempting removal or force remove"
                    )
                raise Conflict(
                    f"You cannot remove a running container {rec.id}. Stop the container "
                    "before attempting removal or force remove"
                )
            await self.kill(rec.id, signal.SIGKILL, manual=True)
            await self._wait_exit(rec.id)
        task = self._restart_tasks.pop(rec.id, None)
        if task:
            task.cancel()
        await self._teardown(rec)
        anonymous = self._anonymous_volumes(rec) if volumes else []
        bundle = self.paths.container(rec.id)
        await asyncio.to_thread(shutil.rmtree, bundle, True)
        self._records.pop(rec.id, None)
        self._specs.pop(rec.id, None)
        self.images.release_layers(rec.id)
        for vol in anonymous:
            with contextlib.suppress(DockerError):
                self.volumes.remove(vol, in_use=self._volume_users(vol))
        self._emit("destroy", rec)
        for fut in self._exit_waiters.pop(f"removed:{rec.id}", []):
            if not fut.done():
                fut.set_result(None)

    def _anonymous_volumes(self, rec: ContainerRecord) -> list[str]:
        return [m["Name"] for m in self.mounts(rec) if m["Type"] == "volume" and m.get("Anon")]

    def _volume_users(self, name: str) -> list[str]:
        return [
            r.id
            for r in self._records.values()
            if any(m["Type"] == "volume" and m["Name"] == name for m in self.mounts(r))
        ]

    async def rename(self, ref: str, new_name: str) -> None:
        rec = self.get(ref)
        async with self._lock:
            if not new_name:
                raise InvalidParameter("Neither old nor new names may be empty")
            if new_name.lstrip("/") == rec.name:
                raise InvalidParameter(
                    "Renaming a container with the same name as its current name"
                )
            old = rec.name
            rec.name = self._claim_name(new_name, rec.id)
            rec.save(self.paths.container(rec.id))
        self._emit("rename", rec, {"oldName": f"/{old}"})

    # ----------------------------------------------------------------- start

    async def start(self, ref: str, hold_output: bool = False) -> None:
        """Start the container; `hold_output` keeps its first output for a coming `attach`."""
        rec = self.get(ref)
        if rec.status == "paused":
            raise Conflict("cannot start a paused container, try unpause instead")
        if rec.running:
            raise NotModified("container already started")
        task = self._restart_tasks.pop(rec.id, None)
        if task and task is not asyncio.current_task():
            task.cancel()
        spec = self.spec(rec)
        bundle = self.paths.container(rec.id)
        for stale in ("exit.json", "start-error.json", "init.pid", "shim.pid", "attach.sock"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(bundle, stale))
        try:
            inputs = await self._prepare(rec, spec)
            inputs.hold_output = hold_output
            shim.write_spec(os.path.join(bundle, "spec"), launch.spec_records(spec, inputs))
            rec.shim_pid = await shim.start_shim(bundle)
        except shim.ShimStartError as err:
            await self._teardown(rec)
            rec.exit_code = err.exit_code
            rec.error = err.message
            rec.save(bundle)
            message = (
                "failed to create shim task: OCI runtime create failed: runc create failed: "
                f"unable to start container process: {err.message}: unknown"
            )
            raise DockerError(message, 400 if err.exit_code in (126, 127) else 500) from None
        except BaseException:
            await self._teardown(rec)
            raise
        rec.pid = _read_int(os.path.join(bundle, "init.pid"))
        rec.status = "running"
        rec.started_ns = now_ns()
        rec.exit_code = 0
        rec.error = ""
        rec.oom_killed = False
        rec.manually_stopped = False
        rec.has_been_started = True
        rec.save(bundle)
        self._watch(rec)
        self._emit("start", rec)

    async def _prepare(self, rec: ContainerRecord, spec: cfg.ContainerSpec) -> launch.ShimInputs:
        hc = spec.host_config
        bundle = self.paths.container(rec.id)
        lowerdirs = self.images.layer_dirs(rec.image_id)
        cgroup_dirs = await asyncio.to_thread(self.cgroups.create, rec.id, _resources(hc))
        inputs = launch.ShimInputs(
            bundle=bundle,
            lowerdirs=lowerdirs,
            cgroup_dirs=cgroup_dirs,
            netns="new",
            log_path=os.path.join(bundle, f"{rec.id}-json.log"),
        )
        hostname = spec.hostname
        extra_env: list[str] = []
        link_hosts: list[tuple[list[str], str]] = []
        for link in hc.links:
            target_name, alias = links.parse_link(link)
            target = self.get(target_name)
            if not target.running:
                raise InvalidParameter(
                    f"Cannot link to a non running container: /{target.name} AS /{rec.name}/{alias}"
                )
            tspec = self.spec(target)
            extra_env += links.link_env(
                alias, rec.name, target.net.ip, sorted(tspec.exposed_ports), tspec.env
            )
            link_hosts.append(([alias, target.name, target.id[:12]], target.net.ip))
        mode = hc.network_mode
        rec.net = NetState(mode=mode)
        if mode == "host":
            inputs.netns = "host"
            hostname = launch.host_hostname()
        elif mode == "none":
            inputs.netns = "new"
        elif mode.startswith("container:"):
            target = self.get(mode.split(":", 1)[1])
            if not target.running:
                raise Conflict(f"cannot join network of a non running container: {target.id}")
            inputs.netns = f"/proc/{target.pid}/ns/net"
            rec.net.ip = target.net.ip
        else:
            await self._ensure_bridge()
            ip, prefix, gateway, mac = await asyncio.to_thread(self.bridge.allocate, rec.id)
            rec.net = NetState(mode=mode, ip=ip, prefix=prefix, gateway=gateway, mac=mac)
            netns_path = os.path.join(self.paths.netns, rec.id)
            rec.net.netns_path = netns_path
            rec.save(bundle)  # a crash from here on is cleaned up by reconcile
            await asyncio.to_thread(create_netns, netns_path)
            rec.net.host_veth = await asyncio.to_thread(
                self.bridge.attach, rec.id, netns_path, ip, mac
            )
            inputs.netns = netns_path
            inputs.net_ip, inputs.net_prefix, inputs.net_gw = ip, prefix, gateway
            bindings = _port_bindings(spec)
            if bindings:
                rec.net.ports = await asyncio.to_thread(
                    self.ports.publish, rec.id, ip, bindings, rec.name
                )
        inputs.hostname = hostname
        inputs.env = cfg.process_env(spec, hostname, extra_env)
        inputs.caps = cfg.effective_caps(hc.cap_add, hc.cap_drop, hc.privileged)
        inputs.log_max_size, inputs.log_max_file = cfg.log_limits(spec.host_config.log_config)
        inputs.mounts = self._etc_mounts(rec, spec, hostname, link_hosts)
        inputs.mounts += await self._volume_mounts(rec, spec, lowerdirs)
        rec.save(bundle)
        return inputs

    async def _ensure_bridge(self) -> None:
        if not self._bridge_ready:
            await asyncio.to_thread(self.bridge.ensure)
            self._bridge_ready = True

    def _etc_mounts(
        self,
        rec: ContainerRecord,
        spec: cfg.ContainerSpec,
        hostname: str,
        link_hosts: list[tuple[list[str], str]],
    ) -> list[launch.MountSpec]:
        hc = spec.host_config
        bundle = self.paths.container(rec.id)
        if hc.network_mode.startswith("container:"):
            target = self.get(hc.network_mode.split(":", 1)[1])
            source_dir = self.paths.container(target.id)
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
                    hostname, spec.domainname, rec.net.ip or None, hc.extra_hosts, link_hosts
                ),
                "resolv.conf": etcfiles.resolv_conf(
                    host_resolv, hc.dns, hc.dns_search, hc.dns_options, hc.network_mode
                ),
            }
            if hc.network_mode == "host":
                with open("/etc/hosts") as f:
                    files["hosts"] = f.read()
            for fname, text in files.items():
                _write_atomic(os.path.join(bundle, fname), text)
        return [
            launch.bind(os.path.join(source_dir, f), f"/etc/{f}", readonly=hc.readonly_rootfs)
            for f in ("hostname", "hosts", "resolv.conf")
        ]

    async def _volume_mounts(
        self, rec: ContainerRecord, spec: cfg.ContainerSpec, lowerdirs: list[str]
    ) -> list[launch.MountSpec]:
        out: list[launch.MountSpec] = []
        for mount in spec.host_config.mounts:
            cfg.check_bind_source(mount)  # `--mount type=bind` refuses a missing source
        for m in self.mounts(rec, spec):
            dest = m["Destination"]
            if m["Type"] == "bind":
                if m.get("CreateSource"):
                    os.makedirs(m["Source"], exist_ok=True)  # `-v /src:/dst` creates it
                out.append(launch.bind(m["Source"], dest, readonly=not m["RW"]))
            elif m["Type"] == "volume":
                existed = self.volumes.exists(m["Name"])
                self.volumes.create(m["Name"])
                source = await asyncio.to_thread(self.volumes.mount, m["Name"])
                if not existed or not os.listdir(source):
                    image_dir = _image_path(lowerdirs, dest)
                    if image_dir and not m.get("NoCopy"):
                        await asyncio.to_thread(self.volumes.copy_up, m["Name"], image_dir)
                out.append(launch.bind(source, dest, readonly=not m["RW"]))
            elif m["Type"] == "tmpfs":
                out.append(launch.tmpfs(dest, m.get("Options", "")))
        return out

    def mounts(
        self, rec: ContainerRecord, spec: cfg.ContainerSpec | None = None
    ) -> list[dict[str, Any]]:
        """Docker's `Mounts` list (plus private keys) — anonymous volumes named once, stably."""
        spec = spec or self.spec(rec)
        anon_path = os.path.join(self.paths.container(rec.id), "anon-volumes")
        anon: dict[str, str] = {}
        if os.path.exists(anon_path):
            with open(anon_path) as f:
                anon = dict(line.rstrip("\n").split("\t", 1) for line in f if "\t" in line)
        result = cfg.mounts_of(spec)
        changed = False
        for m in result:
            if m["Type"] == "volume" and not m["Name"]:
                if m["Destination"] not in anon:
                    anon[m["Destination"]] = secrets.token_hex(32)
                    changed = True
                m["Name"] = anon[m["Destination"]]
                m["Anon"] = True
            if m["Type"] == "volume":
                m["Source"] = self.volumes.mountpoint(m["Name"])
        if changed:
            _write_atomic(anon_path, "".join(f"{k}\t{v}\n" for k, v in anon.items()))
        return result

    # ----------------------------------------------------------------- watching exits

    def _watch(self, rec: ContainerRecord) -> None:
        try:
            pidfd = os.pidfd_open(rec.shim_pid)
        except ProcessLookupError:
            asyncio.get_running_loop().call_soon(
                lambda: asyncio.ensure_future(self._on_exit(rec.id))
            )
            return
        live = _Live(shim_pidfd=pidfd)
        self._live[rec.id] = live
        loop = asyncio.get_running_loop()
        loop.add_reader(pidfd, self._shim_exited, rec.id)

    def _shim_exited(self, cid: str) -> None:
        live = self._live.pop(cid, None)
        if live is None:
            return
        loop = asyncio.get_running_loop()
        loop.remove_reader(live.shim_pidfd)
        os.close(live.shim_pidfd)
        loop.create_task(self._on_exit(cid))

    async def _on_exit(self, cid: str) -> None:
        rec = self._records.get(cid)
        if rec is None:
            return
        bundle = self.paths.container(cid)
        info = shim.read_exit(os.path.join(bundle, "exit.json"))
        rec.exit_code = int(info["exit_code"]) if info else 255
        rec.oom_killed = bool(await asyncio.to_thread(self.cgroups.oom_killed, cid))
        ran_for = (now_ns() - rec.started_ns) / 1e9
        rec.finished_ns = now_ns()
        # Still "running" while tearing down: a concurrent wait/remove waits for us to finish.
        await self._teardown(rec)
        rec.pid = rec.shim_pid = 0
        rec.status = "exited"
        policy, retries = self._policy(rec)
        decision = restart.decide(
            policy,
            retries,
            rec.exit_code,
            rec.restart_count,
            rec.manually_stopped or cid in self._stopping,
            ran_for,
            rec.last_delay_s,
        )
        if decision.restart:
            rec.status = "restarting"
            rec.last_delay_s = decision.delay_s
        rec.save(bundle)
        if rec.oom_killed:
            self._emit("oom", rec)
        self._emit("die", rec, {"exitCode": str(rec.exit_code)})
        for fut in self._exit_waiters.pop(cid, []):
            if not fut.done():
                fut.set_result(None)
        if decision.restart:
            self._restart_tasks[cid] = asyncio.get_running_loop().create_task(
                self._restart_later(cid, decision.delay_s)
            )
        elif self.spec(rec).host_config.auto_remove and cid not in self._stopping:
            with contextlib.suppress(DockerError):
                await self.remove(cid, force=True)

    async def _restart_later(self, cid: str, delay: float) -> None:
        await asyncio.sleep(delay)
        rec = self._records.get(cid)
        if rec is None or rec.status != "restarting":
            return
        rec.restart_count += 1
        try:
            await self.start(cid)
        except DockerError as err:
            rec.status = "exited"
            rec.error = err.message
            rec.save(self.paths.container(cid))

    def _policy(self, rec: ContainerRecord) -> tuple[str, int]:
        rp = (rec.body.get("HostConfig") or {}).get("RestartPolicy") or {}
        return rp.get("Name") or "no", int(rp.get("MaximumRetryCount") or 0)

    async def _teardown(self, rec: ContainerRecord) -> None:
        """Undo everything `_prepare` made outside the container's own namespaces."""
        net = rec.net
        if net.ports:
            await asyncio.to_thread(self.ports.unpublish, rec.id)
            net.ports = {}
        if net.netns_path:
            # The veth pair dies with the namespace; deleting it ourselves would wait ~15 ms
            # for the kernel's RCU grace period on every container stop.
            await asyncio.to_thread(delete_netns, net.netns_path)
            net.netns_path = ""
        elif net.host_veth:
            await asyncio.to_thread(self.bridge.detach, net.host_veth)
        net.host_veth = ""
        if net.ip and net.mode not in ("host", "none") and not net.mode.startswith("container:"):
            await asyncio.to_thread(self.bridge.release, rec.id)
        net.ip = net.gateway = net.mac = ""
        net.prefix = 0
        await asyncio.to_thread(self.cgroups.remove, rec.id)

    async def _wait_exit(self, cid: str, timeout: float | None = None) -> bool:
        rec = self._records.get(cid)
        if rec is None or not (rec.running or rec.status == "restarting"):
            return True
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._exit_waiters.setdefault(cid, []).append(fut)
        try:
            await asyncio.wait_for(fut, timeout)
            return True
        except TimeoutError:
            return False

    # ----------------------------------------------------------------- signals

    async def kill(self, ref: str, sig: int | str = signal.SIGKILL, manual: bool = True) -> None:
        rec = self.get(ref)
        signum = cfg.parse_signal(str(sig)) if isinstance(sig, str) else int(sig)
        if rec.status == "restarting":
            task = self._restart_tasks.pop(rec.id, None)
            if task:
                task.cancel()
            rec.status = "exited"
            rec.manually_stopped = True
            rec.save(self.paths.container(rec.id))
            return
        if not rec.running:
            raise Conflict(f"Container {rec.id} is not running")
        if manual and signum in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT):
            rec.manually_stopped = True
            self._stopping.add(rec.id)
        self._emit("kill", rec, {"signal": str(signum)})
        with contextlib.suppress(ProcessLookupError):
            os.kill(rec.pid, signum)
        if rec.status == "paused":
            await asyncio.to_thread(self.cgroups.thaw, rec.id)
            rec.status = "running"
        if signum == signal.SIGKILL:
            # dockerd returns from a SIGKILL only once the container is down.
            await self._wait_exit(rec.id, KILL_WAIT_S)

    async def stop(self, ref: str, timeout: float | None = None) -> None:
        rec = self.get(ref)
        if rec.status == "restarting":
            await self.kill(rec.id)
            return
        if not rec.running:
            raise NotModified("container already stopped")
        spec = self.spec(rec)
        if timeout is None or timeout < 0:
            timeout = spec.stop_timeout if spec.stop_timeout is not None else 10
        rec.manually_stopped = True
        self._stopping.add(rec.id)
        try:
            await self.kill(rec.id, spec.stop_signal)
            if not await self._wait_exit(rec.id, timeout):
                with contextlib.suppress(Conflict):
                    await self.kill(rec.id, signal.SIGKILL)
                await self._wait_exit(rec.id)
        finally:
            self._stopping.discard(rec.id)
        self._emit("stop", rec)

    async def restart(self, ref: str, timeout: float | None = None) -> None:
        rec = self.get(ref)
        if rec.running or rec.status == "restarting":
            await self.stop(rec.id, timeout)
        await self.start(rec.id)
        self._emit("restart", rec)

    async def wait(self, ref: str, condition: str = "not-running") -> dict[str, Any]:
        rec = self.get(ref)
        if condition == "removed":
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._exit_waiters.setdefault(f"removed:{rec.id}", []).append(fut)
            await fut  # the record object outlives the removal with its final exit code
            return {"StatusCode": rec.exit_code, "Error": None}
        if condition == "next-exit" or rec.running or rec.status == "restarting":
            fut = asyncio.get_running_loop().create_future()
            self._exit_waiters.setdefault(rec.id, []).append(fut)
            await fut
        return {"StatusCode": rec.exit_code, "Error": None}

    async def pause(self, ref: str) -> None:
        rec = self.get(ref)
        if not rec.running:
            raise Conflict(f"Container {rec.id} is not running")
        if rec.status == "paused":
            raise Conflict(f"Container {rec.id} is already paused")
        await asyncio.to_thread(self.cgroups.freeze, rec.id)
        rec.status = "paused"
        rec.save(self.paths.container(rec.id))
        self._emit("pause", rec)

    async def unpause(self, ref: str) -> None:
        rec = self.get(ref)
        if rec.status != "paused":
            raise Conflict(f"Container {rec.id} is not paused")
        await asyncio.to_thread(self.cgroups.thaw, rec.id)
        rec.status = "running"
        rec.save(self.paths.container(rec.id))
        self._emit("unpause", rec)

    async def update(self, ref: str, resources: dict[str, Any]) -> list[str]:
        """`docker update`: new limits and restart policy, applied live when running."""
        rec = self.get(ref)
        hc = dict(rec.body.get("HostConfig") or {})
        for key, value in resources.items():
            if key == "RestartPolicy":
                if value and value.get("Name"):
                    hc[key] = value
            elif value not in (None, 0, "") or key in hc:
                hc[key] = value
        body = dict(rec.body, HostConfig=hc)
        spec = cfg.parse_create(body, self.images.config(rec.image_id), rec.id)  # validates too
        if rec.running:
            await asyncio.to_thread(self.cgroups.update, rec.id, _resources(spec.host_config))
        rec.body = body
        rec.save(self.paths.container(rec.id))
        self._emit("update", rec)
        return []

    # ----------------------------------------------------------------- I/O

    async def attach(
        self, ref: str, stdin: bool, stdout: bool, stderr: bool
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Connect to a running container's stdio via its shim (raw or multiplexed frames)."""
        rec = self.get(ref)
        if not rec.running:
            raise Conflict(f"Container {rec.id} is not running")
        sock = os.path.join(self.paths.container(rec.id), "attach.sock")
        return await shim.open_attach(sock, stdin, stdout, stderr)

    async def resize(self, ref: str, height: int, width: int) -> None:
        rec = self.get(ref)
        if not rec.running:
            raise Conflict(f"Container {rec.id} is not running")
        await shim.resize(os.path.join(self.paths.container(rec.id), "attach.sock"), height, width)

    def log_path(self, rec: ContainerRecord) -> str:
        return os.path.join(self.paths.container(rec.id), f"{rec.id}-json.log")

    async def logs(
        self,
        ref: str,
        stdout: bool = True,
        stderr: bool = True,
        follow: bool = False,
        tail: int | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> AsyncIterator[logs.LogEntry]:
        rec = self.get(ref)
        path = self.log_path(rec)
        if not follow:
            entries = await asyncio.to_thread(
                logs.read_logs,
                path,
                stdout=stdout,
                stderr=stderr,
                tail=tail,
                since=since,
                until=until,
            )
            for entry in entries:
                yield entry
            return

        def stopped() -> bool:
            current = self._records.get(rec.id)
            return current is None or not (current.running or current.status == "restarting")

        async for entry in logs.follow_logs(
            path, stdout=stdout, stderr=stderr, tail=tail, since=since, until=until, stop=stopped
        ):
            yield entry

    # ----------------------------------------------------------------- exec

    def exec_create(self, ref: str, body: dict[str, Any]) -> str:
        rec = self.get(ref)
        if not rec.running:
            raise Conflict(f"Container {rec.id} is not running")
        if rec.status == "paused":
            raise Conflict(f"Container {rec.id} is paused, unpause the container before exec")
        cmd = body.get("Cmd") or []
        if isinstance(cmd, str):
            cmd = [cmd]
        if not cmd:
            raise InvalidParameter("No exec command specified")
        spec = self.spec(rec)
        eid = secrets.token_hex(32)
        env = cfg.replace_or_append_env(
            cfg.process_env(spec, spec.hostname), list(body.get("Env") or [])
        )
        self._execs[eid] = ExecRecord(
            id=eid,
            container_id=rec.id,
            args=list(cmd),
            env=env,
            user=body.get("User") or spec.user,
            working_dir=body.get("WorkingDir") or spec.working_dir or "/",
            tty=bool(body.get("Tty")),
            attach_stdin=bool(body.get("AttachStdin")),
            attach_stdout=bool(body.get("AttachStdout")),
            attach_stderr=bool(body.get("AttachStderr")),
            privileged=bool(body.get("Privileged")),
        )
        rec.exec_ids.append(eid)
        self._emit("exec_create", rec, {"execID": eid})
        return eid

    def get_exec(self, eid: str) -> ExecRecord:
        ex = self._execs.get(eid)
        if ex is None:
            raise NotFound(f"No such exec instance: {eid}")
        return ex

    async def exec_start(
        self, eid: str, detach: bool = False
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        ex = self.get_exec(eid)
        if ex.running or ex.exit_code is not None:
            raise Conflict(f"Error: Exec command {eid} is already running")
        rec = self.get(ex.container_id)
        if not rec.running:
            raise Conflict(f"Container {rec.id} is not running")
        spec = self.spec(rec)
        hc = spec.host_config
        exec_dir = os.path.join(self.paths.container(rec.id), "execs", eid)
        os.makedirs(exec_dir, exist_ok=True)
        caps = cfg.effective_caps(hc.cap_add, hc.cap_drop, hc.privileged or ex.privileged)
        cgroup_dirs = self.cgroups.dirs(rec.id)
        records = launch.exec_records(
            exec_dir,
            rec.pid,
            ex.args,
            ex.env,
            ex.user,
            ex.working_dir,
            ex.tty,
            ex.attach_stdin,
            caps,
            cgroup_dirs,
            hc.privileged or ex.privileged,
        )
        shim.write_spec(os.path.join(exec_dir, "spec"), records)
        try:
            shim_pid = await shim.start_shim(exec_dir)
        except shim.ShimStartError as err:
            ex.exit_code = err.exit_code
            ex.done.set()
            message = (
                "OCI runtime exec failed: exec failed: unable to start container process: "
                f"{err.message}: unknown"
            )
            raise DockerError(message, 500 if err.exit_code not in (126, 127) else 400) from None
        ex.running = True
        ex.pid = _read_int(os.path.join(exec_dir, "init.pid"))
        self._emit("exec_start", rec, {"execID": eid})
        loop = asyncio.get_running_loop()
        pidfd = os.pidfd_open(shim_pid)

        def done() -> None:
            loop.remove_reader(pidfd)
            os.close(pidfd)
            info = shim.read_exit(os.path.join(exec_dir, "exit.json"))
            ex.exit_code = int(info["exit_code"]) if info else 126
            ex.running = False
            ex.done.set()
            self._emit("exec_die", rec, {"execID": eid, "exitCode": str(ex.exit_code)})

        loop.add_reader(pidfd, done)
        sock = os.path.join(exec_dir, "attach.sock")
        streams = await shim.open_attach(
            sock, ex.attach_stdin, ex.attach_stdout or detach, ex.attach_stderr or detach
        )
        if detach:
            streams[1].close()
            return None
        return streams

    async def exec_resize(self, eid: str, height: int, width: int) -> None:
        ex = self.get_exec(eid)
        rec = self.get(ex.container_id)
        sock = os.path.join(self.paths.container(rec.id), "execs", eid, "attach.sock")
        await shim.resize(sock, height, width)

    # ----------------------------------------------------------------- filesystem and processes

    async def top(self, ref: str, ps_args: str = "-ef") -> dict[str, Any]:
        rec = self.get(ref)
        if not rec.running:
            raise Conflict(f"Container {rec.id} is not running")
        pids = set(await asyncio.to_thread(self.cgroups.pids, rec.id))
        proc = await asyncio.create_subprocess_exec(
            "ps", *ps_args.split(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        out, err = await proc.communicate()
        if proc.returncode != 0:
            raise DockerError(f"Error running ps: {err.decode().strip()}", 500)
        lines = out.decode().splitlines()
        titles = lines[0].split()
        if "PID" not in titles:
            raise DockerError("Couldn't find PID field in ps output", 500)
        pid_col = titles.index("PID")
        processes = []
        for line in lines[1:]:
            fields = line.split(None, len(titles) - 1)
            if len(fields) > pid_col and fields[pid_col].isdigit() and int(fields[pid_col]) in pids:
                processes.append(fields)
        return {"Titles": titles, "Processes": processes}

    async def stats(self, ref: str) -> dict[str, Any]:
        """One sample in Docker's stats shape (the caller adds precpu_stats from the last one)."""
        rec = self.get(ref)
        sample: dict[str, Any] = {
            "read": _rfc_now(),
            "name": f"/{rec.name}",
            "id": rec.id,
        }
        if not rec.running:
            sample.update(
                {
                    "pids_stats": {},
                    "blkio_stats": {},
                    "cpu_stats": {"cpu_usage": {"total_usage": 0}, "throttling_data": {}},
                    "memory_stats": {},
                }
            )
            return sample
        sample.update(await asyncio.to_thread(self.cgroups.stats, rec.id))
        if rec.net.mode not in ("host",):
            with contextlib.suppress(OSError):
                sample["networks"] = await asyncio.to_thread(net_stats, rec.pid)
        return sample

    @contextlib.asynccontextmanager
    async def _root_view(self, rec: ContainerRecord, writable: bool) -> AsyncIterator[str]:
        """A host path showing the container's root: its live root, or a temporary overlay."""
        if rec.running and rec.pid:
            yield f"/proc/{rec.pid}/root"
            return
        async with self._overlay_view(rec, writable) as root:
            yield root

    @contextlib.asynccontextmanager
    async def _overlay_view(self, rec: ContainerRecord, writable: bool) -> AsyncIterator[str]:
        """The container's layers mounted on a temporary directory: its files without the
        mounts a running container has (/proc, volumes, ...)."""
        bundle = self.paths.container(rec.id)
        mnt = os.path.join(bundle, f"mnt-{secrets.token_hex(4)}")
        os.mkdir(mnt)
        lowers = [os.path.join(bundle, "upper")] + self.images.layer_dirs(rec.image_id)
        if writable:
            work = os.path.join(bundle, "work")
            opts = f"lowerdir={':'.join(lowers[1:])},upperdir={lowers[0]},workdir={work}"
        else:
            opts = f"lowerdir={':'.join(lowers)}"
        try:
            await asyncio.to_thread(mounts.mount, "overlay", mnt, "overlay", 0, opts)
            try:
                yield mnt
            finally:
                await asyncio.to_thread(mounts.unmount, mnt)
        finally:
            os.rmdir(mnt)

    async def archive_stat(self, ref: str, path: str) -> dict[str, Any]:
        rec = self.get(ref)
        async with self._root_view(rec, writable=False) as root:
            return await asyncio.to_thread(archive.stat_path, root, path)

    async def archive_get(self, ref: str, path: str, out: BinaryIO) -> dict[str, Any]:
        rec = self.get(ref)
        async with self._root_view(rec, writable=False) as root:
            return await asyncio.to_thread(archive.get_archive, root, path, out)

    async def archive_put(
        self, ref: str, path: str, src: BinaryIO, no_overwrite_dir_non_dir: bool = False
    ) -> None:
        rec = self.get(ref)
        if self.spec(rec).host_config.readonly_rootfs:
            raise DockerError("container rootfs is marked read-only", 403)
        async with self._root_view(rec, writable=True) as root:
            await asyncio.to_thread(archive.put_archive, root, path, src, no_overwrite_dir_non_dir)

    async def export(self, ref: str, out: BinaryIO) -> None:
        rec = self.get(ref)
        async with self._overlay_view(rec, writable=False) as root:
            await asyncio.to_thread(archive.export_tree, root, out)
        self._emit("export", rec)

    async def changes(self, ref: str) -> list[dict[str, Any]]:
        rec = self.get(ref)
        upper = os.path.join(self.paths.container(rec.id), "upper")
        return await asyncio.to_thread(layers.changes, upper, self.images.layer_dirs(rec.image_id))

    async def commit(
        self,
        ref: str,
        config: dict[str, Any] | None = None,
        comment: str = "",
        author: str = "",
        reference: str | None = None,
        changes: list[str] | None = None,
        pause: bool = True,
    ) -> str:
        rec = self.get(ref)
        paused_here = False
        if pause and rec.status == "running":
            await asyncio.to_thread(self.cgroups.freeze, rec.id)
            paused_here = True
        try:
            merged = dict(rec.body)
            merged.pop("HostConfig", None)
            merged.pop("NetworkingConfig", None)
            merged.update(config or {})
            upper = os.path.join(self.paths.container(rec.id), "upper")
            args = self.spec(rec).args
            image_id = await asyncio.to_thread(
                self.images.commit,
                upper,
                rec.image_id,
                merged,
                comment,
                author,
                reference,
                " ".join(args),
                changes or [],
            )
        finally:
            if paused_here:
                await asyncio.to_thread(self.cgroups.thaw, rec.id)
        self._emit("commit", rec)
        return image_id

    def images_in_use(self, image_id: str) -> list[tuple[str, bool]]:
        return [(r.id, r.running) for r in self._records.values() if r.image_id == image_id]

    def remove_image(self, ref: str, force: bool = False, noprune: bool = False) -> list[dict]:
        """`docker rmi`: refused while a container uses the image, with dockerd's rules."""
        return self.images.remove(ref, force=force, noprune=noprune, users=self.images_in_use)

    # ----------------------------------------------------------------- events

    def _emit(self, action: str, rec: ContainerRecord, extra: dict[str, str] | None = None) -> None:
        if self._events is None:
            return
        attrs = {"name": rec.name, "image": rec.image_ref}
        labels = (rec.body.get("Labels") or {}) if isinstance(rec.body, dict) else {}
        attrs.update({k: str(v) for k, v in labels.items()})
        attrs.update(extra or {})
        try:
            self._events("container", action, rec.id, attrs)
        except Exception:  # an observer's bug must not break the lifecycle
            log.exception("event sink failed")


# --------------------------------------------------------------------- helpers


def _resources(hc: cfg.HostConfig) -> CgroupResources:
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


def _port_bindings(spec: cfg.ContainerSpec) -> dict[str, list[dict[str, str]]]:
    bindings = {k: list(v or []) for k, v in spec.host_config.port_bindings.items()}
    if spec.host_config.publish_all:
        for port in spec.exposed_ports:
            bindings.setdefault(port, [{"HostIp": "", "HostPort": ""}])
    return {k: v for k, v in bindings.items() if v}


def _image_path(lowerdirs: list[str], dest: str) -> str | None:
    """The image's directory at `dest` (top layer first), if it has content to copy up."""
    rel = dest.lstrip("/")
    for layer in lowerdirs:
        candidate = os.path.join(layer, rel)
        if os.path.isdir(candidate) and not os.path.islink(candidate):
            return candidate
        if os.path.lexists(candidate):
            return None
    return None


def _is_our_shim(pid: int, bundle: str) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = f.read().split(b"\0")
    except OSError:
        return False
    return any(a == bundle.encode() for a in args) and b"flotilla-shim" in args[0]


def _read_int(path: str) -> int:
    try:
        with open(path) as f:
            return int(f.read().strip() or 0)
    except (OSError, ValueError):
        return 0


def _write_atomic(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _rfc_now() -> str:
    from runtime.timefmt import rfc3339nano

    return rfc3339nano(time.time_ns())


_ADJECTIVES = [
    "admiring",
    "adoring",
    "agitated",
    "amazing",
    "angry",
    "awesome",
    "blissful",
    "bold",
    "brave",
    "busy",
    "charming",
    "clever",
    "cool",
    "compassionate",
    "competent",
    "confident",
    "dazzling",
    "determined",
    "eager",
    "ecstatic",
    "elastic",
    "elated",
    "elegant",
    "eloquent",
    "epic",
    "fervent",
    "festive",
    "flamboyant",
    "focused",
    "friendly",
    "frosty",
    "gallant",
    "gifted",
    "goofy",
    "gracious",
    "happy",
    "hardcore",
    "heuristic",
    "hopeful",
    "hungry",
    "infallible",
    "inspiring",
    "jolly",
    "jovial",
    "keen",
    "kind",
    "laughing",
    "loving",
    "lucid",
    "magical",
    "modest",
    "musing",
    "mystifying",
    "naughty",
    "nervous",
    "nice",
    "nifty",
    "nostalgic",
    "objective",
    "optimistic",
    "peaceful",
    "pedantic",
    "pensive",
    "practical",
    "priceless",
    "quirky",
    "quizzical",
    "recursive",
    "relaxed",
    "reverent",
    "romantic",
    "sad",
    "serene",
    "sharp",
    "silly",
    "sleepy",
    "stoic",
    "strange",
    "stupefied",
    "suspicious",
    "sweet",
    "tender",
    "thirsty",
    "trusting",
    "unruffled",
    "upbeat",
    "vibrant",
    "vigilant",
    "vigorous",
    "wizardly",
    "wonderful",
    "xenodochial",
    "youthful",
    "zealous",
    "zen",
]
_SURNAMES = [
    "albattani",
    "allen",
    "almeida",
    "agnesi",
    "archimedes",
    "ardinghelli",
    "aryabhata",
    "austin",
    "babbage",
    "banach",
    "bardeen",
    "bartik",
    "bassi",
    "beaver",
    "bell",
    "benz",
    "bhabha",
    "bhaskara",
    "black",
    "blackburn",
    "blackwell",
    "bohr",
    "booth",
    "borg",
    "bose",
    "boyd",
    "brahmagupta",
    "brattain",
    "brown",
    "buck",
    "burnell",
    "cannon",
    "carson",
    "cartwright",
    "cerf",
    "chandrasekhar",
    "chaplygin",
    "chatelet",
    "chatterjee",
    "chebyshev",
    "cohen",
    "chaum",
    "clarke",
    "colden",
    "cori",
    "cray",
    "curran",
    "curie",
    "darwin",
    "davinci",
    "dewdney",
    "dhawan",
    "diffie",
    "dijkstra",
    "dirac",
    "driscoll",
    "dubinsky",
    "easley",
    "edison",
    "einstein",
    "elbakyan",
    "elgamal",
    "elion",
    "ellis",
    "engelbart",
    "euclid",
    "euler",
    "faraday",
    "feistel",
    "fermat",
    "fermi",
    "feynman",
    "franklin",
    "gagarin",
    "galileo",
    "galois",
    "ganguly",
    "gates",
    "gauss",
    "germain",
    "goldberg",
    "goldstine",
    "goldwasser",
    "golick",
    "goodall",
    "gould",
    "greider",
    "grothendieck",
    "haibt",
    "hamilton",
    "haslett",
    "hawking",
    "hellman",
    "heisenberg",
    "hermann",
    "herschel",
    "hertz",
    "heyrovsky",
    "hodgkin",
    "hofstadter",
    "hoover",
    "hopper",
    "hugle",
    "hypatia",
    "jackson",
    "jang",
    "jennings",
    "jepsen",
    "johnson",
    "joliot",
    "jones",
    "kalam",
    "kapitsa",
    "kare",
    "keldysh",
    "keller",
    "kepler",
    "khayyam",
    "khorana",
    "kilby",
    "kirch",
    "knuth",
    "kowalevski",
    "lalande",
    "lamarr",
    "lamport",
    "leakey",
    "leavitt",
    "lederberg",
    "lehmann",
    "lewin",
    "lichterman",
    "liskov",
    "lovelace",
    "lumiere",
    "mahavira",
    "margulis",
    "matsumoto",
    "maxwell",
    "mayer",
    "mccarthy",
    "mcclintock",
    "mclaren",
    "mclean",
    "mcnulty",
    "mendel",
    "mendeleev",
    "meitner",
    "meninsky",
    "merkle",
    "mestorf",
    "mirzakhani",
    "moore",
    "morse",
    "murdock",
    "moser",
    "napier",
    "nash",
    "neumann",
    "newton",
    "nightingale",
    "nobel",
    "noether",
    "northcutt",
    "noyce",
    "panini",
    "pare",
    "pascal",
    "pasteur",
    "payne",
    "perlman",
    "pike",
    "poincare",
    "poitras",
    "proskuriakova",
    "ptolemy",
    "raman",
    "ramanujan",
    "ride",
    "montalcini",
    "ritchie",
    "robinson",
    "roentgen",
    "rosalind",
    "rubin",
    "saha",
    "sammet",
    "sanderson",
    "satoshi",
    "shamir",
    "shannon",
    "shaw",
    "shirley",
    "shockley",
    "shtern",
    "sinoussi",
    "snyder",
    "solomon",
    "spence",
    "stonebraker",
    "sutherland",
    "swanson",
    "swartz",
    "swirles",
    "taussig",
    "tereshkova",
    "tesla",
    "tharp",
    "thompson",
    "torvalds",
    "tu",
    "turing",
    "varahamihira",
    "vaughan",
    "visvesvaraya",
    "volhard",
    "villani",
    "wescoff",
    "wilbur",
    "wiles",
    "williams",
    "williamson",
    "wilson",
    "wing",
    "wozniak",
    "wright",
    "wu",
    "yalow",
    "yonath",
    "zhukovsky",
]


def _generate_name(taken: set[str]) -> str:
    """Docker's adjective_surname names; a digit is appended after a collision, as dockerd does."""
    for attempt in range(20):
        name = f"{secrets.choice(_ADJECTIVES)}_{secrets.choice(_SURNAMES)}"
        if attempt:
            name += str(secrets.randbelow(10))
        if name not in taken:
            return name
    return f"{secrets.choice(_ADJECTIVES)}_{secrets.token_hex(4)}"
