"""bench/attacks.py's attacks on containment: devices, the docker cp race, crafted images,
whiteouts, hostile tar entries and setuid programs through the data root."""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import os
import secrets
import shutil
import subprocess
import tarfile

from bench.attack_support import (
    API,
    PREFIX,
    SUID_SOURCE,
    ControlFailed,
    Host,
    Outcome,
    data_roots,
    docker,
    import_image,
    load_image,
    manager_conn,
    run_out,
)
from tests.attack_kit import (
    Loop,
    as_nobody,
    crafted_rootfs,
    dev_node,
    host_tree,
    relative_to_host,
    save_archive,
    swap_script,
    tar_info,
)
from tests.tarballs import Entry, tar_of_entries

# ----------------------------------------------------------------------------- devices


def _mknod_read(lp: Loop, node: str = "/dev/x") -> str:
    return f"mknod {node} b {lp.major} {lp.minor}; head -c 64 {node} 2>&1; true"


def attack_device_mknod(lp: Loop) -> Outcome:
    out = Outcome("device: mknod + read of a host disk")
    if lp.marker not in run_out("--privileged", "busybox", "sh", "-c", _mknod_read(lp)):
        raise ControlFailed("a privileged container did not read the loop device")
    for flags in ([], ["--cap-add", "ALL"], ["--security-opt", "seccomp=unconfined"]):
        out.tries += 1
        out.escapes += lp.marker in run_out(*flags, "busybox", "sh", "-c", _mknod_read(lp))
    name = f"{PREFIX}dev-exec"
    docker("run", "-d", "--name", name, "busybox", "sleep", "600")
    try:
        out.tries += 1
        res = docker("exec", name, "sh", "-c", _mknod_read(lp, "/tmp/y"), check=False)
        out.escapes += lp.marker in res.stdout + res.stderr
    finally:
        docker("rm", "-f", name, check=False)
    return out


def attack_device_layer(lp: Loop, busybox_tar: str) -> Outcome:
    out = Outcome("device: node in an image layer (import)")
    tag = f"{PREFIX}disk:latest"
    node = dev_node("disk", lp.major, lp.minor, tarfile.BLKTYPE)
    res = import_image(crafted_rootfs(busybox_tar, extra=[node]), tag)
    if res.returncode != 0:
        out.notes.append(f"import refused: {res.stderr.strip()}")
        return out
    read = ["sh", "-c", "head -c 64 /disk 2>&1; true"]
    if lp.marker not in run_out("--privileged", "-u", "nobody", tag, *read):
        raise ControlFailed("a privileged container did not read the layer's node")
    for user in ("0", "nobody"):
        out.tries += 1
        out.escapes += lp.marker in run_out("-u", user, tag, *read)
    return out


def attack_device_cp(lp: Loop) -> Outcome:
    out = Outcome("device: node put by docker cp")
    name = f"{PREFIX}dev-cp"
    node = dev_node("disk", lp.major, lp.minor, tarfile.BLKTYPE)
    docker("run", "-d", "--name", name, "-u", "nobody", "busybox", "sleep", "600")
    try:
        for dest in ("/tmp", "/"):
            out.tries += 1
            res = docker("cp", "-", f"{name}:{dest}", stdin=tar_of_entries([node]), check=False)
            if res.returncode != 0:
                out.notes.append(f"cp to {dest} refused")
            path = os.path.join(dest, "disk")
            read = docker("exec", name, "sh", "-c", f"head -c 64 {path} 2>&1", check=False)
            out.escapes += lp.marker in read.stdout + read.stderr
    finally:
        docker("rm", "-f", name, check=False)
    return out


# ----------------------------------------------------------------------------- cp race


def _one_file(name: str, data: bytes) -> bytes:
    return tar_of_entries([(tar_info(name), data)])


def _first_file(data: bytes) -> bytes | None:
    """The first file's content; None for a stream cut short (a 200 whose copy then failed)."""
    try:
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            member = tar.next()
            f = tar.extractfile(member) if member else None
            return f.read() if f else b""
    except tarfile.TarError:
        return None


def attack_cp_race(tries: int) -> Outcome:
    """The container swaps /d for a link to "/" in a loop; every PUT and GET of /d is raced."""
    out = Outcome("cp: symlink-swap race (PUT and GET archive)")
    token = secrets.token_hex(4)
    escape_name, secret_name = f"flt-escape-{token}", f"flt-hostonly-{token}"
    host_escape, host_secret = f"/{escape_name}", f"/{secret_name}"
    with open(host_secret, "wb") as f:
        f.write(b"HOST-ONLY\n")
    name = f"{PREFIX}race"
    swap = swap_script(secret_name)
    found = missing = errors = cut = reconnects = 0
    conn = manager_conn()

    def ask(method: str, url: str, body: bytes | None = None) -> tuple[int, bytes]:
        # A server may close a kept-alive connection between requests (aiohttp does after a
        # refused upload it did not read): such a request is sent again on a new connection.
        nonlocal conn, reconnects
        headers = {"Content-Type": "application/x-tar"} if body is not None else {}
        for attempt in (1, 2):
            try:
                conn.request(method, url, body, headers)
                resp = conn.getresponse()
                return resp.status, resp.read()
            except (ConnectionError, http.client.RemoteDisconnected):
                conn.close()
                conn = manager_conn()
                reconnects += 1
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    try:
        docker("run", "-d", "--name", name, "busybox", "sh", "-c", swap)
        body = _one_file(escape_name, b"x")
        for _ in range(tries):
            out.tries += 1
            status, _ = ask("PUT", f"{API}/containers/{name}/archive?path=/d", body)
            errors += status >= 500
            if os.path.lexists(host_escape):
                out.escapes += 1
                os.unlink(host_escape)
            status, data = ask("GET", f"{API}/containers/{name}/archive?path=/d/{secret_name}")
            if status != 200:
                missing += status == 404
                errors += status >= 500
                continue
            content = _first_file(data)
            cut += content is None
            found += content == b"CONTAINER\n"
            out.escapes += content == b"HOST-ONLY\n"
    finally:
        conn.close()
        for path in (host_secret, host_escape):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        docker("rm", "-f", name, check=False)
    out.notes.append(
        f"{found} gets found the file, {missing} missed it, {cut} cut short, {errors} 5xx, "
        f"{reconnects} reconnects"
    )
    if not (found and missing):
        out.notes.append("the swap never raced a copy: no figure")
    return out


# ----------------------------------------------------------------------------- crafted images


def attack_crafted_images(host: Host, busybox_tar: str) -> list[Outcome]:
    """/etc, two VOLUME paths and a copy-up source through links to a host directory."""
    victim = os.path.join(host.dir, "victim")
    secret = os.path.join(victim, "secret")
    os.makedirs(os.path.join(secret, "sub"))
    key = f"FLT-COPYUP-{host.token}"
    with open(os.path.join(secret, "sub", "key"), "w") as f:
        f.write(key + "\n")
    before = host_tree(victim)
    links = {
        "etc": victim,
        "data": victim,
        "rel": relative_to_host(victim),
        "cvol": secret,
        "rcvol": relative_to_host(secret),
    }
    volumes = ["/data/vol", "/rel/rvol", "/cvol/sub", "/rcvol/sub"]
    rootfs = crafted_rootfs(busybox_tar, links, drop=("etc",))
    script = (
        "echo x > /data/vol/f; echo y > /rel/rvol/f; echo z > /etc/pwn; cat /etc/hostname;"
        " cat /cvol/sub/key /rcvol/sub/key 2>&1; echo ran"
    )
    results = []
    for how in ("import", "load"):
        out = Outcome(f"image: symlinked /etc, VOLUME, copy-up ({how})")
        tag = f"{PREFIX}links-{how}:latest"
        if how == "import":
            res = import_image(rootfs, tag, *(f"VOLUME {v}" for v in volumes))
        else:
            config = {"Cmd": ["sh"], "Volumes": {v: {} for v in volumes}}
            res = load_image(save_archive(rootfs, tag=tag, config=config))
        if res.returncode != 0:
            out.notes.append(f"{how} refused: {res.stderr.strip()}")
            results.append(out)
            continue
        out.tries += 1
        seen = run_out(tag, "sh", "-c", script)
        out.escapes += key in seen
        if "ran" not in seen:
            out.notes.append(f"the container did not run: {seen.strip()[:200]}")
        after = host_tree(victim)
        out.escapes += len(set(after) ^ set(before))
        for extra in set(after) - set(before):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(victim, extra))
        results.append(out)
    return results


# ----------------------------------------------------------------------------- whiteouts


def _store_dirs() -> set[str]:
    """Every node's image store directories two levels down (images/tmp, images/layers/<id>,
    …), not the transient ones inside tmp: a whiteout of `..` deletes the directory above the
    one being unpacked (for the outer archive of a load, images/tmp itself)."""
    found = set()
    for root in data_roots():
        images = os.path.join(root, "images")
        for first in os.scandir(images):
            if first.is_dir(follow_symlinks=False):
                found.add(first.path)
                if first.name != "tmp":
                    found.update(e.path for e in os.scandir(first.path) if e.is_dir())
    return found


def attack_whiteouts(busybox_tar: str) -> list[Outcome]:
    layers: list[list[Entry]] = [
        [(tar_info("keep/f"), b"k"), (tar_info("keep/.wh..."), b"")],
        [(tar_info(".wh..."), b"")],
        [(tar_info("keep/.wh.."), b"")],
    ]
    results = []
    for how in ("load", "import"):
        out = Outcome(f"whiteout '..' in a layer ({how})")
        refused = 0
        for i, entries in enumerate(layers):
            before = _store_dirs()
            layer = tar_of_entries(entries)
            tag = f"{PREFIX}wh{i}-{how}:latest"
            if how == "load":
                extra = [(tar_info(".wh..."), b"")] if i == 1 else None  # the outer archive too
                res = load_image(save_archive(layer, extra, tag=tag))
            else:
                res = import_image(layer, tag)
            out.tries += 1
            refused += res.returncode != 0
            out.escapes += len(before - _store_dirs())
        out.notes.append(f"{refused} refused")
        results.append(out)
    return results


# ----------------------------------------------------------------------------- tar entries


def _tar_attacks(host: Host) -> dict[str, list[list[Entry]]]:
    """kind → hostile archives (each one technique, at the host directory `outside`)."""
    rel_out = relative_to_host(host.outside)
    return {
        "../ traversal": [[(tar_info(f"a/{rel_out}/dotdot"), b"x")]],
        "absolute name": [[(tar_info(f"{host.outside}/abs"), b"x")]],
        "hard link out": [
            [tar_info("h", tarfile.LNKTYPE, f"{rel_out}/secret")],
            [tar_info("h", tarfile.LNKTYPE, host.secret)],
            [
                tar_info("s", tarfile.SYMTYPE, host.outside),
                tar_info("h", tarfile.LNKTYPE, "s/secret"),
            ],
        ],
        "symlink then write": [
            [tar_info("s", tarfile.SYMTYPE, host.outside), (tar_info("s/pwn"), b"x")],
            [tar_info("r", tarfile.SYMTYPE, rel_out), (tar_info("r/pwn"), b"x")],
        ],
    }


def attack_tar_entries(host: Host, busybox_tar: str) -> list[Outcome]:
    with tarfile.open(busybox_tar) as src:
        base = [(m, src.extractfile(m).read() if m.isfile() else None) for m in src]  # type: ignore[union-attr]
    results = []
    cp_name = f"{PREFIX}cp-target"
    docker("run", "-d", "--name", cp_name, "busybox", "sleep", "3600")
    try:
        for how in ("load", "import", "cp"):
            for kind, archives in _tar_attacks(host).items():
                out = Outcome(f"tar {kind} ({how})")
                refused = 0
                for i, entries in enumerate(archives):
                    out.tries += 1
                    tag = f"{PREFIX}tar{i}-{how}:latest"
                    if how == "cp":
                        res = docker("cp", "-", f"{cp_name}:/tmp", stdin=tar_of_entries(entries),
                                     check=False)  # fmt: skip
                        # What the container reads back through a hard link must not be ours.
                        got = docker("exec", cp_name, "cat", "/tmp/h", check=False).stdout
                    else:
                        rootfs = tar_of_entries([*base, *entries])
                        if how == "load":
                            res = load_image(save_archive(rootfs, tag=tag, config={"Cmd": ["sh"]}))
                        else:
                            res = import_image(rootfs, tag)
                        got = run_out(tag, "cat", "/h") if res.returncode == 0 else ""
                    refused += res.returncode != 0
                    out.escapes += host.breaches() + (host.marker in got)
                out.notes.append(f"{refused} refused")
                results.append(out)
    finally:
        docker("rm", "-f", cp_name, check=False)
    return results


# ----------------------------------------------------------------------------- setuid


def _build_suid(workdir: str) -> bytes:
    src, exe = os.path.join(workdir, "suid.c"), os.path.join(workdir, "suid")
    with open(src, "w") as f:
        f.write(SUID_SOURCE)
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        raise RuntimeError("no C compiler (deploy/setup.sh installs gcc)")
    res = subprocess.run([cc, "-static", "-O2", "-o", exe, src], capture_output=True, check=False)
    if res.returncode != 0:  # no static libc: the host's own libc is as good here
        subprocess.run([cc, "-O2", "-o", exe, src], check=True, capture_output=True)
    with open(exe, "rb") as f:
        return f.read()


def attack_setuid(host: Host, busybox_tar: str) -> Outcome:
    out = Outcome("setuid binary / config via the data root")
    workdir = os.path.join(host.dir, "suid-ctl")
    os.mkdir(workdir)
    os.chmod(workdir, 0o755)
    program = _build_suid(workdir)
    control = os.path.join(workdir, "suid")
    os.chmod(control, 0o4755)
    root_marker = f"FLT-ROOT-ONLY-{host.token}"
    if root_marker not in as_nobody(f"{control} {host.rootonly}").stdout:
        raise ControlFailed("the setuid program outside the data root did not read the marker")
    exe_name = f"flt-suid-{host.token}"
    tag = f"{PREFIX}suid:latest"
    rootfs = crafted_rootfs(busybox_tar, files={f"suid/{exe_name}": (program, 0o4755)})
    import_image(rootfs, tag).check_returncode()
    env_secret = f"FLT-ENV-SECRET-{host.token}"
    name = f"{PREFIX}suid"
    docker("run", "-d", "--name", name, "-e", f"TOKEN={env_secret}", tag, "sleep", "600")
    try:
        pid = json.loads(docker("inspect", name).stdout)[0]["State"]["Pid"]
        paths = [f"/proc/{pid}/root/suid/{exe_name}"]
        configs = []
        for root in data_roots():
            for dirpath, _, filenames in os.walk(root):
                if exe_name in filenames:
                    paths.append(os.path.join(dirpath, exe_name))
                for fname in filenames:
                    if fname in ("config.json", "spec") and "containers" in dirpath:
                        with open(os.path.join(dirpath, fname), errors="replace") as f:
                            if env_secret in f.read():
                                configs.append(os.path.join(dirpath, fname))
        if len(paths) < 2 or not configs:
            raise ControlFailed(f"the layer's program or the config not found: {paths} {configs}")
        for path in paths:
            out.tries += 1
            out.escapes += root_marker in as_nobody(f"{path} {host.rootonly}").stdout
        for path in configs:
            out.tries += 1
            out.escapes += env_secret in as_nobody(f"cat {path}").stdout
    finally:
        docker("rm", "-f", name, check=False)
    return out
