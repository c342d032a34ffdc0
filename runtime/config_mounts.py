"""Mounts of a create body: `Binds` (`-v`, ParseMountRaw), `Mounts` (`--mount`),
`--volumes-from`, tmpfs options, and the container's mount list in inspect's `Mounts` shape
(`mounts_of`, dockerd's registerMountPoints order).
"""

from __future__ import annotations

import os
import posixpath
from typing import Any

from proto.docker.errors import InvalidParameter, SystemError_, go_quote
from runtime.config_fields import get_str, get_strlist
from runtime.config_types import ContainerSpec, Mount

PROPAGATION_MODES = ("private", "rprivate", "slave", "rslave", "shared", "rshared")


CONSISTENCY_MODES = ("consistent", "cached", "delegated")


# errors dockerd returns unwrapped from registerMountPoints/registerLinks: they reach the client
# as 500, not 400 (dockerd 20.10 has no errdefs class on them).
RawDaemonError = SystemError_


def _valid_mount_mode(mode: str) -> bool:
    """linuxValidMountMode: a comma list with at most one option of each kind."""
    if mode == "":
        return True
    counts = {"rw": 0, "label": 0, "prop": 0, "copy": 0, "cons": 0}
    for o in mode.split(","):
        if o in ("rw", "ro"):
            counts["rw"] += 1
        elif o in ("z", "Z"):
            counts["label"] += 1
        elif o in PROPAGATION_MODES:
            counts["prop"] += 1
        elif o == "nocopy":
            counts["copy"] += 1
        elif o in CONSISTENCY_MODES:
            counts["cons"] += 1
        else:
            return False
    return all(n <= 1 for n in counts.values())


class _MountConfigError(Exception):
    """errMountConfig: `invalid mount config for type "<type>": <reason>`."""

    def __init__(self, mtype: str, reason: str) -> None:
        super().__init__(f"invalid mount config for type {go_quote(mtype)}: {reason}")


def _validate_target(mtype: str, target: str) -> None:
    if not target:
        raise _MountConfigError(mtype, "field Target must not be empty")
    if posixpath.normpath(target.replace("\\", "/")) == "/":
        raise _MountConfigError(mtype, "invalid specification: destination can't be '/'")
    if not target.replace("\\", "/").startswith("/"):
        raise _MountConfigError(
            mtype, f"invalid mount path: '{target}' mount path must be absolute"
        )


def _clean(p: str) -> str:
    cleaned = posixpath.normpath(p)
    # posixpath keeps a leading "//"; Go's path.Clean does not
    return "/" + cleaned.lstrip("/") if cleaned.startswith("//") else cleaned


def parse_bind(raw: str, volume_driver: str = "") -> Mount:
    """One HostConfig.Binds entry, as volume/mounts linux_parser ParseMountRaw."""
    arr = raw.split(":", 3)
    if arr[0] == "" or len(arr) > 3:
        raise RawDaemonError(f"invalid volume specification: '{raw}'")
    mode = ""
    if len(arr) == 1:
        source, target = "", arr[0]
    elif len(arr) == 2:
        if _valid_mount_mode(arr[1]):
            raise RawDaemonError(f"invalid volume specification: '{raw}'")
        source, target = arr
    else:
        source, target, mode = arr
    if not _valid_mount_mode(mode):
        raise RawDaemonError(f"invalid mode: {mode}")
    opts = mode.split(",") if mode else []
    mtype = "bind" if source.startswith("/") else "volume"
    try:
        _validate_target(mtype, target)
    except _MountConfigError as err:
        raise RawDaemonError(f"invalid volume specification: '{raw}': {err}") from None
    prop = next((o for o in opts if o in PROPAGATION_MODES), "")
    if mtype == "volume" and not source and "ro" in opts:
        reason = "must not set ReadOnly mode when using anonymous volumes"
        raise RawDaemonError(
            f"invalid volume specification: '{raw}': {_MountConfigError(mtype, reason)}"
        )
    extra = ""
    if mtype == "volume" and prop:
        extra = "BindOptions"
    elif mtype == "bind" and "nocopy" in opts:
        extra = "VolumeOptions"
    if extra:
        reason = f"field {extra} must not be specified"
        raise RawDaemonError(
            f"invalid volume specification: '{raw}': {_MountConfigError(mtype, reason)}"
        )
    return Mount(
        type=mtype,
        source=_clean(source) if mtype == "bind" else source,
        target=_clean(target),
        read_only="ro" in opts,
        mode=mode,
        propagation=(prop or "rprivate") if mtype == "bind" else "",
        no_copy="nocopy" in opts,
        driver=(volume_driver or "local") if mtype == "volume" else "",
        from_binds=True,
    )


def _tmpfs_options(opts: dict[str, Any] | None, read_only: bool) -> str:
    """ConvertTmpfsOptions: `ro`, `mode=<octal>`, `size=<n>[gmk]` with the largest even unit."""
    out = ["ro"] if read_only else []
    opts = opts or {}
    mode = int(opts.get("Mode") or 0)
    if mode:
        out.append(f"mode={mode:o}")
    size = int(opts.get("SizeBytes") or 0)
    if size:
        suffix = ""
        for unit, div in (("g", 1 << 30), ("m", 1 << 20), ("k", 1 << 10)):
            if size % div == 0:
                size, suffix = size // div, unit
                break
        out.append(f"size={size}{suffix}")
    return ",".join(out)


def parse_mount(m: dict[str, Any], check_bind_source: bool = False) -> Mount:
    """One HostConfig.Mounts entry, as validateMountConfigImpl + parseMountSpec."""
    if not isinstance(m, dict):
        raise InvalidParameter("json: cannot unmarshal into Go value of type mount.Mount")
    mtype = m.get("Type") or ""
    source = m.get("Source") or ""
    target = m.get("Target") or ""
    read_only = bool(m.get("ReadOnly"))
    bind_opts = m.get("BindOptions")
    vol_opts = m.get("VolumeOptions")
    try:
        _validate_target(mtype, target)
        if mtype == "bind":
            _check_bind(m, source, bind_opts, vol_opts, check_bind_source)
        elif mtype == "volume":
            if bind_opts is not None:
                raise _MountConfigError(mtype, "field BindOptions must not be specified")
            if not source and read_only:
                reason = "must not set ReadOnly mode when using anonymous volumes"
                raise _MountConfigError(mtype, reason)
        elif mtype == "tmpfs":
            if bind_opts is not None:
                raise _MountConfigError(mtype, "field BindOptions must not be specified")
            if source:
                raise _MountConfigError(mtype, "field Source must not be specified")
        else:
            raise _MountConfigError(mtype, "mount type unknown")
    except _MountConfigError as err:
        raise InvalidParameter(str(err)) from None
    vol_opts = vol_opts or {}
    driver_cfg = vol_opts.get("DriverConfig") or {}
    return Mount(
        type=mtype,
        source=_clean(source) if mtype == "bind" else source,
        target=_clean(target),
        read_only=read_only,
        propagation=((bind_opts or {}).get("Propagation") or "rprivate") if mtype == "bind" else "",
        no_copy=bool(vol_opts.get("NoCopy")),
        driver=(driver_cfg.get("Name") or "local") if mtype == "volume" else "",
        driver_opts=dict(driver_cfg.get("Options") or {}),
        labels=dict(vol_opts.get("Labels") or {}),
        tmpfs_options=_tmpfs_options(m.get("TmpfsOptions"), read_only) if mtype == "tmpfs" else "",
    )


def _check_bind(
    m: dict[str, Any],
    source: str,
    bind_opts: dict[str, Any] | None,
    vol_opts: Any,
    check_source: bool,
) -> None:
    if not source:
        raise _MountConfigError("bind", "field Source must not be empty")
    prop = (bind_opts or {}).get("Propagation") or ""
    if prop and prop not in PROPAGATION_MODES:
        raise _MountConfigError("bind", f"invalid propagation mode: {prop}")
    if vol_opts is not None:
        raise _MountConfigError("bind", "field VolumeOptions must not be specified")
    if not source.startswith("/"):
        raise _MountConfigError(
            "bind", f"invalid mount path: '{source}' mount path must be absolute"
        )
    if check_source and not os.path.exists(source):
        raise _MountConfigError("bind", f"bind source path does not exist: {source}")


def check_bind_source(mount: Mount) -> None:
    """The existence check dockerd makes for `Mounts` binds (Binds sources get created)."""
    if mount.type == "bind" and not mount.from_binds and not os.path.exists(mount.source):
        raise InvalidParameter(
            f'invalid mount config for type "bind": bind source path does not exist: {mount.source}'
        )


def _mount_json(m: Mount) -> dict[str, Any]:
    """Docker's inspect `Mounts` entry, plus private keys the runtime uses (CreateSource…)."""
    if m.type == "volume":
        mode = (m.mode or "z") if m.from_binds and m.driver == "local" else m.mode
        return {
            "Type": "volume",
            "Name": m.source,
            "Source": "",
            "Destination": m.target,
            "Driver": m.driver,
            "Mode": mode,
            "RW": not m.read_only,
            "Propagation": "",
            "NoCopy": m.no_copy,
        }
    entry: dict[str, Any] = {
        "Type": m.type,
        "Source": m.source,
        "Destination": m.target,
        "Mode": m.mode,
        "RW": not m.read_only,
        "Propagation": m.propagation,
    }
    if m.type == "bind":
        entry["CreateSource"] = m.from_binds
    if m.type == "tmpfs":
        entry["Options"] = m.tmpfs_options
    return entry


def mounts_of(
    spec: ContainerSpec, inherited: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """Every mount of the container in Docker's inspect shape, parents before children.

    `inherited` are the mount points taken from `--volumes-from` containers: Binds and Mounts
    win over them, and they win over the image's and Config's anonymous volumes (dockerd's
    registerMountPoints). Anonymous volumes have `Name: ""` (the runtime names them).
    HostConfig.Tmpfs entries carry `Hidden: True`: dockerd mounts them but does not list them
    in inspect's `Mounts`.
    """
    hc = spec.host_config
    result = [_mount_json(m) for m in hc.binds + hc.mounts]
    taken = {m["Destination"] for m in result} | {_clean(d) for d in hc.tmpfs}
    for m in inherited or []:
        if m["Destination"] not in taken:
            taken.add(m["Destination"])
            result.append(dict(m))
    for path in spec.volumes:
        dest = _clean(path)
        if dest not in taken:
            taken.add(dest)
            driver = hc.volume_driver or "local"
            result.append(_mount_json(Mount(type="volume", source="", target=dest, driver=driver)))
    for dest, data in hc.tmpfs.items():
        result.append(
            {
                "Type": "tmpfs",
                "Source": "",
                "Destination": dest,
                "Mode": "",
                "RW": "ro" not in data.split(","),
                "Propagation": "",
                "Options": data,
                "Hidden": True,
            }
        )
    # dockerd mounts by destination depth so a parent never hides a child mount
    result.sort(key=lambda m: len(_clean(m["Destination"]).split("/")))
    return result


def register_binds(hc: dict[str, Any], tmpfs: dict[str, str], mounts: list[Mount]) -> list[Mount]:
    """registerMountPoints steps 3-4: parse Binds, refuse duplicate destinations."""
    driver = get_str(hc, "VolumeDriver")
    seen: set[str] = set()
    binds = []
    for raw in get_strlist(hc, "Binds") or []:
        m = parse_bind(raw, driver)
        if m.target in seen or m.target in tmpfs:
            raise InvalidParameter(f"Duplicate mount point: {m.target}")
        seen.add(m.target)
        binds.append(m)
    for raw_mount, m in zip(hc.get("Mounts") or [], mounts, strict=True):
        if m.target in seen:
            raise InvalidParameter(f"Duplicate mount point: {raw_mount.get('Target')}")
        seen.add(m.target)
    return binds


def volumes_from_mount(m: dict[str, Any], mode: str) -> dict[str, Any]:
    """One mount point of a `--volumes-from` container as the new container gets it: read-only
    when either side is (parser.ReadWrite), never copied up into, Mode not carried over."""
    rw = _valid_mount_mode(mode) and "ro" not in mode.split(",")
    return {**m, "RW": bool(m["RW"]) and rw, "Mode": "", "NoCopy": True, "CreateSource": False}


def parse_volumes_from(spec: str) -> tuple[str, str]:
    """ParseVolumesFrom: `container[:mode]`, mode rw by default, no propagation/copy modes."""
    if not spec:
        raise RawDaemonError("volumes-from specification cannot be an empty string")
    cid, _, mode = spec.partition(":")
    if not mode:
        return cid, "rw"
    opts = mode.split(",")
    if not _valid_mount_mode(mode) or any(o in PROPAGATION_MODES for o in opts) or "nocopy" in opts:
        raise RawDaemonError(f"invalid mode: {mode}")
    return cid, mode
