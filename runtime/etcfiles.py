"""The /etc/hostname, /etc/hosts and /etc/resolv.conf of a container, as dockerd 20.10 writes them.

Follows libnetwork's etchosts and resolvconf packages and the sandbox's DNS setup.
"""

from __future__ import annotations

import os
import re

DEFAULT_HOSTS = [
    ("127.0.0.1", "localhost"),
    ("::1", "localhost ip6-localhost ip6-loopback"),
    ("fe00::0", "ip6-localnet"),
    ("ff00::0", "ip6-mcastprefix"),
    ("ff02::1", "ip6-allnodes"),
    ("ff02::2", "ip6-allrouters"),
]
DEFAULT_IPV4_DNS = ["8.8.8.8", "8.8.4.4"]
DEFAULT_IPV6_DNS = ["2001:4860:4860::8888", "2001:4860:4860::8844"]
EMBEDDED_DNS = "127.0.0.11"
HOST_RESOLV_CONF = "/etc/resolv.conf"
SYSTEMD_RESOLV_CONF = "/run/systemd/resolve/resolv.conf"

_IPV4_BLOCK = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = r"(" + _IPV4_BLOCK + r"\.){3}" + _IPV4_BLOCK
_IPV6 = r"([0-9A-Fa-f]{0,4}:){2,7}([0-9A-Fa-f]{0,4})(%\w+)?"
_LOCALHOST = r"((127\.([0-9]{1,3}\.){2}[0-9]{1,3})|(::1)$)"
_LOCALHOST_NS_RE = re.compile(r"^nameserver\s+" + _LOCALHOST + r"\s*\n*", re.M)
_IPV6_NS_RE = re.compile(r"^nameserver\s+" + _IPV6 + r"\s*\n*", re.M)
_NS_RE = re.compile(r"^\s*nameserver\s*((" + _IPV4 + r")|(" + _IPV6 + r"))\s*$")
_NS_IPV6_RE = re.compile(r"^\s*nameserver\s*((" + _IPV6 + r"))\s*$")
_SEARCH_RE = re.compile(r"^\s*search\s*(([^\s]+\s*)*)$")
_OPTIONS_RE = re.compile(r"^\s*options\s*(([^\s]+\s*)*)$")


def hostname_file(hostname: str) -> str:
    return hostname + "\n"


def _main_record_names(hostname: str, domainname: str) -> str:
    """`fqdn short` when the name has a dot (hostname may itself be an FQDN), else hostname."""
    fqdn = f"{hostname}.{domainname}" if domainname else hostname
    short, dot, _ = fqdn.partition(".")
    return f"{fqdn} {short}" if dot else fqdn


def hosts_file(
    hostname: str,
    domainname: str,
    ip: str | None,
    extra_hosts: list[tuple[str, str]],
    links: list[tuple[list[str] | str, str]],
) -> str:
    """Defaults, --add-host entries, links (names, ip), then the container's own address."""
    lines = [f"{addr}\t{names}" for addr, names in DEFAULT_HOSTS]
    lines += [f"{addr}\t{name}" for name, addr in extra_hosts]
    for names, addr in links:
        joined = names if isinstance(names, str) else " ".join(names)
        lines.append(f"{addr}\t{joined}")
    if ip:
        lines.append(f"{ip}\t{_main_record_names(hostname, domainname)}")
    return "".join(line + "\n" for line in lines)


def _lines(text: str) -> list[str]:
    return [line.split("#", 1)[0] for line in text.split("\n")]


def nameservers(text: str, ipv6_only: bool = False) -> list[str]:
    regex = _NS_IPV6_RE if ipv6_only else _NS_RE
    out = []
    for line in _lines(text):
        m = regex.match(line)
        if m:
            out.append(m.group(1))
    return out


def search_domains(text: str) -> list[str]:
    """The last `search` line wins."""
    domains: list[str] = []
    for line in _lines(text):
        m = _SEARCH_RE.match(line)
        if m:
            domains = m.group(1).split()
    return domains


def options(text: str) -> list[str]:
    """The last `options` line wins."""
    opts: list[str] = []
    for line in _lines(text):
        m = _OPTIONS_RE.match(line)
        if m:
            opts = m.group(1).split()
    return opts


def filter_resolv_dns(text: str, ipv6: bool) -> str:
    """resolvconf.FilterResolvDNS: drop localhost (and, without IPv6, IPv6) nameservers and
    append Google's when none is left."""
    cleaned = _LOCALHOST_NS_RE.sub("", text)
    if not ipv6:
        cleaned = _IPV6_NS_RE.sub("", cleaned)
    if not nameservers(cleaned):
        dns = DEFAULT_IPV4_DNS + (DEFAULT_IPV6_DNS if ipv6 else [])
        cleaned += "\n" + "\n".join(f"nameserver {ns}" for ns in dns)
    return cleaned


def build_resolv_conf(dns: list[str], dns_search: list[str], dns_options: list[str]) -> str:
    """resolvconf.Build: search, nameservers, options (`search .` means none)."""
    out = ""
    if dns_search and " ".join(dns_search).strip(" ") != ".":
        out += "search " + " ".join(dns_search) + "\n"
    out += "".join(f"nameserver {ns}\n" for ns in dns)
    if dns_options and " ".join(dns_options).strip(" ") != "":
        out += "options " + " ".join(dns_options) + "\n"
    return out


def resolv_conf(
    host_resolv_text: str,
    dns: list[str],
    dns_search: list[str],
    dns_options: list[str],
    network_mode: str,
    ipv6: bool = False,
    embedded_dns: bool = False,
) -> str:
    """The container's resolv.conf.

    Host networking without DNS options copies the host's file. Any --dns/--dns-search/
    --dns-option builds a file from them, completed from the host's (unfiltered, as dockerd).
    Otherwise the host's file is filtered twice as the sandbox does: at creation (IPv6 assumed)
    and after joining the network (`ipv6` = the network has IPv6). `embedded_dns` (user-defined
    networks) then points the container at the embedded resolver, like sandbox.rebuildDNS.
    """
    custom = bool(dns or dns_search or dns_options)
    if network_mode == "host" and not custom:
        return host_resolv_text
    if custom:
        text = build_resolv_conf(
            dns or nameservers(host_resolv_text),
            dns_search or search_domains(host_resolv_text),
            dns_options or options(host_resolv_text),
        )
    else:
        text = filter_resolv_dns(host_resolv_text, True)
        if network_mode != "host":
            text = filter_resolv_dns(text, ipv6)
    if embedded_dns and network_mode != "host":
        text = _embedded(text)
    return text


def _embedded(text: str) -> str:
    opts = options(text)
    # the embedded resolver wants ndots:0 unless the user chose an ndots value
    if not any("ndots" in o for o in opts):
        opts.append("ndots:0")
    servers = [EMBEDDED_DNS] + nameservers(text, ipv6_only=True)
    return build_resolv_conf(servers, search_domains(text), opts)


def host_resolv_path(default_text: str | None = None) -> str:
    """resolvconf.Path: systemd-resolved's real file when /etc/resolv.conf only has its stub."""
    text = default_text
    if text is None:
        try:
            with open(HOST_RESOLV_CONF) as f:
                text = f.read()
        except OSError:
            return HOST_RESOLV_CONF
    if nameservers(text) == ["127.0.0.53"]:
        return SYSTEMD_RESOLV_CONF
    return HOST_RESOLV_CONF


INIT_LAYER_FILES = ("etc/hostname", "etc/hosts", "etc/resolv.conf")


def make_init_layer(path: str) -> None:
    """dockerd's "-init" layer: the mount points of the managed /etc files live below the
    container's rw layer, so binding them never copies anything up and `docker diff` and
    `commit` of a fresh container are empty."""
    for rel in INIT_LAYER_FILES:
        target = os.path.join(path, rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "w"):
            pass
