"""`docker exec`: the exec instances of the running containers.

Each exec runs under its own `flotilla-shim` (`<bundle>/execs/<exec-id>/`) in the container's
namespaces and cgroups, with the container's user, working dir and environment unless the exec
body overrides them. Instances live in memory only, as dockerd's do. A health probe's exec
(`probe=True`, runtime/health.py) stays out of `ExecIDs` and is forgotten when it ends.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from proto.docker.errors import Conflict, DockerError, InvalidParameter, NotFound
from runtime import config as cfg
from runtime import launch, shim
from runtime.config_caps import effective_caps
from runtime.security import parse_security_opts

if TYPE_CHECKING:
    from runtime.containers import Runtime


@dataclass
class ExecRecord:
    """One exec instance: what to run, how it is attached, and its state once started."""

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
    probe: bool = False  # a health check's: not in ExecIDs, forgotten when it ends


class Execs:
    """The exec instances of one runtime, kept in memory as dockerd keeps them."""

    def __init__(self, rt: Runtime) -> None:
        self._rt = rt
        self._records: dict[str, ExecRecord] = {}

    def create(self, ref: str, body: dict[str, Any], probe: bool = False) -> str:
        """`probe`: a health check's exec (runtime/health.py), dropped once it has ended."""
        rec = self._rt.get(ref)
        if not rec.running:
            raise Conflict(f"Container {rec.id} is not running")
        if rec.status == "paused":
            raise Conflict(f"Container {rec.id} is paused, unpause the container before exec")
        cmd = body.get("Cmd") or []
        if isinstance(cmd, str):
            cmd = [cmd]
        if not cmd:
            raise InvalidParameter("No exec command specified")
        spec = self._rt.spec(rec)
        eid = secrets.token_hex(32)
        env = cfg.replace_or_append_env(
            cfg.process_env(spec, spec.hostname), list(body.get("Env") or [])
        )
        self._records[eid] = ExecRecord(
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
            probe=probe,
        )
        if not probe:
            rec.exec_ids.append(eid)
        self._rt.emit(f"exec_create: {exec_command(cmd)}", rec, {"execID": eid})
        return eid

    def get(self, eid: str) -> ExecRecord:
        ex = self._records.get(eid)
        if ex is None:
            raise NotFound(f"No such exec instance: {eid}")
        return ex

    async def start(
        self, eid: str, detach: bool = False
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        ex = self.get(eid)
        if ex.running or ex.exit_code is not None:
            raise Conflict(f"Error: Exec command {eid} is already running")
        rec = self._rt.get(ex.container_id)
        if not rec.running:
            raise Conflict(f"Container {rec.id} is not running")
        spec = self._rt.spec(rec)
        hc = spec.host_config
        exec_dir = os.path.join(self._rt.paths.container(rec.id), "execs", eid)
        os.makedirs(exec_dir, exist_ok=True)
        caps = effective_caps(hc.cap_add, hc.cap_drop, hc.privileged or ex.privileged)
        cgroup_dirs = self._rt.cgroups.dirs(rec.id)
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
            # runc runs an exec under the container's own no_new_privs and seccomp filter.
            parse_security_opts(hc.security_opt).no_new_privileges,
            _seccomp_rules(self._rt.paths.container(rec.id)),
        )
        shim.write_spec(os.path.join(exec_dir, "spec"), records)
        try:
            shim_pid = await shim.start_shim(exec_dir)
        except shim.ShimStartError as err:
            ex.exit_code = err.exit_code
            ex.done.set()
            self._forget_probe(ex)
            message = (
                "OCI runtime exec failed: exec failed: unable to start container process: "
                f"{err.message}: unknown"
            )
            raise DockerError(message, 500 if err.exit_code not in (126, 127) else 400) from None
        ex.running = True
        ex.pid = shim.read_pid(os.path.join(exec_dir, "init.pid"))
        self._rt.emit(f"exec_start: {exec_command(ex.args)}", rec, {"execID": eid})
        loop = asyncio.get_running_loop()
        pidfd = os.pidfd_open(shim_pid)

        def done() -> None:
            loop.remove_reader(pidfd)
            os.close(pidfd)
            info = shim.read_exit(os.path.join(exec_dir, "exit.json"))
            ex.exit_code = int(info["exit_code"]) if info else 126
            ex.running = False
            ex.done.set()
            self._rt.emit("exec_die", rec, {"execID": eid, "exitCode": str(ex.exit_code)})
            self._forget_probe(ex)

        loop.add_reader(pidfd, done)
        sock = os.path.join(exec_dir, "attach.sock")
        streams = await shim.open_attach(
            sock, ex.attach_stdin, ex.attach_stdout or detach, ex.attach_stderr or detach
        )
        if detach:
            streams[1].close()
            return None
        return streams

    def _forget_probe(self, ex: ExecRecord) -> None:
        if ex.probe:
            self._records.pop(ex.id, None)
            exec_dir = os.path.join(self._rt.paths.container(ex.container_id), "execs", ex.id)
            shutil.rmtree(exec_dir, ignore_errors=True)

    async def resize(self, eid: str, height: int, width: int) -> None:
        ex = self.get(eid)
        rec = self._rt.get(ex.container_id)
        sock = os.path.join(self._rt.paths.container(rec.id), "execs", eid, "attach.sock")
        await shim.resize(sock, height, width)


def exec_command(args: list[str]) -> str:
    """How dockerd names an exec in its events: entrypoint, a space, the arguments."""
    return f"{args[0]} {' '.join(args[1:])}"


def _seccomp_rules(bundle: str) -> str:
    """The rule file the container's start compiled, if it runs confined."""
    path = os.path.join(bundle, "seccomp")
    return path if os.path.exists(path) else ""
