"""The images a build makes, one per step, and its cache (dockerd's legacy builder's local image
cache, image/cache): a step's image is a child of the previous one whose `container_config`
records the step (its `Cmd` is the RUN command, or `/bin/sh -c #(nop) <instruction>` with
COPY/ADD's source hash in it), so the cache is the image store itself — a step hits when the
parent has a child with the same container config — and survives restarts.
"""

from __future__ import annotations

import os
from typing import Any

from runtime.imageconfig import host_architecture, image_config_bytes, normalize_config
from runtime.images import ImageStore, tar_upper_fill
from runtime.timefmt import now_ns, rfc3339nano


def same_config(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """image/cache compare(): the fields dockerd compares (not Image, not Hostname)."""
    if a.get("OpenStdin") or b.get("OpenStdin"):
        return False
    for key in ("AttachStdout", "AttachStderr", "User", "Tty"):
        if (a.get(key) or None) != (b.get(key) or None):
            return False
    for key in ("Cmd", "Env", "Entrypoint"):
        if list(a.get(key) or []) != list(b.get(key) or []):
            return False
    for key in ("Labels", "ExposedPorts", "Volumes"):
        x, y = a.get(key) or {}, b.get(key) or {}
        if len(x) != len(y):
            return False
        if key == "Labels" and any(y.get(k) != v for k, v in x.items()):
            return False
        if any(k not in y for k in x):
            return False
    # Stricter than dockerd, which ignores these: a hit must give the same image config.
    return all(
        (a.get(key) or None) == (b.get(key) or None)
        for key in ("WorkingDir", "Shell", "Healthcheck", "StopSignal", "OnBuild")
    )


def probe(store: ImageStore, parent: str, container_config: dict[str, Any]) -> str | None:
    """The newest child of `parent` ("" for scratch) built with this container config."""
    best: tuple[str, str] | None = None
    with store.lock:
        for image_id, meta in store.images().items():
            if (meta.get("parent") or "") != parent:
                continue
            cfg = store.image_config(image_id)
            if not same_config(cfg.get("container_config") or {}, container_config):
                continue
            created = cfg.get("created", "")
            if best is None or created > best[0]:
                best = (created, image_id)
    return best[1] if best else None


def commit_step(
    store: ImageStore,
    parent: str,
    config: dict[str, Any],
    container_config: dict[str, Any],
    upper: str | None,
    author: str = "",
    container_id: str = "",
) -> str:
    """A child image of `parent` ("" for scratch): the parent's layers plus `upper`'s
    changes (none, or an empty dir: an empty layer), `config` as the image's config and
    `container_config` as the record of the step (image.NewChildImage)."""
    with store.lock:
        parent_cfg = store.image_config(parent) if parent else {}
        diff_ids = list((parent_cfg.get("rootfs") or {}).get("diff_ids") or [])
        empty = upper is None or not os.listdir(upper)
        if not empty:
            assert upper is not None
            diff_ids.append("sha256:" + store.add_layer("build-", tar_upper_fill(upper)))
        created = rfc3339nano(now_ns())
        entry: dict[str, Any] = {"created": created}
        if author:
            entry["author"] = author
        entry["created_by"] = " ".join(container_config.get("Cmd") or [])
        if empty:
            entry["empty_layer"] = True
        history = [*(parent_cfg.get("history") or []), entry]
        extra = {
            "author": author,
            "container": container_id,
            "container_config": normalize_config(container_config),
            "parent": parent,
            "architecture": parent_cfg.get("architecture") or host_architecture(),
            "os": parent_cfg.get("os") or "linux",
            "variant": parent_cfg.get("variant", ""),
        }
        data = image_config_bytes(normalize_config(config), diff_ids, history, created, extra)
        return store.add_image(data, parent)
