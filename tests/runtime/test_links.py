"""runtime.links: link parsing and moby's legacy link environment."""

from __future__ import annotations

import pytest

from proto.docker.errors import DockerError
from runtime import links


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("db", ("db", "db")),
        ("db:database", ("db", "database")),
        ("my-db:my_alias", ("my-db", "my_alias")),
        ("/db:/web/database", ("db", "database")),
        ("/db:/database", ("db", "database")),
        ("db:", ("db", "")),
    ],
)
def test_parse_link(raw: str, expected: tuple[str, str]) -> None:
    assert links.parse_link(raw) == expected


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("", "empty string specified for links"),
        ("a:b:c", "bad format for links: a:b:c"),
        ("/a:/b/c:d", "bad format for links: /a:/b/c:d"),
    ],
)
def test_parse_link_invalid(raw: str, message: str) -> None:
    with pytest.raises(DockerError) as info:
        links.parse_link(raw)
    assert info.value.message == message
    assert info.value.status == 500  # unwrapped in dockerd's registerLinks


def test_names() -> None:
    assert links.link_name("web", "db") == "/web/db"
    assert links.link_name("/web", "db") == "/web/db"
    assert links.inspect_link("/redis", "web", "cache") == "/redis:/web/cache"
    assert links.host_aliases("db", "a1b2c3d4e5f6", "/postgres") == [
        "db",
        "a1b2c3d4e5f6",
        "postgres",
    ]
    assert links.host_aliases("db", "a1b2c3d4e5f6", "db") == ["db", "a1b2c3d4e5f6"]


def test_link_env_single_port() -> None:
    env = links.link_env("docker", "db", "172.0.17.2", ["6379/tcp"], ["PASSWORD=gordon"])
    assert env == [
        "DOCKER_PORT=tcp://172.0.17.2:6379",
        "DOCKER_PORT_6379_TCP=tcp://172.0.17.2:6379",
        "DOCKER_PORT_6379_TCP_ADDR=172.0.17.2",
        "DOCKER_PORT_6379_TCP_PORT=6379",
        "DOCKER_PORT_6379_TCP_PROTO=tcp",
        "DOCKER_NAME=/db/docker",
        "DOCKER_ENV_PASSWORD=gordon",
    ]


def test_link_env_range() -> None:
    env = links.link_env("docker", "db", "172.0.17.2", ["6381/tcp", "6379/tcp", "6380/tcp"], [])
    as_map = dict(e.split("=", 1) for e in env)
    assert as_map["DOCKER_PORT"] == "tcp://172.0.17.2:6379"
    assert as_map["DOCKER_PORT_6379_TCP_START"] == "tcp://172.0.17.2:6379"
    assert as_map["DOCKER_PORT_6379_TCP_END"] == "tcp://172.0.17.2:6381"
    assert as_map["DOCKER_PORT_6379_TCP_PROTO"] == "tcp"
    assert as_map["DOCKER_PORT_6379_TCP_ADDR"] == "172.0.17.2"
    assert as_map["DOCKER_PORT_6379_TCP_PORT_START"] == "6379"
    assert as_map["DOCKER_PORT_6379_TCP_PORT_END"] == "6381"
    for port in (6379, 6380, 6381):
        assert as_map[f"DOCKER_PORT_{port}_TCP"] == f"tcp://172.0.17.2:{port}"
        assert as_map[f"DOCKER_PORT_{port}_TCP_PORT"] == str(port)
    assert env[1] == "DOCKER_PORT_6379_TCP_START=tcp://172.0.17.2:6379"  # ranges come first


def test_two_consecutive_ports_are_not_a_range() -> None:
    env = links.link_env("a", "p", "10.0.0.2", ["80/tcp", "81/tcp"], [])
    assert not any("_START" in e or "_END" in e for e in env)


def test_tcp_sorted_first_and_udp() -> None:
    env = links.link_env("my-db", "web", "10.0.0.2", ["53/udp", "53/tcp", "8080/tcp"], [])
    assert env[0] == "MY_DB_PORT=tcp://10.0.0.2:53"
    assert env[1:5] == [
        "MY_DB_PORT_53_TCP=tcp://10.0.0.2:53",
        "MY_DB_PORT_53_TCP_ADDR=10.0.0.2",
        "MY_DB_PORT_53_TCP_PORT=53",
        "MY_DB_PORT_53_TCP_PROTO=tcp",
    ]
    assert "MY_DB_PORT_53_UDP=udp://10.0.0.2:53" in env
    assert env[-1] == "MY_DB_NAME=/web/my-db"


def test_default_proto_is_tcp() -> None:
    env = links.link_env("x", "p", "1.2.3.4", ["80"], [])
    assert env[0] == "X_PORT=tcp://1.2.3.4:80"


def test_no_ports() -> None:
    assert links.link_env("db", "web", "10.0.0.2", [], []) == ["DB_NAME=/web/db"]


def test_env_filtering() -> None:
    env = links.link_env(
        "db", "web", "10.0.0.2", [], ["HOME=/root", "PATH=/bin", "NOVALUE", "A=1=2", "EMPTY="]
    )
    assert env == ["DB_NAME=/web/db", "DB_ENV_A=1=2", "DB_ENV_EMPTY="]
