"""A hollow node's runtime: containers kept in memory only, as Kubernetes' kubemark does.

`HollowRuntime` answers what the agent (its gRPC service, status reporter and registration)
asks of `runtime.containers.Runtime`: create, start, stop, kill, restart, pause, unpause,
remove, rename, update, wait, inspect, list, logs, attach, and images (runtime/hollow_images.py).
Containers have no processes, namespaces, cgroups or files; their life is simulated:

- a started container runs until it is stopped or killed, except the commands whose end is
  known without running them: `true` (exit 0), `false` (exit 1), `exit N` (through `sh -c`)
  and `sleep N` (exit 0 after N seconds);
- a signal whose default action ends a process ends it at once with 128 + signal (the virtual
  process has no handlers); others do nothing;
- restart policies and --rm apply as on a real node (runtime/restart.py decides);
- events (create, start, kill, die, stop, pause, …) go to the sink in dockerd's form, so the
  status records and the node's event stream are those of a real node.

What needs a host answers 501 (`unsupported`): exec, stats, top, archives, export, commit,
volumes, user-defined networks, port publishing on real sockets, pulls, builds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
import signal
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, NoReturn

from proto.docker.errors import Conflict, DockerError, InvalidParameter, NotFound, NotModified
from runtime import config as cfg
from runtime import config_mounts, config_values, names, restart
from runtime.config_network import is_user_defined_network
from runtime.config_types import ContainerSpec
from runtime.hollow_images import HollowImages, unsupported
from runtime.logs import LogEntry
from runtime.paths import DataRoot
from runtime.record import ContainerRecord, NetState, event_attrs, find_record, refuse_removal
from runtime.timefmt import now_ns

log = logging.getLogger(__name__)

EventSink = Callable[[str, str, str, dict[str, str]], None]
HOLLOW_ROOT = "/var/lib/flotilla-hollow"  # shown in paths; nothing is ever made there
BRIDGE_PREFIX = "172.17"
FIRST_HOST_PORT = 32768  # where dockerd's ephemeral host ports start
# Signals whose default action ends a process (signal(7)): the virtual process has no handlers.
TERMINATING = frozenset(
    int(s)
    for s in (
        signal.SIGHUP,
        signal.SIGINT,
        signal.SIGQUIT,
        signal.SIGKILL,
        signal.SIGTERM,
        signal.SIGUSR1,
        signal.SIGUSR2,
        signal.SIGALRM,
        signal.SIGPIPE,
    )
)


class _Unsupported:
    """Stands for a part of the real runtime a hollow node does not have (execs, cgroups,
    volumes): any use is a Docker error, never an AttributeError turned into a 500."""

    def __init__(self, what: str) -> None:
        self._what = what

    def __getattr__(self, name: str) -> NoReturn:
        if name.startswith("_"):
            raise AttributeError(name)
        unsupported(self._what)


class _NoNetworks:
    """A hollow node lists no networks of its own and joins no user-defined network."""

    def views(self, records: Iterable[ContainerRecord], verbose: bool) -> list[dict[str, Any]]:
        return []

    def in_use(self) -> set[str]:
        return set()

    held: dict[str, Any] = {}


def simulated_exit(args: list[str]) -> tuple[float, int] | None:
    """(after how many seconds, with which code) the command ends by itself; None: it runs
    until stopped. Only what is certain without running it: true, false, exit N, sleep N."""
    if len(args) >= 3 and os.path.basename(args[0]) == "sh" and args[1] == "-c":
        args = args[2].split()
    if not args:
        return None
    prog = os.path.basename(args[0])
    if prog == "true" and len(args) == 1:
        return 0.0, 0
    if prog == "false" and len(args) == 1:
        return 0.0, 1
    if prog == "exit" and len(args) <= 2:
        code = args[1] if len(args) == 2 else "0"
        return (0.0, int(code) % 256) if code.isdigit() else None
    if prog == "sleep" and len(args) == 2 and re.fullmatch(r"\d+(\.\d+)?", args[1]):
        return float(args[1]), 0
    return None


class HollowRuntime:
    """All containers of one hollow node, in memory. Call it from one event loop."""

    def __init__(self, node_name: str, events: EventSink | None = None) -> None:
        self.node_name = node_name
        self.paths = DataRoot(os.path.join(HOLLOW_ROOT, node_name))
        self.images = HollowImages()
        self.networks = _NoNetworks()
        self.user_nets = self.networks
        self.execs = _Unsupported("exec")
        self.cgroups = _Unsupported("stats, top and cgroups")
        self.volumes = _Unsupported("volumes")
        self.registries = _Unsupported("pulling images")
        self.deferred_boot: list[str] = []
        self._events = events
        self._records: dict[str, ContainerRecord] = {}
        self._specs: dict[str, tuple[dict[str, Any], ContainerSpec]] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._exit_waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._attached: dict[str, list[asyncio.StreamReader]] = {}
        self._next_pid = 100
        self._next_ip = 2
        self._next_port = FIRST_HOST_PORT

    def __getattr__(self, name: str) -> NoReturn:
        if name.startswith("_"):
            raise AttributeError(name)
        unsupported(name)

    async def open(self) -> None:
        return None  # nothing survives a hollow node: it comes back empty, as after a wipe

    async def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()

    # ----------------------------------------------------------------- lookup and views

    def get(self, ref: str) -> ContainerRecord:
        return find_record(self._records, ref)

    def list(self) -> list[ContainerRecord]:
        return sorted(self._records.values(), key=lambda r: r.created_ns, reverse=True)

    def spec(self, rec: ContainerRecord) -> ContainerSpec:
        cached = self._specs.get(rec.id)
        if cached is not None and cached[0] is rec.body:
            return cached[1]
        spec = cfg.parse_create(rec.body, self.images.config(rec.image_id), rec.id)
        self._specs[rec.id] = (rec.body, spec)
        return spec

    def lowerdirs(self, rec: ContainerRecord) -> list[str]:
        return []

    def log_path(self, rec: ContainerRecord) -> str:
        return os.path.join(self.paths.container(rec.id), f"{rec.id}-json.log")

    def volume_users(self, name: str) -> list[str]:
        return []

    def images_in_use(self, image_id: str) -> list[tuple[str, bool]]:
        return [(r.id, r.running) for r in self._records.values() if r.image_id == image_id]

    def remove_image(self, ref: str, force: bool = False, noprune: bool = False) -> NoReturn:
        unsupported("removing images")

    # ----------------------------------------------------------------- create / remove / rename

    async def create(self, body: dict[str, Any], name: str | None = None) -> ContainerRecord:
        image_ref = body.get("Image") or ""
        if not image_ref:
            raise InvalidParameter("No image specified")
        try:
            image_id = self.images.resolve(image_ref)
        except NotFound:
            shown = image_ref if ":" in image_ref.rsplit("/", 1)[-1] else f"{image_ref}:latest"
            raise NotFound(f"No such image: {shown}") from None
        cid = secrets.token_hex(32)
        spec = cfg.parse_create(body, self.images.config(image_id), cid)  # validates too
        _refuse_host_features(spec)
        rec = ContainerRecord(
            id=cid,
            name=names.claim_name(name, self._records.values()),
            created_ns=now_ns(),
            image_id=image_id,
            image_ref=image_ref,
            body=body,
            net=NetState(mode=spec.host_config.network_mode),
        )
        self._records[cid] = rec
        self._specs[cid] = (body, spec)
        self.emit("create", rec)
        return rec

    async def remove(self, ref: str, force: bool = False, volumes: bool = False) -> None:
        rec = self.get(ref)
        if rec.running or rec.status == "restarting":
            if not force:
                refuse_removal(rec)
            if rec.running:
                await self.kill(rec.id, signal.SIGKILL)
        self._cancel_timer(rec.id)
        if self._records.pop(rec.id, None) is None:
            return  # removed meanwhile (--rm after the kill)
        self._specs.pop(rec.id, None)
        self.emit("destroy", rec)
        self._wake(f"removed:{rec.id}")

    async def rename(self, ref: str, new_name: str) -> None:
        rec = self.get(ref)
        if not new_name:
            raise InvalidParameter("Neither old nor new names may be empty")
        if new_name.lstrip("/") == rec.name:
            raise InvalidParameter("Renaming a container with the same name as its current name")
        old = rec.name
        rec.name = names.claim_name(new_name, self._records.values())
        self.emit("rename", rec, {"oldName": f"/{old}"})

    async def connect(self, ref: str, network: str, endpoint_config: dict[str, Any]) -> NoReturn:
        unsupported("connecting to a network")

    async def disconnect(self, ref: str, network: str, force: bool = False) -> NoReturn:
        unsupported("disconnecting from a network")

    # ----------------------------------------------------------------- start and exit

    async def start(self, ref: str, hold_output: bool = False) -> None:
        rec = self.get(ref)
        if rec.status == "paused":
            raise Conflict("cannot start a paused container, try unpause instead")
        if rec.running:
            raise NotModified("container already started")
        self._cancel_timer(rec.id)
        spec = self.spec(rec)
        self._next_pid += 1
        rec.pid = self._next_pid
        rec.status = "running"
        rec.started_ns = now_ns()
        rec.exit_code = 0
        rec.error = ""
        rec.manually_stopped = False
        rec.has_been_started = True
        self._plug_network(rec, spec)
        self.emit("start", rec)
        ends = simulated_exit(spec.args)
        if ends is not None:
            delay, code = ends
            loop = asyncio.get_running_loop()
            self._timers[rec.id] = loop.call_later(delay, self._exit_soon, rec.id, code)

    def _plug_network(self, rec: ContainerRecord, spec: ContainerSpec) -> None:
        """A bridge address and the published ports, as `inspect` and `ps` show them."""
        net = rec.net
        if net.mode != "bridge":
            return
        if not net.ip:
            n = self._next_ip
            self._next_ip += 1
            high, low = n // 254 % 256, n % 254 + 1
            net.ip, net.prefix = f"{BRIDGE_PREFIX}.{high}.{low}", 16
            net.gateway, net.mac = f"{BRIDGE_PREFIX}.0.1", f"02:42:ac:11:{high:02x}:{low:02x}"
        net.host_veth = f"veth{rec.id[:7]}"
        net.ports = {}
        for port, bindings in spec.host_config.port_bindings.items():
            shown = []
            for b in bindings or [{}]:
                host_port = b.get("HostPort") or ""
                if not host_port:
                    host_port, self._next_port = str(self._next_port), self._next_port + 1
                shown.append({"HostIp": b.get("HostIp") or "0.0.0.0", "HostPort": host_port})
            net.ports[port] = shown

    def _exit_soon(self, cid: str, code: int) -> None:
        self._timers.pop(cid, None)
        asyncio.get_running_loop().create_task(self._exited(cid, code))

    async def _exited(self, cid: str, code: int, by_us: bool = False) -> None:
        """The virtual process ended: record it, tell, then restart or auto-remove."""
        rec = self._records.get(cid)
        if rec is None or not rec.running:
            return
        self._cancel_timer(cid)
        ran_for = (now_ns() - rec.started_ns) / 1e9
        rec.exit_code = code
        rec.finished_ns = now_ns()
        rec.pid = 0
        rec.status = "exited"
        rec.net.host_veth = ""
        rec.net.ports = {}
        policy, retries = _policy(rec)
        decision = restart.decide(
            policy,
            retries,
            code,
            rec.restart_count,
            rec.manually_stopped or by_us,
            ran_for,
            rec.last_delay_s,
        )
        if decision.restart:
            rec.status = "restarting"
            rec.last_delay_s = decision.delay_s
        self.emit("die", rec, {"exitCode": str(code)})
        for reader in self._attached.pop(cid, []):
            reader.feed_eof()
        self._wake(cid)
        if decision.restart:
            loop = asyncio.get_running_loop()
            self._timers[cid] = loop.call_later(decision.delay_s, self._restart_soon, cid)
        elif self.spec(rec).host_config.auto_remove and not by_us:
            with contextlib.suppress(DockerError):
                await self.remove(cid, force=True)

    def _restart_soon(self, cid: str) -> None:
        self._timers.pop(cid, None)
        rec = self._records.get(cid)
        if rec is None or rec.status != "restarting":
            return
        rec.restart_count += 1
        rec.status = "exited"  # start() refuses a container it thinks runs
        asyncio.get_running_loop().create_task(self.start(cid))

    def _cancel_timer(self, cid: str) -> None:
        timer = self._timers.pop(cid, None)
        if timer is not None:
            timer.cancel()

    def _wake(self, key: str) -> None:
        for fut in self._exit_waiters.pop(key, []):
            if not fut.done():
                fut.set_result(None)

    # ----------------------------------------------------------------- signals

    async def kill(self, ref: str, sig: int | str = signal.SIGKILL, manual: bool = True) -> None:
        rec = self.get(ref)
        signum = config_values.parse_signal(str(sig)) if isinstance(sig, str) else int(sig)
        if rec.status == "restarting":
            self._cancel_timer(rec.id)
            rec.status = "exited"
            rec.manually_stopped = True
            return
        if not rec.running:
            raise Conflict(f"Container {rec.id} is not running")
        if manual and signum in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT):
            rec.manually_stopped = True
        self.emit("kill", rec, {"signal": str(signum)})
        if signum in TERMINATING:
            # As runtime/containers.py: a manual TERM/INT/KILL is a stop (no restart, no --rm).
            by_us = manual and signum in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT)
            await self._exited(rec.id, 128 + signum, by_us=by_us)

    async def stop(self, ref: str, timeout: float | None = None) -> None:
        rec = self.get(ref)
        if rec.status == "restarting":
            await self.kill(rec.id)
            return
        if not rec.running:
            raise NotModified("container already stopped")
        rec.manually_stopped = True
        signum = self.spec(rec).stop_signal
        self.emit("kill", rec, {"signal": str(signum)})
        # A stop signal that does not end the process: the SIGKILL after the timeout, at once.
        code = 128 + (signum if signum in TERMINATING else signal.SIGKILL)
        await self._exited(rec.id, code, by_us=True)
        self.emit("stop", rec)

    async def restart(self, ref: str, timeout: float | None = None) -> None:
        rec = self.get(ref)
        if rec.running or rec.status == "restarting":
            await self.stop(rec.id, timeout)
        await self.start(rec.id)
        self.emit("restart", rec)

    async def wait(self, ref: str, condition: str = "not-running") -> dict[str, Any]:
        rec = self.get(ref)
        key = f"removed:{rec.id}" if condition == "removed" else rec.id
        if condition in ("removed", "next-exit") or rec.running or rec.status == "restarting":
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._exit_waiters.setdefault(key, []).append(fut)
            await fut
        return {"StatusCode": rec.exit_code, "Error": None}

    async def pause(self, ref: str) -> None:
        rec = self.get(ref)
        if not rec.running:
            raise Conflict(f"Container {rec.id} is not running")
        if rec.status == "paused":
            raise Conflict(f"Container {rec.id} is already paused")
        rec.status = "paused"
        self.emit("pause", rec)

    async def unpause(self, ref: str) -> None:
        rec = self.get(ref)
        if rec.status != "paused":
            raise Conflict(f"Container {rec.id} is not paused")
        rec.status = "running"
        self.emit("unpause", rec)

    async def update(self, ref: str, resources: dict[str, Any]) -> list[str]:
        rec = self.get(ref)
        hc = dict(rec.body.get("HostConfig") or {})
        for key, value in resources.items():
            if key == "RestartPolicy":
                if value and value.get("Name"):
                    hc[key] = value
            elif value not in (None, 0, "") or key in hc:
                hc[key] = value
        body = dict(rec.body, HostConfig=hc)
        cfg.parse_create(body, self.images.config(rec.image_id), rec.id)  # validates
        rec.body = body
        self.emit("update", rec)
        return []

    # ----------------------------------------------------------------- I/O: none is produced

    async def logs(
        self,
        ref: str,
        stdout: bool = True,
        stderr: bool = True,
        follow: bool = False,
        tail: int | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> AsyncIterator[LogEntry]:
        """A hollow container writes nothing; `follow` ends when it stops, as on a real node."""
        rec = self.get(ref)
        if follow and (rec.running or rec.status == "restarting"):
            with contextlib.suppress(NotFound):
                await self.wait(rec.id)
        for entry in ():
            yield entry

    async def attach(
        self, ref: str, stdin: bool, stdout: bool, stderr: bool
    ) -> tuple[asyncio.StreamReader, _NullWriter]:
        """No output; the stream ends when the container stops. Input is dropped."""
        rec = self.get(ref)
        if not rec.running:
            raise Conflict(f"Container {rec.id} is not running")
        reader = asyncio.StreamReader()
        self._attached.setdefault(rec.id, []).append(reader)
        return reader, _NullWriter()

    async def resize(self, ref: str, height: int, width: int) -> None:
        rec = self.get(ref)
        if not rec.running:
            raise Conflict(f"Container {rec.id} is not running")

    # ----------------------------------------------------------------- events

    def emit(self, action: str, rec: ContainerRecord, extra: dict[str, str] | None = None) -> None:
        if self._events is None:
            return
        try:
            self._events("container", action, rec.id, event_attrs(rec, extra))
        except Exception:  # an observer's bug must not break the lifecycle
            log.exception("event sink failed")


class _NullWriter:
    """The attach input of a hollow container: accepted and dropped."""

    def write(self, data: bytes) -> None:
        return None

    async def drain(self) -> None:
        return None

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        return None

    def close(self) -> None:
        return None

    async def wait_closed(self) -> None:
        return None


def _policy(rec: ContainerRecord) -> tuple[str, int]:
    rp = (rec.body.get("HostConfig") or {}).get("RestartPolicy") or {}
    return rp.get("Name") or "no", int(rp.get("MaximumRetryCount") or 0)


def _refuse_host_features(spec: ContainerSpec) -> None:
    """What a hollow node cannot pretend to have: volumes (no files), user-defined networks
    (no overlay plane), another container's namespaces."""
    mode = spec.host_config.network_mode
    endpoints = spec.networking_config.get("EndpointsConfig") or {}
    if any(is_user_defined_network(n) for n in (mode, *endpoints)):
        unsupported("user-defined networks")
    if mode.startswith("container:"):
        unsupported("joining another container's network")
    if spec.host_config.volumes_from:
        unsupported("--volumes-from")
    if any(m["Type"] == "volume" for m in config_mounts.mounts_of(spec)):
        unsupported("volumes")
