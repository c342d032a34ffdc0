"""Placement hints in a create body: Swarm's env entries and `com.docker.swarm.*` labels."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from .expressions import Expr, ExpressionError, parse_exprs
from .model import NodeInfo, SchedulingError, cpu_nanos

LABEL_PREFIX = "com.docker.swarm"
# Env prefix -> label that stores the merged list (cluster/config.go's four kinds).
HINT_LABELS = {
    "affinity": f"{LABEL_PREFIX}.affinities",
    "constraint": f"{LABEL_PREFIX}.constraints",
    "reschedule": f"{LABEL_PREFIX}.reschedule-policies",
    "whitelist": f"{LABEL_PREFIX}.whitelists",
}
RESCHEDULE_POLICIES = ("off", "on-node-failure")


def _label_list(labels: dict[str, str], label: str) -> list[str]:
    raw = labels.get(label)
    if not raw:
        return []
    # Swarm ignores labels that are not a JSON list of strings.
    try:
        value = json.loads(raw)
    except ValueError:
        return []
    if not isinstance(value, list):
        return []
    return [v for v in value if isinstance(v, str)]


def _go_json(values: list[str]) -> str:
    # Go's json.Marshal: compact, UTF-8, and HTML characters escaped.
    text = json.dumps(values, separators=(",", ":"), ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def split_hints(body: dict) -> tuple[list[str], dict[str, list[str]]]:
    """(Env without hint entries, kind -> label entries followed by env entries)."""
    labels = body.get("Labels") or {}
    hints = {kind: _label_list(labels, label) for kind, label in HINT_LABELS.items()}
    env: list[str] = []
    for entry in body.get("Env") or []:
        kind, sep, value = entry.partition(":") if isinstance(entry, str) else ("", "", "")
        if sep and kind in hints:
            hints[kind].append(value)
        else:
            env.append(entry)
    return env, hints


def parse_placement(body: dict) -> dict:
    """Return a copy of a create body with `affinity:`/`constraint:`/`reschedule:`/`whitelist:`
    env entries moved into the `com.docker.swarm.*` JSON-list labels, as Swarm stores them.

    Raises SchedulingError for Swarm's reschedule-policy validation errors.
    """
    env, hints = split_hints(body)
    new = copy.copy(body)
    if "Env" in body or env:
        new["Env"] = env
    labels = dict(body.get("Labels") or {})
    for kind, entries in hints.items():
        if entries:
            labels[HINT_LABELS[kind]] = _go_json(entries)
    if labels or "Labels" in body:
        new["Labels"] = labels
    policies = hints["reschedule"]
    if len(policies) > 1:
        raise SchedulingError("too many reschedule policies")
    for policy in policies:
        if policy not in RESCHEDULE_POLICIES:
            raise SchedulingError(f"invalid reschedule policy: {policy}")
    return new


def has_node_constraint(body: dict) -> bool:
    """Swarm's HaveNodeConstraint: a hard `node==` constraint (`node==~` is only a hint)."""
    constraints = split_hints(body)[1]["constraint"]
    return any(c.startswith("node==") and not c.startswith("node==~") for c in constraints)


def _image_ref(node: NodeInfo, image: str) -> str | None:
    """What `affinity:image==` must say to match `image` on this node: the name itself, or
    the full ID for an ID or ID prefix; None when the node lacks the image."""
    if image in node.image_names():
        return image
    bare = image.removeprefix("sha256:")
    if not bare or any(c not in "0123456789abcdef" for c in bare):
        return None
    ids = [i for i in node.images if i.startswith("sha256:") and i[7:].startswith(bare)]
    return ids[0] if len(ids) == 1 else None


def with_image_affinity(
    body: dict, nodes: list[NodeInfo], nodes_with: Callable[[str], int] | None = None
) -> dict:
    """The body to schedule: with Swarm's implicit `affinity:image==<image>` when the image is
    on some nodes only and no hard `node==` constraint names the node.

    Swarm adds it on a retry after the chosen engine answered "image not found"; the nodes'
    image lists are at hand here, so it is added before the first choice (the same outcome
    without a failed create). The affinity is for scheduling only: it is not stored.
    `nodes_with(name)`: how many of `nodes` have the image by that name, when the caller keeps
    that count (then an image named by name, not by ID, costs no walk over the nodes)."""
    image = str(body.get("Image") or "")
    if not image or has_node_constraint(body):
        return body
    bare = image.removeprefix("sha256:")
    if nodes_with is not None and any(c not in "0123456789abcdef" for c in bare):
        # Not an ID prefix: a node has it by this very name or not at all.
        count = nodes_with(image)
        if count == 0 or count == len(nodes):
            return body
        refs = {image}
    else:
        found = [_image_ref(n, image) for n in nodes]
        refs = {ref for ref in found if ref is not None}
        if len(refs) != 1 or None not in found:
            return body  # nowhere (the node's own error), everywhere, or ambiguous
    env = body.get("Env") if isinstance(body.get("Env"), list) else []
    return {**body, "Env": [*env, f"affinity:image=={refs.pop()}"]}


@dataclass
class PortRequest:
    text: str  # HostPort as sent, for the composite error
    ip: str
    port: int | None  # None when no explicit host port (nothing to check)
    proto: str


@dataclass
class Request:
    """What the filters and strategies need from one create body."""

    cpu: int  # nanos
    memory: int
    network_mode: str
    bridge_ports: list[PortRequest] = field(default_factory=list)
    host_ports: list[tuple[str, int | None, str]] = field(
        default_factory=list
    )  # (key, port, proto)
    volumes_from: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    ipc_mode: str = ""
    pid_mode: str = ""
    hints: dict[str, list[str]] = field(default_factory=dict)
    pins: dict[str, str] = field(default_factory=dict)  # dependency reference -> container ID
    _parsed: dict[str, list[Expr] | ExpressionError] = field(default_factory=dict)

    def exprs(self, kind: str) -> list[Expr]:
        """Parsed `affinity`/`constraint`/`whitelist` expressions (ExpressionError if invalid)."""
        if kind not in self._parsed:
            try:
                self._parsed[kind] = parse_exprs(self.hints.get(kind, []))
            except ExpressionError as e:
                self._parsed[kind] = e
        parsed = self._parsed[kind]
        if isinstance(parsed, ExpressionError):
            raise parsed
        return parsed

    def signature(self) -> tuple:
        """Everything the filters read from the request, hashable."""
        return (
            self.cpu,
            self.memory,
            self.network_mode,
            tuple((p.text, p.ip, p.port, p.proto) for p in self.bridge_ports),
            tuple(self.host_ports),
            tuple(self.volumes_from),
            tuple(self.links),
            tuple((k, tuple(v)) for k, v in sorted(self.hints.items())),
            tuple(sorted(self.pins.items())),
        )

    def dependencies(self) -> list[str]:
        """The containers named by `--volumes-from`, `--link`, and `--net`, `--ipc`, `--pid`
        `container:` (Swarm's filter knows the first three; a namespace can only be joined on
        its own host, so the other two are dependencies as much)."""
        deps = [v.split(":", 1)[0] for v in self.volumes_from]
        deps += [v.split(":", 1)[0] for v in self.links]
        for mode in (self.network_mode, self.ipc_mode, self.pid_mode):
            if mode.startswith("container:"):
                deps.append(mode.removeprefix("container:"))
        return deps

    def has_soft(self) -> bool:
        for kind in ("affinity", "constraint", "whitelist"):
            try:
                if any(e.soft for e in self.exprs(kind)):
                    return True
            except ExpressionError:
                pass
        return False


def _int(value: object) -> int:
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return 0


def _port_proto(key: str) -> tuple[int | None, str]:
    port, _, proto = key.partition("/")
    try:
        return int(port), (proto or "tcp").lower()
    except ValueError:
        return None, (proto or "tcp").lower()


def build_request(body: dict, pins: Mapping[str, str] | None = None) -> Request:
    host = body.get("HostConfig") or {}
    _, hints = split_hints(body)
    req = Request(
        cpu=cpu_nanos(_int(host.get("CpuShares")), _int(host.get("NanoCpus"))),
        memory=max(_int(host.get("Memory")), 0),
        network_mode=str(host.get("NetworkMode") or ""),
        volumes_from=[str(v) for v in host.get("VolumesFrom") or []],
        links=[str(v) for v in host.get("Links") or []],
        ipc_mode=str(host.get("IpcMode") or ""),
        pid_mode=str(host.get("PidMode") or ""),
        hints=hints,
        pins=dict(pins or {}),
    )
    if req.network_mode == "host":
        for key in body.get("ExposedPorts") or {}:
            port, proto = _port_proto(str(key))
            req.host_ports.append((str(key), port, proto))
    else:
        for key, bindings in (host.get("PortBindings") or {}).items():
            _, proto = _port_proto(str(key))
            for b in bindings or []:
                text = str((b or {}).get("HostPort") or "")
                ip = str((b or {}).get("HostIp") or "")
                port = _int(text) if text.isdigit() else None
                req.bridge_ports.append(PortRequest(text, ip, port or None, proto))
    return req
