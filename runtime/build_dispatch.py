"""The instructions of a build stage (dockerd 20.10's builder/dockerfile/dispatchers.go): each
expands its words, changes the stage's config and commits a step image — from the cache when
the parent already has a child made the same way (runtime/build_images.probe).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import os
from typing import TYPE_CHECKING, Any

from proto.docker.errors import DockerError, InvalidParameter, go_quote
from runtime import build_copy, build_images, build_sources, build_steps
from runtime.config_values import parse_signal
from runtime.dockerfile_instructions import Instruction, json_args, parse_instruction
from runtime.dockerfile_lex import process_word, process_words
from runtime.dockerfile_parse import ParseError, node_from_line, parse
from runtime.imageconfig import env_key, normalize_config, with_env

if TYPE_CHECKING:
    from runtime.builder import Build, StageState

_BUILDKIT_ONLY = (
    "the --{} option requires BuildKit. Refer to https://docs.docker.com/go/buildkit/ "
    "to learn how to build images with BuildKit enabled"
)


def go_list(items: list[str]) -> str:
    """Go's %v of a []string: `[a b]`."""
    return "[" + " ".join(items) + "]"


def go_qlist(items: list[str] | None) -> str:
    """Go's %q of a []string: `["a" "b"]` (nil: `[]`)."""
    return "[" + " ".join(go_quote(i) for i in items or []) + "]"


def arg_pairs(inst: Instruction, env: list[str], escape: str) -> list[tuple[str, str | None]]:
    """ARG's `name[=default]` words, expanded."""
    out: list[tuple[str, str | None]] = []
    for word in inst.args:
        key, has_value, value = word.partition("=")
        key = process_word(key, env, escape)
        out.append((key, process_word(value, env, escape) if has_value else None))
    return out


def shell_of(config: dict[str, Any]) -> list[str]:
    return list(config.get("Shell") or ["/bin/sh", "-c"])


async def commit(build: Build, state: StageState, comment: str, as_string: bool = False) -> None:
    """A metadata-only step: the config changed, the files did not (builder.commit)."""
    cmd = (
        [*shell_of(state.config), "#(nop) " + comment]
        if as_string
        else [*shell_of(state.config), "#(nop) ", comment]
    )
    container_config = {**copy.deepcopy(state.config), "Cmd": cmd}
    if await _probe(build, state, container_config):
        return
    await _commit_step(build, state, container_config, None)


async def _commit_step(
    build: Build, state: StageState, container_config: dict[str, Any], upper: str | None
) -> None:
    """The step's image on top of the current one (`upper`: its changed files, None for a
    metadata-only step); it becomes the stage's image."""
    state.image_id = await asyncio.to_thread(
        build_images.commit_step,
        build.rt.images,
        state.image_id,
        _image_config(state),
        container_config,
        upper,
        state.maintainer,
    )


def _image_config(state: StageState) -> dict[str, Any]:
    return {**copy.deepcopy(state.config), "Image": state.image_id}


async def _probe(build: Build, state: StageState, container_config: dict[str, Any]) -> bool:
    if build.options.nocache:
        return False
    probe_config = {**normalize_config(container_config), "Image": state.image_id}
    hit = await asyncio.to_thread(build_images.probe, build.rt.images, state.image_id, probe_config)
    if hit is None:
        return False
    build.out(" ---> Using cache\n")
    state.image_id = hit
    return True


async def dispatch(build: Build, state: StageState, inst: Instruction) -> None:
    env = state.env_for_expansion()
    esc = state.escape
    name = inst.name
    cfg = state.config
    if name == "env":
        pairs = _pairs(inst, env, esc)
        cfg["Env"] = with_env(list(cfg.get("Env") or []), pairs)
        await commit(build, state, "ENV " + " ".join(f"{k}={v}" for k, v in pairs))
    elif name == "label":
        pairs = _pairs(inst, env, esc, expand="noexp" not in inst.flags)
        cfg["Labels"] = {**(cfg.get("Labels") or {}), **dict(pairs)}
        await commit(build, state, "LABEL " + " ".join(f"{k}={v}" for k, v in pairs))
    elif name == "maintainer":
        state.maintainer = inst.args[0]
        await commit(build, state, "MAINTAINER " + inst.args[0])
    elif name == "workdir":
        await _workdir(build, state, process_word(inst.args[0], env, esc))
    elif name == "run":
        await _run(build, state, inst)
    elif name == "cmd":
        cmd = _resolve_cmd(inst, cfg)
        cfg["Cmd"] = cmd
        await commit(build, state, "CMD " + go_qlist(cmd))
        if inst.args:
            state.cmd_set = True
    elif name == "entrypoint":
        cfg["Entrypoint"] = _resolve_cmd(inst, cfg) or None
        if not state.cmd_set:
            cfg["Cmd"] = None
        await commit(build, state, "ENTRYPOINT " + go_qlist(cfg["Entrypoint"]))
    elif name == "healthcheck":
        await _healthcheck(build, state, inst)
    elif name == "expose":
        await _expose(build, state, inst, env)
    elif name == "user":
        cfg["User"] = process_word(inst.args[0], env, esc)
        await commit(build, state, "USER " + cfg["User"])
    elif name == "volume":
        paths = [process_word(v, env, esc) for v in inst.args]
        if any(not p for p in paths):
            raise InvalidParameter("VOLUME specified can not be an empty string")
        cfg["Volumes"] = {**(cfg.get("Volumes") or {}), **{p: {} for p in paths}}
        await commit(build, state, "VOLUME " + go_list(paths))
    elif name == "stopsignal":
        signal = process_word(inst.args[0], env, esc)
        parse_signal(signal)
        cfg["StopSignal"] = signal
        await commit(build, state, "STOPSIGNAL " + signal)
    elif name == "arg":
        pairs = arg_pairs(inst, env, esc)
        for key, value in pairs:
            state.args.add_arg(key, value)
        text = " ".join(k if v is None else f"{k}={v}" for k, v in pairs)
        await commit(build, state, "ARG " + text)
    elif name == "shell":
        cfg["Shell"] = list(inst.args)
        await commit(build, state, "SHELL " + go_list(cfg["Shell"]))
    elif name == "onbuild":
        cfg["OnBuild"] = [*(cfg.get("OnBuild") or []), inst.expression]
        await commit(build, state, "ONBUILD " + inst.expression)
    elif name in ("copy", "add"):
        await _copy(build, state, inst, env)
    else:
        raise DockerError(f"unsupported command type: {name}", 500)


def _pairs(
    inst: Instruction, env: list[str], esc: str, expand: bool = True
) -> list[tuple[str, str]]:
    args = inst.args
    pairs = [(args[i], args[i + 1]) for i in range(0, len(args), 2)]
    if not expand:
        return pairs
    return [(process_word(k, env, esc), process_word(v, env, esc)) for k, v in pairs]


def _resolve_cmd(inst: Instruction, cfg: dict[str, Any]) -> list[str]:
    """resolveCmdLine: the shell form runs in the stage's SHELL."""
    cmd = json_args(inst.args, inst.json)
    if not inst.json and cmd:
        return [*shell_of(cfg), *cmd]
    return cmd


async def dispatch_trigger(build: Build, state: StageState, trigger: str) -> None:
    """An ONBUILD trigger of the FROM image, run as if it were written here."""
    try:
        result = parse(trigger)
    except ParseError as e:
        raise InvalidParameter(str(e)) from None
    if len(result.nodes) != 1:
        raise InvalidParameter("onbuild trigger should be a single expression")
    item = parse_instruction(node_from_line(result.nodes[0].original, state.escape))
    if not isinstance(item, Instruction):
        raise InvalidParameter("*instructions.Stage is not a command type")
    await build.dispatch(state, item)


async def _workdir(build: Build, state: StageState, path: str) -> None:
    cfg = state.config
    cfg["WorkingDir"] = os.path.normpath(os.path.join("/", cfg.get("WorkingDir") or "/", path))
    comment = "WORKDIR " + cfg["WorkingDir"]
    container_config = {**copy.deepcopy(cfg), "Cmd": [*shell_of(cfg), "#(nop) " + comment]}
    if await _probe(build, state, container_config):
        return
    rt = build.rt
    async with build_steps.image_view(rt, state.image_id, writable=True) as (root, upper):
        scratch = os.path.dirname(upper)
        await asyncio.to_thread(build_copy.ensure_dir, root, cfg["WorkingDir"], None, scratch)
        await _commit_step(build, state, container_config, upper)


async def _run(build: Build, state: StageState, inst: Instruction) -> None:
    cfg = state.config
    cmd = _resolve_cmd(inst, cfg)
    build_args = state.args.filter_allowed(list(cfg.get("Env") or []))
    save_cmd = cmd
    if build_args:
        used = sorted(e for e in build_args if state.args.is_referenced_or_not_builtin(env_key(e)))
        save_cmd = [f"|{len(used)}", *used, *cmd]
    probe_config = {**copy.deepcopy(cfg), "Cmd": save_cmd}
    if save_cmd:
        probe_config["Entrypoint"] = None
    if await _probe(build, state, probe_config):
        return
    body = {
        **copy.deepcopy(cfg),
        "Image": state.image_id,
        "Cmd": cmd,
        "Env": [*(cfg.get("Env") or []), *build_args],
        "Entrypoint": [""] if save_cmd else cfg.get("Entrypoint"),
        "Healthcheck": {"Test": ["NONE"]},
        "HostConfig": {**build.options.host_config, "LogConfig": {"Type": "none", "Config": {}}},
    }
    body = {k: v for k, v in body.items() if v is not None}
    cid, code = await build_steps.run_container(build.rt, body, build.emit, build.containers.append)
    if code != 0:
        raise RunFailed(f"The command '{' '.join(cmd)}' returned a non-zero code: {code}", code)
    state.image_id = await build_steps.commit_container(
        build.rt, cid, state.image_id, _image_config(state), probe_config, state.maintainer
    )


class RunFailed(DockerError):
    """A RUN that exited non-zero: its exit code goes in the stream's errorDetail."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message, 500)
        self.code = code


async def _healthcheck(build: Build, state: StageState, inst: Instruction) -> None:
    cfg = state.config
    old = (cfg.get("Healthcheck") or {}).get("Test") or []
    if old and old[0] != "NONE":
        build.out(f"Note: overriding previous HEALTHCHECK: {go_list(old)}\n")
    health = dict(inst.health or {})
    cfg["Healthcheck"] = health
    text = "&{{{} {} {} {} {}}}".format(
        go_qlist(health.get("Test")),
        _go_duration(health.get("Interval", 0)),
        _go_duration(health.get("Timeout", 0)),
        _go_duration(health.get("StartPeriod", 0)),
        _go_rune(int(health.get("Retries", 0))),
    )
    await commit(build, state, "HEALTHCHECK " + text)


def _go_duration(ns: int) -> str:
    if not ns:
        return '"0s"'
    seconds = ns / 1e9
    return f'"{seconds:g}s"' if ns % 1_000_000_000 == 0 else f'"{ns // 1_000_000}ms"'


def _go_rune(n: int) -> str:
    return f"'{chr(n)}'" if 32 <= n < 127 else f"'\\x{n:02x}'"


async def _expose(build: Build, state: StageState, inst: Instruction, env: list[str]) -> None:
    ports: list[str] = []
    for word in inst.args:
        ports += process_words(word, env, state.escape)
    exposed = dict(state.config.get("ExposedPorts") or {})
    for spec in ports:
        port, _, proto = spec.rpartition(":")[2].partition("/")
        proto = (proto or "tcp").lower()
        start, _, end = port.partition("-")
        if not start.isdigit() or (end and not end.isdigit()):
            raise InvalidParameter(f"invalid containerPort: {port}")
        for number in range(int(start), int(end or start) + 1):
            exposed[f"{number}/{proto}"] = {}
    state.config["ExposedPorts"] = exposed
    await commit(build, state, "EXPOSE " + " ".join(ports))


async def _copy(build: Build, state: StageState, inst: Instruction, env: list[str]) -> None:
    upper_name = inst.name.upper()
    if "chmod" in inst.flags:
        raise InvalidParameter(_BUILDKIT_ONLY.format("chmod"))
    words = [process_word(w, env, state.escape) for w in inst.args]
    chown = process_word(inst.flags.get("chown", ""), env, state.escape)
    sources, dest = words[:-1], words[-1]
    if any("://" in s for s in sources):
        if inst.name == "copy":
            raise InvalidParameter(f"{upper_name} failed: source can't be a URL for COPY")
        raise InvalidParameter(f"{upper_name} failed: ADD of a URL is not supported yet")
    src_from = inst.flags.get("from", "")
    src_image = await _from_image(build, src_from) if src_from else None
    async with contextlib.AsyncExitStack() as stack:
        src_root = build.context
        if src_image is not None:
            view = build_steps.image_view(build.rt, src_image, writable=False)
            src_root, _ = await stack.enter_async_context(view)
        try:
            found = await asyncio.to_thread(
                build_sources.find_sources, src_root, sources, src_image is None
            )
        except DockerError as e:
            raise DockerError(f"{upper_name} failed: {e}", e.status) from None
        if len(found) > 1 and not dest.endswith("/"):
            raise InvalidParameter(
                f"When using {upper_name} with more than one source file, "
                "the destination must be a directory and end with a /"
            )
        chown_comment = f"--chown={chown}" if chown else ""
        comment = f"{upper_name} {chown_comment}{build_sources.sources_hash(found)} in {dest} "
        cfg = state.config
        container_config = {**copy.deepcopy(cfg), "Cmd": [*shell_of(cfg), "#(nop) " + comment]}
        if await _probe(build, state, container_config):
            return
        target = build_copy.normalize_dest(cfg.get("WorkingDir") or "", dest)
        rt = build.rt
        async with build_steps.image_view(rt, state.image_id, writable=True) as (root, upper):
            owner: tuple[int, int] | None = (0, 0) if src_image is None else None
            if chown:
                owner = await asyncio.to_thread(build_copy.parse_chown, root, chown)
            await asyncio.to_thread(
                build_copy.copy_sources,
                src_root,
                found,
                root,
                target,
                owner,
                inst.name == "add",
                os.path.dirname(upper),
            )
            await _commit_step(build, state, container_config, upper)


async def _from_image(build: Build, name: str) -> str:
    """`--from=`: a stage by name or index, else an image (getImageMount)."""
    key = name.lower()
    if key in build.stage_images:
        return build.stage_images[key]
    if name.isdigit():
        index = int(name)
        if index == len(build.stage_list):
            raise InvalidParameter(f"invalid from flag value {name}: refers to current build stage")
        if index > len(build.stage_list):
            raise InvalidParameter(f"invalid from flag value {name}: index out of bounds")
        return build.stage_list[index]
    try:
        return await build.image_for(name)
    except DockerError as e:
        raise DockerError(f"invalid from flag value {name}: {e}", e.status) from None
