"""Where a runtime keeps its files: one data root per node."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class DataRoot:
    root: str

    @property
    def images(self) -> str:
        return os.path.join(self.root, "images")

    @property
    def blobs(self) -> str:
        return os.path.join(self.root, "images", "blobs", "sha256")

    @property
    def layers(self) -> str:
        return os.path.join(self.root, "images", "layers")

    @property
    def repositories(self) -> str:
        return os.path.join(self.root, "images", "repositories.json")

    @property
    def containers(self) -> str:
        return os.path.join(self.root, "containers")

    @property
    def volumes(self) -> str:
        return os.path.join(self.root, "volumes")

    @property
    def netns(self) -> str:
        return os.path.join(self.root, "netns")

    def container(self, cid: str) -> str:
        return os.path.join(self.root, "containers", cid)

    def ensure(self) -> None:
        """Make the tree with dockerd's modes, and put them back on a tree an older flotilla
        made 0755: only root gets past the data root, so no other host user reaches a setuid
        binary in a layer or a container's config (its Env may hold secrets)."""
        for d, mode in DIR_MODES.items():
            path = os.path.join(self.root, d) if d else self.root
            os.makedirs(path, mode, exist_ok=True)
            os.chmod(path, mode)
        for d in (self.blobs, self.layers, self.netns):
            os.makedirs(d, exist_ok=True)
        for cid in os.listdir(self.containers):
            for name in PRIVATE_FILES:
                with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                    os.chmod(os.path.join(self.containers, cid, name), 0o600)


# dockerd: the data root 0710 (daemon/daemon_unix.go setupDaemonRoot), containers/ 0710, the
# image metadata 0700, volumes/ 0701 (volume/local). "" is the data root itself.
DIR_MODES = {"": 0o710, "containers": 0o710, "images": 0o700, "volumes": 0o701}
# A container's files that hold its Env: the record and the shim spec (written 0600 by
# fileio.write_atomic; an older flotilla wrote them 0644).
PRIVATE_FILES = ("config.json", "spec")
