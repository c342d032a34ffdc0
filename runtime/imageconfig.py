"""Container and image config documents: Docker's field order (`normalize_config`), the merge of
a container config over its image's (`merge_config`) and the image config JSON a new image gets.

`--change` instructions on a config are in runtime/changes.py.
"""

from __future__ import annotations

import copy
import platform
from typing import Any

from runtime.blobio import canonical_json

# The Docker version new image configs name (docker inspect's DockerVersion).
DOCKER_VERSION = "20.10.24"

# Go's container.Config field order; the `None` defaults marked omitempty are left out when unset.
_CONFIG_FIELDS: list[tuple[str, Any, bool]] = [
    ("Hostname", "", False),
    ("Domainname", "", False),
    ("User", "", False),
    ("AttachStdin", False, False),
    ("AttachStdout", False, False),
    ("AttachStderr", False, False),
    ("ExposedPorts", None, True),
    ("Tty", False, False),
    ("OpenStdin", False, False),
    ("StdinOnce", False, False),
    ("Env", None, False),
    ("Cmd", None, False),
    ("Healthcheck", None, True),
    ("ArgsEscaped", False, True),
    ("Image", "", False),
    ("Volumes", None, False),
    ("WorkingDir", "", False),
    ("Entrypoint", None, False),
    ("NetworkDisabled", False, True),
    ("MacAddress", "", True),
    ("OnBuild", None, False),
    ("Labels", None, False),
    ("StopSignal", "", True),
    ("StopTimeout", None, True),
    ("Shell", None, True),
]


def normalize_config(src: dict[str, Any] | None) -> dict[str, Any]:
    """A container config with every field Docker prints, in Go's order."""
    src = src or {}
    out: dict[str, Any] = {}
    for key, default, omitempty in _CONFIG_FIELDS:
        value = src.get(key, default)
        if omitempty and (value is None or value == default or value == [] or value == {}):
            continue
        out[key] = copy.deepcopy(value)
    return out


def env_key(entry: str) -> str:
    """The variable name of an `Env` entry (`NAME=value` or a bare `NAME`)."""
    return entry.split("=", 1)[0]


def with_env(entries: list[str], pairs: list[tuple[str, str]]) -> list[str]:
    """`Env` with each NAME=value of `pairs` set: replacing an entry of that name in place,
    else appended (the ENV instruction's rule, in a build and in `commit --change`)."""
    out = list(entries)
    for key, value in pairs:
        entry = f"{key}={value}"
        for i, existing in enumerate(out):
            if env_key(existing) == key:
                out[i] = entry
                break
        else:
            out.append(entry)
    return out


def merge_config(user: dict[str, Any], image: dict[str, Any]) -> dict[str, Any]:
    """runconfig.Merge: fill what the container config leaves unset from the image config."""
    out = copy.deepcopy(user)
    if not out.get("User"):
        out["User"] = image.get("User", "")
    ports = dict(image.get("ExposedPorts") or {})
    ports.update(out.get("ExposedPorts") or {})
    out["ExposedPorts"] = ports or None
    env = list(out.get("Env") or [])
    keys = {env_key(e) for e in env}
    env += [e for e in image.get("Env") or [] if env_key(e) not in keys]
    out["Env"] = env or None
    labels = dict(image.get("Labels") or {})
    labels.update(out.get("Labels") or {})
    out["Labels"] = labels or None
    if not out.get("Entrypoint"):
        if not out.get("Cmd"):
            out["Cmd"] = image.get("Cmd")
        if out.get("Entrypoint") is None:
            out["Entrypoint"] = image.get("Entrypoint")
    for key in ("Healthcheck", "WorkingDir", "StopSignal", "Shell", "OnBuild"):
        if not out.get(key):
            out[key] = image.get(key)
    volumes = dict(image.get("Volumes") or {})
    volumes.update(out.get("Volumes") or {})
    out["Volumes"] = volumes or None
    return normalize_config(out)


def host_architecture() -> str:
    """This host's CPU in Go's GOARCH names (amd64, arm64, …)."""
    machine = platform.machine()
    return {
        "x86_64": "amd64",
        "amd64": "amd64",
        "aarch64": "arm64",
        "arm64": "arm64",
        "armv7l": "arm",
        "armv6l": "arm",
        "i386": "386",
        "i686": "386",
    }.get(machine, machine)


def image_config_bytes(
    container_config: dict[str, Any],
    diff_ids: list[str],
    history: list[dict[str, Any]],
    created: str,
    extra: dict[str, Any],
) -> bytes:
    """A new image's config JSON; its sha256 is the image id. Empty `extra` values are left out."""
    config: dict[str, Any] = {
        "architecture": host_architecture(),
        "config": container_config,
        "container_config": normalize_config(None),
        "created": created,
        "docker_version": DOCKER_VERSION,
        "history": history,
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }
    config.update({k: v for k, v in extra.items() if v})
    # image.Image marshals through a map, so Docker's top-level keys come out sorted.
    return canonical_json(dict(sorted(config.items())))
