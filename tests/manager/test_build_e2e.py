"""docker build through the manager, end to end: a real 2-node dev cluster (busybox on each
node) driven by the real docker CLI with the legacy builder (DOCKER_BUILDKIT=0), and raw
POST /build where the CLI cannot send what a test needs (hostile context tars). One cluster
serves the module; each test removes the images and containers it made."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from deploy import dev_layout
from deploy import devcluster as dc
from tests import registry_kit as kit
from tests.fixtures import dev_cluster, docker

URL = f"http://{dc.MANAGER_ADDR}"


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, object]]:
    with dev_cluster(2, {}) as nodes:
        yield nodes


@pytest.fixture
def ctx() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="flt-build-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def cleanup() -> Iterator[list[str]]:
    """Image names and container ids the test made: removed whatever happens."""
    made: list[str] = []
    try:
        yield made
    finally:
        for name in reversed(made):
            docker("rm", "-f", name, check=False)
            docker("rmi", "-f", name, check=False)


def write(ctx: str, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = os.path.join(ctx, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)


def build(ctx: str, *args: str, check: bool = True) -> tuple[int, str, str]:
    os.environ["DOCKER_BUILDKIT"] = "0"
    try:
        res = docker("build", *args, ctx, check=False, timeout=120)
    finally:
        del os.environ["DOCKER_BUILDKIT"]
    if check and res.returncode != 0:
        raise AssertionError(f"build failed rc={res.returncode}\n{res.stdout}\n{res.stderr}")
    return res.returncode, res.stdout, res.stderr


def run(image: str, *cmd: str) -> str:
    return docker("run", "--rm", image, *cmd).stdout


def inspect(image: str) -> dict[str, object]:
    return json.loads(docker("image", "inspect", image).stdout)[0]


def raw_build(tar_bytes: bytes, query: str = "t=flt-raw") -> tuple[int, list[dict[str, object]]]:
    req = urllib.request.Request(
        f"{URL}/v1.41/build?{query}",
        data=tar_bytes,
        method="POST",
        headers={"Content-Type": "application/x-tar"},
    )
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            body = resp.read().decode()
            status = resp.status
    except urllib.error.HTTPError as e:
        return e.code, [json.loads(e.read())]
    return status, [json.loads(line) for line in body.splitlines() if line.strip()]


def tar_of(entries: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return buf.getvalue()


def entry(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = 0o644 if kind == tarfile.REGTYPE else 0o777
    info.linkname = link
    return info


def test_every_instruction(cluster: object, ctx: str, cleanup: list[str]) -> None:
    write(
        ctx,
        {
            "Dockerfile": """\
ARG BASE=busybox
FROM ${BASE}
LABEL org.test=one "second label"="two words"
ENV GREETING=hello \\
    TARGET=world
ARG WHO=nobody
WORKDIR /app
COPY --chown=1000:1001 hello.txt ./
COPY dir/ /data/
ADD archive.tar /unpacked/
RUN echo "$GREETING $TARGET $WHO" > /app/out.txt && id -u > /app/uid.txt
SHELL ["/bin/sh", "-c"]
RUN ["/bin/sh", "-c", "echo exec-form > /app/exec.txt"]
USER 1000
EXPOSE 8080 9000/udp
VOLUME /vol
STOPSIGNAL SIGUSR1
HEALTHCHECK --interval=5s --retries=2 CMD true
ONBUILD RUN echo triggered > /tmp/trigger.txt
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["cat /app/out.txt"]
""",
            "hello.txt": "hi\n",
            "dir/a.txt": "a\n",
            "dir/sub/b.txt": "b\n",
        },
    )
    with tarfile.open(os.path.join(ctx, "archive.tar"), "w") as tar:
        data = b"from the archive\n"
        info = tarfile.TarInfo("inside/file.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    cleanup.append("flt-every")
    _, out, _ = build(ctx, "-t", "flt-every", "--build-arg", "WHO=tester")
    assert "Step 1/20 : ARG BASE=busybox" in out
    assert "Step 2/20 : FROM ${BASE}" in out
    assert " ---> Running in " in out and "Removing intermediate container" in out
    assert "Successfully built " in out and "Successfully tagged flt-every:latest" in out
    assert run("flt-every") == "hello world tester\n"
    cfg = inspect("flt-every")["Config"]
    assert isinstance(cfg, dict)
    assert cfg["User"] == "1000" and cfg["WorkingDir"] == "/app"
    assert cfg["Labels"] == {"org.test": "one", "second label": "two words"}
    assert cfg["ExposedPorts"] == {"8080/tcp": {}, "9000/udp": {}}
    assert cfg["Volumes"] == {"/vol": {}} and cfg["StopSignal"] == "SIGUSR1"
    assert cfg["Healthcheck"]["Test"] == ["CMD-SHELL", "true"]
    assert cfg["Healthcheck"]["Retries"] == 2
    assert cfg["OnBuild"] == ["RUN echo triggered > /tmp/trigger.txt"]
    assert cfg["Entrypoint"] == ["/bin/sh", "-c"] and cfg["Cmd"] == ["cat /app/out.txt"]
    assert "GREETING=hello" in cfg["Env"] and "TARGET=world" in cfg["Env"]
    assert not any(e.startswith("WHO=") for e in cfg["Env"])  # ARGs stay out of the image
    listing = run(
        "flt-every",
        "stat -c '%u:%g %n' /app/hello.txt; cat /data/a.txt "
        "/data/sub/b.txt /unpacked/inside/file.txt /app/exec.txt /app/uid.txt",
    )
    assert listing == "1000:1001 /app/hello.txt\na\nb\nfrom the archive\nexec-form\n0\n"
    # ONBUILD: the trigger runs in a build FROM this image.
    child = tempfile.mkdtemp(prefix="flt-build-child-")
    try:
        write(child, {"Dockerfile": "FROM flt-every\n"})
        cleanup.append("flt-every-child")
        _, out, _ = build(child, "-t", "flt-every-child")
        assert "# Executing 1 build trigger" in out
        assert run("flt-every-child", "cat /tmp/trigger.txt") == "triggered\n"
    finally:
        shutil.rmtree(child, ignore_errors=True)


def test_cache_hit_then_miss_after_a_change(cluster: object, ctx: str, cleanup: list[str]) -> None:
    write(
        ctx,
        {
            "Dockerfile": "FROM busybox\nCOPY a.txt /a.txt\nRUN cat /a.txt > /b.txt\nENV X=1\n",
            "a.txt": "one\n",
        },
    )
    cleanup.append("flt-cache")
    build(ctx, "-t", "flt-cache", "--build-arg", "constraint:node==node-1")
    first = inspect("flt-cache")["Id"]
    _, out, _ = build(ctx, "-t", "flt-cache", "--build-arg", "constraint:node==node-1")
    assert out.count(" ---> Using cache") == 3
    assert inspect("flt-cache")["Id"] == first
    write(ctx, {"a.txt": "two\n"})
    _, out, _ = build(ctx, "-t", "flt-cache", "--build-arg", "constraint:node==node-1")
    assert " ---> Using cache" not in out
    assert inspect("flt-cache")["Id"] != first
    assert run("flt-cache", "cat", "/b.txt") == "two\n"
    # The image is on the node the constraint chose, and only there.
    nodes = docker("images", "--filter", "reference=flt-cache", "--format", "{{.ID}}").stdout
    assert nodes.strip()
    listed = json.loads(urllib.request.urlopen(f"{URL}/v1.41/images/json").read())
    names = [i for i in listed if "flt-cache:latest" in (i.get("RepoTags") or [])]
    assert len(names) == 1


def test_multi_stage_and_target(cluster: object, ctx: str, cleanup: list[str]) -> None:
    write(
        ctx,
        {
            "Dockerfile": """\
FROM busybox AS builder
RUN echo built > /artifact
FROM busybox AS second
COPY --from=builder /artifact /copied
RUN echo second > /second
FROM scratch
COPY --from=second /copied /final
COPY --from=0 /artifact /first
""",
        },
    )
    cleanup.append("flt-stages")
    _, out, _ = build(ctx, "-t", "flt-stages")
    ids = [line for line in out.splitlines() if line.startswith("Successfully built")]
    assert ids
    cleanup.append("flt-stage-second")
    build(ctx, "-t", "flt-stage-second", "--target", "second")
    assert run("flt-stage-second", "cat", "/copied", "/second") == "built\nsecond\n"
    rc, out, err = build(ctx, "-t", "flt-nope", "--target", "nosuch", check=False)
    assert rc != 0 and "failed to reach build target nosuch in Dockerfile" in err
    # The scratch stage is its two COPY layers and nothing of busybox.
    rootfs = inspect("flt-stages")["RootFS"]
    assert isinstance(rootfs, dict) and len(rootfs["Layers"]) == 2


def test_dockerignore(cluster: object, ctx: str, cleanup: list[str]) -> None:
    write(
        ctx,
        {
            "Dockerfile": "FROM busybox\nCOPY . /ctx/\n",
            ".dockerignore": "**/*.log\nsecret\n!keep.log\ndocs/**\n",
            "a.txt": "a",
            "keep.log": "k",
            "drop.log": "d",
            "sub/deep/x.log": "x",
            "sub/deep/y.txt": "y",
            "secret": "s",
            "docs/readme": "r",
        },
    )
    cleanup.append("flt-ignore")
    build(ctx, "-t", "flt-ignore")
    listing = run("flt-ignore", "sh", "-c", "cd /ctx && find . -type f | sort").split()
    assert listing == [
        "./.dockerignore",
        "./Dockerfile",
        "./a.txt",
        "./keep.log",
        "./sub/deep/y.txt",
    ]


def test_failing_run_reports_the_exit_code(cluster: object, ctx: str, cleanup: list[str]) -> None:
    write(ctx, {"Dockerfile": "FROM busybox\nRUN echo before\nRUN exit 3\n"})
    before = set(docker("ps", "-aq").stdout.split())
    rc, out, err = build(ctx, "-t", "flt-fail", "--force-rm", check=False)
    assert rc == 3 or rc == 1
    assert "The command '/bin/sh -c exit 3' returned a non-zero code: 3" in err
    assert docker("image", "inspect", "flt-fail", check=False).returncode != 0
    assert set(docker("ps", "-aq").stdout.split()) == before  # --force-rm removed it
    status, lines = raw_build(_ctx_tar("FROM busybox\nRUN exit 7\n"), "t=flt-fail&forcerm=1")
    assert status == 200
    assert lines[-1] == {
        "errorDetail": {
            "code": 7,
            "message": "The command '/bin/sh -c exit 7' returned a non-zero code: 7",
        },
        "error": "The command '/bin/sh -c exit 7' returned a non-zero code: 7",
    }


def _ctx_tar(dockerfile: str, extra: list[tuple[tarfile.TarInfo, bytes | None]] = ()) -> bytes:  # type: ignore[assignment]
    return tar_of([(entry("Dockerfile"), dockerfile.encode()), *extra])


def test_bad_dockerfiles_in_dockers_words(cluster: object) -> None:
    cases = {
        "FROM busybox\nRUN true\nFOO bar\n": (
            "dockerfile parse error line 3: unknown instruction: FOO"
        ),
        "FROM a b\n": "dockerfile parse error line 1: FROM requires either one or three arguments",
        "FROM busybox\nENV foo\n": "failed to parse Dockerfile: ENV must have two arguments",
        "": "the Dockerfile (Dockerfile) cannot be empty",
    }
    for text, message in cases.items():
        status, lines = raw_build(_ctx_tar(text))
        assert (status, lines) == (400, [{"message": message}]), text
    status, lines = raw_build(tar_of([(entry("x"), b"")]))
    assert (status, lines) == (500, [{"message": "Cannot locate specified Dockerfile: Dockerfile"}])
    # A FROM image the node lacks is pulled; a registry that does not exist is the pull's
    # error, in the stream after the step (dockerd's legacy builder).
    missing = "flt-no-such-host.invalid/nosuchimage:1"
    status, lines = raw_build(_ctx_tar(f"FROM {missing}\n"))
    assert status == 200
    assert lines[0] == {"stream": f"Step 1/1 : FROM {missing}\n"}
    assert lines[-1]["error"] == (
        'Get "https://flt-no-such-host.invalid/v2/": dial tcp: lookup flt-no-such-host.invalid: '
        "no such host"
    )


def test_hostile_context_stays_inside(cluster: object, cleanup: list[str]) -> None:
    # `..` and absolute names: refused or kept inside the context, as dockerd's Untar does.
    status, lines = raw_build(_ctx_tar("FROM busybox\n", [(entry("../evil"), b"x")]))
    assert status == 500 and "is outside of" in lines[0]["message"]
    # Links pointing out of the context: COPY through them reads the context, not the host.
    extra = [
        (entry("etc-link", tarfile.SYMTYPE, "/etc"), None),
        (entry("passwd-link", tarfile.SYMTYPE, "/etc/passwd"), None),
    ]
    cleanup.append("flt-raw")
    dockerfile = "FROM busybox\nCOPY etc-link/passwd /p\n"
    status, lines = raw_build(_ctx_tar(dockerfile, extra))
    assert status == 200
    assert "file not found in build context" in lines[-1]["error"]
    status, lines = raw_build(_ctx_tar("FROM busybox\nCOPY passwd-link /p\n", extra))
    assert "file not found in build context" in lines[-1]["error"]
    # A link in the image pointing out of the root: the COPY lands inside the root.
    marker = f"/tmp/flt-build-escape-{os.getpid()}"
    dockerfile = (
        f"FROM busybox\nRUN ln -s {os.path.dirname(marker)} /out && ln -s ../../../.. /up\n"
        f"COPY f /out/{os.path.basename(marker)}\nCOPY f /up/tmp/{os.path.basename(marker)}-2\n"
    )
    status, lines = raw_build(_ctx_tar(dockerfile, [(entry("f"), b"inside")]))
    assert status == 200 and "error" not in lines[-1], lines[-1]
    assert not os.path.exists(marker) and not os.path.exists(marker + "-2")
    assert run("flt-raw", "cat", marker) == "inside"


def images_on(node: str) -> dict[str, str]:
    """name:tag → image ID on one node."""
    out = docker(
        "images", "--no-trunc", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}",
        "--filter", f"node={node}",
    ).stdout  # fmt: skip
    return dict(line.split() for line in out.splitlines() if line.strip())


@pytest.mark.skipif(not os.path.exists(kit.REGISTRY_BIN), reason="docker-registry not installed")
def test_from_pulls_a_missing_image(cluster: object, ctx: str, cleanup: list[str]) -> None:
    """FROM an image only a registry has (TLS, Basic auth): the node the build lands on pulls
    it with the credentials of the CLI's X-Registry-Config, its progress inside the build's
    stream after `Step 1/N : FROM`; `--pull` pulls again though the image is there."""
    config_dir = os.environ["DOCKER_CONFIG"]
    with (
        kit.registry(dev_layout.HOST_IP, tls=True, basic_auth=True) as reg,
        kit.trusted_by_dev_agents(reg),
    ):
        pushed = kit.push_image(reg, "test/busybox", "latest", [kit.busybox_layer()])
        base = f"{reg.address}/test/busybox"
        cleanup += [f"{base}:latest", "flt-from-pull"]
        write(ctx, {"Dockerfile": f"FROM {base}\nRUN echo built > /built\n"})
        args = ("-t", "flt-from-pull", "--build-arg", "constraint:node==node-1")
        rc, out, err = build(ctx, *args, check=False)
        assert rc == 1
        assert f"Step 1/2 : FROM {base}\n" in out
        assert err.strip().splitlines()[-1] == (
            f'Head "https://{reg.address}/v2/test/busybox/manifests/latest": no basic auth '
            "credentials"
        )
        kit.write_auth(config_dir, reg.address, kit.USER, kit.PASSWORD)
        try:
            _, out, _ = build(ctx, *args)
            lines = out.splitlines()
            step = lines.index(f"Step 1/2 : FROM {base}")
            assert lines[step + 1] == "latest: Pulling from test/busybox", out
            short = pushed.layer_digests[0].removeprefix("sha256:")[:12]
            assert f"{short}: Pull complete" in lines, out
            assert f"Digest: {pushed.digest}" in lines, out
            assert f"Status: Downloaded newer image for {base}:latest" in lines, out
            assert lines[lines.index("Step 2/2 : RUN echo built > /built") - 1] == (
                f" ---> {pushed.image_id.removeprefix('sha256:')[:12]}"
            )
            assert "Successfully tagged flt-from-pull:latest" in lines
            assert images_on("node-1")[f"{base}:latest"] == pushed.image_id
            assert f"{base}:latest" not in images_on("node-0")
            assert run("flt-from-pull", "cat", "/built") == "built\n"
            # --pull: asked again; up to date, and the RUN step is a cache hit.
            _, out, _ = build(ctx, "--pull", *args)
            assert f"Status: Image is up to date for {base}:latest" in out.splitlines(), out
            assert " ---> Using cache" in out
        finally:
            os.unlink(os.path.join(config_dir, "config.json"))
    # The registry is gone: a FROM image on the node is not pulled again without --pull.
    _, out, _ = build(ctx, *args)
    assert "Pulling from" not in out and " ---> Using cache" in out


def test_compose_up_build(cluster: object, ctx: str, cleanup: list[str]) -> None:
    compose = shutil.which("docker-compose")
    if compose is None:
        pytest.skip("docker-compose not installed")
    write(
        ctx,
        {
            "Dockerfile": 'FROM busybox\nCOPY msg /msg\nCMD ["sleep", "300"]\n',
            "msg": "composed\n",
            "docker-compose.yml": "version: '2'\nservices:\n  web:\n    build: .\n"
            "    image: flt-compose-web\n",
        },
    )
    cleanup.append("flt-compose-web")
    env = dict(os.environ, DOCKER_HOST=dc.docker_host(), COMPOSE_INTERACTIVE_NO_CLI="1")
    args = [compose, "-p", "fltbuild", "--no-ansi"]
    try:
        res = subprocess.run(
            [*args, "up", "-d", "--build"],
            cwd=ctx,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert res.returncode == 0, res.stderr
        name = docker(
            "ps", "--filter", "label=com.docker.compose.project=fltbuild", "--format", "{{.Names}}"
        ).stdout.split()
        assert len(name) == 1
        assert docker("exec", name[0], "cat", "/msg").stdout == "composed\n"
    finally:
        subprocess.run([*args, "down"], cwd=ctx, env=env, capture_output=True, timeout=120)
