"""A property-based fuzz of the Engine API: bodies whose known fields carry values of random
JSON types, malformed JSON, random query parameters and path segments. The property: no
answer is a 5xx, and every error is dockerd's `{"message": …}`.

Cases are drawn by hypothesis (derandomized: the same cases on every run, so CI reproduces a
failure) and then sent by `run`, through any `send(method, path, params, body)`: the in-process
app in tests/manager/test_api_fuzz.py, a live manager in a bench. `run` returns the counts
`fuzz_cases` and `fuzz_5xx` that bench/attacks.py reports.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from manager import api_types
from manager.gojson import GoType

# (status, body) for (method, path, query params, body bytes or None)
Send = Callable[[str, str, dict[str, str], bytes | None], Awaitable[tuple[int, bytes]]]

REF = "{ref}"
ENDPOINTS: list[tuple[str, str, GoType | None, tuple[str, ...]]] = [
    ("POST", "/containers/create", api_types.CONTAINER_CREATE, ("name", "platform")),
    ("POST", "/containers/{ref}/update", api_types.CONTAINER_UPDATE, ()),
    ("POST", "/containers/{ref}/exec", api_types.EXEC_CREATE, ()),
    ("POST", "/exec/{ref}/start", api_types.EXEC_START, ()),
    ("POST", "/commit", api_types.CONTAINER_CREATE, ("container", "repo", "tag", "changes")),
    ("POST", "/networks/create", api_types.NETWORK_CREATE, ()),
    ("POST", "/networks/{ref}/connect", api_types.NETWORK_CONNECT, ()),
    ("POST", "/networks/{ref}/disconnect", api_types.NETWORK_DISCONNECT, ()),
    ("POST", "/volumes/create", api_types.VOLUME_CREATE, ()),
    ("POST", "/auth", api_types.AUTH_CONFIG, ()),
    ("GET", "/containers/json", None, ("all", "limit", "size", "filters")),
    ("GET", "/images/json", None, ("all", "filters", "digests")),
    ("GET", "/networks", None, ("filters",)),
    ("GET", "/volumes", None, ("filters",)),
    ("GET", "/events", None, ("since", "until", "filters")),
    ("POST", "/networks/prune", None, ("filters",)),
    ("POST", "/images/{ref}/tag", None, ("repo", "tag")),
    ("POST", "/images/{ref}/push", None, ("tag",)),
    ("GET", "/containers/{ref}/json", None, ("size",)),
    ("GET", "/containers/{ref}/logs", None, ("stdout", "stderr", "tail", "since", "until")),
    ("GET", "/containers/{ref}/top", None, ("ps_args",)),
    ("GET", "/containers/{ref}/archive", None, ("path",)),
    ("POST", "/containers/{ref}/stop", None, ("t", "timeout", "signal")),
    ("POST", "/containers/{ref}/kill", None, ("signal",)),
    ("POST", "/containers/{ref}/wait", None, ("condition",)),
    ("POST", "/containers/{ref}/rename", None, ("name",)),
    ("DELETE", "/containers/{ref}", None, ("force", "v", "link")),
    ("GET", "/images/{ref}/json", None, ()),
    ("DELETE", "/images/{ref}", None, ("force", "noprune")),
    ("GET", "/networks/{ref}", None, ("verbose", "scope")),
    ("DELETE", "/volumes/{ref}", None, ("force",)),
    ("GET", "/info", None, ()),
    ("GET", "/version", None, ()),
]

# Routes whose well-formed requests reach a registry (login, push): against a live cluster their
# answer depends on that registry being reachable, and an unreachable one is dockerd's 500 too
# (`Get "https://registry-1.docker.io/v2/": dial tcp: …`), not a failure to handle input. The
# in-process fuzz (tests/manager/test_api_fuzz.py, fake agents) covers their input handling.
UPSTREAM = frozenset({"/auth", "/images/{ref}/push"})

_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(1 << 70), max_value=1 << 70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
)
JSON_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


def _value_for(t: GoType, depth: int = 0) -> st.SearchStrategy[Any]:
    """A value of the right type for `t` most of the time, any JSON value otherwise."""
    wrong = JSON_VALUES
    if depth > 3:
        return wrong
    right: st.SearchStrategy[Any]
    if t.kind == "string":
        right = st.text(max_size=16)
    elif t.kind == "bool":
        right = st.booleans()
    elif t.kind in ("int", "uint"):
        right = st.integers(min_value=-(1 << 65), max_value=1 << 65)
    elif t.kind == "float":
        right = st.floats(allow_nan=False, allow_infinity=False)
    elif t.kind == "strslice":
        right = st.one_of(st.text(max_size=8), st.lists(st.text(max_size=8), max_size=3))
    elif t.kind in ("slice", "array") and t.elem is not None:
        right = st.lists(_value_for(t.elem, depth + 1), max_size=3)
    elif t.kind == "map" and t.elem is not None:
        right = st.dictionaries(st.text(max_size=8), _value_for(t.elem, depth + 1), max_size=3)
    elif t.kind == "struct":
        right = _struct_body(t, depth + 1)
    else:
        return wrong
    return st.one_of(right, right, right, wrong)


def _struct_body(t: GoType, depth: int = 0) -> st.SearchStrategy[dict[str, Any]]:
    names = sorted(t.fields)
    if not names:
        return st.just({})
    return st.lists(st.sampled_from(names), max_size=6, unique=True).flatmap(
        lambda keys: st.fixed_dictionaries({k: _value_for(t.fields[k][1], depth) for k in keys})
    )


_MALFORMED = st.sampled_from(
    [
        b"{",
        b'{"Image":',
        b"{bad",
        b"[1 2]",
        b'{"a" 1}',
        b"NaN",
        b'{"a":"\\x"}',
        b"\xff\xfe",
        b'"\\ud800"',
        b"[" * 5000,
        b'{"Image":"x"} {}',
        b"1e999",
        b"-",
        b"nul",
    ]
)
_TEXT = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["", "0", "-1", "1e3", "true", "..", "%", "web", "node-0/web", "a" * 300]),
    JSON_VALUES.map(json.dumps),
)
_SEGMENT = st.one_of(
    st.sampled_from(["web", "node-0/web", "..", "%2e%2e", "bridge", "x" * 300, "sha256:"]),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=16),
)


@dataclass(frozen=True)
class Case:
    method: str
    path: str
    params: dict[str, str]
    body: bytes | None


def _case_strategy(upstream: bool) -> st.SearchStrategy[Case]:
    endpoints = [e for e in ENDPOINTS if upstream or e[1] not in UPSTREAM]

    @st.composite
    def draw_case(draw: st.DrawFn) -> Case:
        method, template, schema, names = draw(st.sampled_from(endpoints))
        path = template
        if REF in path:
            segment = draw(_SEGMENT)
            path = path.replace(REF, _quote(segment))
        keys = draw(st.lists(st.sampled_from([*names, "filters", "x"]), max_size=3, unique=True))
        params = {k: draw(_TEXT) for k in keys}
        body: bytes | None = None
        if schema is not None:
            kind = draw(st.integers(0, 9))
            if kind == 0:
                body = draw(_MALFORMED)
            elif kind == 1:
                body = json.dumps(draw(JSON_VALUES)).encode()
            else:
                body = json.dumps(draw(_struct_body(schema))).encode()
        return Case(method, "/v1.41" + path, params, body)

    return draw_case()


def _quote(segment: str) -> str:
    from urllib.parse import quote

    return quote(segment, safe="")


def cases(n: int, upstream: bool = True) -> list[Case]:
    """`n` cases, the same ones on every run (`upstream`: also of the UPSTREAM routes)."""
    out: list[Case] = []

    @settings(
        max_examples=n,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(_case_strategy(upstream))
    def collect(case: Case) -> None:
        if len(out) < n:
            out.append(case)

    collect()
    return out


@dataclass
class Result:
    fuzz_cases: int = 0
    fuzz_5xx: int = 0
    failures: list[str] = field(default_factory=list)  # 5xx or a malformed error body


def _error_body_ok(body: bytes) -> bool:
    try:
        doc = json.loads(body)
    except ValueError:
        return False
    return isinstance(doc, dict) and isinstance(doc.get("message"), str)


async def run(send: Send, n: int = 300, upstream: bool = True) -> Result:
    result = Result()
    for case in cases(n, upstream):
        status, body = await send(case.method, case.path, case.params, case.body)
        result.fuzz_cases += 1
        if status >= 500:
            result.fuzz_5xx += 1
        if status >= 500 or (status >= 400 and not _error_body_ok(body)):
            what = f"{case.method} {case.path} {case.params} {case.body!r:.200} -> {status} "
            result.failures.append(what + body[:200].decode(errors="replace"))
    return result
