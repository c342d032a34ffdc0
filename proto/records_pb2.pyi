from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class NodeRecord(_message.Message):
    __slots__ = ("id", "name", "addr", "labels", "ncpu", "memory_bytes", "kernel_version", "operating_system", "os_type", "architecture", "storage_driver", "version", "updated_at_ns", "started_at_ns")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ADDR_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    NCPU_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    KERNEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    OPERATING_SYSTEM_FIELD_NUMBER: _ClassVar[int]
    OS_TYPE_FIELD_NUMBER: _ClassVar[int]
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    STORAGE_DRIVER_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_NS_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_NS_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    addr: str
    labels: _containers.ScalarMap[str, str]
    ncpu: int
    memory_bytes: int
    kernel_version: str
    operating_system: str
    os_type: str
    architecture: str
    storage_driver: str
    version: str
    updated_at_ns: int
    started_at_ns: int
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., addr: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., ncpu: _Optional[int] = ..., memory_bytes: _Optional[int] = ..., kernel_version: _Optional[str] = ..., operating_system: _Optional[str] = ..., os_type: _Optional[str] = ..., architecture: _Optional[str] = ..., storage_driver: _Optional[str] = ..., version: _Optional[str] = ..., updated_at_ns: _Optional[int] = ..., started_at_ns: _Optional[int] = ...) -> None: ...

class ContainerStatus(_message.Message):
    __slots__ = ("id", "node_id", "name", "image", "image_id", "state", "exit_code", "pid", "started_at_ns", "finished_at_ns", "oom_killed", "labels", "updated_at_ns", "host_config_json", "ps_row_json")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    IMAGE_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_NS_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_NS_FIELD_NUMBER: _ClassVar[int]
    OOM_KILLED_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_NS_FIELD_NUMBER: _ClassVar[int]
    HOST_CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    PS_ROW_JSON_FIELD_NUMBER: _ClassVar[int]
    id: str
    node_id: str
    name: str
    image: str
    image_id: str
    state: str
    exit_code: int
    pid: int
    started_at_ns: int
    finished_at_ns: int
    oom_killed: bool
    labels: _containers.ScalarMap[str, str]
    updated_at_ns: int
    host_config_json: bytes
    ps_row_json: bytes
    def __init__(self, id: _Optional[str] = ..., node_id: _Optional[str] = ..., name: _Optional[str] = ..., image: _Optional[str] = ..., image_id: _Optional[str] = ..., state: _Optional[str] = ..., exit_code: _Optional[int] = ..., pid: _Optional[int] = ..., started_at_ns: _Optional[int] = ..., finished_at_ns: _Optional[int] = ..., oom_killed: _Optional[bool] = ..., labels: _Optional[_Mapping[str, str]] = ..., updated_at_ns: _Optional[int] = ..., host_config_json: _Optional[bytes] = ..., ps_row_json: _Optional[bytes] = ...) -> None: ...

class ContainerDesired(_message.Message):
    __slots__ = ("id", "name", "node_id", "spec_json", "desired_state", "created_at_ns")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    SPEC_JSON_FIELD_NUMBER: _ClassVar[int]
    DESIRED_STATE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_NS_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    node_id: str
    spec_json: bytes
    desired_state: str
    created_at_ns: int
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., node_id: _Optional[str] = ..., spec_json: _Optional[bytes] = ..., desired_state: _Optional[str] = ..., created_at_ns: _Optional[int] = ...) -> None: ...

class LogicalContainer(_message.Message):
    __slots__ = ("swarm_id", "generation", "state", "node_id", "container_id", "name", "create_json", "reschedule", "start", "previous_node_id", "previous_container_id", "node_failed_at_ns", "updated_at_ns")
    SWARM_ID_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    CREATE_JSON_FIELD_NUMBER: _ClassVar[int]
    RESCHEDULE_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_FAILED_AT_NS_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_NS_FIELD_NUMBER: _ClassVar[int]
    swarm_id: str
    generation: int
    state: str
    node_id: str
    container_id: str
    name: str
    create_json: bytes
    reschedule: bool
    start: bool
    previous_node_id: str
    previous_container_id: str
    node_failed_at_ns: int
    updated_at_ns: int
    def __init__(self, swarm_id: _Optional[str] = ..., generation: _Optional[int] = ..., state: _Optional[str] = ..., node_id: _Optional[str] = ..., container_id: _Optional[str] = ..., name: _Optional[str] = ..., create_json: _Optional[bytes] = ..., reschedule: _Optional[bool] = ..., start: _Optional[bool] = ..., previous_node_id: _Optional[str] = ..., previous_container_id: _Optional[str] = ..., node_failed_at_ns: _Optional[int] = ..., updated_at_ns: _Optional[int] = ...) -> None: ...

class NetworkRecord(_message.Message):
    __slots__ = ("id", "name", "driver", "vni", "subnet", "options", "gateway", "ip_range", "labels", "internal", "attachable", "created_at_ns", "ipam_user", "node_id")
    class OptionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DRIVER_FIELD_NUMBER: _ClassVar[int]
    VNI_FIELD_NUMBER: _ClassVar[int]
    SUBNET_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    GATEWAY_FIELD_NUMBER: _ClassVar[int]
    IP_RANGE_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    INTERNAL_FIELD_NUMBER: _ClassVar[int]
    ATTACHABLE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_NS_FIELD_NUMBER: _ClassVar[int]
    IPAM_USER_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    driver: str
    vni: int
    subnet: str
    options: _containers.ScalarMap[str, str]
    gateway: str
    ip_range: str
    labels: _containers.ScalarMap[str, str]
    internal: bool
    attachable: bool
    created_at_ns: int
    ipam_user: bool
    node_id: str
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., driver: _Optional[str] = ..., vni: _Optional[int] = ..., subnet: _Optional[str] = ..., options: _Optional[_Mapping[str, str]] = ..., gateway: _Optional[str] = ..., ip_range: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., internal: _Optional[bool] = ..., attachable: _Optional[bool] = ..., created_at_ns: _Optional[int] = ..., ipam_user: _Optional[bool] = ..., node_id: _Optional[str] = ...) -> None: ...

class EndpointRecord(_message.Message):
    __slots__ = ("network_id", "ip", "mac", "container_id", "container_name", "aliases", "node_id", "vtep", "swarm_id", "created_at_ns")
    NETWORK_ID_FIELD_NUMBER: _ClassVar[int]
    IP_FIELD_NUMBER: _ClassVar[int]
    MAC_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_NAME_FIELD_NUMBER: _ClassVar[int]
    ALIASES_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    VTEP_FIELD_NUMBER: _ClassVar[int]
    SWARM_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_NS_FIELD_NUMBER: _ClassVar[int]
    network_id: str
    ip: str
    mac: str
    container_id: str
    container_name: str
    aliases: _containers.RepeatedScalarFieldContainer[str]
    node_id: str
    vtep: str
    swarm_id: str
    created_at_ns: int
    def __init__(self, network_id: _Optional[str] = ..., ip: _Optional[str] = ..., mac: _Optional[str] = ..., container_id: _Optional[str] = ..., container_name: _Optional[str] = ..., aliases: _Optional[_Iterable[str]] = ..., node_id: _Optional[str] = ..., vtep: _Optional[str] = ..., swarm_id: _Optional[str] = ..., created_at_ns: _Optional[int] = ...) -> None: ...

class NodeImages(_message.Message):
    __slots__ = ("node_id", "images_json", "updated_at_ns")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    IMAGES_JSON_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_NS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    images_json: bytes
    updated_at_ns: int
    def __init__(self, node_id: _Optional[str] = ..., images_json: _Optional[bytes] = ..., updated_at_ns: _Optional[int] = ...) -> None: ...
