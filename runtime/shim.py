"""Python side of flotilla-shim: build it, write its spec, start it, talk to its attach socket.

The shim itself (runtime/shim/*.c) is one small C supervisor per container or exec; see
docs/shim-protocol.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import hashlib
import os
import subprocess
import tempfile
from collections.abc import Iterator

from proto.docker.errors import DockerError
from runtime.fileio import read_json, write_atomic

SHIM_SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "shim")
DEFAULT_CACHE = "/var/lib/flotilla/cache"
# Longest path that fits sockaddr_un.sun_path with its terminating NUL.
_SUN_PATH_MAX = 107

_built: dict[str, str] = {}


class ShimStartError(DockerError):
    """The container process could not be started; `message` is runc's inner wording."""

    def __init__(self, message: str, exit_code: int) -> None:
        # dockerd answers 400 for a command that can't be found or run, 500 otherwise.
        super().__init__(message, 400 if exit_code in (126, 127) else 500)
        self.exit_code = exit_code


def _sources() -> list[str]:
    return sorted(
        glob.glob(os.path.join(SHIM_SRC, "*.c")) + glob.glob(os.path.join(SHIM_SRC, "*.h"))
    )


def _source_hash() -> str:
    h = hashlib.sha256()
    for path in _sources():
        h.update(os.path.basename(path).encode() + b"\0")
        with open(path, "rb") as f:
            h.update(f.read())
        h.update(b"\0")
    return h.hexdigest()[:12]


def shim_binary() -> str:
    """Path of the compiled shim, building it into the cache on first use."""
    cache = os.environ.get("FLOTILLA_CACHE") or DEFAULT_CACHE
    cached = _built.get(cache)
    if cached and os.path.exists(cached):
        return cached
    path = os.path.join(cache, f"flotilla-shim-{_source_hash()}")
    if not os.path.exists(path):
        os.makedirs(cache, exist_ok=True)
        # Compile to a private name and rename, so concurrent builders never see half a binary.
        fd, tmp = tempfile.mkstemp(prefix=".flotilla-shim-", dir=cache)
        os.close(fd)
        try:
            sources = [p for p in _sources() if p.endswith(".c")]
            subprocess.run(
                ["cc", "-O2", "-Wall", "-o", tmp, *sources, "-lseccomp"],
                check=True,
                capture_output=True,
            )
            os.chmod(tmp, 0o755)
            os.rename(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    _built[cache] = path
    return path


def write_spec(path: str, records: list[tuple[str, str]]) -> None:
    """Write shim spec records as `key=value\\0` in order (repeated keys make lists)."""
    out = bytearray()
    for key, value in records:
        if "=" in key or "\0" in key or "\0" in value:
            raise ValueError(f"invalid shim spec record {key!r}")
        out += f"{key}={value}\0".encode()
    write_atomic(path, bytes(out))


def read_spec(path: str) -> list[tuple[str, str]]:
    with open(path, "rb") as f:
        data = f.read()
    records = []
    for rec in data.split(b"\0"):
        key, sep, value = rec.decode().partition("=")
        if sep:
            records.append((key, value))
    return records


def read_exit(path: str) -> dict | None:
    """The shim's exit.json (`exit_code`, `signal`, `finished_at`, `oom`), or None if running."""
    return read_json(path, None)


def read_pid(path: str) -> int:
    """A pid file the shim wrote (`init.pid`), or 0 when it is missing or unreadable."""
    try:
        with open(path) as f:
            return int(f.read().strip() or 0)
    except (OSError, ValueError):
        return 0


async def start_shim(dir: str) -> int:
    """Start the shim for `<dir>/spec`; return its pid once the process has exec'd.

    Stale `start-error.json` and exit files from a previous run are removed first.
    """
    for stale in [os.path.join(dir, "start-error.json")] + [
        v for k, v in read_spec(os.path.join(dir, "spec")) if k == "exit_path"
    ]:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(stale)
    proc = await asyncio.create_subprocess_exec(
        shim_binary(),
        dir,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    rc = await proc.wait()
    if rc != 0:
        err = read_json(os.path.join(dir, "start-error.json"), None)
        if err is None:
            raise ShimStartError(f"flotilla-shim exited with status {rc}", 128)
        raise ShimStartError(str(err.get("message", "")), int(err.get("exit_code", 128)))
    with open(os.path.join(dir, "shim.pid")) as f:
        return int(f.read().strip())


async def wait_pid(pid: int) -> None:
    """Wait until a process (not necessarily our child, e.g. a shim) has exited."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    loop.add_reader(fd, lambda: done.done() or done.set_result(None))
    try:
        await done
    finally:
        loop.remove_reader(fd)
        os.close(fd)


@contextlib.contextmanager
def _short_path(path: str) -> Iterator[str]:
    """A connectable name for a socket whose path is too long for sockaddr_un."""
    if len(path.encode()) <= _SUN_PATH_MAX:
        yield path
        return
    dirfd = os.open(os.path.dirname(path) or "/", os.O_PATH | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{dirfd}/{os.path.basename(path)}"
    finally:
        os.close(dirfd)


async def _connect(sock_path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    with _short_path(sock_path) as p:
        return await asyncio.open_unix_connection(p)


async def open_attach(
    sock_path: str, stdin: bool, stdout: bool, stderr: bool
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Attach to a shim: the reader yields raw (tty) or multiplexed output until the process
    exits; bytes written go to its stdin; `writer.write_eof()` is the client half-close."""
    reader, writer = await _connect(sock_path)
    writer.write(f"attach {int(stdin)} {int(stdout)} {int(stderr)}\n".encode())
    await writer.drain()
    return reader, writer


async def _command(sock_path: str, line: str) -> None:
    reader, writer = await _connect(sock_path)
    try:
        writer.write(line.encode())
        await writer.drain()
        await reader.read()  # the shim closes once the command is done
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def resize(sock_path: str, rows: int, cols: int) -> None:
    """Set the pty window size of a tty container or exec."""
    await _command(sock_path, f"resize {int(rows)} {int(cols)}\n")


async def send_signal(sock_path: str, signum: int) -> None:
    """Have the shim signal its process (the runtime may also signal the pid directly)."""
    await _command(sock_path, f"signal {int(signum)}\n")


def demux(data: bytes) -> list[tuple[int, bytes]]:
    """Split Docker multiplexed-stream bytes into (stream, payload) frames."""
    frames = []
    off = 0
    while off + 8 <= len(data):
        size = int.from_bytes(data[off + 4 : off + 8], "big")
        frames.append((data[off], data[off + 8 : off + 8 + size]))
        off += 8 + size
    return frames
