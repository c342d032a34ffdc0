"""Where a runtime keeps its files: one data root per node."""

from __future__ import annotations

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
        for d in (self.blobs, self.layers, self.containers, self.volumes, self.netns):
            os.makedirs(d, exist_ok=True)
