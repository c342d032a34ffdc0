from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Empty(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class JsonReply(_message.Message):
    __slots__ = ("json",)
    JSON_FIELD_NUMBER: _ClassVar[int]
    json: bytes
    def __init__(self, json: _Optional[bytes] = ...) -> None: ...

class DataChunk(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class OutputChunk(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class ResizeRequest(_message.Message):
    __slots__ = ("id", "height", "width")
    ID_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    id: str
    height: int
    width: int
    def __init__(self, id: _Optional[str] = ..., height: _Optional[int] = ..., width: _Optional[int] = ...) -> None: ...

class ContainerRef(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class PingRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PingReply(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: str
    def __init__(self, version: _Optional[str] = ...) -> None: ...

class InfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class EventsRequest(_message.Message):
    __slots__ = ("since_ns", "until_ns")
    SINCE_NS_FIELD_NUMBER: _ClassVar[int]
    UNTIL_NS_FIELD_NUMBER: _ClassVar[int]
    since_ns: int
    until_ns: int
    def __init__(self, since_ns: _Optional[int] = ..., until_ns: _Optional[int] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("json",)
    JSON_FIELD_NUMBER: _ClassVar[int]
    json: bytes
    def __init__(self, json: _Optional[bytes] = ...) -> None: ...

class ContainerCreateRequest(_message.Message):
    __slots__ = ("json", "name", "start")
    JSON_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    json: bytes
    name: str
    start: bool
    def __init__(self, json: _Optional[bytes] = ..., name: _Optional[str] = ..., start: _Optional[bool] = ...) -> None: ...

class ContainerCreateReply(_message.Message):
    __slots__ = ("id", "warnings", "started")
    ID_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    id: str
    warnings: _containers.RepeatedScalarFieldContainer[str]
    started: bool
    def __init__(self, id: _Optional[str] = ..., warnings: _Optional[_Iterable[str]] = ..., started: _Optional[bool] = ...) -> None: ...

class ContainerStartRequest(_message.Message):
    __slots__ = ("id", "hold_output")
    ID_FIELD_NUMBER: _ClassVar[int]
    HOLD_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    id: str
    hold_output: bool
    def __init__(self, id: _Optional[str] = ..., hold_output: _Optional[bool] = ...) -> None: ...

class ContainerStopRequest(_message.Message):
    __slots__ = ("id", "timeout")
    ID_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    id: str
    timeout: int
    def __init__(self, id: _Optional[str] = ..., timeout: _Optional[int] = ...) -> None: ...

class ContainerKillRequest(_message.Message):
    __slots__ = ("id", "signal")
    ID_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    id: str
    signal: str
    def __init__(self, id: _Optional[str] = ..., signal: _Optional[str] = ...) -> None: ...

class ContainerRestartRequest(_message.Message):
    __slots__ = ("id", "timeout")
    ID_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    id: str
    timeout: int
    def __init__(self, id: _Optional[str] = ..., timeout: _Optional[int] = ...) -> None: ...

class ContainerRemoveRequest(_message.Message):
    __slots__ = ("id", "force", "volumes")
    ID_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    VOLUMES_FIELD_NUMBER: _ClassVar[int]
    id: str
    force: bool
    volumes: bool
    def __init__(self, id: _Optional[str] = ..., force: _Optional[bool] = ..., volumes: _Optional[bool] = ...) -> None: ...

class ContainerRenameRequest(_message.Message):
    __slots__ = ("id", "name")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class ContainerUpdateRequest(_message.Message):
    __slots__ = ("id", "json")
    ID_FIELD_NUMBER: _ClassVar[int]
    JSON_FIELD_NUMBER: _ClassVar[int]
    id: str
    json: bytes
    def __init__(self, id: _Optional[str] = ..., json: _Optional[bytes] = ...) -> None: ...

class ContainerUpdateReply(_message.Message):
    __slots__ = ("warnings",)
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    warnings: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, warnings: _Optional[_Iterable[str]] = ...) -> None: ...

class ContainerWaitRequest(_message.Message):
    __slots__ = ("id", "condition")
    ID_FIELD_NUMBER: _ClassVar[int]
    CONDITION_FIELD_NUMBER: _ClassVar[int]
    id: str
    condition: str
    def __init__(self, id: _Optional[str] = ..., condition: _Optional[str] = ...) -> None: ...

class ContainerWaitReply(_message.Message):
    __slots__ = ("status_code", "error")
    STATUS_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    status_code: int
    error: str
    def __init__(self, status_code: _Optional[int] = ..., error: _Optional[str] = ...) -> None: ...

class ContainerListRequest(_message.Message):
    __slots__ = ("all",)
    ALL_FIELD_NUMBER: _ClassVar[int]
    all: bool
    def __init__(self, all: _Optional[bool] = ...) -> None: ...

class ContainerListReply(_message.Message):
    __slots__ = ("rows",)
    ROWS_FIELD_NUMBER: _ClassVar[int]
    rows: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, rows: _Optional[_Iterable[bytes]] = ...) -> None: ...

class ContainerTopRequest(_message.Message):
    __slots__ = ("id", "ps_args")
    ID_FIELD_NUMBER: _ClassVar[int]
    PS_ARGS_FIELD_NUMBER: _ClassVar[int]
    id: str
    ps_args: str
    def __init__(self, id: _Optional[str] = ..., ps_args: _Optional[str] = ...) -> None: ...

class ContainerStatsRequest(_message.Message):
    __slots__ = ("id", "stream", "one_shot")
    ID_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    ONE_SHOT_FIELD_NUMBER: _ClassVar[int]
    id: str
    stream: bool
    one_shot: bool
    def __init__(self, id: _Optional[str] = ..., stream: _Optional[bool] = ..., one_shot: _Optional[bool] = ...) -> None: ...

class ContainerLogsRequest(_message.Message):
    __slots__ = ("id", "follow", "tail", "since_ns", "until_ns", "timestamps", "stdout", "stderr")
    ID_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    TAIL_FIELD_NUMBER: _ClassVar[int]
    SINCE_NS_FIELD_NUMBER: _ClassVar[int]
    UNTIL_NS_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMPS_FIELD_NUMBER: _ClassVar[int]
    STDOUT_FIELD_NUMBER: _ClassVar[int]
    STDERR_FIELD_NUMBER: _ClassVar[int]
    id: str
    follow: bool
    tail: int
    since_ns: int
    until_ns: int
    timestamps: bool
    stdout: bool
    stderr: bool
    def __init__(self, id: _Optional[str] = ..., follow: _Optional[bool] = ..., tail: _Optional[int] = ..., since_ns: _Optional[int] = ..., until_ns: _Optional[int] = ..., timestamps: _Optional[bool] = ..., stdout: _Optional[bool] = ..., stderr: _Optional[bool] = ...) -> None: ...

class LogChunk(_message.Message):
    __slots__ = ("stream", "data", "time_ns")
    STREAM_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    TIME_NS_FIELD_NUMBER: _ClassVar[int]
    stream: str
    data: bytes
    time_ns: int
    def __init__(self, stream: _Optional[str] = ..., data: _Optional[bytes] = ..., time_ns: _Optional[int] = ...) -> None: ...

class AttachOptions(_message.Message):
    __slots__ = ("id", "stdin", "stdout", "stderr", "logs", "stream")
    ID_FIELD_NUMBER: _ClassVar[int]
    STDIN_FIELD_NUMBER: _ClassVar[int]
    STDOUT_FIELD_NUMBER: _ClassVar[int]
    STDERR_FIELD_NUMBER: _ClassVar[int]
    LOGS_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    id: str
    stdin: bool
    stdout: bool
    stderr: bool
    logs: bool
    stream: bool
    def __init__(self, id: _Optional[str] = ..., stdin: _Optional[bool] = ..., stdout: _Optional[bool] = ..., stderr: _Optional[bool] = ..., logs: _Optional[bool] = ..., stream: _Optional[bool] = ...) -> None: ...

class AttachInput(_message.Message):
    __slots__ = ("options", "stdin", "resize", "close_stdin")
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    STDIN_FIELD_NUMBER: _ClassVar[int]
    RESIZE_FIELD_NUMBER: _ClassVar[int]
    CLOSE_STDIN_FIELD_NUMBER: _ClassVar[int]
    options: AttachOptions
    stdin: bytes
    resize: ResizeRequest
    close_stdin: bool
    def __init__(self, options: _Optional[_Union[AttachOptions, _Mapping]] = ..., stdin: _Optional[bytes] = ..., resize: _Optional[_Union[ResizeRequest, _Mapping]] = ..., close_stdin: _Optional[bool] = ...) -> None: ...

class ExecCreateRequest(_message.Message):
    __slots__ = ("id", "json")
    ID_FIELD_NUMBER: _ClassVar[int]
    JSON_FIELD_NUMBER: _ClassVar[int]
    id: str
    json: bytes
    def __init__(self, id: _Optional[str] = ..., json: _Optional[bytes] = ...) -> None: ...

class ExecCreateReply(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ExecRef(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ExecStartOptions(_message.Message):
    __slots__ = ("id", "detach", "tty")
    ID_FIELD_NUMBER: _ClassVar[int]
    DETACH_FIELD_NUMBER: _ClassVar[int]
    TTY_FIELD_NUMBER: _ClassVar[int]
    id: str
    detach: bool
    tty: bool
    def __init__(self, id: _Optional[str] = ..., detach: _Optional[bool] = ..., tty: _Optional[bool] = ...) -> None: ...

class ExecInput(_message.Message):
    __slots__ = ("options", "stdin", "resize", "close_stdin")
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    STDIN_FIELD_NUMBER: _ClassVar[int]
    RESIZE_FIELD_NUMBER: _ClassVar[int]
    CLOSE_STDIN_FIELD_NUMBER: _ClassVar[int]
    options: ExecStartOptions
    stdin: bytes
    resize: ResizeRequest
    close_stdin: bool
    def __init__(self, options: _Optional[_Union[ExecStartOptions, _Mapping]] = ..., stdin: _Optional[bytes] = ..., resize: _Optional[_Union[ResizeRequest, _Mapping]] = ..., close_stdin: _Optional[bool] = ...) -> None: ...

class ArchiveRequest(_message.Message):
    __slots__ = ("id", "path")
    ID_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    id: str
    path: str
    def __init__(self, id: _Optional[str] = ..., path: _Optional[str] = ...) -> None: ...

class ArchiveChunk(_message.Message):
    __slots__ = ("stat_json", "data")
    STAT_JSON_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    stat_json: bytes
    data: bytes
    def __init__(self, stat_json: _Optional[bytes] = ..., data: _Optional[bytes] = ...) -> None: ...

class ArchivePutOptions(_message.Message):
    __slots__ = ("id", "path", "no_overwrite_dir_non_dir")
    ID_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    NO_OVERWRITE_DIR_NON_DIR_FIELD_NUMBER: _ClassVar[int]
    id: str
    path: str
    no_overwrite_dir_non_dir: bool
    def __init__(self, id: _Optional[str] = ..., path: _Optional[str] = ..., no_overwrite_dir_non_dir: _Optional[bool] = ...) -> None: ...

class ArchivePutInput(_message.Message):
    __slots__ = ("options", "data")
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    options: ArchivePutOptions
    data: bytes
    def __init__(self, options: _Optional[_Union[ArchivePutOptions, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class ContainerCommitRequest(_message.Message):
    __slots__ = ("id", "config", "comment", "author", "reference", "changes", "pause")
    ID_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    COMMENT_FIELD_NUMBER: _ClassVar[int]
    AUTHOR_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    PAUSE_FIELD_NUMBER: _ClassVar[int]
    id: str
    config: bytes
    comment: str
    author: str
    reference: str
    changes: _containers.RepeatedScalarFieldContainer[str]
    pause: bool
    def __init__(self, id: _Optional[str] = ..., config: _Optional[bytes] = ..., comment: _Optional[str] = ..., author: _Optional[str] = ..., reference: _Optional[str] = ..., changes: _Optional[_Iterable[str]] = ..., pause: _Optional[bool] = ...) -> None: ...

class ContainerCommitReply(_message.Message):
    __slots__ = ("image_id",)
    IMAGE_ID_FIELD_NUMBER: _ClassVar[int]
    image_id: str
    def __init__(self, image_id: _Optional[str] = ...) -> None: ...

class ImageImportOptions(_message.Message):
    __slots__ = ("reference", "changes", "message", "platform_os")
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_OS_FIELD_NUMBER: _ClassVar[int]
    reference: str
    changes: _containers.RepeatedScalarFieldContainer[str]
    message: str
    platform_os: str
    def __init__(self, reference: _Optional[str] = ..., changes: _Optional[_Iterable[str]] = ..., message: _Optional[str] = ..., platform_os: _Optional[str] = ...) -> None: ...

class ImageImportInput(_message.Message):
    __slots__ = ("options", "data")
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    options: ImageImportOptions
    data: bytes
    def __init__(self, options: _Optional[_Union[ImageImportOptions, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class ImageImportReply(_message.Message):
    __slots__ = ("image_id", "progress")
    IMAGE_ID_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    image_id: str
    progress: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, image_id: _Optional[str] = ..., progress: _Optional[_Iterable[str]] = ...) -> None: ...

class ImageLoadReply(_message.Message):
    __slots__ = ("lines",)
    LINES_FIELD_NUMBER: _ClassVar[int]
    lines: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, lines: _Optional[_Iterable[str]] = ...) -> None: ...

class ImageBuildOptions(_message.Message):
    __slots__ = ("query", "api_version", "registry_config")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    API_VERSION_FIELD_NUMBER: _ClassVar[int]
    REGISTRY_CONFIG_FIELD_NUMBER: _ClassVar[int]
    query: bytes
    api_version: str
    registry_config: bytes
    def __init__(self, query: _Optional[bytes] = ..., api_version: _Optional[str] = ..., registry_config: _Optional[bytes] = ...) -> None: ...

class ImageBuildInput(_message.Message):
    __slots__ = ("options", "data")
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    options: ImageBuildOptions
    data: bytes
    def __init__(self, options: _Optional[_Union[ImageBuildOptions, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class ImageBuildOutput(_message.Message):
    __slots__ = ("json",)
    JSON_FIELD_NUMBER: _ClassVar[int]
    json: bytes
    def __init__(self, json: _Optional[bytes] = ...) -> None: ...

class ImageSaveRequest(_message.Message):
    __slots__ = ("refs",)
    REFS_FIELD_NUMBER: _ClassVar[int]
    refs: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, refs: _Optional[_Iterable[str]] = ...) -> None: ...

class ImageListRequest(_message.Message):
    __slots__ = ("all", "filters")
    ALL_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    all: bool
    filters: bytes
    def __init__(self, all: _Optional[bool] = ..., filters: _Optional[bytes] = ...) -> None: ...

class ImageRef(_message.Message):
    __slots__ = ("ref",)
    REF_FIELD_NUMBER: _ClassVar[int]
    ref: str
    def __init__(self, ref: _Optional[str] = ...) -> None: ...

class ImageTagRequest(_message.Message):
    __slots__ = ("ref", "repo", "tag")
    REF_FIELD_NUMBER: _ClassVar[int]
    REPO_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    ref: str
    repo: str
    tag: str
    def __init__(self, ref: _Optional[str] = ..., repo: _Optional[str] = ..., tag: _Optional[str] = ...) -> None: ...

class ImageTagReply(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ImageRemoveRequest(_message.Message):
    __slots__ = ("ref", "force", "noprune")
    REF_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    NOPRUNE_FIELD_NUMBER: _ClassVar[int]
    ref: str
    force: bool
    noprune: bool
    def __init__(self, ref: _Optional[str] = ..., force: _Optional[bool] = ..., noprune: _Optional[bool] = ...) -> None: ...

class RegistryAuth(_message.Message):
    __slots__ = ("username", "password", "identity_token", "registry_token", "server_address")
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_TOKEN_FIELD_NUMBER: _ClassVar[int]
    REGISTRY_TOKEN_FIELD_NUMBER: _ClassVar[int]
    SERVER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    username: str
    password: str
    identity_token: str
    registry_token: str
    server_address: str
    def __init__(self, username: _Optional[str] = ..., password: _Optional[str] = ..., identity_token: _Optional[str] = ..., registry_token: _Optional[str] = ..., server_address: _Optional[str] = ...) -> None: ...

class ImagePullRequest(_message.Message):
    __slots__ = ("reference", "auth")
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    AUTH_FIELD_NUMBER: _ClassVar[int]
    reference: str
    auth: RegistryAuth
    def __init__(self, reference: _Optional[str] = ..., auth: _Optional[_Union[RegistryAuth, _Mapping]] = ...) -> None: ...

class ImagePushRequest(_message.Message):
    __slots__ = ("name", "tag", "auth")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    AUTH_FIELD_NUMBER: _ClassVar[int]
    name: str
    tag: str
    auth: RegistryAuth
    def __init__(self, name: _Optional[str] = ..., tag: _Optional[str] = ..., auth: _Optional[_Union[RegistryAuth, _Mapping]] = ...) -> None: ...

class VolumeCreateRequest(_message.Message):
    __slots__ = ("json",)
    JSON_FIELD_NUMBER: _ClassVar[int]
    json: bytes
    def __init__(self, json: _Optional[bytes] = ...) -> None: ...

class VolumeListRequest(_message.Message):
    __slots__ = ("filters",)
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    filters: bytes
    def __init__(self, filters: _Optional[bytes] = ...) -> None: ...

class VolumeRef(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class VolumeRemoveRequest(_message.Message):
    __slots__ = ("name", "force")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    name: str
    force: bool
    def __init__(self, name: _Optional[str] = ..., force: _Optional[bool] = ...) -> None: ...

class NetworkListRequest(_message.Message):
    __slots__ = ("verbose",)
    VERBOSE_FIELD_NUMBER: _ClassVar[int]
    verbose: bool
    def __init__(self, verbose: _Optional[bool] = ...) -> None: ...

class NetworkConnectRequest(_message.Message):
    __slots__ = ("network_id", "json")
    NETWORK_ID_FIELD_NUMBER: _ClassVar[int]
    JSON_FIELD_NUMBER: _ClassVar[int]
    network_id: str
    json: bytes
    def __init__(self, network_id: _Optional[str] = ..., json: _Optional[bytes] = ...) -> None: ...

class NetworkDisconnectRequest(_message.Message):
    __slots__ = ("network_id", "json")
    NETWORK_ID_FIELD_NUMBER: _ClassVar[int]
    JSON_FIELD_NUMBER: _ClassVar[int]
    network_id: str
    json: bytes
    def __init__(self, network_id: _Optional[str] = ..., json: _Optional[bytes] = ...) -> None: ...

class PeerEtcdStatusRequest(_message.Message):
    __slots__ = ("asking_node_id",)
    ASKING_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    asking_node_id: str
    def __init__(self, asking_node_id: _Optional[str] = ...) -> None: ...

class PeerEtcdStatusReply(_message.Message):
    __slots__ = ("node_id", "etcd_reachable", "last_keepalive_age_ms")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ETCD_REACHABLE_FIELD_NUMBER: _ClassVar[int]
    LAST_KEEPALIVE_AGE_MS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    etcd_reachable: bool
    last_keepalive_age_ms: int
    def __init__(self, node_id: _Optional[str] = ..., etcd_reachable: _Optional[bool] = ..., last_keepalive_age_ms: _Optional[int] = ...) -> None: ...

class DrillRequest(_message.Message):
    __slots__ = ("kind", "duration_ms")
    KIND_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    kind: str
    duration_ms: int
    def __init__(self, kind: _Optional[str] = ..., duration_ms: _Optional[int] = ...) -> None: ...

class DrillReply(_message.Message):
    __slots__ = ("kind", "started_at_ns", "undo_at_ns")
    KIND_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_NS_FIELD_NUMBER: _ClassVar[int]
    UNDO_AT_NS_FIELD_NUMBER: _ClassVar[int]
    kind: str
    started_at_ns: int
    undo_at_ns: int
    def __init__(self, kind: _Optional[str] = ..., started_at_ns: _Optional[int] = ..., undo_at_ns: _Optional[int] = ...) -> None: ...
