"""runtime.etcfiles: /etc/hostname, /etc/hosts and /etc/resolv.conf as dockerd writes them."""

from __future__ import annotations

from runtime import etcfiles

DEFAULTS = (
    "127.0.0.1\tlocalhost\n"
    "::1\tlocalhost ip6-localhost ip6-loopback\n"
    "fe00::0\tip6-localnet\n"
    "ff00::0\tip6-mcastprefix\n"
    "ff02::1\tip6-allnodes\n"
    "ff02::2\tip6-allrouters\n"
)


def test_hostname_file() -> None:
    assert etcfiles.hostname_file("abc123") == "abc123\n"


def test_hosts_file_plain() -> None:
    text = etcfiles.hosts_file("abc123def456", "", "172.17.0.2", [], [])
    assert text == DEFAULTS + "172.17.0.2\tabc123def456\n"


def test_hosts_file_no_ip() -> None:
    assert etcfiles.hosts_file("h", "", None, [], []) == DEFAULTS


def test_hosts_file_fqdn() -> None:
    text = etcfiles.hosts_file("web", "example.org", "10.0.0.5", [], [])
    assert text.endswith("10.0.0.5\tweb.example.org web\n")
    text = etcfiles.hosts_file("web.example.org", "", "10.0.0.5", [], [])
    assert text.endswith("10.0.0.5\tweb.example.org web\n")


def test_hosts_file_extra_hosts_then_links_then_self() -> None:
    text = etcfiles.hosts_file(
        "h",
        "",
        "172.17.0.3",
        [("db.local", "10.0.0.9"), ("v6", "fe80::1")],
        [(["db", "a1b2c3d4e5f6", "postgres"], "172.17.0.2"), ("cache", "172.17.0.4")],
    )
    assert text == DEFAULTS + (
        "10.0.0.9\tdb.local\n"
        "fe80::1\tv6\n"
        "172.17.0.2\tdb a1b2c3d4e5f6 postgres\n"
        "172.17.0.4\tcache\n"
        "172.17.0.3\th\n"
    )


HOST_RESOLV = (
    "# generated\nnameserver 10.0.0.1\nnameserver 127.0.0.53\nsearch corp.example\noptions edns0\n"
)


def test_resolv_host_mode_copies() -> None:
    assert etcfiles.resolv_conf(HOST_RESOLV, [], [], [], "host") == HOST_RESOLV


def test_resolv_filters_localhost() -> None:
    text = etcfiles.resolv_conf(HOST_RESOLV, [], [], [], "bridge")
    assert text == "# generated\nnameserver 10.0.0.1\nsearch corp.example\noptions edns0\n"


def test_resolv_falls_back_to_google() -> None:
    host = "nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch .\n"
    text = etcfiles.resolv_conf(host, [], [], [], "bridge")
    assert text == "options edns0 trust-ad\nsearch .\n\nnameserver 8.8.8.8\nnameserver 8.8.4.4\n"
    assert etcfiles.nameservers(text) == ["8.8.8.8", "8.8.4.4"]


def test_resolv_falls_back_with_ipv6() -> None:
    text = etcfiles.resolv_conf("nameserver 127.0.0.1\n", [], [], [], "none", ipv6=True)
    assert etcfiles.nameservers(text) == [
        "8.8.8.8",
        "8.8.4.4",
        "2001:4860:4860::8888",
        "2001:4860:4860::8844",
    ]


def test_resolv_ipv6_nameservers_dropped_without_ipv6() -> None:
    host = "nameserver 2001:db8::1\nnameserver 9.9.9.9\nnameserver ::1\n"
    assert etcfiles.nameservers(etcfiles.resolv_conf(host, [], [], [], "bridge")) == ["9.9.9.9"]
    kept = etcfiles.resolv_conf(host, [], [], [], "bridge", ipv6=True)
    assert etcfiles.nameservers(kept) == ["2001:db8::1", "9.9.9.9"]


def test_resolv_custom_dns() -> None:
    text = etcfiles.resolv_conf(HOST_RESOLV, ["1.1.1.1", "1.0.0.1"], [], [], "bridge")
    assert text == "search corp.example\nnameserver 1.1.1.1\nnameserver 1.0.0.1\noptions edns0\n"
    text = etcfiles.resolv_conf(HOST_RESOLV, [], ["a.example", "b.example"], ["ndots:2"], "host")
    # dockerd does not filter the host's nameservers on this path
    assert text == (
        "search a.example b.example\nnameserver 10.0.0.1\nnameserver 127.0.0.53\noptions ndots:2\n"
    )
    assert "search" not in etcfiles.resolv_conf(HOST_RESOLV, ["8.8.8.8"], ["."], [], "bridge")


def test_resolv_embedded_dns() -> None:
    text = etcfiles.resolv_conf(HOST_RESOLV, [], [], [], "mynet", embedded_dns=True)
    assert text == "search corp.example\nnameserver 127.0.0.11\noptions edns0 ndots:0\n"
    text = etcfiles.resolv_conf(HOST_RESOLV, [], [], ["ndots:3"], "mynet", embedded_dns=True)
    assert text == "search corp.example\nnameserver 127.0.0.11\noptions ndots:3\n"


def test_parsers() -> None:
    text = (
        "search a b\nsearch c   d\noptions x\n  nameserver 1.2.3.4  # c\nnameserver fe80::1%eth0\n"
    )
    assert etcfiles.search_domains(text) == ["c", "d"]
    assert etcfiles.options(text) == ["x"]
    assert etcfiles.nameservers(text) == ["1.2.3.4", "fe80::1%eth0"]
    assert etcfiles.nameservers(text, ipv6_only=True) == ["fe80::1%eth0"]


def test_build_resolv_conf() -> None:
    assert etcfiles.build_resolv_conf([], [], []) == ""
    assert etcfiles.build_resolv_conf(["1.1.1.1"], ["x"], ["a", "b"]) == (
        "search x\nnameserver 1.1.1.1\noptions a b\n"
    )


def test_host_resolv_path() -> None:
    assert etcfiles.host_resolv_path("nameserver 127.0.0.53\n") == etcfiles.SYSTEMD_RESOLV_CONF
    assert etcfiles.host_resolv_path("nameserver 1.1.1.1\n") == etcfiles.HOST_RESOLV_CONF
