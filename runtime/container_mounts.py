"""A container's mount points in Docker's `Mounts` shape: its own (`config_mounts.mounts_of`),
those taken from `--volumes-from` containers at create, and its anonymous volumes, named once
and stably (`<bundle>/anon-volumes`).
"""

from __future__ import annotations

import os
import secrets
from typing import TYPE_CHECKING, Any

from runtime import config_mounts
from runtime.config_types import ContainerSpec
from runtime.fileio import write_atomic
from runtime.record import ContainerRecord

if TYPE_CHECKING:
    from runtime.containers import Runtime


def mounts(
    rt: Runtime, rec: ContainerRecord, spec: ContainerSpec | None = None
) -> list[dict[str, Any]]:
    """Docker's `Mounts` list (plus private keys) — anonymous volumes named once, stably."""
    spec = spec or rt.spec(rec)
    anon_path = os.path.join(rt.paths.container(rec.id), "anon-volumes")
    anon: dict[str, str] = {}
    if os.path.exists(anon_path):
        with open(anon_path) as f:
            anon = dict(line.rstrip("\n").split("\t", 1) for line in f if "\t" in line)
    result = config_mounts.mounts_of(spec, rec.volumes_from)
    changed = False
    for m in result:
        if m["Type"] == "volume" and not m["Name"]:
            if m["Destination"] not in anon:
                anon[m["Destination"]] = secrets.token_hex(32)
                changed = True
            m["Name"] = anon[m["Destination"]]
            m["Anon"] = True
        if m["Type"] == "volume":
            m["Source"] = rt.volumes.mountpoint(m["Name"])
    if changed:
        write_atomic(anon_path, "".join(f"{k}\t{v}\n" for k, v in anon.items()).encode())
    return result


def volumes_from(rt: Runtime, spec: ContainerSpec) -> list[dict[str, Any]]:
    """`--volumes-from X[:ro|:rw]`: X's mount points (volumes, anonymous ones included, and
    binds), resolved at create as dockerd does; a later X wins for the same destination."""
    by_dest: dict[str, dict[str, Any]] = {}
    for ref, mode in spec.host_config.volumes_from:
        source = rt.get(ref)
        for m in mounts(rt, source):
            if m["Type"] in ("volume", "bind"):
                by_dest[m["Destination"]] = config_mounts.volumes_from_mount(m, mode)
    return list(by_dest.values())


def anonymous_volumes(rt: Runtime, rec: ContainerRecord) -> list[str]:
    return [m["Name"] for m in mounts(rt, rec) if m["Type"] == "volume" and m.get("Anon")]
