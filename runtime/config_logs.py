"""The log config of a create body (`mergeAndVerifyLogConfig` for json-file and none) and the
json-file rotation limits the shim applies.
"""

from __future__ import annotations

import re
from typing import Any

from proto.docker.errors import InvalidParameter, SystemError_
from runtime.config_fields import get_dict, get_str
from runtime.config_values import parse_size

# Drivers dockerd 20.10 ships; we only implement json-file and none.
DOCKER_LOG_DRIVERS = (
    "local",
    "syslog",
    "journald",
    "gelf",
    "fluentd",
    "awslogs",
    "splunk",
    "etwlogs",
    "gcplogs",
    "logentries",
)


JSON_FILE_LOG_OPTS = (
    "max-file",
    "max-size",
    "compress",
    "labels",
    "labels-regex",
    "env",
    "env-regex",
    "tag",
)


def parse_log_config(hc: dict[str, Any]) -> dict[str, Any]:
    """mergeAndVerifyLogConfig + logger.ValidateLogOpts for the drivers we have."""
    lc = get_dict(hc, "LogConfig") or {}
    ltype = get_str(lc, "Type") or "json-file"
    opts = {str(k): str(v) for k, v in (get_dict(lc, "Config") or {}).items()}
    if ltype == "none":
        return {"Type": ltype, "Config": opts}
    mode = opts.get("mode", "")
    if mode not in ("", "blocking", "non-blocking"):
        raise InvalidParameter(f"logger: logging mode not supported: {mode}")
    if "max-buffer-size" in opts and mode != "non-blocking":
        raise InvalidParameter(
            "logger: max-buffer-size option is only supported with 'mode=non-blocking'"
        )
    if ltype in DOCKER_LOG_DRIVERS:
        raise InvalidParameter(
            f"logging driver '{ltype}' is not supported by flotilla: use json-file or none"
        )
    if ltype != "json-file":
        raise InvalidParameter(f"logger: no log driver named '{ltype}' is registered")
    for key in opts:
        if key not in JSON_FILE_LOG_OPTS and key not in ("mode", "max-buffer-size"):
            raise InvalidParameter(f"unknown log opt '{key}' for json-file log driver")
    return {"Type": ltype, "Config": opts}


def log_limits(log_config: dict[str, Any]) -> tuple[int, int]:
    """json-file max-size (bytes, 0 = unlimited) and max-file; dockerd fails these at start."""
    opts = log_config.get("Config") or {}
    size = 0
    if "max-size" in opts:
        size = parse_size(opts["max-size"])
        if size <= 0:
            raise SystemError_("max-size must be a positive number")
    count = 1
    if "max-file" in opts:
        raw = opts["max-file"]
        if not re.fullmatch(r"[+-]?\d+", raw):
            raise SystemError_(f'strconv.Atoi: parsing "{raw}": invalid syntax')
        count = int(raw)
        if count < 1:
            raise SystemError_("max-file cannot be less than 1")
    return size, count
