"""Attacks against the dev cluster, as a container, an image, an archive or a client on the
network would make them, each watching the host for what must not happen there.

Containment (each escape is seen on the host, never inferred from an error message):
- device nodes: mknod of a loop device whose first bytes are a marker, read as root in a
  container; the same node in an image layer (`docker import`, run as root and as nobody) and
  put by `docker cp`; each with a privileged control that must read the marker;
- the `docker cp` symlink-swap race (raw HTTP PUT/GET archive, `--race-tries`, 2,000 by
  default): a write landing in the host's "/" or a read of a host-only file;
- crafted images (`docker import` and `docker load`) with /etc, VOLUME paths and a copy-up
  source that are symlinks to a host directory: nothing may appear there or be read from it;
- whiteouts naming `..` in layers (`docker load`, `docker import`): no directory of a node's
  data root may vanish;
- tar entries with `..`, absolute names, hard links out and a symlink then a write through it,
  in `docker load`, `docker import` and `docker cp`: a host directory must keep its one file,
  whose link count must stay 1 and whose content must not come back from a container;
- a setuid-root program in a layer (it prints any file), run by the host user nobody through
  the data root and /proc/<pid>/root, and the container's config read as nobody: a root-only
  marker file and the container's Env secret must not be printed (control: the same program
  outside the data root prints the marker).

Control plane: the hypothesis fuzz of bench/api_fuzz.py against the manager (`--fuzz-cases`),
and unauthenticated clients against the secured configuration an operator deploys
(docs/install.md "Certificates"), started here for real with a fresh PKI (tests/secured_kit.py,
the code tests/agent/test_etcd_auth.py and tests/manager/test_api_tls.py use): `_ping`, info and
a container create sent to a `flotilla manage --tlsverify` without a client certificate (plain
HTTP, TLS 1.2, TLS 1.3) and with another CA's certificate; a fake node record written to an etcd
with client-certificate auth in plaintext, over TLS without a certificate and with another CA's;
and a gRPC client without a certificate calling ContainerCreate on every dev cluster agent
(mutual TLS). The manager and etcd attempts have a control with the right certificate that
must get through.
`unauthenticated_ok` counts the unauthenticated attempts that succeeded.

The dev cluster's own Engine API and etcd are plaintext on loopback by design (a developer's
convenience, not the secured deployment): the same attempts against them are measured too,
printed with the "plaintext=" label and counted in `dev_plaintext_listeners`, not in
`unauthenticated_ok`.

Brings up a 1-node dev cluster (or uses the running one with `--use-running`, left up), run it
from the checkout's root under the shared lock:
`flock /tmp/flt-dev.lock /opt/flotilla/venv/bin/python bench/attacks.py`. One line per attack
(name, tries, escapes); the last line is JSON:
{"attacks": N, "escapes": E, "fuzz_cases": F, "fuzz_5xx": X, "unauthenticated_ok": U,
 "dev_plaintext_listeners": P}.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from bench.attack_support import PREFIX, Host, Outcome, cleanup, log  # noqa: E402
from bench.attacks_containment import (  # noqa: E402
    attack_cp_race,
    attack_crafted_images,
    attack_device_cp,
    attack_device_layer,
    attack_device_mknod,
    attack_setuid,
    attack_tar_entries,
    attack_whiteouts,
)
from bench.attacks_control import (  # noqa: E402
    DEV_PLAINTEXT,
    attack_api_fuzz,
    dev_plaintext_engine_api,
    dev_plaintext_etcd,
    secured_control_plane,
    unauth_agent_grpc,
    unauth_engine_api,
    unauth_etcd_fake_node,
)
from deploy import devcluster  # noqa: E402
from deploy.busybox_image import build_rootfs_tar  # noqa: E402
from tests.attack_kit import loop_device  # noqa: E402

# ----------------------------------------------------------------------------- main


def run_all(race_tries: int, fuzz_cases: int) -> tuple[list[Outcome], dict[str, int]]:
    outcomes: list[Outcome] = []
    counts = {"fuzz_cases": 0, "fuzz_5xx": 0}

    def done(*results: Outcome) -> None:
        for r in results:
            outcomes.append(r)
            print(r.line(), flush=True)

    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix=PREFIX))
        busybox_tar = build_rootfs_tar(os.path.join(tmp, "busybox.tar"))
        host = stack.enter_context(Host.make())
        lp = stack.enter_context(loop_device())
        done(attack_device_mknod(lp), attack_device_layer(lp, busybox_tar), attack_device_cp(lp))
        done(attack_cp_race(race_tries))
        done(*attack_crafted_images(host, busybox_tar))
        done(*attack_whiteouts(busybox_tar))
        done(*attack_tar_entries(host, busybox_tar))
        done(attack_setuid(host, busybox_tar))
        fuzz, counts["fuzz_cases"], counts["fuzz_5xx"] = attack_api_fuzz(fuzz_cases)
        done(fuzz)
        pki, etcd, port = stack.enter_context(secured_control_plane())
        done(*unauth_engine_api(pki, port), unauth_etcd_fake_node(pki, etcd))
        done(unauth_agent_grpc())
        done(dev_plaintext_engine_api(), dev_plaintext_etcd())
    return outcomes, counts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--race-tries", type=int, default=2000, help="cp race PUT+GET pairs")
    ap.add_argument("--fuzz-cases", type=int, default=300, help="API fuzz cases")
    ap.add_argument(
        "--use-running", action="store_true", help="use the dev cluster that is up (left up)"
    )
    args = ap.parse_args()

    if args.use_running and not devcluster.is_up():
        ap.error("--use-running: no dev cluster is up")
    ours_cluster = not args.use_running
    config = tempfile.mkdtemp(prefix=f"{PREFIX}docker-config-")
    os.environ["DOCKER_CONFIG"] = config
    try:
        if ours_cluster:
            log("dev cluster of 1 node")
            devcluster.up(1, timeout=60)
        cleanup()  # a crashed earlier run's leftovers
        try:
            outcomes, counts = run_all(args.race_tries, args.fuzz_cases)
        finally:
            cleanup()
    finally:
        if ours_cluster:
            devcluster.down()
        shutil.rmtree(config, ignore_errors=True)
    unauth = [o for o in outcomes if o.label == "ok"]
    contained = [o for o in outcomes if o.label == "escapes"]
    print(f"note: the dev cluster's own Engine API ({devcluster.docker_host()}) and etcd are "
          f"{DEV_PLAINTEXT}: dev_plaintext_listeners, not unauthenticated_ok")  # fmt: skip
    res = {
        "attacks": len(outcomes),
        "escapes": sum(o.escapes for o in contained),
        "fuzz_cases": counts["fuzz_cases"],
        "fuzz_5xx": counts["fuzz_5xx"],
        "unauthenticated_ok": sum(o.escapes for o in unauth),
        "dev_plaintext_listeners": sum(o.escapes for o in outcomes if o.label == "plaintext"),
    }
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
