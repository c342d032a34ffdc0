"""Legacy container links (`--link name:alias`): parsing and the environment they inject.

Follows moby 20.10's daemon/links and runconfig/opts.ParseLink, quirks included (for example
a port range is detected on port numbers alone, whatever the protocols).
"""

from __future__ import annotations

import posixpath

from proto.docker.errors import SystemError_

# ParseLink's errors reach the client unwrapped from registerLinks: 500 in dockerd 20.10.
LinkError = SystemError_


def parse_link(val: str) -> tuple[str, str]:
    """`name:alias` → (name, alias); `name` → (name, name); `/name:/parent/alias` accepted."""
    if val == "":
        raise LinkError("empty string specified for links")
    arr = val.split(":")
    if len(arr) > 2:
        raise LinkError(f"bad format for links: {val}")
    if len(arr) == 1:
        return val, val
    # HostConfig.Links echoed back by inspect has the `/name:/parent/alias` form
    if arr[0].startswith("/"):
        return arr[0][1:], posixpath.basename(arr[1])
    return arr[0], arr[1]


def link_name(parent_name: str, alias: str) -> str:
    """The link's full name `/parent/alias`, what `<ALIAS>_NAME` holds and inspect shows."""
    return f"/{parent_name.strip('/')}/{alias}"


def inspect_link(target_name: str, parent_name: str, alias: str) -> str:
    """One HostConfig.Links entry as inspect shows it: `/target:/parent/alias`."""
    return f"/{target_name.strip('/')}:{link_name(parent_name, alias)}"


def host_aliases(alias: str, target_hostname: str, target_name: str) -> list[str]:
    """Names under which the parent's /etc/hosts knows the target: alias, hostname, name."""
    names = [alias, target_hostname]
    target_name = target_name.strip("/")
    if alias != target_name:
        names.append(target_name)
    return names


def _split_port(p: str) -> tuple[int, str]:
    port, _, proto = p.partition("/")
    return int(port), (proto or "tcp")


def _sort_key(p: tuple[int, str]) -> tuple[int, int, str]:
    # nat.Sort with moby's comparator: by number, tcp first among equal numbers
    return (p[0], 0 if p[1].lower() == "tcp" else 1, p[1])


def _next_contiguous(ports: list[tuple[int, str]], value: int, index: int) -> int:
    if index + 1 == len(ports):
        return index
    for i in range(index + 1, len(ports)):
        if ports[i][0] > value + 1:
            return i - 1
        value += 1
    return len(ports) - 1


def link_env(
    alias: str,
    parent_name: str,
    target_ip: str,
    exposed_ports: list[str],
    target_env: list[str],
) -> list[str]:
    """The variables a container linked to a target under `alias` receives (Link.ToEnv).

    `parent_name` is the name of the container that *has* the link: `<ALIAS>_NAME` is
    `/<parent>/<alias>`. `exposed_ports` are the target's `80/tcp`-style ports.
    """
    prefix = posixpath.basename(link_name(parent_name, alias)).upper().replace("-", "_")
    ports = sorted((_split_port(p) for p in exposed_ports), key=_sort_key)
    env: list[str] = []
    if ports:
        num, proto = ports[0]
        env.append(f"{prefix}_PORT={proto}://{target_ip}:{num}")
    env += _range_env(prefix, target_ip, ports)
    for num, proto in ports:
        key = f"{prefix}_PORT_{num}_{proto.upper()}"
        env += [
            f"{key}={proto}://{target_ip}:{num}",
            f"{key}_ADDR={target_ip}",
            f"{key}_PORT={num}",
            f"{key}_PROTO={proto}",
        ]
    env.append(f"{prefix}_NAME={link_name(parent_name, alias)}")
    for item in target_env:
        name, sep, value = item.partition("=")
        # variables docker build adds, meaningless for the linking container
        if not sep or name in ("HOME", "PATH"):
            continue
        env.append(f"{prefix}_ENV_{name}={value}")
    return env


def _range_env(prefix: str, ip: str, ports: list[tuple[int, str]]) -> list[str]:
    """`_START`/`_END` variables for each run of 3+ consecutive port numbers."""
    env: list[str] = []
    i = 0
    while i < len(ports):
        num, proto = ports[i]
        j = _next_contiguous(ports, num, i)
        if j <= i + 1:
            i += 1
            continue
        key = f"{prefix}_PORT_{num}_{proto.upper()}"
        end_num, end_proto = ports[j]
        end_key = f"{prefix}_PORT_{num}_{end_proto.upper()}"
        env += [
            f"{key}_START={proto}://{ip}:{num}",
            f"{key}_ADDR={ip}",
            f"{key}_PROTO={proto}",
            f"{key}_PORT_START={num}",
            f"{end_key}_END={end_proto}://{ip}:{end_num}",
            f"{end_key}_PORT_END={end_num}",
        ]
        i = j + 1
    return env
