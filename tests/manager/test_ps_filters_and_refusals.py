"""Unit tests: the ps `is-task` filter's parse and how a node's create refusal reaches the client
(the end-to-end proofs are in test_swarm_behaviour2_e2e.py)."""

from __future__ import annotations

import pytest

from manager.api.container_list import _is_task_filter
from manager.api.containers import _swarm_create_error
from proto.docker.errors import DockerError, InvalidParameter, NotFound

HEX64 = "4e8aa3148a132f19ec560952231c4d39522043994df7d2dc239942c0f9424ebd"


def test_is_task_filter_values_as_dockerd() -> None:
    assert _is_task_filter(None) is None
    assert _is_task_filter(["true"]) is True
    assert _is_task_filter(["false"]) is False
    assert _is_task_filter(["false", "true"]) is True  # ExactMatch("true") is checked first
    assert _is_task_filter([]) is True  # a key without values matches everything in Go
    with pytest.raises(InvalidParameter, match=r"^Invalid filter 'is-task=\[maybe\]'$"):
        _is_task_filter(["maybe"])


def test_create_refusals_as_swarm_answers_them() -> None:
    missing = NotFound(f"No such image: {HEX64}:latest")
    err = _swarm_create_error(missing, HEX64)
    assert (err.status, err.message) == (
        500,
        f"invalid repository name ({HEX64}), cannot specify 64-byte hexadecimal strings",
    )
    # Any other missing image stays the 404 the CLI answers with a pull.
    assert _swarm_create_error(NotFound("No such image: nope:latest"), "nope").status == 404
    plugin = NotFound('create v: error looking up volume plugin x: plugin "x" not found')
    err = _swarm_create_error(plugin, "busybox")
    assert (err.status, err.message) == (500, plugin.message)
    network = NotFound("network nosuchnet not found")
    assert _swarm_create_error(network, "busybox") is network
    conflict = DockerError("Conflict.", 409)
    assert _swarm_create_error(conflict, HEX64) is conflict
