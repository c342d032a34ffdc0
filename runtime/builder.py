"""`docker build` on one node: dockerd 20.10's legacy builder (builder/dockerfile) over the
runtime. `Build.run` walks the stages of a parsed Dockerfile step by step and sends dockerd's
JSON stream (`Step 1/N : …`, ` ---> <id>`, ` ---> Using cache`, `{"aux":{"ID":…}}`,
`Successfully built`, `Successfully tagged`); the instructions are runtime/build_dispatch.py,
what they do to files runtime/build_steps.py, the cache and the step images
runtime/build_images.py.

A FROM (or `COPY --from`) image missing from this node is pulled through `Build.pull`, the hook
the agent wires to its registry pull (its progress in this stream, as dockerd's legacy builder
shows it); `pull=1` (`docker build --pull`) pulls even when the image is here. Without a hook a
missing image is dockerd's "No such image" answer.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from proto.docker.errors import DockerError, InvalidParameter, NotFound
from runtime import build_dispatch
from runtime.build_args import BuildArgs
from runtime.dockerfile_instructions import Instruction, Stage, parse_stages
from runtime.dockerfile_lex import process_word
from runtime.dockerfile_parse import ParseResult
from runtime.imageconfig import env_key, normalize_config
from runtime.references import parse_reference

if TYPE_CHECKING:
    from runtime.containers import Runtime

Emit = Callable[[dict[str, Any]], None]
Pull = Callable[[str], Awaitable[str]]
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass
class BuildOptions:
    tags: list[str] = field(default_factory=list)
    nocache: bool = False
    remove: bool = True
    force_remove: bool = False
    pull: bool = False
    buildargs: dict[str, str | None] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    target: str = ""
    want_aux: bool = True
    host_config: dict[str, Any] = field(default_factory=dict)


@dataclass
class StageState:
    """dispatchState: the config the next step starts from, and its image."""

    args: BuildArgs
    image_id: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    stage_name: str = ""
    maintainer: str = ""
    cmd_set: bool = False
    escape: str = "\\"

    def env_for_expansion(self) -> list[str]:
        env = list(self.config.get("Env") or [])
        return env + self.args.filter_allowed(env)


def check_tags(tags: list[str]) -> list[str]:
    """sanitizeRepoAndTags: every `-t` must be a name[:tag] (no digest); familiar forms."""
    out: list[str] = []
    for tag in tags:
        if not tag:
            continue
        ref = parse_reference(tag)
        if ref.digest:
            raise InvalidParameter("build tag cannot contain a digest")
        key = ref.tagged().familiar()
        if key not in out:
            out.append(key)
    return out


class Build:
    def __init__(
        self,
        rt: Runtime,
        context: str,
        dockerfile: ParseResult,
        options: BuildOptions,
        emit: Emit,
        pull: Pull | None = None,
    ) -> None:
        self.rt = rt
        self.context = context
        self.dockerfile = dockerfile
        self.options = options
        self.emit = emit
        self._pull = pull
        self.stage_images: dict[str, str] = {}
        self.stage_list: list[str] = []
        self.containers: list[str] = []
        self.step = 1
        self.total = 0

    def out(self, text: str) -> None:
        self.emit({"stream": text})

    def plan(self) -> tuple[list[Stage], list[Instruction]]:
        """The stages to build (up to `--target`) with `--label`s added to the last one; any
        error here comes before the first step, so the client gets it as the HTTP answer."""
        stages, meta = parse_stages(self.dockerfile.nodes)
        if self.options.target:
            names = [s.name for s in stages]
            target = self.options.target.lower()
            if target not in names:
                raise InvalidParameter(
                    f"failed to reach build target {self.options.target} in Dockerfile"
                )
            stages = stages[: names.index(target) + 1]
        if not stages:
            raise InvalidParameter("No image was generated. Is your Dockerfile empty?")
        for key in sorted(self.options.labels):
            value = self.options.labels[key]
            stages[-1].commands.append(
                Instruction("label", f"LABEL {key}={value}", [key, value], flags={"noexp": ""})
            )
        return stages, meta

    async def run(self, stages: list[Stage], meta: list[Instruction]) -> str:
        """Every step; returns the image id (tags are the caller's: `tag_result`)."""
        for warning in self.dockerfile.warnings:
            self.emit({"stream": warning + "\n"})
        args = BuildArgs(self.options.buildargs)
        self.total = len(meta) + len(stages) + sum(len(s.commands) for s in stages)
        for inst in meta:
            self._print_step(inst.code)
            env = [f"{k}={v}" for k, v in args.all_allowed().items()]
            for key, value in build_dispatch.arg_pairs(inst, env, self.dockerfile.escape):
                args.add_arg(key, value)
                args.add_meta(key, value)
        state = StageState(args=args)
        for stage in stages:
            if stage.name and stage.name in self.stage_images:
                raise InvalidParameter(f"{stage.name} stage name already used")
            state = StageState(args=args.clone_for_stage(), escape=self.dockerfile.escape)
            self._print_step(stage.code)
            await self._begin_stage(state, stage)
            self.out(f" ---> {short(state.image_id)}\n")
            for inst in stage.commands:
                self._print_step(inst.code)
                await self.dispatch(state, inst)
                self.out(f" ---> {short(state.image_id)}\n")
            if self.options.want_aux and state.image_id:
                self.emit({"aux": {"ID": state.image_id}})
            args.referenced |= state.args.referenced
            if stage.name:
                self.stage_images[stage.name] = state.image_id
            self.stage_list.append(state.image_id)
        unused = args.unused()
        if unused:
            self.out(f"[Warning] One or more build-args [{' '.join(unused)}] were not consumed\n")
        if not state.image_id:
            raise DockerError("No image was generated. Is your Dockerfile empty?", 500)
        return state.image_id

    def _print_step(self, code: str) -> None:
        self.out(f"Step {self.step}/{self.total} : {code}\n")
        self.step += 1

    async def dispatch(self, state: StageState, inst: Instruction) -> None:
        """One instruction; intermediate containers go as --rm / --force-rm say."""
        ok = False
        try:
            await build_dispatch.dispatch(self, state, inst)
            ok = True
        finally:
            if self.options.force_remove or (self.options.remove and ok):
                await self.remove_containers()

    async def remove_containers(self) -> None:
        while self.containers:
            cid = self.containers.pop(0)
            try:
                await self.rt.remove(cid, force=True)
            except DockerError:
                continue
            self.out(f"Removing intermediate container {cid[:12]}\n")

    async def _begin_stage(self, state: StageState, stage: Stage) -> None:
        env = [f"{k}={v}" for k, v in state.args.all_meta().items()]
        name = process_word(stage.base, env, state.escape)
        if not name:
            raise InvalidParameter(f"base name ({stage.base}) should not be blank")
        state.stage_name = stage.name
        if name.lower() in self.stage_images:
            state.image_id = self.stage_images[name.lower()]
        elif name == "scratch":
            state.image_id = ""
        else:
            state.image_id = await self.image_for(name)
        base = self.rt.images.image_config(state.image_id) if state.image_id else {}
        state.config = normalize_config(copy.deepcopy(base.get("config") or {}))
        env_list = list(state.config.get("Env") or [])
        if "PATH" not in {env_key(e) for e in env_list}:
            state.config["Env"] = [*env_list, f"PATH={DEFAULT_PATH}"]
        state.config["OpenStdin"] = False
        state.config["StdinOnce"] = False
        triggers = state.config.get("OnBuild") or []
        if triggers:
            state.config["OnBuild"] = None
            plural = "s" if len(triggers) > 1 else ""
            self.out(f"# Executing {len(triggers)} build trigger{plural}\n")
            for trigger in triggers:
                await build_dispatch.dispatch_trigger(self, state, trigger)

    async def image_for(self, name: str) -> str:
        """A FROM/--from image on this node, pulled when missing (or always with `pull`)."""
        store = self.rt.images
        if self.options.pull or not await asyncio.to_thread(store.exists, name):
            return await self.pull(name)
        return await asyncio.to_thread(store.resolve, name)

    async def pull(self, name: str) -> str:
        """The one hook for registry pulls: an image id for `name`, or dockerd's error."""
        if self._pull is not None:
            return await self._pull(name)
        try:
            return await asyncio.to_thread(self.rt.images.resolve, name)
        except NotFound:
            ref = parse_reference(name)
            raise NotFound(f"No such image: {ref.tagged().familiar()}") from None

    async def tag_result(self, image_id: str, tags: list[str]) -> None:
        self.out(f"Successfully built {short(image_id)}\n")
        for tag in tags:
            await asyncio.to_thread(self.rt.images.set_tag, image_id, tag)
            self.out(f"Successfully tagged {tag}\n")


def short(image_id: str) -> str:
    return image_id.removeprefix("sha256:")[:12]
