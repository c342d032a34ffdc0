"""`GET /images/json`'s filters as dockerd applies them, in one place: the node's runtime applies
them to its store (runtime/image_views.py) and the manager to the rows nodes publish in
`images/<node-id>` (manager/node_images.py), so both answer alike. Pure: no store, no I/O.
"""

from __future__ import annotations

from typing import Any

from proto.docker.errors import InvalidParameter
from proto.patterns import glob_match

FILTERS = ("reference", "dangling", "label", "before", "since")
NONE_TAG = "<none>:<none>"
NONE_DIGEST = "<none>@<none>"


def check_filters(filters: dict[str, list[str]]) -> bool | None:
    """dockerd's refusals of an image list's filters; the `dangling` wanted (None: either)."""
    for key in filters:
        if key not in FILTERS:
            raise InvalidParameter(f"Invalid filter '{key}'")
    return dangling_filter(filters.get("dangling"))


def dangling_filter(values: list[str] | None) -> bool | None:
    if not values:
        return None
    value = values[0]
    if value.lower() in ("true", "1"):
        return True
    if value.lower() in ("false", "0"):
        return False
    raise InvalidParameter(f"Invalid filter 'dangling={value}'")


def labels_match(labels: dict[str, str] | None, wanted: list[str]) -> bool:
    labels = labels or {}
    for item in wanted:
        key, sep, value = item.partition("=")
        if key not in labels or (sep and labels[key] != value):
            return False
    return True


def ref_matches(tag: str, patterns: list[str]) -> bool:
    name = tag.rpartition(":")[0]
    return any(glob_match(tag, p) or glob_match(name, p) for p in patterns)


def filter_listed(
    rows: list[dict[str, Any]], filters: dict[str, list[str]]
) -> list[dict[str, Any]]:
    """`reference`, `dangling` and `label` applied to rows as an unfiltered list without `all`
    shows them (untagged top-level images as `<none>:<none>`): the same rows, in the same order,
    as the node's filtered list. Rows are copied where narrowed, never changed in place."""
    dangling = check_filters(filters)
    patterns = filters.get("reference", [])
    out: list[dict[str, Any]] = []
    for row in rows:
        if not labels_match(row.get("Labels"), filters.get("label", [])):
            continue
        tags = row.get("RepoTags") or []
        untagged = tags == [NONE_TAG]
        if patterns:
            if untagged:
                continue
            matching = [t for t in tags if ref_matches(t, patterns)]
            if not matching:
                continue
            row = {**row, "RepoTags": matching}
        if (dangling is True and not untagged) or (dangling is False and untagged):
            continue
        out.append(row)
    return out
