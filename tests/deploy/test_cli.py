"""`flotilla` argument parsing and the commands that need no cluster."""

from __future__ import annotations

import subprocess
import sys

import pytest

from deploy import cli


def test_join_flags() -> None:
    args = cli.build_parser().parse_args(
        [
            "join",
            "--etcd",
            "10.99.0.1:2379",
            "--etcd",
            "10.99.0.2:2379",
            "--advertise",
            "10.99.0.10:4243",
            "--name",
            "node-0",
            "--data-root",
            "/tmp/x",
            "--label",
            "region=eu",
            "--label",
            "disk=ssd",
            "--heartbeat",
            "1s",
            "--ttl",
            "5s",
            "--insecure-grpc",
        ]
    )
    assert args.command == "join"
    from agent.main import config_from_args

    config = config_from_args(args)
    assert config.name == "node-0"
    assert config.advertise == "10.99.0.10:4243"
    assert config.data_root == "/tmp/x"
    assert dict(config.labels) == {"region": "eu", "disk": "ssd"}
    assert config.etcd_endpoints == ["10.99.0.1:2379", "10.99.0.2:2379"]
    assert (config.heartbeat_s, config.ttl_s) == (1.0, 5.0)
    assert config.prefix == "/flotilla"


def test_dev_join_command_parses() -> None:
    """The command line `dev up` gives each agent is one `flotilla join` accepts."""
    from deploy import devcluster

    cmd = devcluster.agent_command(1, {"region": "eu", "disk": "ssd"})
    argv = cmd[cmd.index("deploy.cli") + 1 :]
    args = cli.build_parser().parse_args(argv)
    from agent.main import config_from_args

    config = config_from_args(args)
    assert config.name == "node-1"
    assert config.advertise == "10.99.0.11:4243"
    assert dict(config.labels) == {"region": "eu", "disk": "ssd"}
    assert config.etcd_endpoints == ["10.99.0.1:2379"]
    assert config.data_root == "/var/lib/flotilla/dev/node-1"
    assert config.cgroup_parent == "flotilla/node-1"
    # The failover defaults (docs/failover.md): heartbeat 0.25 s, TTL 3 s, guard 0.25 s.
    assert (config.heartbeat_s, config.ttl_s, config.fence_guard_s) == (0.25, 3.0, 0.25)


def test_join_registry_mirrors(capsys: pytest.CaptureFixture[str]) -> None:
    base = ["join", "--etcd", "10.99.0.1:2379", "--advertise", "10.99.0.10:4243", "--insecure-grpc"]
    mirrors = ["--registry-mirror", "https://m1.example", "--registry-mirror", "http://m2:5000/"]
    from agent.main import config_from_args

    config = config_from_args(cli.build_parser().parse_args(base + mirrors))
    assert config.registries.mirrors == ("https://m1.example/", "http://m2:5000/")
    assert cli.main([*base, "--registry-mirror", "m1.example"]) == 2
    err = capsys.readouterr().err
    assert err == 'flotilla join: invalid mirror: unsupported scheme "" in "m1.example"\n'


def test_join_needs_etcd(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["join", "--advertise", "127.0.0.1:4243"]) == 2
    assert "etcd" in capsys.readouterr().err


def test_join_refuses_grpc_without_mutual_tls(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["join", "--etcd", "127.0.0.1:2379", "--advertise", "127.0.0.1:4243"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "refusing to serve gRPC without mutual TLS" in err and "--insecure-grpc" in err


def test_join_refuses_a_certificate_for_another_address(
    tmp_path: object, capsys: pytest.CaptureFixture[str]
) -> None:
    from deploy import certs

    d = str(tmp_path)
    certs.make_ca(d)
    node = certs.make_cert(d, "node-1", ["node-1", "10.0.0.1"])
    argv = ["join", "--etcd", "127.0.0.1:1", "--advertise", "10.0.0.2:4243"]
    argv += ["--tlscacert", node.ca, "--tlscert", node.cert, "--tlskey", node.key]
    assert cli.main(argv) == 2
    assert "is not for 10.0.0.2 (its names: 10.0.0.1, node-1)" in capsys.readouterr().err


def test_certs_command(tmp_path: object) -> None:
    d = str(tmp_path)
    assert cli.main(["certs", "ca", "--dir", d]) == 0
    assert cli.main(["certs", "ca", "--dir", d]) == 1  # never overwrites a CA
    assert cli.main(["certs", "node", "node-1", "--host", "10.0.0.1", "--dir", d]) == 0
    assert cli.main(["certs", "manager", "--host", "127.0.0.1", "--dir", d]) == 0
    assert cli.main(["certs", "client", "me", "--dir", d]) == 0
    assert cli.main(["certs", "etcd", "--host", "127.0.0.1", "--dir", d]) == 0
    assert cli.main(["certs", "manager", "--dir", d]) == 1  # a server needs --host
    text = subprocess.run(
        ["openssl", "x509", "-noout", "-text", "-in", f"{d}/node-1.pem"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "DNS:node-1, IP Address:10.0.0.1" in text and "TLS Web Client Authentication" in text
    roles = {"node-1": "flotilla-node", "manager": "flotilla-manager", "me": "flotilla-client"}
    for name in ("node-1", "manager", "me", "etcd"):
        verify = ["openssl", "verify", "-CAfile", f"{d}/ca.pem", f"{d}/{name}.pem"]
        assert subprocess.run(verify, capture_output=True).returncode == 0
        subject = subprocess.run(
            ["openssl", "x509", "-noout", "-subject", "-nameopt", "RFC2253", "-in", verify[-1]],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        role = roles.get(name)
        assert subject == (f"subject=OU={role},CN={name}" if role else f"subject=CN={name}")
    import os

    assert os.stat(f"{d}/ca-key.pem").st_mode & 0o777 == 0o600


def test_list_default_discovery_is_dev_cluster() -> None:
    args = cli.build_parser().parse_args(["list"])
    assert args.discovery == "etcd://127.0.0.1:2379/flotilla"
    args = cli.build_parser().parse_args(["list", "etcd://a:1,b:2/x"])
    from proto.kv import parse_discovery

    assert parse_discovery(args.discovery) == (["a:1", "b:2"], "/x")


def test_list_bad_discovery_url(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["list", "http://nope"]) == 2
    assert "discovery" in capsys.readouterr().err


def test_dev_label_parsing() -> None:
    assert cli.parse_node_labels(["node-1=region=eu,disk=ssd", "node-0=a=1", "node-1=x="]) == {
        "node-1": {"region": "eu", "disk": "ssd", "x": ""},
        "node-0": {"a": "1"},
    }
    for bad in ("node-1", "node-1=", "node-1=region", "=a=b", "node-1=a=1,,"):
        with pytest.raises(cli.UsageError):
            cli.parse_node_labels([bad])


def test_dev_actions_parse() -> None:
    p = cli.build_parser()
    up = p.parse_args(["dev", "up", "--nodes", "2", "--label", "node-1=region=eu"])
    assert (up.dev_command, up.nodes, up.label) == ("up", 2, ["node-1=region=eu"])
    assert p.parse_args(["dev", "up"]).nodes == 3
    for action in ("kill", "stop", "freeze", "partition", "heal", "start"):
        ns = p.parse_args(["dev", action, "node-2"])
        assert (ns.dev_command, ns.node) == (action, "node-2")
    with pytest.raises(SystemExit):
        p.parse_args(["dev", "kill"])


def test_dev_bad_node_name(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["dev", "kill", "web-1"]) == 1
    assert "node-N" in capsys.readouterr().err


def test_manage_rejects_bad_flags() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "deploy.cli", "manage", "-H", "http://x:1"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert res.returncode == 2
    assert "invalid -H" in res.stderr
    assert res.stdout == ""


def test_dev_up_manager_flags() -> None:
    """`dev up --strategy/--filter -- FLAGS` become the flags `flotilla manage` reads."""
    args = cli.build_parser().parse_args(
        ["dev", "up", "--nodes", "2", "--strategy", "binpack", "-f", "health"]
        + ["--filter", "constraint", "--", "--log-level", "debug"]
    )
    assert args.nodes == 2
    flags = cli.dev_manager_args(args)
    assert flags == ["--strategy", "binpack", "--filter", "health", "--filter", "constraint"] + [
        "--log-level",
        "debug",
    ]
    from deploy import devcluster
    from manager.main import config_from_args

    cmd = devcluster.manager_command(flags)
    manage = cli.build_parser().parse_args(cmd[cmd.index("deploy.cli") + 1 :])
    config = config_from_args(manage)
    assert (config.strategy, config.filters) == ("binpack", ["health", "constraint"])
    assert manage.log_level == "debug"
    assert config.prefix == devcluster.PREFIX
    assert cli.dev_manager_args(cli.build_parser().parse_args(["dev", "up"])) == []


def test_dev_up_rejects_bad_manager_flags(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checked by manage's own parser before anything is brought up."""
    from deploy import devcluster

    def up(*args: object, **kwargs: object) -> None:
        raise AssertionError("dev up went on with bad manager flags")

    monkeypatch.setattr(devcluster, "up", up)
    assert cli.main(["dev", "up", "--filter", "nope"]) == 1
    assert "flotilla dev up: flotilla manage: unknown filter 'nope'" in capsys.readouterr().err
    assert cli.main(["dev", "up", "--", "--tlscert", "c"]) == 1
    assert "require the use of either --tls" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["dev", "up", "--strategy", "nope"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'nope'" in capsys.readouterr().err


HEAVY = ("agent", "manager", "runtime", "pyroute2", "aiohttp", "prometheus_client")
# argv: the packages to look for (comma-separated), then the flotilla command line.
LOADED = """
import sys
from deploy import cli
try:
    code = cli.main(sys.argv[2:])
except SystemExit as e:
    code = e.code
heavy = sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[1].split(",")))
print(code, ",".join(heavy))
"""


@pytest.mark.parametrize(
    "argv", [["--help"], ["list", "etcd://127.0.0.1:1/flotilla"], ["dev", "--help"]]
)
def test_light_commands_import_no_stack(argv: list[str]) -> None:
    """`flotilla list` and `--help` load neither the agent's nor the manager's stack (~0.4 s)."""
    res = subprocess.run(
        [sys.executable, "-c", LOADED, ",".join(HEAVY), *argv],
        capture_output=True,
        text=True,
        timeout=60,
    )
    code, _, heavy = res.stdout.strip().rpartition("\n")[2].partition(" ")
    assert heavy == "", res.stdout + res.stderr
    # --help exits 0; list of a closed port says it cannot read etcd (1), not a usage error.
    assert code == ("1" if argv[0] == "list" else "0"), res.stdout + res.stderr
    if argv[0] == "list":
        assert "flotilla list: cannot read etcd://127.0.0.1:1/flotilla" in res.stderr
