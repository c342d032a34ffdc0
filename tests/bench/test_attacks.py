"""bench/attacks.py in a reduced mode (few race tries and fuzz cases) against a dev cluster:
every attack runs, none escapes, the fuzz gets no 5xx, no unauthenticated client gets into the
secured manager, etcd or the agents, and the last line is the JSON the issue asks for. The dev
cluster's own Engine API and etcd are plaintext on loopback by design (docs/security.md): they
are reported in `dev_plaintext_listeners`, apart."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from deploy.dev_layout import REPO
from tests.fixtures import dev_cluster


def test_attacks_reduced() -> None:
    with dev_cluster(1):
        res = subprocess.run(
            [
                sys.executable,
                os.path.join(REPO, "bench", "attacks.py"),
                "--use-running",
                "--race-tries",
                "20",
                "--fuzz-cases",
                "20",
            ],
            capture_output=True,
            text=True,
            timeout=900,
            cwd=REPO,
        )
    assert res.returncode == 0, res.stdout + res.stderr
    *lines, last = res.stdout.strip().splitlines()
    figures = json.loads(last)
    assert set(figures) == {
        "attacks",
        "escapes",
        "fuzz_cases",
        "fuzz_5xx",
        "unauthenticated_ok",
        "dev_plaintext_listeners",
    }
    attacks = [line for line in lines if not line.startswith("note: ")]
    assert figures["attacks"] == len(attacks) and figures["attacks"] >= 20
    assert all(" tries=" in line for line in attacks), res.stdout
    assert figures["escapes"] == 0, res.stdout
    assert (figures["fuzz_cases"], figures["fuzz_5xx"]) == (20, 0), res.stdout
    assert figures["unauthenticated_ok"] == 0, res.stdout
    assert any("Engine API --tlsverify" in line for line in attacks), res.stdout
    assert any("plaintext on loopback by design" in line for line in lines), res.stdout
