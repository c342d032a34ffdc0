"""In CI (CI=true) a skipped test fails: tests/conftest.py's hook, run on a sample test file."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

from deploy.devcluster import REPO

SAMPLE = """
import pytest

def test_skips_inside():
    pytest.skip("docker CLI not installed")

@pytest.mark.skipif(True, reason="docker-compose not installed")
def test_marked_skip():
    pass

def test_importorskip():
    pytest.importorskip("no_such_module_here")

def test_runs():
    pass

@pytest.mark.xfail(reason="a known bug", strict=True)
def test_expected_failure():
    assert False
"""


def run_sample(tmp_path: pathlib.Path, ci: str | None) -> subprocess.CompletedProcess[str]:
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["FLOTILLA_TEST_HOST_NET"] = "1"  # this session's netns is enough for the sample
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "tests.conftest"]
        + ["-rA", str(tmp_path / "test_sample.py")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_skips_fail_in_ci(tmp_path: pathlib.Path) -> None:
    res = run_sample(tmp_path, "true")
    assert res.returncode == 1, res.stdout + res.stderr
    last = res.stdout.strip().splitlines()[-1]
    assert "2 failed, 1 passed, 1 xfailed, 1 error" in last, res.stdout
    assert "skipped in CI (CI=true), where every test must run: docker CLI not installed" in (
        res.stdout
    )
    assert "docker-compose not installed" in res.stdout
    assert "No module named 'no_such_module_here'" in res.stdout


def test_skips_stay_skips_elsewhere(tmp_path: pathlib.Path) -> None:
    for ci in (None, "", "false"):
        res = run_sample(tmp_path, ci)
        assert res.returncode == 0, res.stdout + res.stderr
        last = res.stdout.strip().splitlines()[-1]
        assert "1 passed, 3 skipped, 1 xfailed" in last, res.stdout
