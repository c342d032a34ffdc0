"""A real registry for the tests (Debian's `docker-registry`, distribution 2.8) and a small pusher
that uploads an image with the registry API (no dockerd exists here to `docker push`).

`Registry(...)` starts its own `docker-registry serve` with a config of its own (storage in a
temp dir; optional TLS from a test CA and htpasswd Basic auth) and stops it and removes every
file on exit, also when the test fails. `push_image` gzips layer tars, uploads them and the
config as blobs, then PUTs the manifest; it returns the manifest's digest.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import gzip
import hashlib
import json
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from tests.tarballs import tar_of

REGISTRY_BIN = "/usr/bin/docker-registry"
USER = "flt-user"
PASSWORD = "flt-s3cret"
# bcrypt of PASSWORD (htpasswd -B): the registry's htpasswd file takes bcrypt only.
PASSWORD_BCRYPT = "$2y$05$flotillatestsaltsalt2uSbt0hhxL8/xM1bSZsBbV0eWeLuVzzmW"

MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_V1 = "application/vnd.docker.container.image.v1+json"
LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class Registry:
    """A running registry at `host:port`; `ca` is the CA file clients must trust (TLS only)."""

    host: str
    port: int
    workdir: str
    tls: bool = False
    basic_auth: bool = False
    ca: str = ""
    issuer: Any = None  # token auth: a TokenIssuer (its key in issuer.crt)
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.address}"

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        return ssl.create_default_context(cafile=self.ca)

    def request(
        self,
        method: str,
        path: str,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
        token: str = "",
    ) -> tuple[int, dict[str, str], bytes]:
        hdrs = dict(headers or {})
        if self.basic_auth:
            basic = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
            hdrs["Authorization"] = f"Basic {basic}"
        if token:
            hdrs["Authorization"] = f"Bearer {token}"
        url = path if path.startswith("http") else self.url + path
        req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
        try:
            with urllib.request.urlopen(req, context=self.ssl_context(), timeout=30) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()


def _write_config(reg: Registry) -> str:
    lines = [
        "version: 0.1",
        "log:",
        "  level: warn",
        "  accesslog:",
        "    disabled: true",
        "storage:",
        "  filesystem:",
        f"    rootdirectory: {reg.workdir}/data",
        "  delete:",
        "    enabled: true",
        "http:",
        f"  addr: {reg.address}",
    ]
    if reg.tls:
        lines += [
            "  tls:",
            f"    certificate: {reg.workdir}/server.crt",
            f"    key: {reg.workdir}/server.key",
        ]
    if reg.issuer is not None:
        lines += [
            "auth:",
            "  token:",
            f"    realm: {reg.issuer.realm}",
            f"    service: {TOKEN_SERVICE}",
            f"    issuer: {TOKEN_ISSUER}",
            f"    rootcertbundle: {reg.workdir}/issuer.crt",
        ]
    if reg.basic_auth:
        path = os.path.join(reg.workdir, "htpasswd")
        with open(path, "w") as f:
            f.write(f"{USER}:{PASSWORD_BCRYPT}\n")
        lines += ["auth:", "  htpasswd:", "    realm: flotilla-test", f"    path: {path}"]
    config = os.path.join(reg.workdir, "config.yml")
    with open(config, "w") as f:
        f.write("\n".join(lines) + "\n")
    return config


def _make_tls(reg: Registry) -> None:
    from deploy import certs

    cadir = os.path.join(reg.workdir, "ca")
    reg.ca = certs.make_ca(cadir, name="flotilla registry test CA")
    made = certs.make_cert(cadir, "registry", hosts=[reg.host], client=False)
    shutil.copy(made.cert, os.path.join(reg.workdir, "server.crt"))
    shutil.copy(made.key, os.path.join(reg.workdir, "server.key"))


@contextlib.contextmanager
def registry(
    host: str = "127.0.0.1",
    tls: bool = False,
    basic_auth: bool = False,
    issuer: TokenIssuer | None = None,
) -> Iterator[Registry]:
    """A registry process on host (a free port), gone with its files on exit. With `issuer`:
    token auth trusting that issuer's key."""
    workdir = tempfile.mkdtemp(prefix="flt-registry-")
    reg = Registry(host, free_port(host), workdir, tls=tls, basic_auth=basic_auth)
    if issuer is not None:
        reg.issuer = issuer
        with open(os.path.join(workdir, "issuer.crt"), "wb") as f:
            f.write(issuer.cert_pem)
    log = open(os.path.join(workdir, "registry.log"), "wb")  # noqa: SIM115 - closed below
    try:
        if tls:
            _make_tls(reg)
        config = _write_config(reg)
        reg.proc = subprocess.Popen([REGISTRY_BIN, "serve", config], stdout=log, stderr=log)
        deadline = time.monotonic() + 20
        while True:
            try:
                status, _, _ = reg.request("GET", "/v2/", token=issuer.token("") if issuer else "")
                if status in (200, 401):
                    break
            except OSError:
                pass
            if reg.proc.poll() is not None or time.monotonic() > deadline:
                with open(os.path.join(workdir, "registry.log"), "rb") as f:
                    raise RuntimeError(f"registry did not start: {f.read()[-2000:]!r}")
            time.sleep(0.05)
        yield reg
    finally:
        if reg.proc is not None:
            reg.proc.terminate()
            try:
                reg.proc.wait(10)
            except subprocess.TimeoutExpired:
                reg.proc.kill()
                reg.proc.wait()
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)


@contextlib.contextmanager
def trusted_by_dev_agents(reg: Registry) -> Iterator[None]:
    """The registry's CA where the dev cluster's agents look for it (their certs.d,
    deploy/dev_layout.REGISTRY_CERTS), removed on exit."""
    from deploy import dev_layout

    host_dir = os.path.join(dev_layout.REGISTRY_CERTS, reg.address)
    os.makedirs(host_dir, exist_ok=True)
    try:
        shutil.copy(reg.ca, os.path.join(host_dir, "ca.crt"))
        yield
    finally:
        shutil.rmtree(host_dir, ignore_errors=True)


def write_auth(config_dir: str, registry: str, user: str, password: str) -> None:
    """What `docker login` leaves in the CLI's config.json: the CLI sends it as X-Registry-Auth
    (pull) and within X-Registry-Config (build)."""
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    with open(os.path.join(config_dir, "config.json"), "w") as f:
        json.dump({"auths": {registry: {"auth": auth}}}, f)


# --------------------------------------------------------------------------- pushing


def _push_token(reg: Registry, repo: str) -> str:
    return reg.issuer.token(f"repository:{repo}:pull,push") if reg.issuer is not None else ""


def upload_blob(reg: Registry, repo: str, data: bytes) -> str:
    """One blob by the monolithic upload (POST, then PUT ?digest=); returns its digest."""
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    token = _push_token(reg, repo)
    status, headers, body = reg.request("POST", f"/v2/{repo}/blobs/uploads/", b"", token=token)
    assert status == 202, (status, body)
    location = headers["Location"]
    if location.startswith("/"):
        location = reg.url + location
    sep = "&" if "?" in location else "?"
    status, _, body = reg.request(
        "PUT",
        f"{location}{sep}digest={digest}",
        data,
        {"Content-Type": "application/octet-stream"},
        token=token,
    )
    assert status == 201, (status, body)
    return digest


def put_manifest(reg: Registry, repo: str, ref: str, manifest: bytes, media_type: str) -> str:
    status, _, body = reg.request(
        "PUT",
        f"/v2/{repo}/manifests/{ref}",
        manifest,
        {"Content-Type": media_type},
        token=_push_token(reg, repo),
    )
    assert status == 201, (status, body)
    return "sha256:" + hashlib.sha256(manifest).hexdigest()


@dataclass
class PushedImage:
    digest: str  # the manifest's
    image_id: str  # sha256 of the config
    layer_digests: list[str]
    config: dict[str, object]


def image_config(layer_tars: list[bytes], cmd: list[str]) -> dict[str, object]:
    diff_ids = ["sha256:" + hashlib.sha256(t).hexdigest() for t in layer_tars]
    return {
        "architecture": "amd64",
        "os": "linux",
        "created": "2024-01-01T00:00:00Z",
        "config": {
            "Cmd": cmd,
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": "2024-01-01T00:00:00Z", "created_by": "flotilla test"}]
        * len(layer_tars),
    }


def push_image(
    reg: Registry,
    repo: str,
    tag: str,
    layer_tars: list[bytes],
    cmd: list[str] | None = None,
    zstd: bool = False,
) -> PushedImage:
    """Upload an image of these (uncompressed) layer tars as `repo:tag`: Docker schema 2 with
    gzip layers, or (`zstd`) an OCI manifest with tar+zstd layers."""
    from runtime.imageconfig import host_architecture

    config = image_config(layer_tars, cmd or ["sh"])
    config["architecture"] = host_architecture()
    config_bytes = json.dumps(config, separators=(",", ":")).encode()
    layers = []
    digests = []
    for tar in layer_tars:
        if zstd:
            import zstandard

            blob, media_type = zstandard.ZstdCompressor().compress(tar), OCI_LAYER_ZSTD
        else:
            blob, media_type = gzip.compress(tar, mtime=0), LAYER_GZIP
        digest = upload_blob(reg, repo, blob)
        digests.append(digest)
        layers.append({"mediaType": media_type, "size": len(blob), "digest": digest})
    config_digest = upload_blob(reg, repo, config_bytes)
    manifest_type, config_type = (OCI_MANIFEST, OCI_CONFIG) if zstd else (MANIFEST_V2, CONFIG_V1)
    manifest = {
        "schemaVersion": 2,
        "mediaType": manifest_type,
        "config": {"mediaType": config_type, "size": len(config_bytes), "digest": config_digest},
        "layers": layers,
    }
    data = json.dumps(manifest, indent=3).encode()
    digest = put_manifest(reg, repo, tag, data, manifest_type)
    return PushedImage(digest, config_digest, digests, config)


def random_layers(total_mib: int, count: int) -> list[bytes]:
    """`count` layer tars, each one file of random bytes, `total_mib` MiB in all."""
    size = total_mib * (1 << 20) // count
    return [tar_of({f"bench/layer-{i}.bin": os.urandom(size)}) for i in range(count)]


def busybox_layer() -> bytes:
    """The busybox test image's root filesystem as one layer tar."""
    from deploy.busybox_image import build_rootfs_tar

    with tempfile.TemporaryDirectory(prefix="flt-busybox-") as tmp:
        path = build_rootfs_tar(os.path.join(tmp, "rootfs.tar"))
        with open(path, "rb") as f:
            return f.read()


# --------------------------------------------------------------------------- token auth

TOKEN_SERVICE = "flotilla-test-registry"
TOKEN_ISSUER = "flotilla-test-issuer"


class TokenIssuer:
    """A tiny token service (Docker Hub's protocol): GET <realm>?service=&scope= with Basic
    credentials answers a JWT (ES256, `kid` = the key's libtrust ID) granting the scope's
    actions to USER/PASSWORD, and an anonymous one granting nothing. `scopes` records what was
    asked. Serve `app()` on `realm`'s address."""

    def __init__(self, realm: str) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        self.realm = realm
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, TOKEN_ISSUER)])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .sign(self.key, hashes.SHA256())
        )
        self.cert_pem = cert.public_bytes(serialization.Encoding.PEM)
        der = self.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        b32 = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode()
        self.kid = ":".join(b32[i : i + 4] for i in range(0, 48, 4))
        self.scopes: list[str] = []

    def token(self, scope: str) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        access = []
        if scope:
            kind, _, rest = scope.partition(":")
            repo, _, actions = rest.rpartition(":")
            access = [{"type": kind, "name": repo, "actions": actions.split(",")}]
        now = int(time.time())
        claims = {
            "iss": TOKEN_ISSUER,
            "sub": USER,
            "aud": TOKEN_SERVICE,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": os.urandom(8).hex(),
            "access": access,
        }
        header = {"typ": "JWT", "alg": "ES256", "kid": self.kid}

        def b64(data: bytes) -> str:
            return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

        signing = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())
        r, s = decode_dss_signature(self.key.sign(signing.encode(), ec.ECDSA(hashes.SHA256())))
        return signing + "." + b64(r.to_bytes(32, "big") + s.to_bytes(32, "big"))

    def app(self) -> Any:
        from aiohttp import web

        async def token(request: web.Request) -> web.Response:
            scope = request.query.get("scope", "")
            self.scopes.append(scope)
            auth = request.headers.get("Authorization", "")
            if auth:
                expected = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
                if auth != f"Basic {expected}":
                    return web.json_response(
                        {"details": "incorrect username or password"}, status=401
                    )
                return web.json_response({"token": self.token(scope)})
            return web.json_response({"token": self.token("")})

        app = web.Application()
        app.router.add_get("/token", token)
        return app


@contextlib.contextmanager
def served(app: Any, host: str, port: int) -> Iterator[None]:
    """An aiohttp app (a TokenIssuer's) served on host:port from a thread of its own, for
    tests that are not async themselves; stopped and cleaned up on exit."""
    import asyncio
    import threading

    from aiohttp import web

    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    try:
        loop.run_until_complete(web.TCPSite(runner, host, port).start())
        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()
        try:
            yield
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
    finally:
        loop.run_until_complete(runner.cleanup())
        loop.close()
