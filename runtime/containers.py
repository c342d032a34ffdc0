"""The runtime: containers on one host, from create to remove, surviving its own restarts.

Each running container (and each exec) is supervised by its own `flotilla-shim` process, which
outlives this one. The runtime keeps a pidfd on every shim and reacts when it exits; on start it
re-adopts the shims still alive and reconciles everything else (see docs/runtime.md).

`Runtime` holds the records and the lifecycle (create … remove, the restart policy), attach, logs
and events; the other jobs have their own modules (prepare, adopt, execs, container_mounts,
container_fs, usage, names, health: the table in docs/runtime.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from proto.docker.errors import Conflict, DockerError, InvalidParameter, NotFound, NotModified
from runtime import (
    adopt,
    config_mounts,
    config_values,
    container_mounts,
    etcfiles,
    fence,
    health,
    launch,
    names,
    restart,
    shim,
)
from runtime import config as cfg
from runtime.cgroups import Cgroups
from runtime.config_types import ContainerSpec
from runtime.container_io import ContainerIO
from runtime.execs import Execs
from runtime.images import ImageStore
from runtime.net_directory import NetworkDirectory
from runtime.network import Bridge
from runtime.networks import BuiltinNetworks
from runtime.overlay import OverlayPlane
from runtime.paths import DataRoot
from runtime.ports import PortMapper
from runtime.prepare import Preparer, cgroup_resources
from runtime.record import ContainerRecord, NetState, event_attrs, find_record, refuse_removal
from runtime.registry_client import RegistryConfig
from runtime.timefmt import now_ns
from runtime.user_networks import UserNetworks
from runtime.volumes import VolumeStore, check_driver

log = logging.getLogger(__name__)

KILL_WAIT_S = 10.0
EventSink = Callable[[str, str, str, dict[str, str]], None]


@dataclass
class _Live:
    """In-memory companion of a running container: its shim's pidfd and who waits on it."""

    shim_pidfd: int
    exited: asyncio.Event = field(default_factory=asyncio.Event)


class Runtime(ContainerIO):
    """All containers of one node. Methods are coroutines; call them from one event loop."""

    def __init__(
        self,
        root: str,
        node_name: str = "local",
        cgroup_parent: str | None = None,
        bridge_name: str = "flotilla0",
        bridge_subnet: str = "172.17.0.0/16",
        events: EventSink | None = None,
        fence_path: str = "",
        directory: NetworkDirectory | None = None,
        plane: OverlayPlane | None = None,
        registries: RegistryConfig | None = None,
    ) -> None:
        self.paths = DataRoot(root)
        # How this node reaches registries (certs.d, insecure ones): runtime/image_pull.py.
        self.registries = registries or RegistryConfig()
        # The agent's fence deadline file: shims of reschedulable containers watch it. Empty
        # (a runtime used without an agent): nothing is fenced.
        self.fence_path = fence_path
        # Reschedulable containers restart-on-boot left to the agent (only after it checked
        # they are not stale copies): filled by `open` when there is a fence file.
        self.deferred_boot: list[str] = []
        self.paths.ensure()
        self.node_name = node_name
        self.images = ImageStore(self.paths)
        self.volumes = VolumeStore(self.paths)
        self.cgroups = Cgroups(cgroup_parent or f"flotilla/{node_name}")
        netdir = os.path.join(root, "network")
        self.bridge = Bridge(netdir, bridge_name, bridge_subnet)
        self.networks = BuiltinNetworks(netdir, self.bridge)
        self.ports = PortMapper(netdir, bridge_name)
        # User-defined (overlay) networks: without a directory and a plane there are none.
        self.user_nets = UserNetworks(self, directory, plane, netdir)
        self._events = events
        self._records: dict[str, ContainerRecord] = {}
        self._live: dict[str, _Live] = {}
        self.execs = Execs(self)
        self._lock = asyncio.Lock()
        self._prep = Preparer(self)
        self._restart_tasks: dict[str, asyncio.Task[None]] = {}
        self._stopping: set[str] = set()
        self._exit_waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._specs: dict[str, tuple[dict[str, Any], ContainerSpec]] = {}
        self._health = health.Monitors(self)

    # ----------------------------------------------------------------- start-up / reconcile

    async def open(self) -> None:
        """Load every container, re-adopt running ones, clean up what a crash left behind."""
        await adopt.reopen(self)

    async def close(self) -> None:
        """Stop watching shims; containers keep running (they belong to their shims)."""
        loop = asyncio.get_running_loop()
        for task in self._restart_tasks.values():
            task.cancel()
        await self._health.stop_all()
        for live in self._live.values():
            with contextlib.suppress(ValueError, OSError):
                loop.remove_reader(live.shim_pidfd)
            with contextlib.suppress(OSError):
                os.close(live.shim_pidfd)
        self._live.clear()

    # ----------------------------------------------------------------- lookup

    def get(self, ref: str) -> ContainerRecord:
        """Resolve a full ID, a name (with or without '/'), or a unique ID prefix."""
        return find_record(self._records, ref)

    def list(self) -> list[ContainerRecord]:
        return sorted(self._records.values(), key=lambda r: r.created_ns, reverse=True)

    def spec(self, rec: ContainerRecord) -> ContainerSpec:
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
        networks = await self.user_nets.configure(spec)
        # dockerd creates the volumes at create: an unknown driver is refused now
        for m in config_mounts.mounts_of(spec):
            if m["Type"] == "volume":
                check_driver(m["Name"] or secrets.token_hex(32), m.get("Driver", ""))
        volumes_from = container_mounts.volumes_from(self, spec)
        self._specs[cid] = (body, spec)
        async with self._lock:
            name = names.claim_name(name, self._records.values())
            bundle = self.paths.container(cid)
            os.makedirs(bundle, 0o710)
            for sub in ("upper", "work", "rootfs", "execs"):
                os.mkdir(os.path.join(bundle, sub))
            etcfiles.make_init_layer(os.path.join(bundle, "init"))
            rec = ContainerRecord(
                id=cid,
                name=name,
                created_ns=now_ns(),
                image_id=image_id,
                image_ref=image_ref,
                body=body,
                net=NetState(mode=spec.host_config.network_mode),
                volumes_from=volumes_from,
                networks=networks,
            )
            rec.save(bundle)
            self._records[cid] = rec
            self.images.hold_layers(cid, image_id)
        self.emit("create", rec)
        return rec

    def lowerdirs(self, rec: ContainerRecord) -> list[str]:
        """The overlay's lower dirs, top first: the container's init layer (absent in bundles
        made before it existed), then the image's layers."""
        init = os.path.join(self.paths.container(rec.id), "init")
        image = self.images.layer_dirs(rec.image_id)
        return [init, *image] if os.path.isdir(init) else image

    def _resolve_image(self, ref: str) -> str:
        try:
            return self.images.resolve(ref)
        except NotFound:
            shown = ref if (":" in ref.rsplit("/", 1)[-1] or "@" in ref) else f"{ref}:latest"
            raise NotFound(f"No such image: {shown}") from None

    async def remove(self, ref: str, force: bool = False, volumes: bool = False) -> None:
        rec = self.get(ref)
        if rec.running or rec.status == "restarting":
            if not force:
                refuse_removal(rec)
            await self.kill(rec.id, signal.SIGKILL, manual=True)
            await self._wait_exit(rec.id)
        task = self._restart_tasks.pop(rec.id, None)
        if task:
            task.cancel()
        await self._prep.teardown(rec)
        anonymous = container_mounts.anonymous_volumes(self, rec) if volumes else []
        bundle = self.paths.container(rec.id)
        await asyncio.to_thread(shutil.rmtree, bundle, True)
        self._records.pop(rec.id, None)
        self._specs.pop(rec.id, None)
        self.images.release_layers(rec.id)
        for vol in anonymous:
            with contextlib.suppress(DockerError):
                self.volumes.remove(vol, in_use=self.volume_users(vol))
        self.emit("destroy", rec)
        for fut in self._exit_waiters.pop(f"removed:{rec.id}", []):
            if not fut.done():
                fut.set_result(None)

    def volume_users(self, name: str) -> list[str]:
        """IDs of the containers that mount volume `name` (`volume rm` refuses while any do)."""
        return [
            r.id
            for r in self._records.values()
            if any(
                m["Type"] == "volume" and m["Name"] == name
                for m in container_mounts.mounts(self, r)
            )
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
            rec.name = names.claim_name(new_name, self._records.values())
            rec.save(self.paths.container(rec.id))
        self.emit("rename", rec, {"oldName": f"/{old}"})

    async def connect(self, ref: str, network: str, endpoint_config: dict[str, Any]) -> None:
        """POST /networks/{network}/connect (`EndpointConfig`): hot-plugged when running."""
        await self.user_nets.connect(self.get(ref), network, endpoint_config)

    async def disconnect(self, ref: str, network: str, force: bool = False) -> None:
        """POST /networks/{network}/disconnect."""
        await self.user_nets.disconnect(self.get(ref), network, force)

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
        started = False
        try:
            inputs = await self._prep.prepare(rec, spec)
            inputs.hold_output = hold_output
            records = launch.spec_records(spec, inputs)
            if self.fence_path and fence.is_reschedulable(rec.body.get("Labels") or {}):
                records.append(("fence_path", self.fence_path))
            shim.write_spec(os.path.join(bundle, "spec"), records)
            rec.shim_pid = await shim.start_shim(bundle)
            started = True
        except shim.ShimStartError as err:
            await self._prep.teardown(rec)
            rec.exit_code = err.exit_code
            rec.error = err.message
            rec.save(bundle)
            message = (
                "failed to create shim task: OCI runtime create failed: runc create failed: "
                f"unable to start container process: {err.message}: unknown"
            )
            raise DockerError(message, 400 if err.exit_code in (126, 127) else 500) from None
        except BaseException:
            await self._prep.teardown(rec)
            raise
        finally:
            if not started and spec.host_config.auto_remove:
                # dockerd removes an AutoRemove container whose start failed (`docker run --rm`
                # waits for that removal after reporting the error).
                await self._remove_failed(rec.id)
        rec.pid = shim.read_pid(os.path.join(bundle, "init.pid"))
        rec.status = "running"
        rec.started_ns = now_ns()
        rec.exit_code = 0
        rec.error = ""
        rec.oom_killed = False
        rec.fenced = False
        rec.manually_stopped = False
        rec.has_been_started = True
        self._health.watch(rec, fresh=True)
        rec.save(bundle)
        self._watch(rec)
        self.emit("start", rec)

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
        await self._health.unwatch(cid)
        rec = self._records.get(cid)
        if rec is None:
            return
        bundle = self.paths.container(cid)
        info = shim.read_exit(os.path.join(bundle, "exit.json"))
        rec.exit_code = int(info["exit_code"]) if info else 255
        fence.apply_exit(rec, info)
        rec.oom_killed = bool(await asyncio.to_thread(self.cgroups.oom_killed, cid))
        ran_for = (now_ns() - rec.started_ns) / 1e9
        rec.finished_ns = now_ns()
        # Still "running" while tearing down: a concurrent wait/remove waits for us to finish.
        await self._prep.teardown(rec)
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
        if rec.fenced:
            decision = restart.RestartDecision(False, 0.0)  # only the manager starts it again
        if decision.restart:
            rec.status = "restarting"
            rec.last_delay_s = decision.delay_s
        rec.save(bundle)
        if rec.oom_killed:
            self.emit("oom", rec)
        self.emit("die", rec, {"exitCode": str(rec.exit_code)})
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

    async def _remove_failed(self, cid: str) -> None:
        with contextlib.suppress(DockerError):
            await self.remove(cid, force=True, volumes=True)

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
        signum = config_values.parse_signal(str(sig)) if isinstance(sig, str) else int(sig)
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
        self.emit("kill", rec, {"signal": str(signum)})
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
        self.emit("stop", rec)

    async def restart(self, ref: str, timeout: float | None = None) -> None:
        rec = self.get(ref)
        if rec.running or rec.status == "restarting":
            await self.stop(rec.id, timeout)
        await self.start(rec.id)
        self.emit("restart", rec)

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
        await self._health.unwatch(rec.id)  # dockerd does not probe a paused container
        await asyncio.to_thread(self.cgroups.freeze, rec.id)
        rec.status = "paused"
        rec.save(self.paths.container(rec.id))
        self.emit("pause", rec)

    async def unpause(self, ref: str) -> None:
        rec = self.get(ref)
        if rec.status != "paused":
            raise Conflict(f"Container {rec.id} is not paused")
        await asyncio.to_thread(self.cgroups.thaw, rec.id)
        rec.status = "running"
        self._health.watch(rec, fresh=False)
        rec.save(self.paths.container(rec.id))
        self.emit("unpause", rec)

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
            await asyncio.to_thread(self.cgroups.update, rec.id, cgroup_resources(spec.host_config))
        rec.body = body
        rec.save(self.paths.container(rec.id))
        self.emit("update", rec)
        return []

    # ----------------------------------------------------------------- images in use

    def images_in_use(self, image_id: str) -> list[tuple[str, bool]]:
        return [(r.id, r.running) for r in self._records.values() if r.image_id == image_id]

    def remove_image(self, ref: str, force: bool = False, noprune: bool = False) -> list[dict]:
        """`docker rmi`: refused while a container uses the image, with dockerd's rules."""
        return self.images.remove(ref, force=force, noprune=noprune, users=self.images_in_use)

    # ----------------------------------------------------------------- events

    def emit(self, action: str, rec: ContainerRecord, extra: dict[str, str] | None = None) -> None:
        """A container event (`create`, `start`, `exec_die`, …) to the sink, in dockerd's form."""
        if self._events is None:
            return
        attrs = event_attrs(rec, extra)
        try:
            self._events("container", action, rec.id, attrs)
        except Exception:  # an observer's bug must not break the lifecycle
            log.exception("event sink failed")
