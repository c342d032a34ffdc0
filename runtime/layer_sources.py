"""Where a stored layer is known to live compressed in registries: diff ID → blob digest and
repository, as dockerd's V2MetadataService keeps it.

The store keeps layers uncompressed, so a push gzips them, and gzip output is not reproducible
across compressors: without this record a second push of the same layer would compress it again
and upload a blob the registry does not have. A push records each blob it uploaded, found (HEAD)
or mounted; a pull records each layer it downloaded and verified against its diff ID. A push
then asks the registry about these blobs first ("Layer already exists"), and mounts one from
another repository of the same registry ("Mounted from …"), before it compresses anything.

One small JSON file per layer, `layers/<diff id>/distribution.json` (most recent first, at
most MAX_SOURCES): it goes with the layer when the store drops it.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass

from runtime.fileio import read_json, write_atomic
from runtime.images import ImageStore
from runtime.references import HEX64

FILE = "distribution.json"
MAX_SOURCES = 50


@dataclass(frozen=True)
class LayerSource:
    digest: str  # sha256:… of the compressed blob
    repository: str  # the repository's full name: host[:port]/path (docker.io/library/busybox)

    @property
    def domain(self) -> str:
        return self.repository.partition("/")[0]

    @property
    def path(self) -> str:
        return self.repository.partition("/")[2]


def _file(store: ImageStore, diff_id: str) -> str | None:
    algorithm, _, hex_digest = diff_id.partition(":")
    if algorithm != "sha256" or not HEX64.fullmatch(hex_digest):
        return None
    return os.path.join(store.layer_root(diff_id), FILE)


def _valid(doc: object) -> LayerSource | None:
    if not isinstance(doc, dict):
        return None
    digest, repository = doc.get("digest"), doc.get("repository")
    if not isinstance(digest, str) or not isinstance(repository, str):
        return None
    algorithm, _, hex_digest = digest.partition(":")
    if algorithm != "sha256" or not HEX64.fullmatch(hex_digest) or "/" not in repository:
        return None
    return LayerSource(digest, repository)


def sources(store: ImageStore, diff_id: str) -> list[LayerSource]:
    """The blobs known for a layer, most recent first."""
    path = _file(store, diff_id)
    if path is None:
        return []
    with store.lock:
        try:
            doc = read_json(path, [])
        except (ValueError, OSError):
            return []  # a damaged record only costs a recompression
    found = [_valid(d) for d in doc] if isinstance(doc, list) else []
    return [s for s in found if s is not None]


def _save(store: ImageStore, diff_id: str, items: list[LayerSource]) -> None:
    path = _file(store, diff_id)
    if path is None or not os.path.isdir(os.path.dirname(path)):
        return  # the layer is gone (or never was): nothing to remember
    doc = [{"digest": s.digest, "repository": s.repository} for s in items[:MAX_SOURCES]]
    with contextlib.suppress(FileNotFoundError):  # dropped between the check and the write
        write_atomic(path, json.dumps(doc, separators=(",", ":")).encode())


def record(store: ImageStore, diff_id: str, digest: str, repository: str) -> None:
    """Remember that `repository` has the layer as blob `digest`."""
    new = LayerSource(digest, repository)
    with store.lock:
        kept = [s for s in sources(store, diff_id) if s != new]
        _save(store, diff_id, [new, *kept])


def forget(store: ImageStore, diff_id: str, source: LayerSource) -> None:
    """Drop a record the registry proved wrong (the blob is not, or no longer, there)."""
    with store.lock:
        kept = sources(store, diff_id)
        if source in kept:
            _save(store, diff_id, [s for s in kept if s != source])
