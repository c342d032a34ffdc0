"""The dev cluster's processes: finding, signalling and starting its agents, manager and etcd.

Every process is recognised by its command line (the node's data root, the discovery URL, the
etcd data dir), not only by the pid in state.json: that pid may be stale or reused.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence

from deploy import etcd
from deploy.dev_certs import MANAGER, dev_tls, ensure_ca, ensure_node
from deploy.dev_layout import (
    AGENT_PORT,
    ETCD_PORT,
    FENCE_GUARD,
    HEARTBEAT,
    HOST_IP,
    MANAGER_ADDR,
    MANAGER_METRICS,
    MANAGER_SOCKET,
    METRICS_PORT,
    NETNS_DIR,
    PREFIX,
    REGISTRY_CERTS,
    REPO,
    ROOT,
    TTL,
    DevError,
    discovery_url,
    docker_host,
    etcd_endpoint,
    load_state,
    log_path,
    log_tail,
    node_index,
    node_ip,
    node_name,
    save_state,
)

# --------------------------------------------------------------------------- any process


def proc_state(pid: int) -> str | None:
    """The one-letter state from /proc/<pid>/stat (R, S, T, Z…), None if gone; reaps zombies."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return None


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def alive(pid: int) -> bool:
    return proc_state(pid) not in (None, "Z", "X")


def send_signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def kill_all(victims: Iterable[int], grace: float = 5.0) -> None:
    """SIGTERM (and SIGCONT, for frozen ones) then SIGKILL what is left after `grace`."""
    victims = [p for p in victims if p != os.getpid() and alive(p)]
    for p in victims:
        send_signal(p, signal.SIGTERM)
        send_signal(p, signal.SIGCONT)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(alive(p) for p in victims):
        time.sleep(0.05)
    for p in victims:
        if alive(p):
            send_signal(p, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(alive(p) for p in victims):
        time.sleep(0.02)


def wait_gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _spawn(cmd: list[str], log_name: str) -> subprocess.Popen[bytes]:
    """Start one flotilla process of the cluster in its own session, logging to `log_name`."""
    env = dict(os.environ)
    # The process must import this checkout even when it is not pip-installed.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    with open(log_path(log_name), "ab") as log:
        return subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            cwd=REPO,
            env=env,
            start_new_session=True,
            close_fds=True,
        )


# --------------------------------------------------------------------------- agents


def agent_command(i: int, labels: dict[str, str]) -> list[str]:
    name = node_name(i)
    cmd = [
        "nsenter",
        f"--net={NETNS_DIR}/{name}",
        sys.executable,
        "-m",
        "deploy.cli",
        "join",
        "--etcd",
        f"{HOST_IP}:{ETCD_PORT}",
        "--advertise",
        f"{node_ip(i)}:{AGENT_PORT}",
        "--name",
        name,
        "--data-root",
        os.path.join(ROOT, name),
        "--heartbeat",
        HEARTBEAT,
        "--ttl",
        TTL,
        "--fence-guard",
        FENCE_GUARD,
        "--metrics",
        f"{node_ip(i)}:{METRICS_PORT}",
        "--allow-drills",  # `flotilla drill --rpc` exercises the agent's own Drill RPC here
        "--registry-certs-dir",
        REGISTRY_CERTS,
        *_tls_flags(name),
    ]
    for k, v in sorted(labels.items()):
        cmd += ["--label", f"{k}={v}"]
    return cmd


def _tls_flags(name: str, prefix: str = "--") -> list[str]:
    tls = dev_tls(name)
    return [f"{prefix}tlscacert", tls.ca, f"{prefix}tlscert", tls.cert, f"{prefix}tlskey", tls.key]


def spawn_agent(name: str, cmd: list[str]) -> int:
    os.makedirs(os.path.join(ROOT, name), exist_ok=True)
    ensure_node(name)
    # nsenter execs the interpreter in place, so this pid is the agent's.
    return _spawn(cmd, name).pid


def _is_agent(pid: int, name: str) -> bool:
    """Guards against pid reuse: the pid must still be node `name`'s agent."""
    args = cmdline(pid)
    return "join" in args and os.path.join(ROOT, name) in args


def agent_pid(name: str, state: dict | None = None) -> int | None:
    """The running agent of `name`: from the state file, else by scanning /proc."""
    state = load_state() if state is None else state
    pid = state.get("nodes", {}).get(name, {}).get("pid")
    if isinstance(pid, int) and alive(pid) and _is_agent(pid, name):
        return pid
    for p in pids():
        if _is_agent(p, name) and alive(p) and "nsenter" not in (cmdline(p) or [""])[0]:
            return p
    return None


def any_agent_pids() -> set[int]:
    """Every dev agent by its command line, whatever node it was started for."""
    out: set[int] = set()
    for p in pids():
        args = cmdline(p)
        if "join" in args and any(a.startswith(ROOT + "/node-") for a in args):
            out.add(p)
    return out


async def _registered_async(endpoints: list[str]) -> dict[str, object]:
    from proto.nodes import list_nodes

    return {n.name: n for n in await list_nodes(endpoints, PREFIX)}


def registered(timeout: float = 5.0) -> dict[str, object]:
    """Node records in the dev etcd, by node name ({} when etcd is unreachable)."""
    import proto.nodes  # noqa: F401 - a missing module is a bug, not "nothing registered"

    async def go() -> dict[str, object]:
        return await asyncio.wait_for(_registered_async([etcd_endpoint()]), timeout)

    try:
        return asyncio.run(go())
    except Exception:
        return {}


def wait_registered(
    names: Iterable[str], timeout: float = 30.0, since_ns: int = 0
) -> dict[str, object]:
    """Wait until every node in `names` has a record in etcd; raise DevError with log tails.

    With `since_ns`, only records of agents started after it count: a killed agent's record
    stays until its lease runs out, and must not be mistaken for its successor's.
    """
    want = set(names)
    deadline = time.monotonic() + timeout
    while True:
        nodes = {
            name: rec
            for name, rec in registered().items()
            if int(getattr(rec, "started_at_ns", 0)) >= since_ns
        }
        if want <= nodes.keys():
            return nodes
        dead = sorted(n for n in want - nodes.keys() if agent_pid(n) is None)
        if dead:
            tails = "\n".join(f"--- {n}.log\n{log_tail(n)}" for n in dead)
            raise DevError(f"agent exited before registering: {', '.join(dead)}\n{tails}")
        if time.monotonic() > deadline:
            missing = sorted(want - nodes.keys(), key=node_index)
            tails = "\n".join(f"--- {n}.log\n{log_tail(n)}" for n in missing)
            raise DevError(f"not registered after {timeout:.0f}s: {', '.join(missing)}\n{tails}")
        time.sleep(0.2)


def wait_unregistered(name: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while name in registered():
        if time.monotonic() > deadline:
            raise DevError(f"{name} still registered after {timeout:.0f}s")
        time.sleep(0.2)


# --------------------------------------------------------------------------- manager


def manager_command(manager_args: Sequence[str] = ()) -> list[str]:
    """`flotilla manage` for the dev cluster; `manager_args`: more flags (`--strategy binpack`).

    `sys.executable`: the interpreter flotilla runs in (its venv's, see deploy/setup.sh)."""
    cli = [sys.executable, "-m", "deploy.cli", "manage", discovery_url(), "-H", docker_host()]
    metrics = [] if "--metrics" in manager_args else ["--metrics", MANAGER_METRICS]
    # The agents' mutual TLS; the Engine API itself stays plain on loopback and the socket.
    tls = [] if "--node-tlscert" in manager_args else _tls_flags(MANAGER, "--node-")
    return [*cli, "-H", f"unix://{MANAGER_SOCKET}", *metrics, *tls, *manager_args]


def _is_manager(pid: int) -> bool:
    args = cmdline(pid)
    return "deploy.cli" in args and "manage" in args and discovery_url() in args


def manager_pids(state: dict | None = None) -> set[int]:
    state = load_state() if state is None else state
    found = {p for p in pids() if _is_manager(p)}
    pid = state.get("manager", {}).get("pid")
    if isinstance(pid, int) and _is_manager(pid):
        found.add(pid)
    return {p for p in found if alive(p)}


def start_manager(manager_args: Sequence[str] = (), timeout: float = 30.0) -> int:
    """Start `flotilla manage` on 127.0.0.1:2375 in this netns; wait until it answers /_ping.

    `manager_args`: more `flotilla manage` flags, e.g. ["--strategy", "binpack"]."""
    ensure_ca()
    proc = _spawn(manager_command(manager_args), "manager")
    state = load_state()
    state["manager"] = {"pid": proc.pid, "addr": MANAGER_ADDR, "args": list(manager_args)}
    save_state(state)
    deadline = time.monotonic() + timeout
    while not manager_healthy():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise DevError(
                f"manager did not come up on {MANAGER_ADDR}\n--- manager.log\n{log_tail('manager')}"
            )
        time.sleep(0.1)
    return proc.pid


def manager_healthy(timeout: float = 1.0) -> bool:
    import http.client

    host, _, port = MANAGER_ADDR.rpartition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request("GET", "/_ping")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def stop_manager() -> None:
    kill_all(manager_pids())


def kill_manager() -> None:
    """SIGKILL the manager, as a crash: nothing of it is shut down cleanly."""
    victims = manager_pids()
    for pid in victims:
        send_signal(pid, signal.SIGKILL)
    for pid in victims:
        wait_gone(pid)


def restart_manager(timeout: float = 30.0) -> int:
    """Start the manager again with the flags `dev up` gave it (state.json)."""
    return start_manager(load_state().get("manager", {}).get("args", []), timeout=timeout)


# --------------------------------------------------------------------------- etcd

# Every status change is a put, so 30,000 containers leave a long revision history: etcd keeps
# only the last 5 minutes of it (a manager or agent watching from an older revision lists again
# anyway). Compaction frees pages for reuse; the file shrinks only with a defrag.
ETCD_COMPACTION = ["--auto-compaction-mode", "periodic", "--auto-compaction-retention", "5m"]


def is_dev_etcd(pid: int) -> bool:
    args = cmdline(pid)
    return bool(args) and os.path.basename(args[0]) == "etcd" and os.path.join(ROOT, "etcd") in args


def etcd_pids() -> set[int]:
    found = {p for p in pids() if is_dev_etcd(p)}
    pid = load_state().get("etcd", {}).get("pid")
    if isinstance(pid, int) and is_dev_etcd(pid):
        found.add(pid)
    return {p for p in found if alive(p)}


def start_etcd(timeout: float = 20.0) -> None:
    """Start the dev etcd (its data dir survives stop_etcd, so registrations can recover)."""
    if etcd_pids():
        return
    url = f"http://{etcd_endpoint()}"
    if etcd.healthy(url):
        raise DevError(f"another etcd already serves {url} (Debian's service? systemctl stop etcd)")
    proc = etcd.launch(
        os.path.join(ROOT, "etcd"),
        [f"http://127.0.0.1:{ETCD_PORT}", f"http://{HOST_IP}:{ETCD_PORT}"],
        "http://127.0.0.1:2380",
        log_path("etcd"),
        extra_args=ETCD_COMPACTION,
    )
    state = load_state()
    state["etcd"] = {"pid": proc.pid}
    save_state(state)
    try:
        etcd.wait_healthy(url, timeout, proc)
    except (RuntimeError, TimeoutError) as e:
        raise DevError(f"{e}\n--- etcd.log\n{log_tail('etcd', 10)}") from e


def stop_etcd() -> None:
    """Stop the dev etcd, for outage drills (the agents keep running and must re-register)."""
    kill_all(etcd_pids())
