"""The images of a hollow node (runtime/hollow.py): a busybox-like image, in memory only.

`HollowImages` answers the calls the image views (runtime/image_views.py) and the container
lifecycle make on an `ImageStore` — resolve, config, tags, inspect, list — from dicts shared by
every hollow node of the process (the image's config is one immutable object), so a node's
images cost a few hundred bytes. What would need layers (pull, load, import, save, build, tag,
remove) answers a clear error instead: a hollow node has no files.
"""

from __future__ import annotations

import hashlib
import json
import platform
import threading
from typing import Any, NoReturn

from proto.docker.errors import DockerError, NotFound
from runtime.references import Reference, parse_reference

HEX64_LEN = 64
BUSYBOX_TAG = "busybox:latest"
# The unpacked size a hollow busybox layer claims (the real one is about 2 MiB).
BUSYBOX_LAYER_SIZE = 2_167_176
_CREATED = "2024-01-01T00:00:00Z"


def _busybox_config() -> dict[str, Any]:
    layer = "sha256:" + hashlib.sha256(b"flotilla hollow busybox layer").hexdigest()
    return {
        "architecture": {"x86_64": "amd64", "aarch64": "arm64"}.get(
            platform.machine(), platform.machine()
        ),
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["sh"],
        },
        "created": _CREATED,
        "history": [{"created": _CREATED, "created_by": "flotilla hollow node image"}],
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [layer]},
    }


_BUSYBOX = _busybox_config()
BUSYBOX_ID = "sha256:" + hashlib.sha256(json.dumps(_BUSYBOX, sort_keys=True).encode()).hexdigest()
_LAYER_SIZES = {_BUSYBOX["rootfs"]["diff_ids"][0]: BUSYBOX_LAYER_SIZE}
_CONFIGS: dict[str, dict[str, Any]] = {BUSYBOX_ID: _BUSYBOX}


def unsupported(what: str) -> NoReturn:
    """dockerd's answer to a feature its platform lacks: 501 and what cannot be done."""
    raise DockerError(f"{what} is not supported on a hollow node (it has no files)", 501)


class HollowImages:
    """One hollow node's images: busybox:latest, present from the start."""

    def __init__(self) -> None:
        # image_views holds it while reading several views; nothing here blocks under it.
        self.lock = threading.RLock()
        self._images: dict[str, dict[str, Any]] = {BUSYBOX_ID: {"parent": ""}}
        self._repos: dict[str, str] = {BUSYBOX_TAG: BUSYBOX_ID}

    def __getattr__(self, name: str) -> Any:
        # Whatever an ImageStore does with layers (pull, load, import, build, save, tag, rmi)
        # is not here: fail with a Docker error the caller passes on, not an AttributeError.
        if name.startswith("_"):
            raise AttributeError(name)
        unsupported(f"image operation {name!r}")

    def tags(self) -> dict[str, str]:
        return dict(self._repos)

    def images(self) -> dict[str, dict[str, Any]]:
        return dict(self._images)

    def image_config(self, image_id: str) -> dict[str, Any]:
        """Shared by every node: read it, never change it (see `config`)."""
        try:
            return _CONFIGS[image_id]
        except KeyError:
            raise NotFound(f"No such image: {image_id}") from None

    def config(self, image_id: str) -> dict[str, Any]:
        return json.loads(json.dumps(self.image_config(self.resolve(image_id))))

    def diff_ids(self, image_id: str) -> list[str]:
        return list((self.image_config(image_id).get("rootfs") or {}).get("diff_ids") or [])

    def repo_digests(self, image_id: str, images: dict[str, Any] | None = None) -> list[str]:
        images = self._images if images is None else images
        return list(images.get(image_id, {}).get("digests") or [])

    def tags_of(self, image_id: str, repos: dict[str, str] | None = None) -> list[str]:
        repos = self._repos if repos is None else repos
        return sorted(key for key, value in repos.items() if value == image_id)

    def children(self, image_id: str, images: dict[str, dict[str, Any]]) -> list[str]:
        return [i for i, meta in images.items() if meta.get("parent") == image_id]

    def layer_size(self, diff_id: str) -> int:
        return _LAYER_SIZES.get(diff_id, 0)

    def layer_dirs(self, image_id: str) -> list[str]:
        return []  # no layers on disk: inspect shows no GraphDriver data

    def size(self, image_id: str) -> int:
        return sum(self.layer_size(d) for d in self.diff_ids(self.resolve(image_id)))

    def exists(self, ref: str) -> bool:
        try:
            self.resolve(ref)
        except NotFound:
            return False
        return True

    def resolve(self, ref: str) -> str:
        """The image id `ref` names: full/short id (with or without sha256:) or name[:tag]."""
        plain = ref.removeprefix("sha256:")
        if len(plain) == HEX64_LEN and _is_hex(plain):
            image_id = "sha256:" + plain
            if image_id in self._images:
                return image_id
            raise NotFound(f"No such image: {image_id}")
        parsed = parse_reference(ref)
        if parsed.digest:
            key = Reference(parsed.name, "", parsed.digest).familiar()
            for image_id, meta in self._images.items():
                if key in (meta.get("digests") or []):
                    return image_id
        else:
            found = self._repos.get(parsed.tagged().familiar())
            if found is not None:
                return found
        if plain and _is_hex(plain):
            matches = [i for i in self._images if i[len("sha256:") :].startswith(plain)]
            if len(matches) == 1:
                return matches[0]
        raise NotFound(f"No such image: {parsed.tagged().familiar()}")

    # What the container lifecycle tells an ImageStore: nothing to hold, no layers.
    def hold_layers(self, owner: str, image_id: str) -> None:
        return None

    def release_layers(self, owner: str) -> None:
        return None


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text)
