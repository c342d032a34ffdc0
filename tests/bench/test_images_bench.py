"""bench/images.py in a reduced mode (a small image, one round) on a 2-node dev cluster: every
measurement runs (the 1-node pull on one node, the pull on both, the build cold then all cached;
the same on a private dockerd when one is installed), the last line is the JSON the issue asks
for, and nothing of the run stays (images on the nodes, the dockerd's namespace, link and
data root). No figure is judged: the machine's speed is not the test's business."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from bench import dockerd
from deploy.dev_layout import REPO
from tests import registry_kit as kit
from tests.fixtures import dev_cluster, docker

pytestmark = pytest.mark.skipif(
    not os.path.exists(kit.REGISTRY_BIN), reason="docker-registry not installed (deploy/setup.sh)"
)


def test_images_bench_reduced() -> None:
    with dev_cluster(2):
        before = docker("images", "-a", "-q", "--no-trunc").stdout.split()
        res = subprocess.run(
            [
                sys.executable,
                os.path.join(REPO, "bench", "images.py"),
                "--rounds",
                "1",
                "--image-mib",
                "10",
                "--layers",
                "2",
                "--copy-mib",
                "1",
            ],  # fmt: skip
            capture_output=True,
            text=True,
            timeout=900,
            cwd=REPO,
        )
        assert res.returncode == 0, res.stdout + res.stderr
        assert docker("images", "-a", "-q", "--no-trunc").stdout.split() == before
    figures = json.loads(res.stdout.strip().splitlines()[-1])
    keys = ("pull_1node_s", "pull_all_nodes_s", "build_cold_s", "build_cached_s")
    assert all(figures[k] > 0 for k in keys), figures
    assert figures["nodes"] == 2
    ratios = [k for k in figures if k.endswith("_ratio_vs_dockerd")]
    if dockerd.installed():
        assert all(figures[k] > 0 for k in ratios), figures
    else:
        assert all(figures[k] is None for k in ratios), figures
    assert not os.path.exists(f"/run/netns/{dockerd.BENCH_NETNS}")
    assert not os.path.exists(f"/sys/class/net/{dockerd.LINK_HOST_IF}")
    assert not any(p.startswith("flt-bench-dockerd-") for p in os.listdir("/tmp"))
