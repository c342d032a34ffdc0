"""Regenerate the Python code of every `proto/*.proto`: `python proto/generate.py`.

The output is deterministic for a given grpcio-tools version (pinned in pyproject.toml), so
tests/test_proto_generated.py can regenerate into a temporary directory and compare bytes.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROTO_DIR = os.path.join(REPO, "proto")


def proto_files() -> list[str]:
    """The .proto files, relative to the repository (as protoc names them in the output)."""
    return sorted(os.path.relpath(p, REPO) for p in glob.glob(os.path.join(PROTO_DIR, "*.proto")))


def generated_names(proto: str) -> list[str]:
    """Files protoc writes for one proto, relative to the repository."""
    base = proto[: -len(".proto")]
    return [f"{base}_pb2.py", f"{base}_pb2.pyi", f"{base}_pb2_grpc.py"]


def generate(out_dir: str) -> list[str]:
    """Write the generated code of every proto under `out_dir`; returns the relative paths."""
    from grpc_tools import protoc  # imported here: only needed by developers and the test

    include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    protos = proto_files()
    # protoc runs with the repository as cwd so the file names it embeds are repo-relative,
    # whatever the checkout's absolute path.
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        rc = protoc.main(
            [
                "grpc_tools.protoc",
                "-I.",
                f"-I{include}",
                f"--python_out={out_dir}",
                f"--pyi_out={out_dir}",
                f"--grpc_python_out={out_dir}",
                *protos,
            ]
        )
    finally:
        os.chdir(cwd)
    if rc != 0:
        raise RuntimeError(f"protoc failed with status {rc}")
    return [name for proto in protos for name in generated_names(proto)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=REPO, help="output root (default: the repository)")
    args = parser.parse_args(argv)
    out = os.path.abspath(args.out)
    # Generate into a scratch dir first so a failing protoc leaves the checkout untouched.
    with tempfile.TemporaryDirectory(prefix="flt-proto-") as tmp:
        names = generate(tmp)
        for name in names:
            dest = os.path.join(out, name)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            shutil.copyfile(os.path.join(tmp, name), dest)
            print(dest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
