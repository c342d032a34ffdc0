"""Swarm's filters, in its default order; each narrows the candidate nodes or raises.

Every filter is a list of per-node conditions built once per request, so the scheduler can
both filter whole node lists (Swarm's pipeline, with its error for the first condition no node
meets) and test single nodes while walking its ranking.
"""

from __future__ import annotations

from collections.abc import Callable

from .expressions import Expr
from .model import ALL_INTERFACES, ContainerInfo, NodeInfo
from .placement import Request

SHORT_ID_LEN = 12

Check = Callable[[NodeInfo], bool]


class FilterError(Exception):
    """A filter's own reason; the scheduler reports the composite message (except health)."""


class Filter:
    name = ""

    def conditions(
        self, req: Request, soft: bool, only_soft: bool = False
    ) -> list[tuple[str, Check]]:
        """(error if no node meets it, check) pairs; ExpressionError if hints do not parse.

        `soft` includes soft expressions; `only_soft` returns nothing else."""
        raise NotImplementedError

    def apply(self, req: Request, nodes: list[NodeInfo], soft: bool) -> list[NodeInfo]:
        for error, check in self.conditions(req, soft):
            nodes = [n for n in nodes if check(n)]
            if not nodes:
                raise FilterError(error)
        return nodes

    def describe(self, req: Request) -> list[str]:
        """Swarm's GetFilters: this filter's conditions for the composite error."""
        return []


class HealthFilter(Filter):
    name = "health"

    def conditions(
        self, req: Request, soft: bool, only_soft: bool = False
    ) -> list[tuple[str, Check]]:
        if only_soft:
            return []
        return [("No healthy node available in the cluster", lambda n: n.healthy)]


class PortFilter(Filter):
    name = "port"

    def conditions(
        self, req: Request, soft: bool, only_soft: bool = False
    ) -> list[tuple[str, Check]]:
        if only_soft:
            return []
        checks: list[tuple[str, Check]] = []
        if req.network_mode == "host":
            for key, port, proto in req.host_ports:
                if port is not None:
                    checks.append(
                        (
                            f"unable to find a node with port {key} available in the Host mode",
                            lambda n, k=(port, proto): k not in n.usage().ports,
                        )
                    )
            return checks
        for p in req.bridge_ports:
            if p.port is not None:  # without an explicit host port the engine picks one
                checks.append(
                    (
                        f"unable to find a node with port {p.text} available",
                        lambda n, p=p: not _port_in_use(n, p.ip, p.port or 0, p.proto),
                    )
                )
        return checks

    def describe(self, req: Request) -> list[str]:
        if req.network_mode == "host":
            return [f"port {key} (Host mode)" for key, _, _ in req.host_ports]
        return [f"port {p.text} (Bridge mode)" for p in req.bridge_ports]


def _port_in_use(node: NodeInfo, ip: str, port: int, proto: str) -> bool:
    bound = node.usage().ports.get((port, proto))
    if not bound:
        return False
    if ip in ALL_INTERFACES:
        return True
    return any(b == ip or b in ALL_INTERFACES for b in bound)


class ContainerSlotsFilter(Filter):
    name = "containerslots"

    def conditions(
        self, req: Request, soft: bool, only_soft: bool = False
    ) -> list[tuple[str, Check]]:
        if only_soft:
            return []
        return [("No node with enough open slots available in the cluster", has_free_slot)]

    def describe(self, req: Request) -> list[str]:
        return ["available container slots"]


def has_free_slot(node: NodeInfo) -> bool:
    slots = node.labels.get("containerslots")
    if slots is None:
        return True
    try:
        return len(node.containers) < int(slots)
    except ValueError:  # not an integer: Swarm ignores the label
        return True


class DependencyFilter(Filter):
    name = "dependency"

    def conditions(
        self, req: Request, soft: bool, only_soft: bool = False
    ) -> list[tuple[str, Check]]:
        if only_soft:
            return []
        deps = req.dependencies()
        if not deps:
            return []
        text = " ".join(self.describe(req))
        return [
            (
                f"Unable to find a node fulfilling all dependencies: {text}",
                lambda n: all(_holds(n, d, req.pins.get(d)) for d in deps),
            )
        ]

    def describe(self, req: Request) -> list[str]:
        deps = [f"--volumes-from={v}" for v in req.volumes_from]
        deps += [f"--link={v}" for v in req.links]
        for flag, mode in (("net", req.network_mode), ("ipc", req.ipc_mode), ("pid", req.pid_mode)):
            if mode.startswith("container:"):
                deps.append(f"--{flag}={mode}")
        return deps


def _holds(node: NodeInfo, ref: str, pinned: str | None) -> bool:
    if pinned is not None:
        return any(c.id == pinned for c in node.containers)
    return find_container(node, ref) is not None


def find_container(node: NodeInfo, ref: str) -> ContainerInfo | None:
    """A container of this node by full/short ID, swarm ID, name, `/name`, `node/name`, or a
    unique ID prefix (Swarm's lookup order)."""
    if not ref:
        return None
    for c in node.containers:
        if c.id == ref or c.id[:SHORT_ID_LEN] == ref:
            return c
    for c in node.containers:
        if c.labels.get("com.docker.swarm.id") == ref:
            return c
    name = ref.removeprefix("/")
    for prefix in (node.name + "/", node.id + "/"):
        if ref.startswith(prefix):
            name = ref.removeprefix(prefix)
    named = [c for c in node.containers if c.name.removeprefix("/") == name]
    if len(named) == 1:
        return named[0]
    if named:
        return None
    prefixed = [c for c in node.containers if c.id.startswith(ref)]
    return prefixed[0] if len(prefixed) == 1 else None


def _soft_text(e: Expr) -> str:
    return f"{e} (soft={'true' if e.soft else 'false'})"


class AffinityFilter(Filter):
    name = "affinity"

    def conditions(
        self, req: Request, soft: bool, only_soft: bool = False
    ) -> list[tuple[str, Check]]:
        checks: list[tuple[str, Check]] = []
        for expr in req.exprs("affinity"):
            if (expr.soft and not soft) or (only_soft and not expr.soft):
                continue
            holds = expr.set_check()
            if expr.key == "container":
                check: Check = lambda n, h=holds: h(n.usage().idents())  # noqa: E731
            elif expr.key == "image":
                check = lambda n, h=holds: h(n.image_names())  # noqa: E731
            else:
                check = lambda n, h=holds, k=expr.key: h(n.usage().label_values(k))  # noqa: E731
            checks.append((f"unable to find a node that satisfies the affinity {expr}", check))
        return checks

    def describe(self, req: Request) -> list[str]:
        return [_soft_text(e) for e in req.exprs("affinity")]


_BUILTIN_LABELS = {
    "storagedriver": "storage_driver",
    "kernelversion": "kernel_version",
    "operatingsystem": "operating_system",
    "ostype": "os_type",
}


class ConstraintFilter(Filter):
    name = "constraint"

    def conditions(
        self, req: Request, soft: bool, only_soft: bool = False
    ) -> list[tuple[str, Check]]:
        checks: list[tuple[str, Check]] = []
        for expr in req.exprs("constraint"):
            if (expr.soft and not soft) or (only_soft and not expr.soft):
                continue
            error = f"unable to find a node that satisfies the constraint {expr}"
            if expr.key == "node":
                # ID or name: `==` if either matches, `!=` if neither does.
                hit, eq = expr.hit, expr.equal
                checks.append((error, lambda n, h=hit, e=eq: (h(n.id) or h(n.name)) == e))
                continue
            holds = expr.value_check()
            attr = _BUILTIN_LABELS.get(expr.key)
            if attr is not None:  # built-ins win over daemon labels of the same name
                checks.append((error, lambda n, h=holds, a=attr: h(getattr(n, a))))
            else:
                checks.append((error, lambda n, h=holds, k=expr.key: h(_label(n.labels, k))))
        return checks

    def describe(self, req: Request) -> list[str]:
        return [str(e) for e in req.exprs("constraint")]


def _label(labels: dict[str, str], key: str) -> str:
    value = labels.get(key)
    if value is None:  # expression keys are lower-cased (as Swarm does); node labels may not be
        value = next((v for k, v in labels.items() if k.lower() == key), "")
    return value


class WhitelistFilter(Filter):
    name = "whitelist"

    def conditions(
        self, req: Request, soft: bool, only_soft: bool = False
    ) -> list[tuple[str, Check]]:
        checks: list[tuple[str, Check]] = []
        for expr in req.exprs("whitelist"):
            if (expr.soft and not soft) or (only_soft and not expr.soft):
                continue
            # Key and operator are ignored: the value lists node names (no globs).
            names = frozenset(expr.value.split("|"))
            checks.append(
                (
                    f"unable to find a node that satisfies the whitelist {expr}",
                    lambda n, names=names: n.name in names,
                )
            )
        return checks

    def describe(self, req: Request) -> list[str]:
        return [_soft_text(e) for e in req.exprs("whitelist")]


FILTERS: dict[str, Filter] = {
    f.name: f
    for f in (
        HealthFilter(),
        PortFilter(),
        ContainerSlotsFilter(),
        DependencyFilter(),
        AffinityFilter(),
        ConstraintFilter(),
        WhitelistFilter(),
    )
}
DEFAULT_FILTERS = list(FILTERS)
