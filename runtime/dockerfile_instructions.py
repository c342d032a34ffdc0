"""Instruction nodes to build stages (BuildKit's frontend/dockerfile/instructions as dockerd 20.10
vendors it): each instruction's arguments and `--flags` checked with Docker's words, ARGs before
the first FROM kept as meta args, and every other instruction put in its stage. An error names
its line: `dockerfile parse error line 3: unknown instruction: FOO`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from proto.docker.errors import InvalidParameter
from runtime.changes import parse_duration
from runtime.dockerfile_parse import Node

_STAGE_NAME = re.compile(r"^[a-z][a-z0-9-_\.]*$")
# The flags each instruction takes in dockerd's legacy builder (RUN takes none there).
_FLAGS: dict[str, dict[str, str]] = {
    "add": {"chown": "string", "chmod": "string"},
    "copy": {"chown": "string", "from": "string", "chmod": "string"},
    "from": {"platform": "string"},
    "healthcheck": {
        "interval": "string",
        "timeout": "string",
        "start-period": "string",
        "retries": "string",
    },
}
_KNOWN = {
    "add", "arg", "cmd", "copy", "entrypoint", "env", "expose", "from", "healthcheck", "label",
    "maintainer", "onbuild", "run", "shell", "stopsignal", "user", "volume", "workdir",
}  # fmt: skip
_MIN_DURATION_NS = 1_000_000  # container.MinimumDuration (1ms)


@dataclass
class Instruction:
    """One checked instruction; `code` is its text as `Step N/M : …` shows it."""

    name: str
    code: str
    args: list[str]
    json: bool = False
    flags: dict[str, str] = field(default_factory=dict)
    line: int = 0
    health: dict[str, Any] | None = None
    expression: str = ""  # ONBUILD: the trigger's text


@dataclass
class Stage:
    base: str
    name: str
    code: str
    platform: str
    line: int
    commands: list[Instruction] = field(default_factory=list)


def _parse_flags(node: Node) -> dict[str, str]:
    known = _FLAGS.get(node.cmd, {})
    values: dict[str, str] = {}
    for arg in node.flags:
        if not arg.startswith("--"):
            raise InvalidParameter(f"Arg should start with -- : {arg}")
        if arg == "--":
            break
        name, has_value, value = arg[2:].partition("=")
        if name not in known:
            raise InvalidParameter(f"Unknown flag: {name}")
        if name in values:
            raise InvalidParameter(f"Duplicate flag specified: {name}")
        if not has_value:
            raise InvalidParameter(f"Missing a value on flag: {name}")
        values[name] = value
    return values


def json_args(args: list[str], is_json: bool) -> list[str]:
    """handleJSONArgs: the exec form as is, the shell form as one string."""
    if not args:
        return []
    return list(args) if is_json else [" ".join(args)]


def _at_least_one(cmd: str) -> InvalidParameter:
    return InvalidParameter(f"{cmd} requires at least one argument")


def _exactly_one(cmd: str) -> InvalidParameter:
    return InvalidParameter(f"{cmd} requires exactly one argument")


def parse_instruction(node: Node) -> Instruction | Stage:
    """One node to its instruction or, for FROM, a new stage (ParseInstruction)."""
    cmd = node.cmd
    if cmd not in _KNOWN:
        raise InvalidParameter(f"unknown instruction: {cmd.upper()}")
    args = node.args
    upper = cmd.upper()
    inst = Instruction(cmd, node.original.strip(), list(args), node.json, {}, node.start_line)
    if cmd == "from":
        name = ""
        if len(args) == 3 and args[1].lower() == "as":
            name = args[2].lower()
            if not _STAGE_NAME.match(name):
                raise InvalidParameter(
                    f'invalid name for build stage: "{args[2]}", '
                    "name can't start with a number or contain symbols"
                )
        elif len(args) != 1:
            raise InvalidParameter("FROM requires either one or three arguments")
        flags = _parse_flags(node)
        return Stage(args[0], name, inst.code, flags.get("platform", ""), node.start_line)
    if cmd in ("env", "label"):
        if not args:
            raise _at_least_one(upper)
        if len(args) % 2:
            raise InvalidParameter(f"Bad input to {upper}, too many arguments")
        if any(not args[i] for i in range(0, len(args), 2)):
            raise InvalidParameter(f"{upper} names can not be blank")
    elif cmd in ("add", "copy"):
        if len(args) < 2:
            raise InvalidParameter(
                f"{upper} requires at least two arguments, but only one was provided. "
                "Destination could not be determined"
            )
    elif cmd in ("maintainer", "workdir", "user", "stopsignal"):
        if len(args) != 1:
            raise _exactly_one(upper)
    elif cmd == "onbuild":
        if not args:
            raise _at_least_one(upper)
        trigger = args[0].strip().upper()
        if trigger == "ONBUILD":
            raise InvalidParameter("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
        if trigger in ("MAINTAINER", "FROM"):
            raise InvalidParameter(f"{trigger} isn't allowed as an ONBUILD trigger")
        inst.expression = re.sub(r"(?i)^\s*ONBUILD\s*", "", node.original)
    elif cmd in ("expose", "volume", "arg"):
        if not args:
            raise _at_least_one(upper)
        if cmd == "volume" and any(not v.strip() for v in args):
            raise InvalidParameter("VOLUME specified can not be an empty string")
        if cmd == "arg" and any(a.startswith("=") for a in args):
            raise InvalidParameter("ARG names can not be blank")
        if cmd == "expose":
            inst.args = sorted(args)
    elif cmd == "shell":
        if not args:
            raise _at_least_one(upper)
        if not node.json:
            raise InvalidParameter("SHELL requires the arguments to be in JSON form")
    elif cmd == "healthcheck":
        inst.health = _healthcheck(node)
    inst.flags = _parse_flags(node)
    return inst


def _healthcheck(node: Node) -> dict[str, Any]:
    if not node.args:
        raise _at_least_one("HEALTHCHECK")
    typ = node.args[0].upper()
    rest = node.args[1:]
    if typ == "NONE":
        if rest:
            raise InvalidParameter("HEALTHCHECK NONE takes no arguments")
        return {"Test": ["NONE"]}
    flags = _parse_flags(node)
    if typ != "CMD":
        raise InvalidParameter(f'Unknown type "{typ}" in HEALTHCHECK (try CMD)')
    command = json_args(rest, node.json)
    if not command:
        raise InvalidParameter("Missing command after HEALTHCHECK CMD")
    health: dict[str, Any] = {"Test": [typ if node.json else "CMD-SHELL", *command]}
    durations = (("interval", "Interval"), ("timeout", "Timeout"), ("start-period", "StartPeriod"))
    for flag, key in durations:
        text = flags.get(flag, "")
        value = parse_duration(flag, text) if text else 0
        if text and value < _MIN_DURATION_NS:
            raise InvalidParameter(f'Interval "{flag}" cannot be less than 1ms')
        if value:
            health[key] = value
    if flags.get("retries"):
        try:
            retries = int(flags["retries"])
        except ValueError:
            raise InvalidParameter(
                f'strconv.ParseInt: parsing "{flags["retries"]}": invalid syntax'
            ) from None
        if retries < 1:
            raise InvalidParameter(f"--retries must be at least 1 (not {retries})")
        health["Retries"] = retries
    return health


def parse_stages(nodes: list[Node]) -> tuple[list[Stage], list[Instruction]]:
    """The stages and the meta ARGs before the first FROM (instructions.Parse)."""
    stages: list[Stage] = []
    meta: list[Instruction] = []
    for node in nodes:
        try:
            item = parse_instruction(node)
        except InvalidParameter as e:
            raise InvalidParameter(f"dockerfile parse error line {node.start_line}: {e}") from None
        if isinstance(item, Stage):
            stages.append(item)
        elif not stages and item.name == "arg":
            meta.append(item)
        elif not stages:
            raise InvalidParameter("no build stage in current context")
        else:
            stages[-1].commands.append(item)
    return stages, meta
