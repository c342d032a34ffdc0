"""`docker build` on this node (ImageBuild): the query read as dockerd's newImageBuildOptions
reads it, the context tar streamed into a private directory, then runtime/builder.Build with
its JSON messages streamed back. Anything that fails before the first step ends the call with
its Docker error (the manager answers it as the HTTP status, as dockerd does before it has
written any output); later failures are the stream's last message, in dockerd's errorDetail form.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any, BinaryIO

from agent.service_base import ServiceBase, data_chunks, first_options, log, rpc
from agent.service_images import pull_image
from agent.worker_streams import feed_in
from proto import agent_pb2 as pb
from proto.docker.errors import DockerError, InvalidParameter
from runtime import build_context
from runtime.build_dispatch import RunFailed
from runtime.builder import Build, BuildOptions, Emit, Pull, check_tags
from runtime.references import parse_reference
from runtime.registry_auth import resolve_auth_config

_FALSE = ("", "0", "no", "false", "none")
_BUILT = "\0built"  # the loop's own marker: never a key of a Docker message


def _bool(query: dict[str, list[str]], key: str) -> bool:
    return (query.get(key) or [""])[0].lower() not in _FALSE


def _one(query: dict[str, list[str]], key: str) -> str:
    return (query.get(key) or [""])[0]


def _json_map(query: dict[str, list[str]], key: str, what: str) -> dict[str, Any]:
    text = _one(query, key)
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError as e:
        raise InvalidParameter(f"error reading {what}: {e}") from None
    if not isinstance(value, dict):
        raise InvalidParameter(f"error reading {what}: json: cannot unmarshal into map")
    return value


def _version_at_least(version: str, minimum: str) -> bool:
    def parts(v: str) -> tuple[int, ...]:
        return tuple(int(p) for p in v.split(".") if p.isdigit())

    return not version or parts(version) >= parts(minimum)


def build_options(query: dict[str, list[str]], api_version: str) -> BuildOptions:
    """newImageBuildOptions, for the options the legacy builder uses."""
    remove = True
    if _bool(query, "forcerm"):
        remove = True
    elif _one(query, "rm"):
        remove = _bool(query, "rm")
    host_config: dict[str, Any] = {}
    for key, field in (
        ("memory", "Memory"),
        ("memswap", "MemorySwap"),
        ("cpushares", "CpuShares"),
        ("cpuperiod", "CpuPeriod"),
        ("cpuquota", "CpuQuota"),
        ("shmsize", "ShmSize"),
    ):
        text = _one(query, key)
        if text:
            try:
                host_config[field] = int(text)
            except ValueError:
                raise InvalidParameter(
                    f'strconv.ParseInt: parsing "{text}": invalid syntax'
                ) from None
    for key, field in (("cpusetcpus", "CpusetCpus"), ("cpusetmems", "CpusetMems")):
        if _one(query, key):
            host_config[field] = _one(query, key)
    host_config["NetworkMode"] = _one(query, "networkmode") or "default"
    if query.get("extrahosts"):
        host_config["ExtraHosts"] = list(query["extrahosts"])
    buildargs = _json_map(query, "buildargs", "build args")
    labels = _json_map(query, "labels", "labels")
    return BuildOptions(
        tags=check_tags(list(query.get("t") or [])),
        nocache=_bool(query, "nocache"),
        remove=remove,
        force_remove=_bool(query, "forcerm"),
        pull=_bool(query, "pull"),
        buildargs={str(k): None if v is None else str(v) for k, v in buildargs.items()},
        labels={str(k): str(v) for k, v in labels.items()},
        target=_one(query, "target"),
        want_aux=_version_at_least(api_version, "1.30"),
        host_config=host_config,
    )


def error_message(err: Exception) -> dict[str, Any]:
    """streamformatter.FormatError: the message, with a RUN's exit code."""
    text = str(err) or type(err).__name__
    detail: dict[str, Any] = {"message": text}
    if isinstance(err, RunFailed):
        detail = {"code": err.code, "message": text}
    return {"errorDetail": detail, "error": text}


def registry_configs(data: bytes) -> dict[str, Any]:
    """The build's X-Registry-Config as the manager passed it; unreadable is none (dockerd
    ignores a header it cannot decode)."""
    try:
        doc = json.loads(data or b"{}")
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


class BuildMixin(ServiceBase):
    """docker build."""

    @rpc
    async def ImageBuild(
        self, request_iterator: AsyncIterator[pb.ImageBuildInput], context: Any
    ) -> AsyncIterator[pb.ImageBuildOutput]:
        opts = await first_options(request_iterator, "image build")
        try:
            query = json.loads(opts.query or b"{}")
        except ValueError as e:
            raise InvalidParameter(f"invalid build query: {e}") from None
        options = build_options(query, opts.api_version)
        dockerfile_name = _one(query, "dockerfile") or "Dockerfile"
        if _one(query, "remote"):
            raise InvalidParameter("remote build contexts are not supported")
        images = self.rt.images
        work = await asyncio.to_thread(images.tmp_dir, "build-")
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        build: Build | None = None
        task: asyncio.Task[None] | None = None
        try:

            async def consume(src: BinaryIO) -> Any:
                def prepare() -> Any:
                    root = build_context.unpack(src, work)
                    return root, build_context.read_dockerfile(root, dockerfile_name)

                return await asyncio.to_thread(prepare)

            root, parsed = await feed_in(data_chunks(request_iterator), consume)
            pull = self._build_pull(registry_configs(opts.registry_config), queue.put_nowait)
            build = Build(self.rt, root, parsed, options, queue.put_nowait, pull)
            stages, meta = build.plan()
            task = asyncio.create_task(self._run_build(build, stages, meta, queue))
            quiet = _bool(query, "q")
            held: list[dict[str, Any]] = []
            while (msg := await queue.get()) is not None:
                if _BUILT in msg:
                    if quiet:  # dockerd -q: only the id, unless the build fails
                        msg = {"stream": msg[_BUILT] + "\n"}
                    else:
                        continue
                elif quiet and "error" not in msg:
                    held.append(msg)
                    continue
                for m in [*held, msg]:
                    yield pb.ImageBuildOutput(json=json.dumps(m).encode())
                held = []
            await task
        finally:
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
            if build is not None and task is not None and task.cancelled():
                await build.remove_containers()
            await asyncio.to_thread(build_context.remove, work)

    def _build_pull(self, configs: dict[str, Any], emit: Emit) -> Pull:
        """A FROM's pull: the node's own (`docker pull`'s path) with the credentials for the
        image's registry; its progress goes into the build's stream, as dockerd's does."""

        async def pull(name: str) -> str:
            domain = parse_reference(name).name.split("/", 1)[0]
            creds = resolve_auth_config(configs, domain)
            return (await pull_image(self, name, emit, creds)).image_id

        return pull

    async def _run_build(
        self,
        build: Build,
        stages: list[Any],
        meta: list[Any],
        queue: asyncio.Queue[dict[str, Any] | None],
    ) -> None:
        try:
            image_id = await build.run(stages, meta)
            if self.image_records is not None:
                self.image_records.changed()  # an untagged result has no image event
            await build.tag_result(image_id, build.options.tags)
            for tag in build.options.tags:
                self.events.publish("image", "tag", image_id, {"name": tag})
            queue.put_nowait({_BUILT: image_id})
        except DockerError as err:
            queue.put_nowait(error_message(err))
        except Exception as err:  # noqa: BLE001 - a build failure is the stream's last message
            log.exception("build failed")
            queue.put_nowait(error_message(err))
        finally:
            queue.put_nowait(None)
