"""What the attack tests and bench/attacks.py share: a loop device holding a marker (a host
disk whose read is recognisable and harmless), hostile tar entries, crafted images and save
archives, and commands run as an unprivileged host user."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import secrets
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

from tests.tarballs import Entry, tar_of_entries


@dataclass
class Loop:
    path: str
    major: int
    minor: int
    marker: str


@contextlib.contextmanager
def loop_device() -> Iterator[Loop]:
    """A loop device over a temp file that starts with a random marker; detached after.
    Raises OSError or CalledProcessError when no loop device can be set up."""
    marker = f"FLT-DEVICE-MARKER-{secrets.token_hex(8)}"
    fd, backing = tempfile.mkstemp(prefix="flt-loop-")
    dev = ""
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(marker.encode().ljust(1 << 20, b"\0"))
        dev = subprocess.run(
            ["losetup", "-f", "--show", backing], check=True, capture_output=True, text=True
        ).stdout.strip()
        st = os.stat(dev)
        yield Loop(dev, os.major(st.st_rdev), os.minor(st.st_rdev), marker)
    finally:
        if dev:
            subprocess.run(["losetup", "-d", dev], check=False)
        os.unlink(backing)


def tar_info(
    name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "", mode: int = 0o644
) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.linkname = linkname
    info.mtime = 1_700_000_000
    return info


def dev_node(
    name: str, major: int, minor: int, kind: bytes = tarfile.CHRTYPE, mode: int = 0o666
) -> tarfile.TarInfo:
    info = tar_info(name, kind, mode=mode)
    info.devmajor, info.devminor = major, minor
    return info


def save_archive(
    layer: bytes,
    extra: list[Entry] | None = None,
    tag: str = "evil:1",
    config: dict[str, object] | None = None,
) -> bytes:
    """A `docker save` archive of one image with this one layer; `extra`: more entries before
    the manifest (the outer archive's own attacks); `config`: the image's Config section."""
    diff = "sha256:" + hashlib.sha256(layer).hexdigest()
    doc: dict[str, object] = {
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [diff]},
    }
    if config is not None:
        doc["config"] = config
    manifest = json.dumps([{"Config": "c.json", "RepoTags": [tag], "Layers": ["l/layer.tar"]}])
    return tar_of_entries(
        [
            *(extra or []),
            (tar_info("manifest.json"), manifest.encode()),
            (tar_info("c.json"), json.dumps(doc).encode()),
            (tar_info("l/layer.tar"), layer),
        ]
    )


def crafted_rootfs(
    busybox_tar: str,
    links: dict[str, str] | None = None,
    dirs: tuple[str, ...] = (),
    files: dict[str, tuple[bytes, int]] | None = None,
    drop: tuple[str, ...] = (),
    extra: list[Entry] | None = None,
) -> bytes:
    """busybox without the entries under `drop`, plus symlinks (name → text), directories,
    files (name → (content, mode)) and any other entries."""
    links, files = links or {}, files or {}
    out = io.BytesIO()
    with tarfile.open(busybox_tar) as src, tarfile.open(fileobj=out, mode="w") as tar:
        for member in src:
            name = member.name.lstrip("./")
            if any(name == d or name.startswith(d + "/") for d in drop):
                continue
            if name in links or name in files:
                continue
            tar.addfile(member, src.extractfile(member) if member.isfile() else None)
        for name in dirs:
            tar.addfile(tar_info(name, tarfile.DIRTYPE, mode=0o755))
        for name, target in links.items():
            tar.addfile(tar_info(name, tarfile.SYMTYPE, target))
        for name, (data, mode) in files.items():
            info = tar_info(name, mode=mode)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for entry in extra or []:
            info, data = entry if isinstance(entry, tuple) else (entry, None)
            if data is not None:
                info.size = len(data)
            tar.addfile(info, None if data is None else io.BytesIO(data))
    return out.getvalue()


def relative_to_host(path: str) -> str:
    """A relative symlink text that climbs out of any rootfs to the host's `path`."""
    return "../" * 40 + path.lstrip("/")


def host_tree(path: str) -> list[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(path):
        found += [os.path.relpath(os.path.join(dirpath, n), path) for n in dirnames + filenames]
    return sorted(found)


def as_nobody(command: str) -> subprocess.CompletedProcess[str]:
    # su, not setpriv: setpriv keeps root's capabilities until the exec, so its own lookup of
    # the program passes any directory mode.
    cmd = ["su", "nobody", "-s", "/bin/sh", "-c", command]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30)


# The cp race's container: /d (holding `secret_name`) swapped for a link to "/" in a loop, so
# a copy resolved on the host side follows the link to the host's "/". `rm -rf`: a put that
# met no /d may have made one; the swap must go on all the same. `wait`: shell words run first
# (the e2e test lets one put and one get through untouched before it starts the swap).
def swap_script(secret_name: str, wait: str = "") -> str:
    return (
        f"mkdir /d; echo CONTAINER > /d/{secret_name}; {wait}"
        "while true; do mv /d /d.tmp; ln -s / /d; rm -rf /d; mv /d.tmp /d; done"
    )
