"""`flotilla`: the operator command, with classic Swarm's verbs.

flotilla join [flags]            run an agent on this host
flotilla manage [discovery-url]  run the manager (Docker Engine API for the whole cluster)
flotilla hollow --count N [flags]  host N simulated nodes in one process (scale runs)
flotilla list [discovery-url]    registered nodes, one per line: name  address  status
flotilla dev up|down|status|kill-hollow|kill|stop|freeze|partition|crash|heal|start …
                                 the dev cluster
flotilla drill KIND NODE         inject a fault, measure the failover, print a report, heal
flotilla certs ca|node|manager|client|etcd …   a cluster CA and the certificates signed by it
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Sequence

DEV_DISCOVERY = "etcd://127.0.0.1:2379/flotilla"


class UsageError(Exception):
    pass


def parse_node_labels(specs: Sequence[str]) -> dict[str, dict[str, str]]:
    """`node-1=region=eu,disk=ssd` (repeatable) → {"node-1": {"region": "eu", "disk": "ssd"}}."""
    out: dict[str, dict[str, str]] = {}
    for spec in specs:
        node, sep, rest = spec.partition("=")
        if not sep or not node or not rest:
            raise UsageError(f"invalid --label {spec!r}: expected NODE=key=value[,key=value…]")
        labels = out.setdefault(node, {})
        for pair in rest.split(","):
            key, sep, value = pair.partition("=")
            if not sep or not key:
                raise UsageError(f"invalid label {pair!r} in {spec!r}: expected key=value")
            labels[key] = value
    return out


def command_of(argv: Sequence[str]) -> str:
    """The command `argv` names ("" for none, e.g. `--help`): the top level has no valued flag."""
    return next((a for a in argv if not a.startswith("-")), "")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole parser; with `command`, only that command's flags are filled in.

    `join`'s and `manage`'s flags are defined next to the agent and the manager, whose modules
    import their whole stacks (~0.4 s): `flotilla list` and `flotilla --help` skip them.
    """
    parser = argparse.ArgumentParser(prog="flotilla", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    join = sub.add_parser("join", help="run an agent: register this host and serve the manager")
    if command in (None, "join"):
        from agent.main import add_join_arguments

        add_join_arguments(join)

    manage = sub.add_parser("manage", help="run the manager: the Docker API for the cluster")
    if command in (None, "manage"):
        from manager.main import add_manage_arguments

        add_manage_arguments(manage)

    hollow = sub.add_parser("hollow", help="host many simulated nodes in one process (scale runs)")
    if command in (None, "hollow"):
        from agent.hollow_host import add_hollow_arguments

        add_hollow_arguments(hollow)

    lst = sub.add_parser("list", help="list registered nodes (name, address, status)")
    lst.add_argument(
        "discovery",
        nargs="?",
        default=DEV_DISCOVERY,
        help=f"etcd://host:port[,host:port]/prefix (default: the dev cluster, {DEV_DISCOVERY})",
    )
    from proto.etcd_flags import add_etcd_security_arguments

    add_etcd_security_arguments(lst)

    dev = sub.add_parser("dev", help="the one-machine dev cluster")
    dsub = dev.add_subparsers(dest="dev_command", required=True, metavar="ACTION")
    dev_up = dsub.add_parser("up", help="bring up etcd and N hosts with their agents")
    dev_up.add_argument("--nodes", type=int, default=3, help="number of hosts (default 3)")
    dev_up.add_argument(
        "--hollow",
        type=int,
        default=0,
        metavar="N",
        help="also N hollow nodes (simulated: docs/scale.md)",
    )
    dev_up.add_argument(
        "--hollow-per-host",
        type=int,
        default=0,
        metavar="M",
        help="hollow nodes per `flotilla hollow` process (default: all in one)",
    )
    dev_up.add_argument(
        "--hollow-shared-lease",
        action="store_true",
        help="each hollow process keeps one lease for its nodes (`flotilla hollow --shared-lease`)",
    )
    dev_up.add_argument(
        "--label",
        action="append",
        default=[],
        metavar="NODE=k=v[,k=v]",
        help="labels of one node, e.g. node-1=region=eu,disk=ssd (repeatable)",
    )
    dev_up.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for agents")
    dev_up.add_argument(
        "--strategy", help="the manager's placement strategy (flotilla manage --strategy)"
    )
    dev_up.add_argument(
        "-f",
        "--filter",
        action="append",
        default=[],
        help="a scheduler filter of the manager (repeatable; flotilla manage --filter)",
    )
    dev_up.add_argument(
        "manage_flags",
        nargs="*",
        metavar="-- MANAGE_FLAGS",
        help="more `flotilla manage` flags, after --, e.g. -- --log-level debug",
    )
    dsub.add_parser("down", help="take everything down and clean up (also after a crash)")
    dsub.add_parser("status", help="show etcd, hosts, agents, links and registrations")
    from deploy.dev_drills import DRILLS

    for action, (_, text) in DRILLS.items():
        p = dsub.add_parser(action, help=text)
        p.add_argument("node", metavar="NODE", help="node-N")
    kill_hollow = dsub.add_parser(
        "kill-hollow", help="SIGKILL hollow host K (its nodes are lost, as a dead machine's)"
    )
    kill_hollow.add_argument("host", type=int, metavar="K", help="the host's number (dev status)")
    add_drill_parser(sub)
    add_certs_parser(sub)
    return parser


def add_certs_parser(sub: argparse._SubParsersAction) -> None:
    certs = sub.add_parser("certs", help="make a cluster CA and its node/manager/client certs")
    csub = certs.add_subparsers(dest="certs_command", required=True, metavar="KIND")
    ca = csub.add_parser("ca", help="a new cluster CA: DIR/ca.pem, DIR/ca-key.pem")
    node = csub.add_parser(
        "node", help="an agent's certificate: CN and DNS SAN the node name, --host its address"
    )
    node.add_argument("name", metavar="NAME", help="the node's name (flotilla join --name)")
    manager = csub.add_parser(
        "manager", help="the manager's: Engine API server and client towards the agents"
    )
    manager.add_argument("--name", default="manager", help="CN and file name (default manager)")
    client = csub.add_parser("client", help="a client's (docker --tlsverify, tools): client auth")
    client.add_argument("name", metavar="NAME", help="CN and file name, e.g. the operator")
    etcd = csub.add_parser(
        "etcd", help="etcd's server certificate: no flotilla role, so it drives no agent"
    )
    etcd.add_argument("--name", default="etcd", help="CN and file name (default etcd)")
    for p in (node, manager, etcd):
        p.add_argument(
            "--host",
            action="append",
            default=[],
            metavar="IP|DNS",
            help="an address the certificate is for (repeatable; a node: its --advertise host)",
        )
    for p in (ca, node, manager, client, etcd):
        p.add_argument("--dir", default=".", help="where the CA is and the files go (default: .)")
        p.add_argument("--days", type=int, default=None, help="validity in days")


def add_drill_parser(sub: argparse._SubParsersAction) -> None:
    from deploy.drill import KINDS  # the standard library only: `--help` stays light

    drill = sub.add_parser(
        "drill", help="inject a fault into a node, measure the failover, print a report, heal"
    )
    drill.add_argument("kind", choices=KINDS, metavar="KIND", help=" | ".join(KINDS))
    drill.add_argument("node", metavar="NODE", help="the node's name")
    drill.add_argument(
        "--duration",
        type=float,
        default=None,
        metavar="S",
        help="heal after S seconds (default: once every container moved, or --timeout)",
    )
    drill.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="stop watching S seconds after the fault (default 30)",
    )
    drill.add_argument("--json", action="store_true", help="print the report as one JSON line")
    drill.add_argument(
        "--containers",
        type=int,
        default=0,
        metavar="N",
        help="first start N reschedulable containers on NODE (removed at the end)",
    )
    drill.add_argument(
        "--image", default="busybox:latest", help="their image (default busybox:latest)"
    )
    drill.add_argument(
        "--rpc",
        action="store_true",
        help="inject through the node agent's Drill RPC (needs `join --allow-drills`), "
        "also on a dev node",
    )
    drill.add_argument(
        "--discovery",
        default="",
        metavar="URL",
        help=f"etcd://host:port/prefix (default: the dev cluster, {DEV_DISCOVERY})",
    )
    drill.add_argument(
        "-H",
        "--host",
        default="",
        help="the manager (default: $DOCKER_HOST, else the dev cluster's)",
    )
    for flag, text in (
        ("--tlscacert", "the cluster CA (for --rpc on a node outside the dev cluster)"),
        ("--tlscert", "a client certificate from it (flotilla certs client)"),
        ("--tlskey", "its key"),
    ):
        drill.add_argument(flag, default="", help=text)


def cmd_join(args: argparse.Namespace) -> int:
    from agent.main import config_from_args, run_agent

    try:
        config = config_from_args(args)
    except ValueError as e:
        print(f"flotilla join: {e}", file=sys.stderr)
        return 2
    if config.tls is not None:
        from agent.tls_identity import check_advertise

        try:
            check_advertise(config.tls, config.advertise)
        except (OSError, ValueError) as e:
            print(f"flotilla join: {e}", file=sys.stderr)
            return 2
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_agent(config))
    return 0


def cmd_hollow(args: argparse.Namespace) -> int:
    from agent.hollow_host import config_from_args, run_hollow

    try:
        config = config_from_args(args)
    except ValueError as e:
        print(f"flotilla hollow: {e}", file=sys.stderr)
        return 2
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_hollow(config))
    return 0


def cmd_manage(args: argparse.Namespace) -> int:
    import logging

    from manager.main import config_from_args, run_manager

    try:
        config = config_from_args(args)
    except ValueError as e:
        print(f"flotilla manage: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_manager(config))
    return 0


async def _list(args: argparse.Namespace) -> list[str]:
    from proto.etcd_flags import etcd_security_from_args
    from proto.kv import parse_discovery
    from proto.nodes import list_nodes

    endpoints, prefix = parse_discovery(args.discovery)
    nodes = await list_nodes(endpoints, prefix, etcd_security_from_args(args))
    # A node key exists only while its lease is kept alive, so every listed node is healthy.
    return [f"{n.name}  {n.addr}  healthy" for n in sorted(nodes, key=lambda n: (n.name, n.id))]


def cmd_list(args: argparse.Namespace) -> int:
    try:
        lines = asyncio.run(asyncio.wait_for(_list(args), 15))
    except ValueError as e:
        print(f"flotilla list: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - any etcd failure is reported, not a traceback
        print(f"flotilla list: cannot read {args.discovery}: {e}", file=sys.stderr)
        return 1
    for line in lines:
        print(line)
    return 0


def dev_manager_args(args: argparse.Namespace) -> list[str]:
    """The `flotilla manage` flags `dev up` was given, checked by manage's own parser first."""
    flags = ["--strategy", args.strategy] if args.strategy else []
    for name in args.filter:
        flags += ["--filter", name]
    flags += args.manage_flags
    from deploy import devcluster
    from manager.main import config_from_args

    cmd = devcluster.manager_command(flags)
    manage_argv = cmd[cmd.index("deploy.cli") + 1 :]
    try:
        config_from_args(build_parser("manage").parse_args(manage_argv))
    except ValueError as e:
        raise UsageError(f"flotilla manage: {e}") from e
    return flags


def cmd_dev(args: argparse.Namespace) -> int:
    from deploy import devcluster as dc
    from deploy.dev_drills import DRILLS
    from deploy.dev_hollow import is_hollow_name

    action = args.dev_command
    try:
        if action == "up":
            labels = parse_node_labels(args.label)
            manager_args = dev_manager_args(args)
            nodes = dc.up(
                args.nodes,
                labels,
                timeout=args.timeout,
                manager_args=manager_args,
                hollow=args.hollow,
                hollow_per_host=args.hollow_per_host,
                hollow_shared_lease=args.hollow_shared_lease,
            )
            real = sorted((n for n in nodes if not is_hollow_name(n)), key=dc.node_index)
            hollow = [n for n in nodes if is_hollow_name(n)]
            if hollow:
                print(f"{len(hollow)} hollow nodes: hollow-0 … hollow-{len(hollow) - 1}")
            for name in real:
                n = nodes[name]
                tags = ",".join(f"{k}={v}" for k, v in sorted(getattr(n, "labels", {}).items()))
                print(f"{name}  {getattr(n, 'addr', '')}  {getattr(n, 'id', '')}  {tags}".rstrip())
            print(f"etcd: {dc.etcd_endpoint()}  (flotilla list {dc.discovery_url()})")
            print(
                f"manager: {dc.MANAGER_ADDR} and unix://{dc.MANAGER_SOCKET}"
                f"{''.join(' ' + a for a in manager_args)}  (log {dc.ROOT}/manager.log)"
            )
            print(f"export DOCKER_HOST={dc.docker_host()}")
        elif action == "down":
            dc.down()
        elif action == "status":
            st = dc.status()
            for line in st.lines():
                print(line)
            return 0 if st.etcd else 1
        elif action == "kill-hollow":
            names = dc.kill_hollow(args.host)
            print(f"hollow host {args.host} killed: {names[0]} … {names[-1]} lost")
        elif action == "start":
            rec = dc.start(args.node)
            print(f"{args.node}  {getattr(rec, 'addr', '')}  {getattr(rec, 'id', '')}")
        else:
            drill, _ = DRILLS[action]
            drill(args.node)
    except (UsageError, dc.DevError) as e:
        print(f"flotilla dev {action}: {e}", file=sys.stderr)
        return 1
    return 0


def cmd_drill(args: argparse.Namespace) -> int:
    from deploy.drill import main as drill_main

    return drill_main(args)


def cmd_certs(args: argparse.Namespace) -> int:
    from deploy import certs
    from proto import cert_roles

    kind = args.certs_command
    days = {"days": args.days} if args.days else {}
    try:
        if kind == "ca":
            print(certs.make_ca(args.dir, **days))
            return 0
        if kind == "node":
            out = certs.make_cert(
                args.dir, args.name, [args.name, *args.host], role=cert_roles.NODE, **days
            )
        elif kind == "manager":
            out = certs.make_cert(args.dir, args.name, args.host, role=cert_roles.MANAGER, **days)
        elif kind == "etcd":
            out = certs.make_cert(args.dir, args.name, args.host, client=False, **days)
        else:
            out = certs.make_cert(args.dir, args.name, server=False, role=cert_roles.CLIENT, **days)
    except (OSError, ValueError) as e:
        print(f"flotilla certs {kind}: {e}", file=sys.stderr)
        return 1
    print(f"{out.cert}\n{out.key}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(command_of(argv)).parse_args(argv)
    handler = {
        "join": cmd_join,
        "hollow": cmd_hollow,
        "manage": cmd_manage,
        "list": cmd_list,
        "dev": cmd_dev,
        "drill": cmd_drill,
        "certs": cmd_certs,
    }
    return handler[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
