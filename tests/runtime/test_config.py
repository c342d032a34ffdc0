"""runtime.config: create-body parsing, validation wording, merge rules and inspect shapes."""

from __future__ import annotations

import copy
import json
import os
from typing import Any

import pytest

from proto.docker.errors import DockerError, InvalidParameter, SystemError_
from runtime import config as cfg
from runtime import (
    config_caps,
    config_inspect,
    config_logs,
    config_mounts,
    config_types,
    config_values,
)

GOLDEN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "golden")
CID = "1ac8504229e65c840ec4587ca4c3b237ffa097408247d02ae25ae78c0d17c781"
BUSYBOX = {"config": {"Cmd": ["sh"], "Env": None, "Labels": None}}


def parse(body: dict[str, Any], image: dict[str, Any] | None = None) -> config_types.ContainerSpec:
    full = {"Image": "busybox", **body}
    return cfg.parse_create(full, BUSYBOX if image is None else image, CID)


def hc(**host: Any) -> config_types.ContainerSpec:
    return parse({"Cmd": ["true"], "HostConfig": host})


def error(body: dict[str, Any], image: dict[str, Any] | None = None) -> DockerError:
    with pytest.raises(DockerError) as info:
        parse(body, image)
    return info.value


def hc_error(**host: Any) -> DockerError:
    return error({"Cmd": ["true"], "HostConfig": host})


def golden(name: str) -> dict[str, Any]:
    with open(os.path.join(GOLDEN, name)) as f:
        return json.load(f)


# --------------------------------------------------------------------------- small parsers


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("1024", 1024),
        ("512k", 512 * 1024),
        ("10m", 10 * 1024**2),
        ("10M", 10 * 1024**2),
        ("1g", 1024**3),
        ("1.5g", int(1.5 * 1024**3)),
        ("2t", 2 * 1024**4),
        ("1p", 1024**5),
        ("10mb", 10 * 1024**2),
        ("10MiB", 10 * 1024**2),
        ("10 m", 10 * 1024**2),
        ("7b", 7),
    ],
)
def test_parse_memory(text: str, expected: int) -> None:
    assert config_values.parse_memory(text) == expected


@pytest.mark.parametrize("text", ["", "abc", "10x", "-1", "m", "1gg", " 1m", "1m "])
def test_parse_memory_invalid(text: str) -> None:
    with pytest.raises(InvalidParameter) as info:
        config_values.parse_memory(text)
    assert info.value.message == f"invalid size: '{text}'"


def test_parse_memory_multiple_dots() -> None:
    with pytest.raises(InvalidParameter) as info:
        config_values.parse_memory("1.2.3m")
    assert info.value.message == 'strconv.ParseFloat: parsing "1.2.3": invalid syntax'


@pytest.mark.parametrize(
    ("text", "expected"),
    [("10m", 10_000_000), ("1k", 1000), ("1g", 10**9), ("100", 100), ("1.5k", 1500)],
)
def test_parse_size_is_decimal(text: str, expected: int) -> None:
    assert config_values.parse_size(text) == expected


def test_parse_size_invalid() -> None:
    with pytest.raises(InvalidParameter, match=r"^invalid size: 'ten'$"):
        config_values.parse_size("ten")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("SIGKILL", 9),
        ("KILL", 9),
        ("kill", 9),
        ("sigterm", 15),
        ("9", 9),
        ("15", 15),
        ("SIGUSR1", 10),
        ("WINCH", 28),
        ("SIGRTMIN", 34),
        ("RTMIN+3", 37),
        ("SIGRTMAX-1", 63),
        ("RTMAX", 64),
        ("IOT", 6),
        ("CLD", 17),
        ("99", 99),
    ],
)
def test_parse_signal(text: str, expected: int) -> None:
    assert config_values.parse_signal(text) == expected


@pytest.mark.parametrize("text", ["0", "FOO", "SIGFOO", "", "9.5", "SIG", "RTMIN+16"])
def test_parse_signal_invalid(text: str) -> None:
    with pytest.raises(InvalidParameter) as info:
        config_values.parse_signal(text)
    assert info.value.message == f"Invalid signal: {text}"
    assert info.value.status == 400


# --------------------------------------------------------------------------- command / merge


def test_container_cmd_replaces_image_cmd() -> None:
    spec = parse({"Cmd": ["echo", "hi"]}, {"config": {"Cmd": ["sh"]}})
    assert spec.args == ["echo", "hi"]


def test_image_cmd_used_when_no_cmd() -> None:
    assert parse({}, {"config": {"Cmd": ["sh"]}}).args == ["sh"]


def test_image_entrypoint_plus_image_cmd() -> None:
    spec = parse({}, {"config": {"Entrypoint": ["/ep"], "Cmd": ["--x"]}})
    assert spec.args == ["/ep", "--x"]


def test_image_entrypoint_plus_container_cmd() -> None:
    spec = parse({"Cmd": ["--y"]}, {"config": {"Entrypoint": ["/ep"], "Cmd": ["--x"]}})
    assert spec.args == ["/ep", "--y"]


def test_container_entrypoint_drops_image_cmd() -> None:
    spec = parse({"Entrypoint": ["/mine"]}, {"config": {"Entrypoint": ["/ep"], "Cmd": ["--x"]}})
    assert spec.args == ["/mine"]
    assert spec.cmd is None


def test_container_entrypoint_and_cmd() -> None:
    spec = parse({"Entrypoint": ["/mine"], "Cmd": ["a"]}, {"config": {"Cmd": ["--x"]}})
    assert spec.args == ["/mine", "a"]


def test_entrypoint_and_cmd_accept_strings() -> None:
    spec = parse({"Entrypoint": "/bin/sh", "Cmd": "-c"})
    assert spec.args == ["/bin/sh", "-c"]


def test_empty_entrypoint_list_clears_image_entrypoint_keeps_image_cmd() -> None:
    spec = parse({"Entrypoint": []}, {"config": {"Entrypoint": ["/ep"], "Cmd": ["sh"]}})
    assert spec.args == ["sh"]


def test_entrypoint_empty_string_resets_and_fails_without_cmd() -> None:
    err = error({"Entrypoint": [""]}, {"config": {"Entrypoint": ["/ep"], "Cmd": ["sh"]}})
    assert err.message == "No command specified"
    assert err.status == 400


def test_entrypoint_empty_string_with_cmd() -> None:
    spec = parse({"Entrypoint": [""], "Cmd": ["ls"]}, {"config": {"Entrypoint": ["/ep"]}})
    assert spec.args == ["ls"]
    assert spec.config_json["Entrypoint"] is None


def test_no_command_specified() -> None:
    err = error({}, {"config": {}})
    assert isinstance(err, InvalidParameter)
    assert err.message == "No command specified"


def test_image_config_shapes_accepted() -> None:
    for image in ({"config": {"Cmd": ["x"]}}, {"Config": {"Cmd": ["x"]}}, {"Cmd": ["x"]}):
        assert parse({}, image).args == ["x"]
    assert parse({"Cmd": ["y"]}, {}).args == ["y"]


def test_env_merge_container_wins_and_path_default() -> None:
    spec = parse(
        {"Cmd": ["x"], "Env": ["A=1", "B=2"]}, {"config": {"Cmd": ["x"], "Env": ["B=9", "C=3"]}}
    )
    assert spec.env == [f"PATH={cfg.DEFAULT_PATH}", "A=1", "B=2", "C=3"]
    assert spec.config_json["Env"] == ["A=1", "B=2", "C=3"]


def test_env_path_from_image_kept() -> None:
    spec = parse({"Cmd": ["x"]}, {"config": {"Env": ["PATH=/opt/bin", "X=1"]}})
    assert spec.env == ["PATH=/opt/bin", "X=1"]


def test_env_null_when_neither_sets_it() -> None:
    spec = parse({"Cmd": ["x"], "Env": []})
    assert spec.config_json["Env"] is None
    assert spec.env == [f"PATH={cfg.DEFAULT_PATH}"]


@pytest.mark.parametrize("bad", ["=foo", ""])
def test_invalid_env(bad: str) -> None:
    assert error({"Cmd": ["x"], "Env": [bad]}).message == f"invalid environment variable: {bad}"


def test_working_dir() -> None:
    assert parse({"Cmd": ["x"]}, {"config": {"Cmd": ["x"], "WorkingDir": "/srv"}}).working_dir == (
        "/srv"
    )
    assert (
        parse({"Cmd": ["x"], "WorkingDir": "/a"}, {"config": {"WorkingDir": "/srv"}}).working_dir
        == "/a"
    )


def test_working_dir_must_be_absolute() -> None:
    err = error({"Cmd": ["x"], "WorkingDir": "rel/dir"})
    assert (
        err.message == "the working directory 'rel/dir' is invalid, it needs to be an absolute path"
    )
    assert err.status == 400


def test_user_labels_and_exposed_ports_merge() -> None:
    image = {
        "config": {
            "Cmd": ["x"],
            "User": "nobody",
            "Labels": {"a": "image", "b": "image"},
            "ExposedPorts": {"80/tcp": {}},
            "Volumes": {"/data": {}},
        }
    }
    spec = parse({"Labels": {"a": "mine"}, "ExposedPorts": {"53/udp": {}}}, image)
    assert spec.user == "nobody"
    assert spec.labels == {"a": "mine", "b": "image"}
    assert spec.exposed_ports == ["53/udp", "80/tcp"]
    assert spec.volumes == ["/data"]
    assert parse({"User": "root"}, image).user == "root"


def test_labels_default_to_empty_dict() -> None:
    assert parse({"Cmd": ["x"]}).config_json["Labels"] == {}


def test_hostname_defaults() -> None:
    assert parse({"Cmd": ["x"]}).hostname == CID[:12]
    assert parse({"Cmd": ["x"], "Hostname": "web", "Domainname": "example.org"}).hostname == "web"
    assert hc(NetworkMode="host").hostname == os.uname().nodename


def test_stop_signal_precedence() -> None:
    assert parse({"Cmd": ["x"]}).stop_signal == 15
    assert parse({"Cmd": ["x"]}, {"config": {"StopSignal": "SIGQUIT"}}).stop_signal == 3
    spec = parse({"Cmd": ["x"], "StopSignal": "9"}, {"config": {"StopSignal": "SIGQUIT"}})
    assert spec.stop_signal == 9
    assert spec.config_json["StopSignal"] == "9"


def test_invalid_stop_signal() -> None:
    assert error({"Cmd": ["x"], "StopSignal": "SIGNOPE"}).message == "Invalid signal: SIGNOPE"


def test_stop_timeout_and_flags() -> None:
    spec = parse(
        {
            "Cmd": ["x"],
            "StopTimeout": 3,
            "Tty": True,
            "OpenStdin": True,
            "StdinOnce": True,
            "AttachStdin": True,
            "AttachStdout": True,
            "AttachStderr": True,
        }
    )
    assert spec.stop_timeout == 3
    assert (spec.tty, spec.open_stdin, spec.stdin_once) == (True, True, True)
    assert (spec.attach_stdin, spec.attach_stdout, spec.attach_stderr) == (True, True, True)
    assert spec.config_json["StopTimeout"] == 3
    assert parse({"Cmd": ["x"]}).stop_timeout is None


def test_healthcheck_kept_and_merged() -> None:
    image = {"config": {"Cmd": ["x"], "Healthcheck": {"Test": ["CMD", "true"], "Retries": 3}}}
    spec = parse({"Healthcheck": {"Interval": 2_000_000_000}}, image)
    assert spec.healthcheck == {"Interval": 2_000_000_000, "Test": ["CMD", "true"], "Retries": 3}
    assert parse({}, image).healthcheck == {"Test": ["CMD", "true"], "Retries": 3}


@pytest.mark.parametrize(
    ("health", "message"),
    [
        ({"Interval": 5}, "Interval in Healthcheck cannot be less than 1ms"),
        ({"Timeout": 999_999}, "Timeout in Healthcheck cannot be less than 1ms"),
        ({"Retries": -1}, "Retries in Healthcheck cannot be negative"),
        ({"StartPeriod": 10}, "StartPeriod in Healthcheck cannot be less than 1ms"),
    ],
)
def test_healthcheck_validation(health: dict[str, int], message: str) -> None:
    assert error({"Cmd": ["x"], "Healthcheck": health}).message == message


def test_type_errors_are_400() -> None:
    err = error({"Cmd": ["x"], "Tty": "yes"})
    assert err.status == 400
    assert err.message.startswith("json: cannot unmarshal string")


# --------------------------------------------------------------------------- network mode


def test_network_mode_normalized() -> None:
    assert parse({"Cmd": ["x"]}).host_config.network_mode == "bridge"
    assert hc(NetworkMode="default").host_config.network_mode == "bridge"
    for mode in ("bridge", "host", "none", "container:abc", "mynet"):
        assert hc(NetworkMode=mode).host_config.network_mode == mode


@pytest.mark.parametrize("mode", ["container", "container:"])
def test_container_mode_needs_a_name(mode: str) -> None:
    assert (
        hc_error(NetworkMode=mode).message
        == "Invalid network mode: invalid container format container:<name|id>"
    )


@pytest.mark.parametrize(
    ("body", "host", "message"),
    [
        ({"Hostname": "h"}, {}, "conflicting options: hostname and the network mode"),
        (
            {},
            {"Links": ["a:b"]},
            "conflicting options: container type network can't be used with links. "
            "This would result in undefined behavior",
        ),
        ({}, {"Dns": ["1.1.1.1"]}, "conflicting options: dns and the network mode"),
        (
            {},
            {"ExtraHosts": ["a:1.2.3.4"]},
            "conflicting options: custom host-to-IP mapping and the network mode",
        ),
        (
            {"MacAddress": "02:42:ac:11:00:02"},
            {},
            "conflicting options: mac-address and the network mode",
        ),
        (
            {},
            {"PortBindings": {"80/tcp": [{"HostPort": "8080"}]}},
            "conflicting options: port publishing and the container type network mode",
        ),
        (
            {},
            {"PublishAllPorts": True},
            "conflicting options: port publishing and the container type network mode",
        ),
        (
            {"ExposedPorts": {"80/tcp": {}}},
            {},
            "conflicting options: port exposing and the container type network mode",
        ),
    ],
)
def test_container_network_conflicts(
    body: dict[str, Any], host: dict[str, Any], message: str
) -> None:
    err = error({"Cmd": ["x"], **body, "HostConfig": {"NetworkMode": "container:db", **host}})
    assert err.message == message
    assert err.status == 400


def test_host_network_conflicts() -> None:
    assert (
        hc_error(NetworkMode="host", Links=["db:db"]).message
        == "conflicting options: host type networking can't be used with links. "
        "This would result in undefined behavior"
    )
    err = error(
        {"Cmd": ["x"], "MacAddress": "02:42:ac:11:00:02", "HostConfig": {"NetworkMode": "host"}}
    )
    assert err.message == "conflicting options: mac-address and the network mode"
    err = error({"Cmd": ["x"], "Hostname": "h", "HostConfig": {"UTSMode": "host"}})
    assert err.message == "conflicting options: hostname and the UTS mode"


def test_host_network_port_warning() -> None:
    spec = hc(NetworkMode="host", PortBindings={"80/tcp": [{"HostPort": "80"}]})
    assert "Published ports are discarded when using host network mode" in spec.warnings


# --------------------------------------------------------------------------- ports


def test_port_bindings_normalized() -> None:
    spec = hc(
        PortBindings={
            "80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "18080"}],
            "53": [{"HostPort": "5353"}],
            "8081/udp": [{"HostIp": "127.0.0.1"}],
            "9000/tcp": None,
        },
        PublishAllPorts=True,
    )
    assert spec.host_config.port_bindings == {
        "80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "18080"}],
        "53/tcp": [{"HostIp": "", "HostPort": "5353"}],
        "8081/udp": [{"HostIp": "127.0.0.1", "HostPort": ""}],
        "9000/tcp": [],
    }
    assert spec.host_config.publish_all is True


@pytest.mark.parametrize("host_port", ["8000-8010", "8080/udp", "", "0", "65535"])
def test_valid_host_ports(host_port: str) -> None:
    hc(PortBindings={"80/tcp": [{"HostPort": host_port}]})


@pytest.mark.parametrize("key", ["abc/tcp", "80-90/tcp", "70000/tcp", "-1"])
def test_invalid_container_port(key: str) -> None:
    port = key.split("/")[0]
    err = hc_error(PortBindings={key: [{"HostPort": "1"}]})
    assert err.message == f'invalid port specification: "{port}"'
    assert err.status == 400


@pytest.mark.parametrize("host_port", ["abc", "70000", "90-80", "1-x", " 80"])
def test_invalid_host_port(host_port: str) -> None:
    err = hc_error(PortBindings={"80/tcp": [{"HostPort": host_port}]})
    assert err.message == f"invalid port specification: {json.dumps(host_port)}"


# --------------------------------------------------------------------------- binds and mounts


def test_binds_parsing() -> None:
    spec = hc(
        Binds=[
            "goldvol:/data",
            "/srv/hostdir:/host:ro",
            "/a/../b:/c/:rw,rshared",
            "/anon",
            "vol2:/v2:nocopy",
            "/x:/y:z",
        ]
    )
    b = spec.host_config.binds
    assert [(m.type, m.source, m.target, m.read_only) for m in b] == [
        ("volume", "goldvol", "/data", False),
        ("bind", "/srv/hostdir", "/host", True),
        ("bind", "/b", "/c", False),
        ("volume", "", "/anon", False),
        ("volume", "vol2", "/v2", False),
        ("bind", "/x", "/y", False),
    ]
    assert b[1].propagation == "rprivate"
    assert b[2].propagation == "rshared"
    assert b[4].no_copy is True
    assert b[0].driver == "local"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (":/x", "invalid volume specification: ':/x'"),
        ("/a:/b:ro:extra", "invalid volume specification: '/a:/b:ro:extra'"),
        ("/foo:rw", "invalid volume specification: '/foo:rw'"),
        ("foo:", "invalid volume specification: 'foo:'"),
        ("/a:/b:rx", "invalid mode: rx"),
        ("/a:/b:ro,rw", "invalid mode: ro,rw"),
        ("/a:/b:z,Z", "invalid mode: z,Z"),
        (
            "foo:bar",
            "invalid volume specification: 'foo:bar': invalid mount config for type \"volume\": "
            "invalid mount path: 'bar' mount path must be absolute",
        ),
        (
            "/host:rel",
            "invalid volume specification: '/host:rel': invalid mount config for type \"bind\": "
            "invalid mount path: 'rel' mount path must be absolute",
        ),
        (
            "/host:/",
            "invalid volume specification: '/host:/': invalid mount config for type \"bind\": "
            "invalid specification: destination can't be '/'",
        ),
        (
            "vol:/x:rshared",
            "invalid volume specification: 'vol:/x:rshared': invalid mount config for type "
            '"volume": field BindOptions must not be specified',
        ),
        (
            "/h:/x:nocopy",
            "invalid volume specification: '/h:/x:nocopy': invalid mount config for type "
            '"bind": field VolumeOptions must not be specified',
        ),
    ],
)
def test_invalid_binds(spec: str, message: str) -> None:
    err = hc_error(Binds=[spec])
    assert err.message == message
    assert isinstance(err, SystemError_)  # dockerd 20.10 returns these unwrapped: 500


def test_duplicate_mount_points() -> None:
    err = hc_error(Binds=["/a:/data", "v:/data/"])
    assert err.message == "Duplicate mount point: /data"
    assert err.status == 400
    assert hc_error(Binds=["/a:/t"], Tmpfs={"/t": ""}).message == "Duplicate mount point: /t"
    err = hc_error(Binds=["/a:/m"], Mounts=[{"Type": "volume", "Target": "/m/"}])
    assert err.message == "Duplicate mount point: /m/"


def test_mounts_parsing() -> None:
    spec = hc(
        Mounts=[
            {"Type": "bind", "Source": "/srv", "Target": "/s", "ReadOnly": True},
            {
                "Type": "bind",
                "Source": "/srv2",
                "Target": "/s2",
                "BindOptions": {"Propagation": "rslave"},
            },
            {
                "Type": "volume",
                "Source": "v",
                "Target": "/v",
                "VolumeOptions": {
                    "NoCopy": True,
                    "Labels": {"a": "b"},
                    "DriverConfig": {"Name": "local", "Options": {"type": "tmpfs"}},
                },
            },
            {"Type": "volume", "Target": "/anon"},
            {
                "Type": "tmpfs",
                "Target": "/t",
                "TmpfsOptions": {"SizeBytes": 64 << 20, "Mode": 0o1777},
            },
            {
                "Type": "tmpfs",
                "Target": "/t2",
                "ReadOnly": True,
                "TmpfsOptions": {"SizeBytes": 1000},
            },
        ]
    )
    m = spec.host_config.mounts
    assert (m[0].type, m[0].read_only, m[0].propagation) == ("bind", True, "rprivate")
    assert m[1].propagation == "rslave"
    assert (m[2].no_copy, m[2].labels, m[2].driver_opts) == (True, {"a": "b"}, {"type": "tmpfs"})
    assert m[3].source == ""
    assert m[4].tmpfs_options == "mode=1777,size=64m"
    assert m[5].tmpfs_options == "ro,size=1000"


@pytest.mark.parametrize(
    ("mount", "message"),
    [
        (
            {"Type": "bind", "Source": "/x"},
            'invalid mount config for type "bind": field Target must not be empty',
        ),
        (
            {"Type": "bind", "Source": "/x", "Target": "/"},
            'invalid mount config for type "bind": '
            "invalid specification: destination can't be '/'",
        ),
        (
            {"Type": "volume", "Target": "rel"},
            'invalid mount config for type "volume": '
            "invalid mount path: 'rel' mount path must be absolute",
        ),
        (
            {"Type": "bind", "Target": "/t"},
            'invalid mount config for type "bind": field Source must not be empty',
        ),
        (
            {
                "Type": "bind",
                "Source": "/x",
                "Target": "/t",
                "BindOptions": {"Propagation": "bogus"},
            },
            'invalid mount config for type "bind": invalid propagation mode: bogus',
        ),
        (
            {"Type": "bind", "Source": "/x", "Target": "/t", "VolumeOptions": {}},
            'invalid mount config for type "bind": field VolumeOptions must not be specified',
        ),
        (
            {"Type": "bind", "Source": "rel", "Target": "/t"},
            'invalid mount config for type "bind": '
            "invalid mount path: 'rel' mount path must be absolute",
        ),
        (
            {"Type": "volume", "Target": "/t", "BindOptions": {}},
            'invalid mount config for type "volume": field BindOptions must not be specified',
        ),
        (
            {"Type": "volume", "Target": "/t", "ReadOnly": True},
            'invalid mount config for type "volume": '
            "must not set ReadOnly mode when using anonymous volumes",
        ),
        (
            {"Type": "tmpfs", "Target": "/t", "Source": "x"},
            'invalid mount config for type "tmpfs": field Source must not be specified',
        ),
        (
            {"Type": "tmpfs", "Target": "/t", "BindOptions": {}},
            'invalid mount config for type "tmpfs": field BindOptions must not be specified',
        ),
        (
            {"Type": "npipe", "Target": "/t"},
            'invalid mount config for type "npipe": mount type unknown',
        ),
        ({"Target": "/t"}, 'invalid mount config for type "": mount type unknown'),
    ],
)
def test_invalid_mounts(mount: dict[str, Any], message: str) -> None:
    err = hc_error(Mounts=[mount])
    assert err.message == message
    assert err.status == 400


def test_bind_source_existence(tmp_path: Any) -> None:
    missing = str(tmp_path / "nope")
    body = {
        "Image": "busybox",
        "Cmd": ["x"],
        "HostConfig": {"Mounts": [{"Type": "bind", "Source": missing, "Target": "/t"}]},
    }
    spec = cfg.parse_create(body, BUSYBOX, CID)  # pure by default
    with pytest.raises(InvalidParameter) as info:
        cfg.parse_create(body, BUSYBOX, CID, check_bind_sources=True)
    expected = f'invalid mount config for type "bind": bind source path does not exist: {missing}'
    assert info.value.message == expected
    with pytest.raises(InvalidParameter) as info:
        config_mounts.check_bind_source(spec.host_config.mounts[0])
    assert info.value.message == expected
    # Binds sources are created by the runtime, never refused
    config_mounts.check_bind_source(hc(Binds=[f"{missing}:/t"]).host_config.binds[0])
    body["HostConfig"]["Mounts"][0]["Source"] = str(tmp_path)
    cfg.parse_create(body, BUSYBOX, CID, check_bind_sources=True)


def test_tmpfs_destinations() -> None:
    assert hc(Tmpfs={"/run": "rw,size=64m"}).host_config.tmpfs == {"/run": "rw,size=64m"}
    assert hc_error(Tmpfs={"/": ""}).message == "invalid specification: destination can't be '/'"
    assert (
        hc_error(Tmpfs={"run": ""}).message
        == "invalid mount path: 'run' mount path must be absolute"
    )


def test_mounts_of() -> None:
    image = {"config": {"Cmd": ["x"], "Volumes": {"/data": {}, "/cache": {}, "/t": {}}}}
    body = {
        "HostConfig": {
            "Binds": ["goldvol:/data", "/srv/hostdir:/host:ro", "/deep:/host/a/b"],
            "Mounts": [{"Type": "tmpfs", "Target": "/m", "TmpfsOptions": {"SizeBytes": 1024}}],
            "Tmpfs": {"/t": "size=1m"},
        }
    }
    mounts = config_mounts.mounts_of(parse(body, image))
    by_dest = {m["Destination"]: m for m in mounts}
    assert by_dest["/data"] == {
        "Type": "volume",
        "Name": "goldvol",
        "Source": "",
        "Destination": "/data",
        "Driver": "local",
        "Mode": "z",
        "RW": True,
        "Propagation": "",
        "NoCopy": False,
    }
    assert by_dest["/host"] == {
        "Type": "bind",
        "Source": "/srv/hostdir",
        "Destination": "/host",
        "Mode": "ro",
        "RW": False,
        "Propagation": "rprivate",
        "CreateSource": True,
    }
    assert by_dest["/cache"]["Name"] == "" and by_dest["/cache"]["Mode"] == ""
    assert by_dest["/m"]["Options"] == "size=1k"
    assert by_dest["/t"]["Hidden"] is True and by_dest["/t"]["Options"] == "size=1m"
    assert [m["Destination"] for m in mounts][-1] == "/host/a/b"  # parents first
    assert len(mounts) == 6


def test_volumes_from() -> None:
    spec = hc(VolumesFrom=["data", "other:ro"])
    assert spec.host_config.volumes_from == [("data", "rw"), ("other", "ro")]
    assert hc_error(VolumesFrom=["x:rshared"]).message == "invalid mode: rshared"
    assert hc_error(VolumesFrom=["x:nocopy"]).message == "invalid mode: nocopy"
    assert hc_error(VolumesFrom=["x:bad"]).message == "invalid mode: bad"
    assert (
        hc_error(VolumesFrom=[""]).message == "volumes-from specification cannot be an empty string"
    )


# --------------------------------------------------------------------------- restart / autoremove


@pytest.mark.parametrize("name", ["", "no", "always", "unless-stopped", "on-failure"])
def test_restart_policies(name: str) -> None:
    rp = hc(RestartPolicy={"Name": name}).host_config.restart_policy
    assert (rp.name, rp.maximum_retry_count) == (name, 0)


def test_on_failure_retries() -> None:
    rp = hc(RestartPolicy={"Name": "on-failure", "MaximumRetryCount": 5}).host_config.restart_policy
    assert rp.maximum_retry_count == 5


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ({"Name": "sometimes"}, "invalid restart policy 'sometimes'"),
        (
            {"Name": "always", "MaximumRetryCount": 3},
            "maximum retry count cannot be used with restart policy 'always'",
        ),
        (
            {"Name": "no", "MaximumRetryCount": 1},
            "maximum retry count cannot be used with restart policy 'no'",
        ),
        (
            {"Name": "unless-stopped", "MaximumRetryCount": -1},
            "maximum retry count cannot be used with restart policy 'unless-stopped'",
        ),
        ({"Name": "on-failure", "MaximumRetryCount": -1}, "maximum retry count cannot be negative"),
    ],
)
def test_invalid_restart_policy(policy: dict[str, Any], message: str) -> None:
    err = hc_error(RestartPolicy=policy)
    assert err.message == message
    assert err.status == 400


def test_auto_remove() -> None:
    assert hc(AutoRemove=True).host_config.auto_remove is True
    assert hc(AutoRemove=True, RestartPolicy={"Name": "no"}).host_config.auto_remove
    err = hc_error(AutoRemove=True, RestartPolicy={"Name": "always"})
    assert err.message == "can't create 'AutoRemove' container with restart policy"
    # checked before the policy itself
    err = hc_error(AutoRemove=True, RestartPolicy={"Name": "bogus"})
    assert err.message == "can't create 'AutoRemove' container with restart policy"


# --------------------------------------------------------------------------- resources


def test_resources() -> None:
    r = hc(
        Memory=64 << 20,
        MemoryReservation=32 << 20,
        NanoCpus=500_000_000,
        CpuShares=512,
        CpusetCpus="0",
        PidsLimit=100,
        OomKillDisable=True,
    ).host_config.resources
    assert r.memory == 64 << 20
    assert r.memory_swap == 128 << 20  # dockerd defaults swap to twice the memory
    assert (r.memory_reservation, r.nano_cpus, r.cpu_shares) == (32 << 20, 500_000_000, 512)
    assert (r.cpuset_cpus, r.pids_limit, r.oom_kill_disable) == ("0", 100, True)


def test_resources_swap_and_pids() -> None:
    assert hc(Memory=64 << 20, MemorySwap=-1).host_config.resources.memory_swap == -1
    assert hc(Memory=64 << 20, MemorySwap=100 << 20).host_config.resources.memory_swap == 100 << 20
    assert hc(PidsLimit=0).host_config.resources.pids_limit is None
    assert hc(PidsLimit=-1).host_config.resources.pids_limit is None
    r = hc(CpuPeriod=100000, CpuQuota=50000).host_config.resources
    assert (r.cpu_period, r.cpu_quota) == (100000, 50000)


def test_oom_kill_disable_warning() -> None:
    assert any("OOM killer is disabled" in w for w in hc(OomKillDisable=True).warnings)


@pytest.mark.parametrize(
    ("host", "message"),
    [
        ({"Memory": 1 << 20}, "Minimum memory limit allowed is 6MB"),
        (
            {"Memory": 64 << 20, "MemorySwap": 32 << 20},
            "Minimum memoryswap limit should be larger than memory limit, see usage",
        ),
        (
            {"MemorySwap": 64 << 20},
            "You should always set the Memory limit when using Memoryswap limit, see usage",
        ),
        ({"MemorySwappiness": 101}, "Invalid value: 101, valid memory swappiness range is 0-100"),
        ({"MemoryReservation": 1 << 20}, "Minimum memory reservation allowed is 6MB"),
        (
            {"Memory": 64 << 20, "MemoryReservation": 128 << 20},
            "Minimum memory limit can not be less than memory reservation limit, see usage",
        ),
        (
            {"NanoCpus": 1, "CpuPeriod": 100000},
            "Conflicting options: Nano CPUs and CPU Period cannot both be set",
        ),
        (
            {"NanoCpus": 1, "CpuQuota": 100000},
            "Conflicting options: Nano CPUs and CPU Quota cannot both be set",
        ),
        (
            {"CpuPeriod": 999},
            "CPU cfs period can not be less than 1ms (i.e. 1000) or larger than 1s (i.e. 1000000)",
        ),
        (
            {"CpuPeriod": 1_000_001},
            "CPU cfs period can not be less than 1ms (i.e. 1000) or larger than 1s (i.e. 1000000)",
        ),
        ({"CpuQuota": 999}, "CPU cfs quota can not be less than 1ms (i.e. 1000)"),
        ({"CpusetCpus": "0-a"}, "Invalid value 0-a for cpuset cpus: invalid format: 0-a"),
        ({"CpusetCpus": "3-1"}, "Invalid value 3-1 for cpuset cpus: invalid format: 3-1"),
        ({"ShmSize": -1}, "SHM size can not be less than 0"),
        ({"OomScoreAdj": 1001}, "Invalid value 1001, range for oom score adj is [-1000, 1000]"),
        ({"OomScoreAdj": -1001}, "Invalid value -1001, range for oom score adj is [-1000, 1000]"),
        ({"Runtime": "kata"}, "Unknown runtime specified kata"),
        ({"CgroupnsMode": "weird"}, "invalid cgroup namespace mode: weird"),
    ],
)
def test_invalid_resources(host: dict[str, Any], message: str) -> None:
    err = hc_error(**host)
    assert err.message == message
    assert err.status == 400


def test_nano_cpus_range() -> None:
    n = len(os.sched_getaffinity(0))
    hc(NanoCpus=n * 1_000_000_000)
    err = hc_error(NanoCpus=n * 1_000_000_000 + 1)
    assert err.message == (
        f"Range of CPUs is from 0.01 to {n}.00, as there are only {n} CPUs available"
    )
    assert hc_error(NanoCpus=-1).message == err.message


def test_cpuset_unavailable() -> None:
    err = hc_error(CpusetCpus="4000")
    assert err.message.startswith("Requested CPUs are not available - requested 4000, available: ")


def test_shm_oom_score() -> None:
    assert hc().host_config.shm_size == 64 << 20
    assert hc(ShmSize=1 << 20).host_config.shm_size == 1 << 20
    assert hc(OomScoreAdj=-500).host_config.oom_score_adj == -500


# --------------------------------------------------------------------------- capabilities


def test_caps_normalized() -> None:
    h = hc(CapAdd=["NET_ADMIN", "cap_sys_time", "all"], CapDrop=["MKNOD"]).host_config
    assert h.cap_add == ["CAP_NET_ADMIN", "CAP_SYS_TIME", "ALL"]
    assert h.cap_drop == ["CAP_MKNOD"]


def test_unknown_capability() -> None:
    err = hc_error(CapAdd=["FOO"])
    assert err.message == 'invalid CapAdd: unknown capability: "CAP_FOO"'
    assert err.status == 400
    assert hc_error(CapDrop=["cap_bar"]).message == 'invalid CapDrop: unknown capability: "CAP_BAR"'
    # dockerd 20.10 stops at CAP_AUDIT_READ
    assert hc_error(CapAdd=["BPF"]).message == 'invalid CapAdd: unknown capability: "CAP_BPF"'


def test_effective_caps() -> None:
    assert config_caps.effective_caps([], [], False) == config_caps.DEFAULT_CAPABILITIES
    assert len(config_caps.DEFAULT_CAPABILITIES) == 14
    caps = config_caps.effective_caps(["NET_ADMIN"], ["MKNOD", "cap_kill"], False)
    assert "CAP_NET_ADMIN" in caps and "CAP_MKNOD" not in caps and "CAP_KILL" not in caps
    assert caps[-1] == "CAP_NET_ADMIN"
    assert config_caps.effective_caps(["CHOWN"], ["ALL"], False) == ["CAP_CHOWN"]
    everything = config_caps.effective_caps(["ALL"], ["SYS_ADMIN"], False)
    assert "CAP_SYS_ADMIN" not in everything and "CAP_SYS_MODULE" in everything
    assert "CAP_SYS_ADMIN" in config_caps.effective_caps([], [], True)
    assert config_caps.effective_caps([], [], True)[0] == "CAP_CHOWN"


# --------------------------------------------------------------------------- other fields


def test_dns_extra_hosts_sysctls_and_misc() -> None:
    h = hc(
        Dns=["1.1.1.1"],
        DnsSearch=["example.org"],
        DnsOptions=["ndots:2"],
        ExtraHosts=["db:10.0.0.2", "v6:fe80::1", "gw:host-gateway"],
        Sysctls={"net.ipv4.ip_forward": "1"},
        SecurityOpt=["no-new-privileges"],
        Init=True,
        Privileged=True,
        ReadonlyRootfs=True,
        Links=["db:database", "cache"],
    ).host_config
    assert (h.dns, h.dns_search, h.dns_options) == (["1.1.1.1"], ["example.org"], ["ndots:2"])
    assert h.extra_hosts == [("db", "10.0.0.2"), ("v6", "fe80::1"), ("gw", "host-gateway")]
    assert h.sysctls == {"net.ipv4.ip_forward": "1"}
    assert (h.security_opt, h.init, h.privileged, h.readonly_rootfs) == (
        ["no-new-privileges"],
        True,
        True,
        True,
    )
    assert h.links == ["db:database", "cache"]
    assert h.masked_paths == [] and h.readonly_paths == []
    assert hc().host_config.masked_paths == config_types.MASKED_PATHS


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("nohost", 'bad format for add-host: "nohost"'),
        (":1.2.3.4", 'bad format for add-host: ":1.2.3.4"'),
        ("h:notanip", 'invalid IP address in add-host: "notanip"'),
        ("h:", 'invalid IP address in add-host: ""'),
    ],
)
def test_invalid_extra_hosts(entry: str, message: str) -> None:
    err = hc_error(ExtraHosts=[entry])
    assert err.message == message
    assert err.status == 400


def test_bad_links() -> None:
    assert hc_error(Links=["a:b:c"]).message == "bad format for links: a:b:c"
    assert hc_error(Links=[""]).status == 500
    # registerLinks skips user-defined networks entirely
    hc(NetworkMode="mynet", Links=["a:b:c"])


def test_log_config() -> None:
    lc = hc(LogConfig={"Type": "", "Config": {}}).host_config.log_config
    assert lc == {"Type": "json-file", "Config": {}}
    lc = hc(LogConfig={"Type": "json-file", "Config": {"max-size": "10m", "max-file": "3"}})
    assert config_logs.log_limits(lc.host_config.log_config) == (10_000_000, 3)
    assert config_logs.log_limits({"Type": "json-file", "Config": {}}) == (0, 1)
    assert hc(LogConfig={"Type": "none"}).host_config.log_config["Type"] == "none"


@pytest.mark.parametrize(
    ("log", "message"),
    [
        ({"Type": "bogus"}, "logger: no log driver named 'bogus' is registered"),
        (
            {"Type": "syslog"},
            "logging driver 'syslog' is not supported by flotilla: use json-file or none",
        ),
        ({"Config": {"max-sizes": "1m"}}, "unknown log opt 'max-sizes' for json-file log driver"),
        ({"Config": {"mode": "fast"}}, "logger: logging mode not supported: fast"),
        (
            {"Config": {"max-buffer-size": "1m"}},
            "logger: max-buffer-size option is only supported with 'mode=non-blocking'",
        ),
    ],
)
def test_invalid_log_config(log: dict[str, Any], message: str) -> None:
    err = hc_error(LogConfig=log)
    assert err.message == message
    assert err.status == 400


@pytest.mark.parametrize(
    ("opts", "message"),
    [
        ({"max-size": "0"}, "max-size must be a positive number"),
        ({"max-size": "lots"}, "invalid size: 'lots'"),
        ({"max-file": "0"}, "max-file cannot be less than 1"),
        ({"max-file": "x"}, 'strconv.Atoi: parsing "x": invalid syntax'),
    ],
)
def test_log_limits_errors(opts: dict[str, str], message: str) -> None:
    with pytest.raises(DockerError) as info:
        config_logs.log_limits({"Type": "json-file", "Config": opts})
    assert info.value.message == message


def test_networking_config() -> None:
    nc = {
        "EndpointsConfig": {"net": {"Aliases": ["web"], "IPAMConfig": {"IPv4Address": "10.0.0.5"}}}
    }
    assert parse({"Cmd": ["x"], "NetworkingConfig": nc}).networking_config == nc
    two = {"EndpointsConfig": {"a": {}, "b": {}}}
    err = error({"Cmd": ["x"], "NetworkingConfig": two})
    assert err.message == "Container cannot be connected to network endpoints: a, b"
    bad4 = {"EndpointsConfig": {"a": {"IPAMConfig": {"IPv4Address": "fe80::1"}}}}
    assert (
        error({"Cmd": ["x"], "NetworkingConfig": bad4}).message == "invalid IPv4 address: fe80::1"
    )
    bad6 = {"EndpointsConfig": {"a": {"IPAMConfig": {"IPv6Address": "1.2.3.4"}}}}
    assert (
        error({"Cmd": ["x"], "NetworkingConfig": bad6}).message == "invalid IPv6 address: 1.2.3.4"
    )
    none = {"EndpointsConfig": {"a": None}}
    assert error({"Cmd": ["x"], "NetworkingConfig": none}).message == "no EndpointSettings for a"


def test_validation_order_net_mode_first() -> None:
    # decode-time network checks come before the working dir and restart policy checks
    err = error(
        {
            "Cmd": ["x"],
            "WorkingDir": "rel",
            "Hostname": "h",
            "HostConfig": {"NetworkMode": "container:x", "RestartPolicy": {"Name": "bad"}},
        }
    )
    assert err.message == "conflicting options: hostname and the network mode"
    err = error({"WorkingDir": "rel", "HostConfig": {"RestartPolicy": {"Name": "bad"}}}, {})
    assert err.message.startswith("the working directory")
    # settings are verified before the image merge reports a missing command
    assert error({"HostConfig": {"RestartPolicy": {"Name": "bad"}}}, {}).message.startswith(
        "invalid restart policy"
    )


def test_process_env() -> None:
    spec = parse({"Cmd": ["x"], "Tty": True, "Env": ["A=1", "PATH=/p", "HOSTNAME=mine"]})
    env = cfg.process_env(spec, "host1", ["DB_NAME=/web/db"])
    assert env == ["PATH=/p", "HOSTNAME=mine", "TERM=xterm", "DB_NAME=/web/db", "A=1"]
    assert cfg.replace_or_append_env(["A=1", "B=2"], ["B", "C=3", "A=9"]) == ["A=9", "C=3"]


# --------------------------------------------------------------------------- inspect shapes


def test_inspect_matches_golden_minimal_body() -> None:
    """container-inspect-after-exit: created with the body recorded in INDEX.md."""
    gold = golden("container-inspect-after-exit.json")
    body = {
        "Image": "busybox",
        "Cmd": ["sh", "-c", "sleep 1; exit 7"],
        "Labels": {"app": "golden-ev"},
        "HostConfig": {"NetworkMode": "bridge"},
    }
    image = golden("image-inspect-busybox.json")
    spec = cfg.parse_create(body, image, gold["Id"])
    assert config_inspect.inspect_config(spec) == gold["Config"]
    assert list(config_inspect.inspect_config(spec)) == list(gold["Config"])
    assert config_inspect.inspect_host_config(spec) == gold["HostConfig"]
    assert list(config_inspect.inspect_host_config(spec)) == list(gold["HostConfig"])
    assert spec.args == [gold["Path"], *gold["Args"]]


@pytest.mark.parametrize(
    "name",
    [
        "container-inspect-running.json",
        "container-inspect-created.json",
        "container-inspect-exited.json",
    ],
)
def test_inspect_round_trips_golden(name: str) -> None:
    """Feeding dockerd's own echo back in gives the same Config and HostConfig."""
    gold = golden(name)
    body = copy.deepcopy(gold["Config"])
    body["HostConfig"] = copy.deepcopy(gold["HostConfig"])
    spec = cfg.parse_create(body, golden("image-inspect-busybox.json"), gold["Id"])
    assert config_inspect.inspect_config(spec) == gold["Config"]
    assert config_inspect.inspect_host_config(spec) == gold["HostConfig"]
    assert list(config_inspect.inspect_host_config(spec)) == list(gold["HostConfig"])


def test_inspect_running_from_cli_like_body() -> None:
    gold = golden("container-inspect-running.json")
    host = copy.deepcopy(gold["HostConfig"])
    for key in ("MaskedPaths", "ReadonlyPaths", "CgroupnsMode", "IpcMode", "Runtime"):
        del host[key]
    host["MemorySwap"] = 0  # dockerd doubles Memory
    host["ShmSize"] = 0
    host["NetworkMode"] = "goldnet"
    body = {**copy.deepcopy(gold["Config"]), "HostConfig": host}
    spec = cfg.parse_create(body, golden("image-inspect-busybox.json"), gold["Id"])
    assert config_inspect.inspect_host_config(spec) == gold["HostConfig"]
    assert spec.host_config.network_mode == "goldnet"
    assert spec.host_config.resources.memory_swap == 134217728


def test_inspect_defaults_and_omitempty() -> None:
    spec = parse(
        {
            "Cmd": ["x"],
            "StopSignal": "SIGINT",
            "Healthcheck": {"Test": ["NONE"]},
            "HostConfig": {"Init": False, "Privileged": True, "Sysctls": {}, "Tmpfs": {}},
        }
    )
    conf = config_inspect.inspect_config(spec)
    host = config_inspect.inspect_host_config(spec)
    assert conf["StopSignal"] == "SIGINT"
    assert conf["Healthcheck"] == {"Test": ["NONE"]}
    assert "ExposedPorts" not in conf and "StopTimeout" not in conf
    assert host["Init"] is False
    assert "Sysctls" not in host and "Tmpfs" not in host and "Mounts" not in host
    assert host["MaskedPaths"] is None and host["ReadonlyPaths"] is None
    assert host["NetworkMode"] == "default"
    assert host["RestartPolicy"] == {"Name": "", "MaximumRetryCount": 0}
    # a copy each time: callers may mutate it
    host["Binds"] = ["x"]
    assert config_inspect.inspect_host_config(spec)["Binds"] is None


def test_port_binding_type_error() -> None:
    err = hc_error(PortBindings={"80/tcp": ["8080"]})
    assert err.status == 400
    assert err.message.startswith("json: cannot unmarshal string")
