"""The arrows point one way: manager → proto ← agent → runtime → proto.docker.

Read from every import statement (also those inside functions), so a late import cannot hide.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ("manager", "agent", "runtime", "proto", "deploy")

# package -> the flotilla packages (or sub-packages) it must never import
FORBIDDEN = {
    "manager": ("runtime", "agent", "deploy"),
    "agent": ("manager", "deploy"),
    "runtime": ("manager", "agent", "deploy", "proto.kv", "proto.rpc", "proto.agent_pb2"),
    "proto": ("manager", "agent", "runtime", "deploy"),
}


def imported_modules(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{alias.name}" for alias in node.names)
    return out


def _violations(package: str) -> list[str]:
    bad: list[str] = []
    for path in sorted((REPO / package).rglob("*.py")):
        for module in imported_modules(path):
            for forbidden in FORBIDDEN[package]:
                if module == forbidden or module.startswith(forbidden + "."):
                    bad.append(f"{path.relative_to(REPO)} imports {module}")
    return bad


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_point_one_way(package: str) -> None:
    assert _violations(package) == []


def test_the_check_sees_a_forbidden_import(tmp_path: pathlib.Path) -> None:
    sample = tmp_path / "x.py"
    sample.write_text("def f():\n    from runtime.containers import Runtime\n    import agent.main")
    assert {"runtime.containers", "agent.main"} <= imported_modules(sample)
