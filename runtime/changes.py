"""Dockerfile instructions applied to a container config: `apply_changes` (the `--change` of
`docker commit` and `docker import`; BuildFromConfig) with the Dockerfile parser's word splitting,
quoting, `$VAR` expansion, durations and error texts. CMD, ENTRYPOINT, ENV, EXPOSE, HEALTHCHECK,
LABEL, ONBUILD, USER, VOLUME and WORKDIR are accepted, as dockerd accepts them there.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

from proto.docker.errors import InvalidParameter, go_quote
from runtime.imageconfig import normalize_config, with_env

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
                f"Syntax error - can't find = in {go_quote(word)}. Must be of the form: name=value"
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


def parse_duration(flag: str, text: str) -> int:
    pos = 0
    total = 0.0
    for m in _DURATION_PART.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _DURATION_NS[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise InvalidParameter(f"time: invalid duration {go_quote(text)}")
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
            options[field] = parse_duration(flag, value)
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
    cfg["Env"] = with_env(list(cfg.get("Env") or []), list(pairs))
    env.update(pairs)


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
