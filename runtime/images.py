"""The content-addressed image store: import, load/save, tag, inspect, remove, commit.

Layout (docs/runtime.md): config JSON and uncompressed layer tars live as blobs named by
their sha256; each layer is unpacked once into `layers/<diffid-hex>/diff` (overlayfs-ready) and
shared by every image that lists its diff id. `repositories.json` maps familiar `name:tag` to image
ids. `imagedb.json` (ours) records which configs are images, their parent and last tag time.
"Holds" keep layers alive for containers whose image was force-removed; they live in memory and
the runtime re-takes them for every container it loads on start.

Every public method takes one lock per data root: callers run the store from threads.
"""

from __future__ import annotations

import bz2
import contextlib
import copy
import gzip
import hashlib
import io
import json
import lzma
import os
import platform
import re
import shutil
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any, BinaryIO

from proto.docker.errors import Conflict, InvalidParameter, NotFound
from runtime import layers
from runtime.paths import DataRoot
from runtime.timefmt import ZERO_TIME, now_ns, parse_rfc3339, rfc3339nano

DOCKER_VERSION = "20.10.24"

Users = Callable[[str], list[tuple[str, bool]]]

_LOCKS: dict[str, threading.RLock] = {}
_LOCKS_GUARD = threading.Lock()

# A leftover temp entry older than this is from a crash, not from an import still running.
_STALE_TMP_SECONDS = 3600


def _lock_for(path: str) -> threading.RLock:
    key = os.path.realpath(path)
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(key, threading.RLock())


# --------------------------------------------------------------------------- references

_HEX64 = re.compile(r"[a-f0-9]{64}")
_ALNUM = r"[a-z0-9]+"
_SEP = r"(?:[._]|__|[-]*)"
_COMPONENT = f"{_ALNUM}(?:{_SEP}{_ALNUM})*"
_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*(?::[0-9]+)?"
_NAME = rf"(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*"
_TAG_RE = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_REFERENCE = re.compile(rf"({_NAME})(?::({_TAG_RE}))?(?:@({_DIGEST}))?", re.ASCII)
_TAG_ONLY = re.compile(_TAG_RE, re.ASCII)
_NAME_MAX = 255
_DEFAULT_DOMAIN = "docker.io"


@dataclass(frozen=True)
class Reference:
    """A normalized image reference: `name` is fully qualified (docker.io/library/busybox)."""

    name: str
    tag: str = ""
    digest: str = ""

    def familiar_name(self) -> str:
        prefix = _DEFAULT_DOMAIN + "/"
        if not self.name.startswith(prefix):
            return self.name
        rest = self.name[len(prefix) :]
        if rest.startswith("library/") and rest.count("/") == 1:
            return rest[len("library/") :]
        return rest

    def familiar(self) -> str:
        text = self.familiar_name()
        if self.tag:
            text += ":" + self.tag
        if self.digest:
            text += "@" + self.digest
        return text

    def tagged(self) -> Reference:
        """TagNameOnly: `latest` when neither tag nor digest is given."""
        if self.tag or self.digest:
            return self
        return Reference(self.name, "latest")


def parse_reference(text: str) -> Reference:
    """Docker's ParseNormalizedNamed, with its error texts."""
    if _HEX64.fullmatch(text):
        raise InvalidParameter(
            f"invalid repository name ({text}), cannot specify 64-byte hexadecimal strings"
        )
    domain, remainder = _split_domain(text)
    remote = remainder.split(":", 1)[0]
    if remote.lower() != remote:
        raise InvalidParameter("repository name must be lowercase")
    return _parse_exact(f"{domain}/{remainder}")


def _split_domain(text: str) -> tuple[str, str]:
    first, sep, rest = text.partition("/")
    if not sep or ("." not in first and ":" not in first and first != "localhost"):
        domain, remainder = _DEFAULT_DOMAIN, text
    else:
        domain, remainder = first, rest
    if domain == "index.docker.io":
        domain = _DEFAULT_DOMAIN
    if domain == _DEFAULT_DOMAIN and "/" not in remainder:
        remainder = "library/" + remainder
    return domain, remainder


def _parse_exact(text: str) -> Reference:
    m = _REFERENCE.fullmatch(text)
    if m is None:
        if not text:
            raise InvalidParameter("repository name must have at least one component")
        if _REFERENCE.fullmatch(text.lower()):
            raise InvalidParameter("repository name must be lowercase")
        raise InvalidParameter("invalid reference format")
    name, tag, digest = m.group(1), m.group(2) or "", m.group(3) or ""
    if len(name) > _NAME_MAX:
        raise InvalidParameter(f"repository name must not be more than {_NAME_MAX} characters")
    return Reference(name, tag, digest)


def _short(image_id: str) -> str:
    return image_id.removeprefix("sha256:")[:12]


def _go_quote(text: str) -> str:
    return json.dumps(text)


# --------------------------------------------------------------------------- container config

# Go's container.Config field order; the `None` defaults marked omitempty are left out when unset.
_CONFIG_FIELDS: list[tuple[str, Any, bool]] = [
    ("Hostname", "", False),
    ("Domainname", "", False),
    ("User", "", False),
    ("AttachStdin", False, False),
    ("AttachStdout", False, False),
    ("AttachStderr", False, False),
    ("ExposedPorts", None, True),
    ("Tty", False, False),
    ("OpenStdin", False, False),
    ("StdinOnce", False, False),
    ("Env", None, False),
    ("Cmd", None, False),
    ("Healthcheck", None, True),
    ("ArgsEscaped", False, True),
    ("Image", "", False),
    ("Volumes", None, False),
    ("WorkingDir", "", False),
    ("Entrypoint", None, False),
    ("NetworkDisabled", False, True),
    ("MacAddress", "", True),
    ("OnBuild", None, False),
    ("Labels", None, False),
    ("StopSignal", "", True),
    ("StopTimeout", None, True),
    ("Shell", None, True),
]


def normalize_config(src: dict[str, Any] | None) -> dict[str, Any]:
    """A container config with every field Docker prints, in Go's order."""
    src = src or {}
    out: dict[str, Any] = {}
    for key, default, omitempty in _CONFIG_FIELDS:
        value = src.get(key, default)
        if omitempty and (value is None or value == default or value == [] or value == {}):
            continue
        out[key] = copy.deepcopy(value)
    return out


def _env_key(entry: str) -> str:
    return entry.split("=", 1)[0]


def merge_config(user: dict[str, Any], image: dict[str, Any]) -> dict[str, Any]:
    """runconfig.Merge: fill what the container config leaves unset from the image config."""
    out = copy.deepcopy(user)
    if not out.get("User"):
        out["User"] = image.get("User", "")
    ports = dict(image.get("ExposedPorts") or {})
    ports.update(out.get("ExposedPorts") or {})
    out["ExposedPorts"] = ports or None
    env = list(out.get("Env") or [])
    keys = {_env_key(e) for e in env}
    env += [e for e in image.get("Env") or [] if _env_key(e) not in keys]
    out["Env"] = env or None
    labels = dict(image.get("Labels") or {})
    labels.update(out.get("Labels") or {})
    out["Labels"] = labels or None
    if not out.get("Entrypoint"):
        if not out.get("Cmd"):
            out["Cmd"] = image.get("Cmd")
        if out.get("Entrypoint") is None:
            out["Entrypoint"] = image.get("Entrypoint")
    for key in ("Healthcheck", "WorkingDir", "StopSignal", "Shell", "OnBuild"):
        if not out.get(key):
            out[key] = image.get(key)
    volumes = dict(image.get("Volumes") or {})
    volumes.update(out.get("Volumes") or {})
    out["Volumes"] = volumes or None
    return normalize_config(out)


# --------------------------------------------------------------------------- --change parsing

_VALID_CHANGES = {
    "cmd",
    "entrypoint",
    "healthcheck",
    "env",
    "expose",
    "label",
    "onbuild",
    "user",
    "volume",
    "workdir",
}
_VAR = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?::([-+])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))")
_DURATION_PART = re.compile(r"([0-9]*\.?[0-9]+)(ns|us|µs|ms|s|m|h)")
_DURATION_NS = {"ns": 1, "us": 1e3, "µs": 1e3, "ms": 1e6, "s": 1e9, "m": 60e9, "h": 3600e9}


def _logical_lines(text: str) -> list[str]:
    """Dockerfile lines: `\\` continues a line, blank lines and comments are skipped."""
    lines: list[str] = []
    pending = ""
    for raw in text.split("\n"):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1]
            continue
        lines.append(pending + stripped)
        pending = ""
    if pending:
        lines.append(pending)
    return lines


def _split_words(rest: str) -> list[str]:
    """Go parser's parseWords: split on blanks outside quotes; quotes/escapes stay in the word."""
    words: list[str] = []
    word = ""
    quote = ""
    i = 0
    while i < len(rest):
        c = rest[i]
        if c == "\\" and quote != "'" and i + 1 < len(rest):
            word += rest[i : i + 2]
            i += 2
            continue
        if quote:
            if c == quote:
                quote = ""
        elif c in "'\"":
            quote = c
        elif c.isspace():
            if word:
                words.append(word)
            word = ""
            i += 1
            continue
        word += c
        i += 1
    if word:
        words.append(word)
    return words


def _expand(text: str, env: dict[str, str]) -> str:
    def repl(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(4)
        value = env.get(name, "")
        if m.group(2) == "-":
            return value or m.group(3)
        if m.group(2) == "+":
            return m.group(3) if value else ""
        return value

    return _VAR.sub(repl, text)


def _process_word(word: str, env: dict[str, str]) -> str:
    """The shell lexer on one word: quotes removed, escapes resolved, $VARs expanded."""
    out: list[str] = []
    i = 0
    while i < len(word):
        c = word[i]
        if c == "'":
            end = word.find("'", i + 1)
            end = len(word) if end < 0 else end
            out.append(word[i + 1 : end])
            i = end + 1
        elif c == '"':
            end = i + 1
            while end < len(word) and word[end] != '"':
                end += 2 if word[end] == "\\" else 1
            inner = re.sub(r'\\(["\\$`])', r"\1", word[i + 1 : end])
            out.append(_expand(inner, env))
            i = end + 1
        elif c == "\\" and i + 1 < len(word):
            out.append(word[i + 1])
            i += 2
        else:
            end = i
            while end < len(word) and word[end] not in "'\"\\":
                end += 1
            out.append(_expand(word[i:end], env))
            i = max(end, i + 1)
    return "".join(out)


def _name_values(cmd: str, rest: str, env: dict[str, str]) -> list[tuple[str, str]]:
    words = _split_words(rest)
    if not words:
        raise InvalidParameter(f"{cmd} requires at least one argument")
    if "=" not in words[0]:
        parts = rest.strip().split(None, 1)
        if len(parts) < 2:
            raise InvalidParameter(f"{cmd} must have two arguments")
        return [(parts[0], _process_word(parts[1], env))]
    pairs: list[tuple[str, str]] = []
    for word in words:
        if "=" not in word:
            raise InvalidParameter(
                f"Syntax error - can't find = in {_go_quote(word)}. Must be of the form: name=value"
            )
        key, value = word.split("=", 1)
        key = _process_word(key, env)
        if not key:
            raise InvalidParameter(f"{cmd} names can not be blank")
        pairs.append((key, _process_word(value, env)))
    return pairs


def _json_or_shell(rest: str) -> list[str] | None:
    """The exec (JSON array) form of CMD/ENTRYPOINT/VOLUME, or None for the shell form."""
    if not rest.startswith("["):
        return None
    try:
        value = json.loads(rest)
    except ValueError:
        return None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    return None


def _parse_duration(flag: str, text: str) -> int:
    pos = 0
    total = 0.0
    for m in _DURATION_PART.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _DURATION_NS[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise InvalidParameter(f"time: invalid duration {_go_quote(text)}")
    return int(total)


def _healthcheck(rest: str) -> dict[str, Any]:
    options: dict[str, Any] = {}
    while rest.startswith("--"):
        word, rest = (rest.split(None, 1) + [""])[:2]
        flag, _, value = word[2:].partition("=")
        field = {
            "interval": "Interval",
            "timeout": "Timeout",
            "start-period": "StartPeriod",
            "retries": "Retries",
        }.get(flag)
        if field is None:
            raise InvalidParameter(f"Unknown flag: {flag}")
        if field == "Retries":
            options[field] = int(value)
        else:
            options[field] = _parse_duration(flag, value)
    if not rest:
        raise InvalidParameter("HEALTHCHECK requires at least one argument")
    kind, cmd_text = (rest.split(None, 1) + [""])[:2]
    if kind.upper() == "NONE":
        return {"Test": ["NONE"]}
    if kind.upper() != "CMD":
        raise InvalidParameter(f'Unknown type "{kind.upper()}" in HEALTHCHECK (try CMD)')
    cmd_text = cmd_text.strip()
    exec_form = _json_or_shell(cmd_text)
    test = ["CMD", *exec_form] if exec_form is not None else ["CMD-SHELL", cmd_text]
    return {"Test": test, **options}


def apply_changes(config: dict[str, Any], changes: list[str]) -> dict[str, Any]:
    """`--change` Dockerfile instructions applied to a container config (BuildFromConfig)."""
    cfg = normalize_config(config)
    lines = _logical_lines("\n".join(changes))
    parsed: list[tuple[str, str]] = []
    for line in lines:
        word, rest = (line.split(None, 1) + [""])[:2]
        cmd = word.lower()
        if cmd not in _VALID_CHANGES:
            raise InvalidParameter(f"{cmd} is not a valid change command")
        parsed.append((cmd, rest.strip()))
    cmd_set = False
    for cmd, rest in parsed:
        env = dict(e.split("=", 1) if "=" in e else (e, "") for e in cfg.get("Env") or [])
        cmd_set = _dispatch(cfg, cmd, rest, env, cmd_set)
    return normalize_config(cfg)


def _dispatch(cfg: dict[str, Any], cmd: str, rest: str, env: dict[str, str], cmd_set: bool) -> bool:
    if cmd in ("cmd", "entrypoint"):
        exec_form = _json_or_shell(rest)
        argv = exec_form if exec_form is not None else ["/bin/sh", "-c", rest]
        if cmd == "cmd":
            cfg["Cmd"] = argv
            return True
        cfg["Entrypoint"] = argv
        if not cmd_set:
            cfg["Cmd"] = None
    elif cmd in ("env", "label"):
        _dispatch_pairs(cfg, cmd, rest, env)
    elif cmd == "expose":
        _dispatch_expose(cfg, rest, env)
    elif cmd in ("user", "workdir"):
        if not rest:
            raise InvalidParameter(f"{cmd.upper()} requires exactly one argument")
        value = _process_word(rest, env)
        if cmd == "user":
            cfg["User"] = value
        else:
            cfg["WorkingDir"] = os.path.normpath(os.path.join("/", cfg["WorkingDir"], value))
    elif cmd == "volume":
        _dispatch_volume(cfg, rest, env)
    elif cmd == "healthcheck":
        cfg["Healthcheck"] = _healthcheck(rest)
    elif cmd == "onbuild":
        _dispatch_onbuild(cfg, rest)
    return cmd_set


def _dispatch_pairs(cfg: dict[str, Any], cmd: str, rest: str, env: dict[str, str]) -> None:
    pairs = _name_values(cmd.upper(), rest, env)
    if cmd == "label":
        labels = dict(cfg.get("Labels") or {})
        labels.update(pairs)
        cfg["Labels"] = labels
        return
    entries = list(cfg.get("Env") or [])
    for key, value in pairs:
        entry = f"{key}={value}"
        for i, existing in enumerate(entries):
            if _env_key(existing) == key:
                entries[i] = entry
                break
        else:
            entries.append(entry)
        env[key] = value
    cfg["Env"] = entries


def _dispatch_expose(cfg: dict[str, Any], rest: str, env: dict[str, str]) -> None:
    words = [_process_word(w, env) for w in _split_words(rest)]
    if not words:
        raise InvalidParameter("EXPOSE requires at least one argument")
    ports = dict(cfg.get("ExposedPorts") or {})
    for word in words:
        port, _, proto = word.partition("/")
        proto = proto or "tcp"
        start, _, end = port.partition("-")
        if not start.isdigit() or (end and not end.isdigit()):
            raise InvalidParameter(f"invalid containerPort: {port}")
        for number in range(int(start), int(end or start) + 1):
            ports[f"{number}/{proto.lower()}"] = {}
    cfg["ExposedPorts"] = ports


def _dispatch_volume(cfg: dict[str, Any], rest: str, env: dict[str, str]) -> None:
    exec_form = _json_or_shell(rest)
    paths = exec_form if exec_form is not None else _split_words(rest)
    if not paths:
        raise InvalidParameter("VOLUME requires at least one argument")
    volumes = dict(cfg.get("Volumes") or {})
    for path in paths:
        value = _process_word(path, env).strip()
        if not value:
            raise InvalidParameter("VOLUME specified can not be an empty string")
        volumes[value] = {}
    cfg["Volumes"] = volumes


def _dispatch_onbuild(cfg: dict[str, Any], rest: str) -> None:
    if not rest:
        raise InvalidParameter("ONBUILD requires at least one argument")
    trigger = rest.split(None, 1)[0].upper()
    if trigger == "ONBUILD":
        raise InvalidParameter("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
    if trigger in ("FROM", "MAINTAINER"):
        raise InvalidParameter(f"{trigger} isn't allowed as an ONBUILD trigger")
    cfg["OnBuild"] = [*(cfg.get("OnBuild") or []), rest]


# --------------------------------------------------------------------------- streams


class _Prefixed(io.RawIOBase):
    """A stream with some already-read bytes put back in front (for sniffing compression)."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        self._head = head
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        if self._head:
            n = min(len(buf), len(self._head))
            buf[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._rest.read(len(buf))
        buf[: len(data)] = data
        return len(data)


def decompressed(src: BinaryIO) -> BinaryIO:
    """src as an uncompressed stream, whatever of gzip/bzip2/xz/none it is."""
    head = b""
    while len(head) < 6:
        chunk = src.read(6 - len(head))
        if not chunk:
            break
        head += chunk
    stream: BinaryIO = io.BufferedReader(_Prefixed(head, src), 1 << 20)  # type: ignore[arg-type]
    if head.startswith(b"\x1f\x8b"):
        return gzip.GzipFile(fileobj=stream)  # type: ignore[return-value]
    if head.startswith(b"BZh"):
        return bz2.BZ2File(stream)  # type: ignore[return-value]
    if head.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMAFile(stream)  # type: ignore[return-value]
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        raise InvalidParameter("unsupported compression format zstd")
    return stream


def _spool(src: BinaryIO, dst: str) -> str:
    """Copy src (decompressed) to dst, returning the sha256 hex of the uncompressed bytes."""
    digest = hashlib.sha256()
    stream = decompressed(src)
    try:
        with open(dst, "wb") as out:
            while chunk := stream.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
    except (OSError, EOFError, lzma.LZMAError) as e:
        if isinstance(e, OSError) and e.errno is not None:
            raise
        raise InvalidParameter(f"unexpected EOF: {e}") from e
    return digest.hexdigest()


class _HashingWriter(io.RawIOBase):
    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.digest = hashlib.sha256()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.digest.update(data)
        self.out.write(data)
        return len(data)


def _write_atomic(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp-{os.getpid()}-{threading.get_ident()}"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _read_json(path: str, default: Any) -> Any:
    try:
        with open(path, "rb") as f:
            return json.load(f)
    except FileNotFoundError:
        return default


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def host_architecture() -> str:
    machine = platform.machine()
    return {
        "x86_64": "amd64",
        "amd64": "amd64",
        "aarch64": "arm64",
        "arm64": "arm64",
        "armv7l": "arm",
        "armv6l": "arm",
        "i386": "386",
        "i686": "386",
    }.get(machine, machine)


def _unix(created: str) -> int:
    return parse_rfc3339(created) // 1_000_000_000 if created else 0


# --------------------------------------------------------------------------- the store

_CONFLICT_CHILD = 1
_CONFLICT_RUNNING = 2
_CONFLICT_REFERENCE = 4
_CONFLICT_STOPPED = 8
_CONFLICT_HARD = _CONFLICT_CHILD | _CONFLICT_RUNNING
_CONFLICT_SOFT = _CONFLICT_REFERENCE | _CONFLICT_STOPPED


def _no_users(_image_id: str) -> list[tuple[str, bool]]:
    return []


class ImageStore:
    def __init__(self, root: DataRoot | str) -> None:
        self.paths = root if isinstance(root, DataRoot) else DataRoot(root)
        self.paths.ensure()
        self._tmp = os.path.join(self.paths.images, "tmp")
        self._db_path = os.path.join(self.paths.images, "imagedb.json")
        os.makedirs(self._tmp, exist_ok=True)
        self._lock = _lock_for(self.paths.images)
        self._holds: dict[str, list[str]] = {}
        self._configs: dict[str, dict[str, Any]] = {}
        with self._lock:
            self._clean_tmp()

    # ------------------------------------------------------------ index files

    def _clean_tmp(self) -> None:
        cutoff = time.time() - _STALE_TMP_SECONDS
        for name in os.listdir(self._tmp):
            path = os.path.join(self._tmp, name)
            if os.lstat(path).st_mtime >= cutoff:
                continue
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.unlink(path)

    def _db(self) -> dict[str, Any]:
        db = _read_json(self._db_path, {})
        db.setdefault("images", {})
        db.setdefault("holds", {})
        return db

    def _save_db(self, db: dict[str, Any]) -> None:
        _write_atomic(self._db_path, _canonical(db))

    def _repos(self) -> dict[str, str]:
        return _read_json(self.paths.repositories, {})

    def _save_repos(self, repos: dict[str, str]) -> None:
        _write_atomic(self.paths.repositories, _canonical(dict(sorted(repos.items()))))

    def _blob(self, digest: str) -> str:
        return os.path.join(self.paths.blobs, digest.removeprefix("sha256:"))

    def _layer_root(self, diff_id: str) -> str:
        return os.path.join(self.paths.layers, diff_id.removeprefix("sha256:"))

    def _tmp_path(self, prefix: str) -> str:
        fd, path = tempfile.mkstemp(prefix=prefix, dir=self._tmp)
        os.close(fd)
        return path

    # ------------------------------------------------------------ layers

    def _store_layer(self, diff_hex: str, tmp_blob: str) -> None:
        """Move a spooled layer tar into place and unpack it once (tmp dir, then rename)."""
        blob = self._blob(diff_hex)
        if os.path.exists(blob):
            os.unlink(tmp_blob)
        else:
            os.chmod(tmp_blob, 0o600)
            os.rename(tmp_blob, blob)
        self._ensure_layer_dir(diff_hex)

    def _ensure_layer_dir(self, diff_hex: str) -> None:
        final = self._layer_root(diff_hex)
        if os.path.isdir(final):
            return
        work = tempfile.mkdtemp(prefix="layer-", dir=self._tmp)
        try:
            os.chmod(work, 0o755)
            diff = os.path.join(work, "diff")
            os.mkdir(diff, 0o755)
            blob = self._blob(diff_hex)
            if os.path.getsize(blob) > 0:
                with open(blob, "rb") as f:
                    layers.unpack_layer(f, diff)
            with open(os.path.join(work, "size"), "w") as f:
                f.write(str(layers.dir_size(diff)))
            os.rename(work, final)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise

    def _layer_size(self, diff_id: str) -> int:
        try:
            with open(os.path.join(self._layer_root(diff_id), "size")) as f:
                return int(f.read().strip() or 0)
        except FileNotFoundError:
            return 0

    def _layer_present(self, diff_id: str) -> bool:
        return os.path.isdir(self._layer_root(diff_id)) and os.path.exists(self._blob(diff_id))

    def _used_layers(self, db: dict[str, Any]) -> set[str]:
        used: set[str] = set()
        for image_id in db["images"]:
            used.update(self._diff_ids(image_id))
        for held in self._holds.values():
            used.update(held)
        return used

    def _drop_layer(self, diff_id: str) -> None:
        root = self._layer_root(diff_id)
        if os.path.isdir(root):
            # Rename first so a half-deleted layer is never visible under its name.
            doomed = tempfile.mkdtemp(prefix="rm-", dir=self._tmp)
            os.rename(root, os.path.join(doomed, "layer"))
            shutil.rmtree(doomed, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._blob(diff_id))

    # ------------------------------------------------------------ images

    def _store_image(self, config_bytes: bytes, parent: str) -> str:
        image_id = "sha256:" + hashlib.sha256(config_bytes).hexdigest()
        blob = self._blob(image_id)
        if not os.path.exists(blob):
            _write_atomic(blob, config_bytes)
        db = self._db()
        entry = db["images"].setdefault(image_id, {"parent": parent, "last_tag_time": ""})
        if parent:
            entry["parent"] = parent
        self._save_db(db)
        return image_id

    def _config(self, image_id: str) -> dict[str, Any]:
        cached = self._configs.get(image_id)
        if cached is None:
            with open(self._blob(image_id), "rb") as f:
                cached = json.load(f)
            self._configs[image_id] = cached
        return cached

    def _diff_ids(self, image_id: str) -> list[str]:
        rootfs = self._config(image_id).get("rootfs") or {}
        return list(rootfs.get("diff_ids") or [])

    def _tags_of(self, image_id: str, repos: dict[str, str] | None = None) -> list[str]:
        repos = self._repos() if repos is None else repos
        return sorted(key for key, value in repos.items() if value == image_id)

    def _children(self, image_id: str, db: dict[str, Any]) -> list[str]:
        return [i for i, meta in db["images"].items() if meta.get("parent") == image_id]

    def _set_tag(self, image_id: str, key: str) -> None:
        repos = self._repos()
        repos[key] = image_id
        self._save_repos(repos)
        db = self._db()
        if image_id in db["images"]:
            db["images"][image_id]["last_tag_time"] = rfc3339nano(now_ns())
            self._save_db(db)

    def _new_config(
        self,
        container_config: dict[str, Any],
        diff_ids: list[str],
        history: list[dict[str, Any]],
        created: str,
        extra: dict[str, Any],
    ) -> bytes:
        config: dict[str, Any] = {
            "architecture": host_architecture(),
            "config": container_config,
            "container_config": normalize_config(None),
            "created": created,
            "docker_version": DOCKER_VERSION,
            "history": history,
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }
        config.update({k: v for k, v in extra.items() if v})
        # image.Image marshals through a map, so Docker's top-level keys come out sorted.
        return _canonical(dict(sorted(config.items())))

    # ------------------------------------------------------------ public: import

    def import_tarball(
        self,
        src: BinaryIO,
        reference: str | None = None,
        changes: list[str] | None = None,
        message: str = "",
        platform_os: str = "linux",
    ) -> str:
        """`docker import`: one layer from a (possibly compressed) tar; returns the image id."""
        ref = parse_reference(reference) if reference else None
        if ref is not None and ref.digest:
            raise InvalidParameter("cannot import digest reference")
        if platform_os != "linux":
            raise InvalidParameter("operating system is not supported")
        container_config = apply_changes({}, changes or [])
        with self._lock:
            tmp_blob = self._tmp_path("import-")
            try:
                diff_hex = _spool(src, tmp_blob)
                self._store_layer(diff_hex, tmp_blob)
            except BaseException:
                if os.path.exists(tmp_blob):
                    os.unlink(tmp_blob)
                raise
            created = rfc3339nano(now_ns())
            entry = {"created": created, **({"comment": message} if message else {})}
            data = self._new_config(
                container_config,
                ["sha256:" + diff_hex],
                [entry],
                created,
                {"comment": message, "os": platform_os},
            )
            image_id = self._store_image(data, "")
            if ref is not None:
                self._set_tag(image_id, ref.tagged().familiar())
            return image_id

    # ------------------------------------------------------------ public: lookup

    def resolve(self, ref: str) -> str:
        """The image id `ref` names: full/short id (with or without sha256:) or name[:tag]."""
        with self._lock:
            db = self._db()
            plain = ref.removeprefix("sha256:")
            if _HEX64.fullmatch(plain):
                image_id = "sha256:" + plain
                if image_id in db["images"]:
                    return image_id
                raise NotFound(f"No such image: {image_id}")
            parsed = parse_reference(ref)
            if not parsed.digest:
                image_id = self._repos().get(parsed.tagged().familiar())
                if image_id is not None and image_id in db["images"]:
                    return image_id
            if re.fullmatch(r"[a-f0-9]+", plain):
                matches = [i for i in db["images"] if i[len("sha256:") :].startswith(plain)]
                if len(matches) == 1:
                    return matches[0]
            raise NotFound(f"No such image: {parsed.tagged().familiar()}")

    def exists(self, ref: str) -> bool:
        try:
            self.resolve(ref)
        except NotFound:
            return False
        return True

    def config(self, image_id: str) -> dict[str, Any]:
        """The image config JSON (architecture, config, rootfs, history, ...)."""
        with self._lock:
            return copy.deepcopy(self._config(self.resolve(image_id)))

    def layer_dirs(self, image_id: str) -> list[str]:
        """The unpacked layer dirs, top layer first: ready for an overlay `lowerdir`."""
        with self._lock:
            diff_ids = self._diff_ids(self.resolve(image_id))
            return [os.path.join(self._layer_root(d), "diff") for d in reversed(diff_ids)]

    def size(self, image_id: str) -> int:
        with self._lock:
            return sum(self._layer_size(d) for d in self._diff_ids(self.resolve(image_id)))

    def inspect(self, ref: str) -> dict[str, Any]:
        """GET /images/{name}/json."""
        with self._lock:
            try:
                image_id = self.resolve(ref)
            except NotFound as e:
                raise NotFound(f"no such image: {ref}: {e.message}") from None
            return self._inspect(image_id)

    def _inspect(self, image_id: str) -> dict[str, Any]:
        cfg = self._config(image_id)
        meta = self._db()["images"].get(image_id, {})
        size = self.size(image_id)
        result: dict[str, Any] = {
            "Id": image_id,
            "RepoTags": self._tags_of(image_id),
            "RepoDigests": [],
            "Parent": meta.get("parent", ""),
            "Comment": cfg.get("comment", ""),
            "Created": cfg.get("created", ZERO_TIME),
            "Container": cfg.get("container", ""),
            "ContainerConfig": normalize_config(cfg.get("container_config")),
            "DockerVersion": cfg.get("docker_version", ""),
            "Author": cfg.get("author", ""),
            "Config": normalize_config(cfg["config"]) if cfg.get("config") else None,
            "Architecture": cfg.get("architecture", ""),
        }
        if cfg.get("variant"):
            result["Variant"] = cfg["variant"]
        result["Os"] = cfg.get("os", "")
        if cfg.get("os.version"):
            result["OsVersion"] = cfg["os.version"]
        result["Size"] = size
        result["VirtualSize"] = size
        result["GraphDriver"] = {"Data": self._graph_data(image_id), "Name": "overlay2"}
        result["RootFS"] = {"Type": "layers", "Layers": self._diff_ids(image_id)}
        result["Metadata"] = {"LastTagTime": meta.get("last_tag_time") or ZERO_TIME}
        return result

    def _graph_data(self, image_id: str) -> dict[str, str] | None:
        dirs = [self._layer_root(d) for d in reversed(self._diff_ids(image_id))]
        if not dirs:
            return None
        data: dict[str, str] = {}
        if len(dirs) > 1:
            data["LowerDir"] = ":".join(os.path.join(d, "diff") for d in dirs[1:])
        data["MergedDir"] = os.path.join(dirs[0], "merged")
        data["UpperDir"] = os.path.join(dirs[0], "diff")
        data["WorkDir"] = os.path.join(dirs[0], "work")
        return data

    def history(self, ref: str) -> list[dict[str, Any]]:
        """GET /images/{name}/history: newest first; ids only where an image exists."""
        with self._lock:
            image_id = self.resolve(ref)
            cfg = self._config(image_id)
            diff_ids = self._diff_ids(image_id)
            items: list[dict[str, Any]] = []
            layer = 0
            for h in cfg.get("history") or []:
                size = 0
                if not h.get("empty_layer") and layer < len(diff_ids):
                    size = self._layer_size(diff_ids[layer])
                    layer += 1
                item = {
                    "Comment": h.get("comment", ""),
                    "Created": _unix(h.get("created", "")),
                    "CreatedBy": h.get("created_by", ""),
                    "Id": "<missing>",
                    "Size": size,
                    "Tags": None,
                }
                items.insert(0, item)
            db = self._db()
            current = image_id
            for item in items:
                item["Id"] = current
                item["Tags"] = self._tags_of(current) or None
                current = db["images"].get(current, {}).get("parent", "")
                if not current or current not in db["images"]:
                    break
            return items

    # ------------------------------------------------------------ public: list

    def list_images(
        self, all: bool = False, filters: dict[str, list[str]] | None = None
    ) -> list[dict[str, Any]]:
        """GET /images/json, newest first; filters: reference, dangling, label, before, since."""
        filters = filters or {}
        for key in filters:
            if key not in ("reference", "dangling", "label", "before", "since"):
                raise InvalidParameter(f"Invalid filter '{key}'")
        with self._lock:
            dangling = self._dangling_filter(filters.get("dangling"))
            show_all = all
            before = [self._created(r) for r in filters.get("before", [])]
            since = [self._created(r) for r in filters.get("since", [])]
            db = self._db()
            repos = self._repos()
            result: list[dict[str, Any]] = []
            for image_id, meta in db["images"].items():
                item = self._list_item(image_id, meta, repos)
                if before and item["Created"] >= min(before):
                    continue
                if since and item["Created"] <= max(since):
                    continue
                if not _labels_match(item["Labels"], filters.get("label", [])):
                    continue
                if not self._placed(item, image_id, db, show_all, dangling, filters):
                    continue
                result.append(item)
            result.sort(key=lambda i: i["Created"], reverse=True)
            return result

    def _created(self, ref: str) -> int:
        return _unix(self._config(self.resolve(ref)).get("created", ""))

    def _dangling_filter(self, values: list[str] | None) -> bool | None:
        if not values:
            return None
        value = values[0]
        if value.lower() in ("true", "1"):
            return True
        if value.lower() in ("false", "0"):
            return False
        raise InvalidParameter(f"Invalid filter 'dangling={value}'")

    def _list_item(self, image_id: str, meta: dict[str, Any], repos: dict[str, str]) -> dict:
        cfg = self._config(image_id)
        size = sum(self._layer_size(d) for d in self._diff_ids(image_id))
        tags = self._tags_of(image_id, repos)
        return {
            "Containers": -1,
            "Created": _unix(cfg.get("created", "")),
            "Id": image_id,
            "Labels": (cfg.get("config") or {}).get("Labels"),
            "ParentId": meta.get("parent", ""),
            "RepoDigests": None,
            "RepoTags": tags or None,
            "SharedSize": -1,
            "Size": size,
            "VirtualSize": size,
        }

    def _placed(
        self,
        item: dict[str, Any],
        image_id: str,
        db: dict[str, Any],
        show_all: bool,
        dangling: bool | None,
        filters: dict[str, list[str]],
    ) -> bool:
        patterns = filters.get("reference", [])
        if patterns and item["RepoTags"]:
            item["RepoTags"] = [t for t in item["RepoTags"] if _ref_matches(t, patterns)] or None
            if item["RepoTags"] is None:
                return False
        if item["RepoTags"] is None:
            if patterns:
                return False
            if not show_all and self._children(image_id, db):
                return False  # an intermediate image: only with all=1
            if dangling is False:
                return False
            item["RepoTags"] = ["<none>:<none>"]
            item["RepoDigests"] = ["<none>@<none>"]
            return True
        return dangling is not True

    # ------------------------------------------------------------ public: tag

    def tag(self, ref: str, repo: str, tag: str = "") -> str:
        """Tag an image (POST /images/{name}/tag); returns the familiar `name:tag`.

        An empty `tag` keeps the one in `repo` (`foo:1`), else `latest`, like the API's query.
        """
        with self._lock:
            image_id = self.resolve(ref)
            new = parse_reference(repo)
            if tag:
                if not _TAG_ONLY.fullmatch(tag):
                    raise InvalidParameter("invalid tag format")
                new = Reference(new.name, tag)
            if new.digest:
                raise InvalidParameter("refusing to create a tag with a digest reference")
            new = new.tagged()
            if new.familiar_name() == "sha256":
                raise InvalidParameter(
                    "refusing to create an ambiguous tag using digest algorithm as name"
                )
            key = new.familiar()
            self._set_tag(image_id, key)
            return key

    def untag(self, ref: str) -> str:
        """Remove one `name:tag` (no image deletion); returns the familiar form removed."""
        with self._lock:
            key = parse_reference(ref).tagged().familiar()
            repos = self._repos()
            if key not in repos:
                raise NotFound(f"No such image: {key}")
            del repos[key]
            self._save_repos(repos)
            return key

    # ------------------------------------------------------------ public: remove

    def remove(
        self,
        ref: str,
        force: bool = False,
        noprune: bool = False,
        users: Users | None = None,
    ) -> list[dict[str, str]]:
        """DELETE /images/{name} with dockerd's rules; returns Untagged/Deleted records."""
        users = users or _no_users
        with self._lock:
            image_id = self.resolve(ref)
            records: list[dict[str, str]] = []
            tags = self._tags_of(image_id)
            quiet = False
            if not _is_id_prefix(image_id, ref):
                if not force and len(tags) == 1:
                    using = users(image_id)
                    if using:
                        raise Conflict(
                            f"conflict: unable to remove repository reference {_go_quote(ref)} "
                            f"(must force) - container {using[0][0][:12]} is using its "
                            f"referenced image {_short(image_id)}"
                        )
                key = parse_reference(ref).tagged().familiar()
                self._drop_tags([key], records)
                if self._tags_of(image_id):
                    return records
                quiet = True
            elif len(tags) == 1:
                mask = _CONFLICT_HARD | (0 if force else _CONFLICT_STOPPED)
                conflict = self._conflict(image_id, mask, users)
                if conflict is not None:
                    raise conflict[0]
                self._drop_tags(tags, records)
            self._delete_helper(image_id, records, force, not noprune, quiet, users)
            return records

    def _drop_tags(self, keys: list[str], records: list[dict[str, str]]) -> None:
        repos = self._repos()
        for key in keys:
            repos.pop(key, None)
            records.append({"Untagged": key})
        self._save_repos(repos)

    def _conflict(self, image_id: str, mask: int, users: Users) -> tuple[Conflict, bool] | None:
        """Docker's checkImageDeleteConflict: (error, whether a container uses the image)."""
        short = _short(image_id)
        if mask & _CONFLICT_CHILD and self._children(image_id, self._db()):
            msg = "(cannot be forced) - image has dependent child images"
            return Conflict(f"conflict: unable to delete {short} {msg}"), False
        using = users(image_id)
        running = [c for c, is_running in using if is_running]
        if mask & _CONFLICT_RUNNING and running:
            msg = f"(cannot be forced) - image is being used by running container {running[0][:12]}"
            return Conflict(f"conflict: unable to delete {short} {msg}"), True
        if mask & _CONFLICT_REFERENCE and self._tags_of(image_id):
            msg = "(must be forced) - image is referenced in multiple repositories"
            return Conflict(f"conflict: unable to delete {short} {msg}"), False
        stopped = [c for c, is_running in using if not is_running]
        if mask & _CONFLICT_STOPPED and stopped:
            msg = f"(must be forced) - image is being used by stopped container {stopped[0][:12]}"
            return Conflict(f"conflict: unable to delete {short} {msg}"), True
        return None

    def _delete_helper(
        self,
        image_id: str,
        records: list[dict[str, str]],
        force: bool,
        prune: bool,
        quiet: bool,
        users: Users,
    ) -> None:
        mask = _CONFLICT_HARD | (0 if force else _CONFLICT_SOFT)
        conflict = self._conflict(image_id, mask, users)
        if conflict is not None:
            error, used = conflict
            if quiet and (not self._is_dangling(image_id) or used):
                return
            raise error
        db = self._db()
        parent = db["images"].get(image_id, {}).get("parent", "")
        tags = self._tags_of(image_id)
        if tags:
            self._drop_tags(tags, records)
        removed = self._delete_image(image_id)
        records.append({"Deleted": image_id})
        records.extend({"Deleted": chain} for chain in removed)
        if prune and parent and parent in self._db()["images"]:
            self._delete_helper(parent, records, False, True, True, users)

    def _is_dangling(self, image_id: str) -> bool:
        return not self._tags_of(image_id) and not self._children(image_id, self._db())

    def _delete_image(self, image_id: str) -> list[str]:
        """Forget an image; drop layers nothing uses any more. Returns their chain ids."""
        diff_ids = self._diff_ids(image_id)
        chains = _chain_ids(diff_ids)
        db = self._db()
        db["images"].pop(image_id, None)
        self._save_db(db)
        used = self._used_layers(db)
        removed: list[str] = []
        for diff_id, chain in reversed(list(zip(diff_ids, chains, strict=True))):
            if diff_id not in used and os.path.exists(self._layer_root(diff_id)):
                self._drop_layer(diff_id)
                removed.append(chain)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._blob(image_id))
        self._configs.pop(image_id, None)
        return removed

    # ------------------------------------------------------------ public: holds

    def hold_layers(self, owner: str, image_id: str) -> None:
        """Keep an image's layers alive for `owner` (a container) even if the image goes."""
        with self._lock:
            self._holds[owner] = self._diff_ids(self.resolve(image_id))

    def release_layers(self, owner: str) -> None:
        """Drop `owner`'s hold; layers no image or hold uses any more are deleted."""
        with self._lock:
            held = self._holds.pop(owner, [])
            used = self._used_layers(self._db())
            for diff_id in held:
                if diff_id not in used:
                    self._drop_layer(diff_id)

    # ------------------------------------------------------------ public: commit

    def commit(
        self,
        upper: str,
        parent_id: str | None,
        config: dict[str, Any],
        comment: str = "",
        author: str = "",
        reference: str | None = None,
        created_by: str = "",
        changes: list[str] | None = None,
        container_id: str = "",
    ) -> str:
        """A new image: the parent's layers plus one made from an overlay upper dir."""
        ref = parse_reference(reference) if reference else None
        with self._lock:
            parent = self.resolve(parent_id) if parent_id else ""
            parent_cfg = self._config(parent) if parent else {}
            container_config = normalize_config(config)
            new_config = merge_config(container_config, parent_cfg.get("config") or {})
            if changes:
                new_config = apply_changes(new_config, changes)
            diff_ids = list((parent_cfg.get("rootfs") or {}).get("diff_ids") or [])
            empty = not os.listdir(upper)
            if not empty:
                diff_ids.append("sha256:" + self._layer_from_upper(upper))
            created = rfc3339nano(now_ns())
            entry: dict[str, Any] = {"created": created}
            if author:
                entry["author"] = author
            entry["created_by"] = created_by or " ".join(container_config.get("Cmd") or [])
            if comment:
                entry["comment"] = comment
            if empty:
                entry["empty_layer"] = True
            history = [*(parent_cfg.get("history") or []), entry]
            extra = {
                "author": author,
                "comment": comment,
                "container": container_id,
                "container_config": container_config,
                "parent": parent,
                "architecture": parent_cfg.get("architecture") or host_architecture(),
                "os": parent_cfg.get("os") or "linux",
                "variant": parent_cfg.get("variant", ""),
            }
            data = self._new_config(new_config, diff_ids, history, created, extra)
            image_id = self._store_image(data, parent)
            if ref is not None:
                self._set_tag(image_id, ref.tagged().familiar())
            return image_id

    def _layer_from_upper(self, upper: str) -> str:
        tmp_blob = self._tmp_path("commit-")
        try:
            with open(tmp_blob, "wb") as f:
                writer = _HashingWriter(f)
                layers.tar_layer_from_upper(upper, writer)  # type: ignore[arg-type]
            diff_hex = writer.digest.hexdigest()
            self._store_layer(diff_hex, tmp_blob)
            return diff_hex
        except BaseException:
            if os.path.exists(tmp_blob):
                os.unlink(tmp_blob)
            raise

    # ------------------------------------------------------------ public: load

    def load(self, src: BinaryIO) -> list[str]:
        """`docker load` of a docker-save archive or an OCI layout; returns Docker's lines."""
        with self._lock:
            work = tempfile.mkdtemp(prefix="docker-import-", dir=self._tmp)
            try:
                layers.unpack_layer(decompressed(src), work)
                if os.path.exists(os.path.join(work, "manifest.json")):
                    entries = _docker_manifest(work)
                elif os.path.exists(os.path.join(work, "index.json")):
                    entries = _oci_manifests(work)
                else:
                    raise InvalidParameter(f"open {work}/repositories: no such file or directory")
                lines: list[str] = []
                for config_path, layer_paths, tags in entries:
                    lines += self._load_one(work, config_path, layer_paths, tags)
                return lines
            finally:
                shutil.rmtree(work, ignore_errors=True)

    def _load_one(
        self, work: str, config_path: str, layer_paths: list[str], tags: list[str]
    ) -> list[str]:
        with open(_inside(work, config_path), "rb") as f:
            config_bytes = f.read()
        try:
            cfg = json.loads(config_bytes)
            diff_ids = list(cfg["rootfs"]["diff_ids"] or [])
        except (ValueError, KeyError, TypeError) as e:
            raise InvalidParameter(f"invalid image config {config_path}: {e}") from e
        if len(diff_ids) != len(layer_paths):
            raise InvalidParameter(
                "invalid manifest, layers length mismatch: "
                f"expected {len(diff_ids)}, got {len(layer_paths)}"
            )
        refs = [parse_reference(t).tagged() for t in tags]
        for index, (diff_id, path) in enumerate(zip(diff_ids, layer_paths, strict=True)):
            if self._layer_present(diff_id):
                continue  # shared with an image we already have: not unpacked twice
            self._load_layer(work, index, diff_id, path)
        image_id = self._store_image(config_bytes, "")
        lines: list[str] = []
        repos = self._repos()
        for ref in refs:
            key = ref.familiar()
            old = repos.get(key)
            if old and old != image_id:
                lines.append(
                    f"The image {key} already exists, renaming the old one with ID {old} "
                    "to empty string"
                )
            self._set_tag(image_id, key)
            lines.append(f"Loaded image: {key}")
        if not refs:
            lines.append(f"Loaded image ID: {image_id}")
        return lines

    def _load_layer(self, work: str, index: int, diff_id: str, path: str) -> None:
        tmp_blob = self._tmp_path("load-")
        try:
            with open(_inside(work, path), "rb") as f:
                got = _spool(f, tmp_blob)
            if "sha256:" + got != diff_id:
                raise InvalidParameter(
                    f"invalid diffID for layer {index}: expected {_go_quote(diff_id)}, "
                    f'got "sha256:{got}"'
                )
            self._store_layer(got, tmp_blob)
        except BaseException:
            if os.path.exists(tmp_blob):
                os.unlink(tmp_blob)
            raise

    # ------------------------------------------------------------ public: save

    def save(self, refs: list[str], dst: BinaryIO) -> None:
        """`docker save`: manifest.json, repositories, `<id>.json`, `<v1id>/layer.tar`."""
        with self._lock:
            wanted = self._save_targets(refs)
            files: dict[str, bytes | str] = {}
            manifest: list[dict[str, Any]] = []
            repositories: dict[str, dict[str, str]] = {}
            for image_id, tags in wanted.items():
                manifest.append(self._save_image(image_id, tags, files, repositories))
            files["manifest.json"] = _canonical(manifest)
            if repositories:
                files["repositories"] = _canonical(repositories)
            with tarfile.open(fileobj=dst, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                _write_files(tar, files)

    def _save_targets(self, refs: list[str]) -> dict[str, list[str]]:
        wanted: dict[str, list[str]] = {}
        repos = self._repos()
        for ref in refs:
            plain = ref.removeprefix("sha256:")
            if re.fullmatch(r"[a-f0-9]+", plain) and _is_id_prefix_any(plain, self._db()):
                wanted.setdefault(self.resolve(ref), [])
                continue
            parsed = parse_reference(ref)
            if parsed.tag:
                key = parsed.familiar()
                keys = [key] if key in repos else []
            else:
                prefix = parsed.familiar_name() + ":"
                keys = sorted(k for k in repos if k.startswith(prefix))
            if not keys:
                raise NotFound("reference does not exist")
            for key in keys:
                tags = wanted.setdefault(repos[key], [])
                if key not in tags:
                    tags.append(key)
        return wanted

    def _save_image(
        self,
        image_id: str,
        tags: list[str],
        files: dict[str, bytes | str],
        repositories: dict[str, dict[str, str]],
    ) -> dict[str, Any]:
        hex_id = image_id.removeprefix("sha256:")
        with open(self._blob(image_id), "rb") as f:
            files[f"{hex_id}.json"] = f.read()
        layer_names: list[str] = []
        parent_v1 = ""
        for diff_id in self._diff_ids(image_id):
            v1 = hashlib.sha256(f"{parent_v1}\n{diff_id}".encode()).hexdigest()
            v1_json: dict[str, Any] = {"id": v1}
            if parent_v1:
                v1_json["parent"] = parent_v1
            v1_json["created"] = ZERO_TIME
            v1_json["container_config"] = normalize_config(None)
            v1_json["os"] = "linux"
            files[f"{v1}/VERSION"] = b"1.0"
            files[f"{v1}/json"] = _canonical(v1_json)
            files[f"{v1}/layer.tar"] = self._blob(diff_id)
            layer_names.append(f"{v1}/layer.tar")
            parent_v1 = v1
        for key in tags:
            name, _, tag = key.rpartition(":")
            repositories.setdefault(name, {})[tag] = parent_v1
        return {"Config": f"{hex_id}.json", "RepoTags": tags or None, "Layers": layer_names}


# --------------------------------------------------------------------------- helpers


def _chain_ids(diff_ids: list[str]) -> list[str]:
    chains: list[str] = []
    for diff_id in diff_ids:
        if not chains:
            chains.append(diff_id)
        else:
            text = f"{chains[-1]} {diff_id}".encode()
            chains.append("sha256:" + hashlib.sha256(text).hexdigest())
    return chains


def _is_id_prefix(image_id: str, ref: str) -> bool:
    return image_id.startswith(ref) or image_id.removeprefix("sha256:").startswith(ref)


def _is_id_prefix_any(plain: str, db: dict[str, Any]) -> bool:
    return any(i.removeprefix("sha256:").startswith(plain) for i in db["images"])


def _labels_match(labels: dict[str, str] | None, wanted: list[str]) -> bool:
    labels = labels or {}
    for item in wanted:
        key, sep, value = item.partition("=")
        if key not in labels or (sep and labels[key] != value):
            return False
    return True


def _ref_matches(tag: str, patterns: list[str]) -> bool:
    name = tag.rpartition(":")[0]
    return any(fnmatchcase(tag, p) or fnmatchcase(name, p) for p in patterns)


def _inside(root: str, rel: str) -> str:
    """rel under root, symlinks resolved, refusing anything that leaves root."""
    path = os.path.realpath(os.path.join(root, rel))
    if not path.startswith(os.path.realpath(root) + os.sep) or not os.path.isfile(path):
        raise InvalidParameter(f"open {rel}: no such file or directory")
    return path


def _docker_manifest(work: str) -> list[tuple[str, list[str], list[str]]]:
    try:
        with open(os.path.join(work, "manifest.json"), "rb") as f:
            manifest = json.load(f)
        return [
            (m["Config"], list(m.get("Layers") or []), list(m.get("RepoTags") or []))
            for m in manifest
        ]
    except (ValueError, KeyError, TypeError) as e:
        raise InvalidParameter(f"invalid manifest.json: {e}") from e


def _blob_path(descriptor: dict[str, Any]) -> str:
    algorithm, _, hex_digest = str(descriptor.get("digest", "")).partition(":")
    if not re.fullmatch(r"[a-z0-9]+", algorithm) or not re.fullmatch(r"[a-f0-9]+", hex_digest):
        raise InvalidParameter(f"invalid digest {_go_quote(str(descriptor.get('digest')))}")
    return f"blobs/{algorithm}/{hex_digest}"


def _read_blob_json(work: str, descriptor: dict[str, Any]) -> dict[str, Any]:
    with open(_inside(work, _blob_path(descriptor)), "rb") as f:
        return json.load(f)


def _oci_manifests(work: str) -> list[tuple[str, list[str], list[str]]]:
    try:
        with open(os.path.join(work, "index.json"), "rb") as f:
            index = json.load(f)
        entries = []
        for desc in index.get("manifests") or []:
            manifest, desc = _pick_manifest(work, desc)
            annotations = desc.get("annotations") or {}
            name = annotations.get("io.containerd.image.name", "")
            ref_name = annotations.get("org.opencontainers.image.ref.name", "")
            if not name and (":" in ref_name or "/" in ref_name):
                name = ref_name
            config = _blob_path(manifest["config"])
            layer_paths = [_blob_path(layer) for layer in manifest.get("layers") or []]
            entries.append((config, layer_paths, [name] if name else []))
        return entries
    except (ValueError, KeyError, TypeError) as e:
        raise InvalidParameter(f"invalid OCI layout: {e}") from e


def _pick_manifest(work: str, desc: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Follow nested indexes to the manifest for this host's platform (or the first one)."""
    doc = _read_blob_json(work, desc)
    while "manifests" in doc:
        options = doc["manifests"]
        arch = host_architecture()
        chosen = next(
            (m for m in options if (m.get("platform") or {}).get("architecture") == arch),
            options[0],
        )
        chosen = {**chosen, "annotations": desc.get("annotations") or chosen.get("annotations")}
        desc, doc = chosen, _read_blob_json(work, chosen)
    return doc, desc


def _write_files(tar: tarfile.TarFile, files: dict[str, bytes | str]) -> None:
    """Write save-archive entries in name order; a str value is a host file to copy in."""
    dirs_done: set[str] = set()
    mtime = int(time.time())
    for name in sorted(files):
        parent = os.path.dirname(name)
        if parent and parent not in dirs_done:
            info = tarfile.TarInfo(parent)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            info.mtime = mtime
            tar.addfile(info)
            dirs_done.add(parent)
        value = files[name]
        info = tarfile.TarInfo(name)
        info.mode = 0o644
        info.mtime = mtime
        if isinstance(value, bytes):
            info.size = len(value)
            tar.addfile(info, io.BytesIO(value))
        else:
            info.size = os.path.getsize(value)
            with open(value, "rb") as f:
                tar.addfile(info, f)
