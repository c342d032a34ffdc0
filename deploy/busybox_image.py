"""Build a small busybox root filesystem tarball from Debian's `busybox-static`.

Tests and the dev cluster need an image without Docker Hub; this makes one from the
static binary on the machine, shaped like Docker Hub's busybox (applets as links,
/etc/passwd and /etc/group with the usual accounts).
"""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
import time

BUSYBOX = "/bin/busybox"

PASSWD = """root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
sys:x:3:3:sys:/dev:/bin/false
sync:x:4:100:sync:/bin:/bin/sync
mail:x:8:8:mail:/var/spool/mail:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
operator:x:37:37:Operator:/var:/bin/false
nobody:x:65534:65534:nobody:/home:/bin/false
"""

GROUP = """root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
adm:x:4:
tty:x:5:
disk:x:6:
wheel:x:10:root
mail:x:8:
www-data:x:33:
operator:x:37:
users:x:100:
nogroup:x:65533:
nobody:x:65534:
"""


def _applets() -> list[str]:
    out = subprocess.run([BUSYBOX, "--list"], check=True, capture_output=True, text=True).stdout
    return sorted({a for a in out.split() if a and a != "busybox"})


def build_rootfs_tar(path: str) -> str:
    """Write an uncompressed rootfs tarball to `path` and return it."""
    if not os.path.exists(BUSYBOX):
        raise FileNotFoundError(f"{BUSYBOX} missing: apt-get install busybox-static")
    now = int(time.time())

    def dir_entry(name: str, mode: int = 0o755) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.type = tarfile.DIRTYPE
        info.mode = mode
        info.mtime = now
        return info

    def file_entry(name: str, data: bytes, mode: int = 0o644) -> tuple[tarfile.TarInfo, io.BytesIO]:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mode = mode
        info.mtime = now
        return info, io.BytesIO(data)

    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for d in (
            "bin",
            "dev",
            "etc",
            "home",
            "proc",
            "root",
            "sys",
            "usr",
            "usr/sbin",
            "var",
            "var/spool",
            "var/spool/mail",
            "var/www",
        ):
            tar.addfile(dir_entry(d, 0o700 if d == "root" else 0o755))
        tar.addfile(dir_entry("tmp", 0o1777))
        with open(BUSYBOX, "rb") as f:
            data = f.read()
        info, body = file_entry("bin/busybox", data, 0o755)
        tar.addfile(info, body)
        for applet in _applets():
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type = tarfile.LNKTYPE
            link.linkname = "bin/busybox"
            link.mode = 0o755  # the target's mode: dockerd applies a hard link's mode to it
            link.mtime = now
            tar.addfile(link)
        for name, text in (("etc/passwd", PASSWD), ("etc/group", GROUP)):
            info, body = file_entry(name, text.encode())
            tar.addfile(info, body)
    return path


if __name__ == "__main__":
    import sys

    print(build_rootfs_tar(sys.argv[1] if len(sys.argv) > 1 else "busybox-rootfs.tar"))
