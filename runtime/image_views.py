"""Docker's JSON views of images: `docker image inspect`, `history` and `docker images` (with
its filters), read from an ImageStore under its lock.
"""

from __future__ import annotations

import os
from typing import Any

from proto.docker.errors import NotFound
from proto.image_list import NONE_DIGEST, NONE_TAG, check_filters, labels_match, ref_matches
from runtime.imageconfig import normalize_config
from runtime.images import ImageStore
from runtime.timefmt import ZERO_TIME, parse_rfc3339


def inspect(store: ImageStore, ref: str) -> dict[str, Any]:
    """GET /images/{name}/json."""
    with store.lock:
        try:
            image_id = store.resolve(ref)
        except NotFound as e:
            raise NotFound(f"no such image: {ref}: {e.message}") from None
        return _inspect(store, image_id)


def _inspect(store: ImageStore, image_id: str) -> dict[str, Any]:
    cfg = store.image_config(image_id)
    meta = store.images().get(image_id, {})
    size = store.size(image_id)
    result: dict[str, Any] = {
        "Id": image_id,
        "RepoTags": store.tags_of(image_id),
        "RepoDigests": store.repo_digests(image_id),
        "Parent": meta.get("parent", ""),
        "Comment": cfg.get("comment", ""),
        "Created": cfg.get("created", ZERO_TIME),
        "Container": cfg.get("container", ""),
        "ContainerConfig": normalize_config(cfg.get("container_config")),
        "DockerVersion": cfg.get("docker_version", ""),
        "Author": cfg.get("author", ""),
        "Config": normalize_config(cfg["config"]) if cfg.get("config") else None,
        "Architecture": cfg.get("architecture", ""),
    }
    if cfg.get("variant"):
        result["Variant"] = cfg["variant"]
    result["Os"] = cfg.get("os", "")
    if cfg.get("os.version"):
        result["OsVersion"] = cfg["os.version"]
    result["Size"] = size
    result["VirtualSize"] = size
    result["GraphDriver"] = {"Data": _graph_data(store, image_id), "Name": "overlay2"}
    result["RootFS"] = {"Type": "layers", "Layers": store.diff_ids(image_id)}
    result["Metadata"] = {"LastTagTime": meta.get("last_tag_time") or ZERO_TIME}
    return result


def _graph_data(store: ImageStore, image_id: str) -> dict[str, str] | None:
    dirs = [os.path.dirname(d) for d in store.layer_dirs(image_id)]
    if not dirs:
        return None
    data: dict[str, str] = {}
    if len(dirs) > 1:
        data["LowerDir"] = ":".join(os.path.join(d, "diff") for d in dirs[1:])
    data["MergedDir"] = os.path.join(dirs[0], "merged")
    data["UpperDir"] = os.path.join(dirs[0], "diff")
    data["WorkDir"] = os.path.join(dirs[0], "work")
    return data


def history(store: ImageStore, ref: str) -> list[dict[str, Any]]:
    """GET /images/{name}/history: newest first; ids only where an image exists."""
    with store.lock:
        image_id = store.resolve(ref)
        cfg = store.image_config(image_id)
        diff_ids = store.diff_ids(image_id)
        items: list[dict[str, Any]] = []
        layer = 0
        for h in cfg.get("history") or []:
            size = 0
            if not h.get("empty_layer") and layer < len(diff_ids):
                size = store.layer_size(diff_ids[layer])
                layer += 1
            item = {
                "Comment": h.get("comment", ""),
                "Created": _unix(h.get("created", "")),
                "CreatedBy": h.get("created_by", ""),
                "Id": "<missing>",
                "Size": size,
                "Tags": None,
            }
            items.insert(0, item)
        images = store.images()
        current = image_id
        for item in items:
            item["Id"] = current
            item["Tags"] = store.tags_of(current) or None
            current = images.get(current, {}).get("parent", "")
            if not current or current not in images:
                break
        return items


def list_images(
    store: ImageStore, all: bool = False, filters: dict[str, list[str]] | None = None
) -> list[dict[str, Any]]:
    """GET /images/json, newest first; filters: reference, dangling, label, before, since."""
    filters = filters or {}
    dangling = check_filters(filters)
    with store.lock:
        show_all = all
        before = [_created(store, r) for r in filters.get("before", [])]
        since = [_created(store, r) for r in filters.get("since", [])]
        images = store.images()
        repos = store.tags()
        result: list[dict[str, Any]] = []
        for image_id, meta in images.items():
            item = _list_item(store, image_id, meta, repos)
            if before and item["Created"] >= min(before):
                continue
            if since and item["Created"] <= max(since):
                continue
            if not labels_match(item["Labels"], filters.get("label", [])):
                continue
            if not _placed(store, item, image_id, images, show_all, dangling, filters):
                continue
            result.append(item)
        result.sort(key=lambda i: i["Created"], reverse=True)
        return result


def _created(store: ImageStore, ref: str) -> int:
    return _unix(store.image_config(store.resolve(ref)).get("created", ""))


def _list_item(
    store: ImageStore, image_id: str, meta: dict[str, Any], repos: dict[str, str]
) -> dict:
    cfg = store.image_config(image_id)
    size = sum(store.layer_size(d) for d in store.diff_ids(image_id))
    tags = store.tags_of(image_id, repos)
    return {
        "Containers": -1,
        "Created": _unix(cfg.get("created", "")),
        "Id": image_id,
        "Labels": (cfg.get("config") or {}).get("Labels"),
        "ParentId": meta.get("parent", ""),
        "RepoDigests": store.repo_digests(image_id, {image_id: meta}) or None,
        "RepoTags": tags or None,
        "SharedSize": -1,
        "Size": size,
        "VirtualSize": size,
    }


def _placed(
    store: ImageStore,
    item: dict[str, Any],
    image_id: str,
    images: dict[str, Any],
    show_all: bool,
    dangling: bool | None,
    filters: dict[str, list[str]],
) -> bool:
    patterns = filters.get("reference", [])
    if patterns and item["RepoTags"]:
        item["RepoTags"] = [t for t in item["RepoTags"] if ref_matches(t, patterns)] or None
        if item["RepoTags"] is None:
            return False
    if item["RepoTags"] is None:
        if patterns:
            return False
        if not show_all and store.children(image_id, images):
            return False  # an intermediate image: only with all=1
        if dangling is False:
            return False
        item["RepoTags"] = [NONE_TAG]
        item["RepoDigests"] = item["RepoDigests"] or [NONE_DIGEST]
        return True
    return dangling is not True


def _unix(created: str) -> int:
    return parse_rfc3339(created) // 1_000_000_000 if created else 0
