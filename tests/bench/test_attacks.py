"""bench/attacks.py in a reduced mode (few race tries and fuzz cases) against a dev cluster:
every attack runs, none escapes, the fuzz gets no 5xx and the last line is the JSON the issue
asks for. `unauthenticated_ok` is reported, not asserted: the dev cluster's Engine API and etcd
are plaintext on loopback by design (docs/security.md)."""

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
    lines = res.stdout.strip().splitlines()
    figures = json.loads(lines[-1])
    assert set(figures) == {"attacks", "escapes", "fuzz_cases", "fuzz_5xx", "unauthenticated_ok"}
    assert figures["attacks"] == len(lines) - 1 and figures["attacks"] >= 20
    assert figures["escapes"] == 0, res.stdout
    assert (figures["fuzz_cases"], figures["fuzz_5xx"]) == (20, 0), res.stdout
    assert all(" tries=" in line for line in lines[:-1]), res.stdout
