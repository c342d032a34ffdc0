"""Persistent network namespaces, bind-mounted on a file like `ip netns add` does.

The agent is multi-threaded and must never fork just to make a namespace, so a short-lived
thread unshares its own network namespace (only that thread moves) and the namespace is pinned
by bind-mounting the thread's ns file. Work that must happen inside a namespace runs the same
way: on a throwaway thread that `setns()` into it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading
from collections.abc import Callable
from typing import TypeVar

from runtime import mounts

T = TypeVar("T")

CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(None, use_errno=True)
_libc.unshare.argtypes = [ctypes.c_int]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _run_in_thread(fn: Callable[[], T]) -> T:
    """Run `fn` on a fresh thread so namespace changes die with that thread."""
    result: list[T] = []
    failure: list[BaseException] = []

    def body() -> None:
        try:
            result.append(fn())
        except BaseException as exc:  # re-raised in the caller's thread
            failure.append(exc)

    t = threading.Thread(target=body, name="flotilla-netns", daemon=True)
    t.start()
    t.join()
    if failure:
        raise failure[0]
    return result[0]


def create_netns(path: str) -> None:
    """Create a new empty network namespace and pin it at `path`."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0o444)
    os.close(fd)

    def body() -> None:
        _check(_libc.unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")
        src = f"/proc/self/task/{threading.get_native_id()}/ns/net"
        mounts.mount(src, path, flags=mounts.MS_BIND)

    try:
        _run_in_thread(body)
    except BaseException:
        _remove_file(path)
        raise


def _remove_file(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def delete_netns(path: str) -> None:
    """Unpin and remove a namespace file; missing or already unmounted is fine."""
    mounts.unmount(path)  # not pinned any more, or already gone: fine
    _remove_file(path)


def enter_netns(path: str) -> None:
    """Move the calling thread into the namespace at `path` (also usable as preexec_fn)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        _check(_libc.setns(fd, CLONE_NEWNET), f"setns {path}")
    finally:
        os.close(fd)


def run_in_netns(path: str, fn: Callable[[], T]) -> T:
    """Call `fn` on a throwaway thread that lives inside the namespace at `path`.

    Sockets (including netlink) opened by `fn` stay bound to that namespace after it returns.
    """

    def body() -> T:
        enter_netns(path)
        return fn()

    return _run_in_thread(body)
