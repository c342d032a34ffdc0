"""The Engine API request structs dockerd 28 decodes bodies into (github.com/docker/docker
api/types), as manager/gojson.py type descriptions: names and field types as Go spells them,
since they appear in the error messages."""

from __future__ import annotations

from manager.gojson import (
    ANY,
    BOOL,
    EMPTY,
    INT,
    INT64,
    STRING,
    STRSLICE,
    UINT,
    UINT16,
    UINT32,
    UINT64,
    array_of,
    map_of,
    named,
    slice_of,
    struct,
)

_STRINGS = slice_of(STRING)
_LABELS = map_of(STRING)
_DURATION = named("time.Duration", INT64)

HEALTH = struct(
    "HealthcheckConfig",
    {
        "Test": _STRINGS,
        "Interval": _DURATION,
        "Timeout": _DURATION,
        "StartPeriod": _DURATION,
        "StartInterval": _DURATION,
        "Retries": INT,
    },
)
HEALTH = named("v1.HealthcheckConfig", HEALTH)

CONFIG = struct(
    "Config",
    {
        "Hostname": STRING,
        "Domainname": STRING,
        "User": STRING,
        "AttachStdin": BOOL,
        "AttachStdout": BOOL,
        "AttachStderr": BOOL,
        "ExposedPorts": map_of(EMPTY, "nat.PortSet"),
        "Tty": BOOL,
        "OpenStdin": BOOL,
        "StdinOnce": BOOL,
        "Env": _STRINGS,
        "Cmd": STRSLICE,
        "Healthcheck": HEALTH,
        "ArgsEscaped": BOOL,
        "Image": STRING,
        "Volumes": map_of(EMPTY),
        "WorkingDir": STRING,
        "Entrypoint": STRSLICE,
        "NetworkDisabled": BOOL,
        "MacAddress": STRING,
        "OnBuild": _STRINGS,
        "Labels": _LABELS,
        "StopSignal": STRING,
        "StopTimeout": INT,
        "Shell": STRSLICE,
    },
)

_WEIGHT_DEVICE = named(
    "blkiodev.WeightDevice", struct("WeightDevice", {"Path": STRING, "Weight": UINT16})
)
_THROTTLE_DEVICE = named(
    "blkiodev.ThrottleDevice", struct("ThrottleDevice", {"Path": STRING, "Rate": UINT64})
)
_THROTTLES = slice_of(_THROTTLE_DEVICE, "[]*blkiodev.ThrottleDevice")
_DEVICE = named(
    "container.DeviceMapping",
    struct(
        "DeviceMapping",
        {"PathOnHost": STRING, "PathInContainer": STRING, "CgroupPermissions": STRING},
    ),
)
_DEVICE_REQUEST = named(
    "container.DeviceRequest",
    struct(
        "DeviceRequest",
        {
            "Driver": STRING,
            "Count": INT,
            "DeviceIDs": _STRINGS,
            "Capabilities": slice_of(_STRINGS),
            "Options": _LABELS,
        },
    ),
)
_ULIMIT = named("units.Ulimit", struct("Ulimit", {"Name": STRING, "Hard": INT64, "Soft": INT64}))

RESOURCES = struct(
    "Resources",
    {
        "CpuShares": INT64,
        "Memory": INT64,
        "NanoCpus": INT64,
        "CgroupParent": STRING,
        "BlkioWeight": UINT16,
        "BlkioWeightDevice": slice_of(_WEIGHT_DEVICE, "[]*blkiodev.WeightDevice"),
        "BlkioDeviceReadBps": _THROTTLES,
        "BlkioDeviceWriteBps": _THROTTLES,
        "BlkioDeviceReadIOps": _THROTTLES,
        "BlkioDeviceWriteIOps": _THROTTLES,
        "CpuPeriod": INT64,
        "CpuQuota": INT64,
        "CpuRealtimePeriod": INT64,
        "CpuRealtimeRuntime": INT64,
        "CpusetCpus": STRING,
        "CpusetMems": STRING,
        "Devices": slice_of(_DEVICE),
        "DeviceCgroupRules": _STRINGS,
        "DeviceRequests": slice_of(_DEVICE_REQUEST),
        "KernelMemory": INT64,
        "KernelMemoryTCP": INT64,
        "MemoryReservation": INT64,
        "MemorySwap": INT64,
        "MemorySwappiness": INT64,
        "OomKillDisable": BOOL,
        "PidsLimit": INT64,
        "Ulimits": slice_of(_ULIMIT, "[]*units.Ulimit"),
        "CpuCount": INT64,
        "CpuPercent": INT64,
        "IOMaximumIOps": UINT64,
        "IOMaximumBandwidth": UINT64,
    },
)

RESTART_POLICY = named(
    "container.RestartPolicy",
    struct(
        "RestartPolicy",
        {"Name": named("container.RestartPolicyMode", STRING), "MaximumRetryCount": INT},
    ),
)
_LOG_CONFIG = named("container.LogConfig", struct("LogConfig", {"Type": STRING, "Config": _LABELS}))
_PORT_BINDING = named(
    "nat.PortBinding", struct("PortBinding", {"HostIp": STRING, "HostPort": STRING})
)
_DRIVER = named("mount.Driver", struct("Driver", {"Name": STRING, "Options": _LABELS}))
_MOUNT = named(
    "mount.Mount",
    struct(
        "Mount",
        {
            "Type": named("mount.Type", STRING),
            "Source": STRING,
            "Target": STRING,
            "ReadOnly": BOOL,
            "Consistency": named("mount.Consistency", STRING),
            "BindOptions": named(
                "mount.BindOptions",
                struct(
                    "BindOptions",
                    {
                        "Propagation": named("mount.Propagation", STRING),
                        "NonRecursive": BOOL,
                        "CreateMountpoint": BOOL,
                        "ReadOnlyNonRecursive": BOOL,
                        "ReadOnlyForceRecursive": BOOL,
                    },
                ),
            ),
            "VolumeOptions": named(
                "mount.VolumeOptions",
                struct(
                    "VolumeOptions",
                    {"NoCopy": BOOL, "Labels": _LABELS, "Subpath": STRING, "DriverConfig": _DRIVER},
                ),
            ),
            "ImageOptions": named(
                "mount.ImageOptions", struct("ImageOptions", {"Subpath": STRING})
            ),
            "TmpfsOptions": named(
                "mount.TmpfsOptions",
                struct(
                    "TmpfsOptions",
                    {
                        "SizeBytes": INT64,
                        "Mode": named("fs.FileMode", UINT32),
                        "Options": slice_of(_STRINGS),
                    },
                ),
            ),
            "ClusterOptions": named("mount.ClusterOptions", struct("ClusterOptions", {})),
        },
    ),
)

HOST_CONFIG = struct(
    "HostConfig",
    {
        "Binds": _STRINGS,
        "ContainerIDFile": STRING,
        "LogConfig": _LOG_CONFIG,
        "NetworkMode": named("container.NetworkMode", STRING),
        "PortBindings": map_of(slice_of(_PORT_BINDING), "nat.PortMap"),
        "RestartPolicy": RESTART_POLICY,
        "AutoRemove": BOOL,
        "VolumeDriver": STRING,
        "VolumesFrom": _STRINGS,
        "ConsoleSize": array_of(UINT, 2),
        "Annotations": _LABELS,
        "CapAdd": STRSLICE,
        "CapDrop": STRSLICE,
        "CgroupnsMode": named("container.CgroupnsMode", STRING),
        "Dns": _STRINGS,
        "DnsOptions": _STRINGS,
        "DnsSearch": _STRINGS,
        "ExtraHosts": _STRINGS,
        "GroupAdd": _STRINGS,
        "IpcMode": named("container.IpcMode", STRING),
        "Cgroup": named("container.CgroupSpec", STRING),
        "Links": _STRINGS,
        "OomScoreAdj": INT,
        "PidMode": named("container.PidMode", STRING),
        "Privileged": BOOL,
        "PublishAllPorts": BOOL,
        "ReadonlyRootfs": BOOL,
        "SecurityOpt": _STRINGS,
        "StorageOpt": _LABELS,
        "Tmpfs": _LABELS,
        "UTSMode": named("container.UTSMode", STRING),
        "UsernsMode": named("container.UsernsMode", STRING),
        "ShmSize": INT64,
        "Sysctls": _LABELS,
        "Runtime": STRING,
        "Isolation": named("container.Isolation", STRING),
        "Mounts": slice_of(_MOUNT),
        "MaskedPaths": _STRINGS,
        "ReadonlyPaths": _STRINGS,
        "Init": BOOL,
    },
    embedded={"Resources": RESOURCES},
)

_ENDPOINT_IPAM = named(
    "network.EndpointIPAMConfig",
    struct(
        "EndpointIPAMConfig",
        {"IPv4Address": STRING, "IPv6Address": STRING, "LinkLocalIPs": _STRINGS},
    ),
)
ENDPOINT_SETTINGS = named(
    "network.EndpointSettings",
    struct(
        "EndpointSettings",
        {
            "IPAMConfig": _ENDPOINT_IPAM,
            "Links": _STRINGS,
            "Aliases": _STRINGS,
            "MacAddress": STRING,
            "DriverOpts": _LABELS,
            "GwPriority": INT,
            "NetworkID": STRING,
            "EndpointID": STRING,
            "Gateway": STRING,
            "IPAddress": STRING,
            "IPPrefixLen": INT,
            "IPv6Gateway": STRING,
            "GlobalIPv6Address": STRING,
            "GlobalIPv6PrefixLen": INT,
            "DNSNames": _STRINGS,
        },
    ),
)
_NETWORKING_CONFIG = named(
    "network.NetworkingConfig",
    struct(
        "NetworkingConfig",
        {"EndpointsConfig": map_of(ENDPOINT_SETTINGS, "map[string]*network.EndpointSettings")},
    ),
)

# POST /containers/create and POST /commit (container.CreateRequest embeds *Config).
CONTAINER_CREATE = named(
    "container.CreateRequest",
    struct(
        "CreateRequest",
        {
            "HostConfig": named("container.HostConfig", HOST_CONFIG),
            "NetworkingConfig": _NETWORKING_CONFIG,
        },
        embedded={"Config": CONFIG},
    ),
)

# POST /containers/{id}/update
CONTAINER_UPDATE = named(
    "container.UpdateConfig",
    struct("UpdateConfig", {"RestartPolicy": RESTART_POLICY}, embedded={"Resources": RESOURCES}),
)

# POST /containers/{id}/exec and /exec/{id}/start
_CONSOLE_SIZE = array_of(UINT, 2)
EXEC_CREATE = named(
    "container.ExecOptions",
    struct(
        "ExecOptions",
        {
            "User": STRING,
            "Privileged": BOOL,
            "Tty": BOOL,
            "ConsoleSize": _CONSOLE_SIZE,
            "AttachStdin": BOOL,
            "AttachStderr": BOOL,
            "AttachStdout": BOOL,
            "DetachKeys": STRING,
            "Env": _STRINGS,
            "WorkingDir": STRING,
            "Cmd": _STRINGS,
            "Detach": BOOL,
        },
    ),
)
EXEC_START = named(
    "container.ExecStartOptions",
    struct("ExecStartOptions", {"Detach": BOOL, "Tty": BOOL, "ConsoleSize": _CONSOLE_SIZE}),
)

# POST /networks/create (network.CreateRequest embeds CreateOptions)
_IPAM_CONFIG = named(
    "network.IPAMConfig",
    struct(
        "IPAMConfig",
        {"Subnet": STRING, "IPRange": STRING, "Gateway": STRING, "AuxiliaryAddresses": _LABELS},
    ),
)
_IPAM = named(
    "network.IPAM",
    struct("IPAM", {"Driver": STRING, "Options": _LABELS, "Config": slice_of(_IPAM_CONFIG)}),
)
_NETWORK_OPTIONS = struct(
    "CreateOptions",
    {
        "Driver": STRING,
        "Scope": STRING,
        "EnableIPv4": BOOL,
        "EnableIPv6": BOOL,
        "IPAM": _IPAM,
        "Internal": BOOL,
        "Attachable": BOOL,
        "Ingress": BOOL,
        "ConfigOnly": BOOL,
        "ConfigFrom": named(
            "network.ConfigReference", struct("ConfigReference", {"Network": STRING})
        ),
        "Options": _LABELS,
        "Labels": _LABELS,
    },
)
NETWORK_CREATE = named(
    "network.CreateRequest",
    struct(
        "CreateRequest",
        {"Name": STRING, "CheckDuplicate": BOOL},
        embedded={"CreateOptions": _NETWORK_OPTIONS},
    ),
)
NETWORK_CONNECT = named(
    "network.ConnectOptions",
    struct("ConnectOptions", {"Container": STRING, "EndpointConfig": ENDPOINT_SETTINGS}),
)
NETWORK_DISCONNECT = named(
    "network.DisconnectOptions",
    struct("DisconnectOptions", {"Container": STRING, "Force": BOOL}),
)

# POST /volumes/create
VOLUME_CREATE = named(
    "volume.CreateOptions",
    struct(
        "CreateOptions",
        {
            "ClusterVolumeSpec": ANY,  # swarm mode only: not served, not checked
            "Driver": STRING,
            "DriverOpts": _LABELS,
            "Labels": _LABELS,
            "Name": STRING,
        },
    ),
)

# POST /auth (docker login); the same struct travels base64url-encoded in X-Registry-Auth.
AUTH_CONFIG = named(
    "registry.AuthConfig",
    struct(
        "AuthConfig",
        {
            "username": STRING,
            "password": STRING,
            "auth": STRING,
            "email": STRING,
            "serveraddress": STRING,
            "identitytoken": STRING,
            "registrytoken": STRING,
        },
    ),
)
