"""deploy/setup.sh on a fresh Debian 12: deploy/check_fresh_install.sh debootstraps bookworm,
runs deploy/setup.sh in a chroot of it (twice: the second run has nothing to do) and then
`flotilla --help` there, and removes everything afterwards.

Takes about 1.5 minutes (downloads the base system, the Debian packages and the wheels). It
needs the machine's network (the Debian mirror, PyPI), so it runs in the machine's network
namespace and not in the test session's own (tests.fixtures.machine_netns).
"""

from __future__ import annotations

import glob
import os
import subprocess

import pytest

from deploy.devcluster import REPO
from tests.fixtures import machine_netns

SCRIPT = os.path.join(REPO, "deploy", "check_fresh_install.sh")


@pytest.mark.timeout(1200)
def test_setup_installs_on_fresh_debian() -> None:
    before = set(glob.glob("/var/tmp/flt-fresh-debian-*"))
    res = subprocess.run(
        ["nsenter", f"--net={machine_netns()}", SCRIPT],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=1100,
    )
    out = f"--- stdout\n{res.stdout[-6000:]}\n--- stderr\n{res.stderr[-6000:]}"
    assert res.returncode == 0, out
    assert "deploy/setup.sh installed flotilla on a fresh Debian 12" in res.stdout, out
    assert "] flotilla --help, the docker CLI and Debian's docker-compose" in res.stdout, out
    # Nothing is left behind: no root directory, no mount.
    assert set(glob.glob("/var/tmp/flt-fresh-debian-*")) == before
    with open("/proc/self/mountinfo") as f:
        assert "/var/tmp/flt-fresh-debian-" not in f.read()
