"""Request bodies decoded as dockerd decodes them: Go's encoding/json into the Engine API's
structs (manager/api_types.py), with Go's words for every refusal.

dockerd 28 answers a body it cannot decode with 400 `invalid JSON: <encoding/json's error>`,
e.g. `invalid JSON: json: cannot unmarshal string into Go struct field
HostConfig.HostConfig.Resources.Memory of type int64`. Checking the types here, before the
body is used or forwarded, keeps every handler and agent to well-typed input: a wrong type is
the client's 400, never a 500 from deep inside.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

# Go's decoder nests up to 10000 levels; Python's recursion limit is far lower, and no Engine
# API body nests beyond a handful, so deeper documents are refused with Go's words.
MAX_DEPTH = 200

_INT_RANGE = {
    "int": (-(1 << 63), (1 << 63) - 1),
    "uint": (0, (1 << 64) - 1),
}


TRAILING = "unexpected content after JSON"  # dockerd's check after json.Decoder, not Go's


class GoJSONError(ValueError):
    """encoding/json's error text for a document (without dockerd's `invalid JSON: `)."""


@dataclass(frozen=True)
class GoType:
    name: str  # reflect.Type.String(): what Go's message calls the type
    kind: str  # string bool int uint float any slice array map struct strslice
    bits: int = 64
    elem: GoType | None = None
    length: int = 0  # arrays
    # struct fields: JSON name -> (Go names of the embedded structs it is promoted from, type)
    fields: dict[str, tuple[tuple[str, ...], GoType]] = field(default_factory=dict)
    short: str = ""  # a struct's reflect.Type.Name(), which Go's message puts before its fields


STRING = GoType("string", "string")
BOOL = GoType("bool", "bool")
INT = GoType("int", "int")
INT64 = GoType("int64", "int")
UINT = GoType("uint", "uint")
UINT16 = GoType("uint16", "uint", bits=16)
UINT32 = GoType("uint32", "uint", bits=32)
UINT64 = GoType("uint64", "uint")
FLOAT64 = GoType("float64", "float")
ANY = GoType("interface {}", "any")
EMPTY = GoType("struct {}", "struct")
STRSLICE = GoType("strslice.StrSlice", "strslice")


def named(name: str, base: GoType) -> GoType:
    return GoType(name, base.kind, base.bits, base.elem, base.length, base.fields, base.short)


def slice_of(elem: GoType, name: str | None = None) -> GoType:
    return GoType(name or f"[]{elem.name}", "slice", elem=elem)


def array_of(elem: GoType, length: int) -> GoType:
    return GoType(f"[{length}]{elem.name}", "array", elem=elem, length=length)


def map_of(elem: GoType, name: str | None = None) -> GoType:
    return GoType(name or f"map[string]{elem.name}", "map", elem=elem)


def struct(
    name: str, fields: dict[str, GoType], embedded: dict[str, GoType] | None = None
) -> GoType:
    """A struct; `embedded` structs' fields are promoted (Go names them Outer.Embedded.Field)."""
    flat: dict[str, tuple[tuple[str, ...], GoType]] = {}
    for go_name, inner in (embedded or {}).items():
        for key, (path, typ) in inner.fields.items():
            flat[key] = ((go_name, *path), typ)
    for key, typ in fields.items():
        flat[key] = ((), typ)  # a shallower field hides a promoted one
    return GoType(name, "struct", fields=flat, short=name)


class _Number(float):
    """A JSON number that keeps its literal: Go quotes it (`number 1.5`) when it does not fit."""

    literal: str

    def __new__(cls, literal: str) -> _Number:
        obj = super().__new__(cls, float(literal))
        obj.literal = literal
        return obj


def _parse_int(literal: str) -> int | _Number:
    # Python refuses ints of more than 4300 digits with a ValueError; Go reports overflow.
    return int(literal) if len(literal) <= 20 else _Number(literal)


def _no_constant(name: str) -> Any:
    # NaN, Infinity and -Infinity are not JSON to Go.
    if name.startswith("-"):
        raise GoJSONError(f"invalid character {_quote_char(name[1])} in numeric literal")
    raise GoJSONError(f"invalid character {_quote_char(name[0])} looking for beginning of value")


_DECODER = json.JSONDecoder(
    parse_float=_Number, parse_int=_parse_int, parse_constant=_no_constant, strict=True
)


def _quote_char(ch: str) -> str:
    """Go's quoteChar: 'x', with Go's escapes for control characters."""
    if ch == "'":
        return "'\\''"
    if ch == '"':
        return "'\"'"
    quoted = json.dumps(ch)[1:-1] if ch < " " else ch
    return f"'{quoted}'"


def _open_container(text: str, pos: int) -> str:
    """'{' or '[' : the innermost container open at `pos` (strings skipped)."""
    stack: list[str] = []
    in_str = esc = False
    for ch in text[:pos]:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "{[":
            stack.append(ch)
        elif ch in "}]" and stack:
            stack.pop()
    return stack[-1] if stack else ""


def _syntax_message(text: str, e: json.JSONDecodeError) -> str:
    if e.pos >= len(text.rstrip()):
        return "unexpected EOF"
    ch = _quote_char(text[e.pos])
    msg = e.msg
    if msg.startswith("Expecting property name"):
        return f"invalid character {ch} looking for beginning of object key string"
    if msg.startswith("Expecting ':'"):
        return f"invalid character {ch} after object key"
    if msg.startswith("Expecting ','"):
        if _open_container(text, e.pos) == "[":
            return f"invalid character {ch} after array element"
        return f"invalid character {ch} after object key:value pair"
    if msg.startswith("Invalid control character"):
        return f"invalid character {ch} in string literal"
    if msg.startswith("Invalid \\escape"):
        esc = text[e.pos + 1 : e.pos + 2]
        return f"invalid character {_quote_char(esc or ch)} in string escape code"
    return f"invalid character {ch} looking for beginning of value"


def _depth_error(text: str) -> str | None:
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return None
    depth = 0
    in_str = esc = False
    for ch in text:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "{[":
            depth += 1
            if depth > MAX_DEPTH:
                return f"invalid character {_quote_char(ch)} exceeded max depth"
        elif ch in "}]":
            depth -= 1
    return None


def _fix_surrogates(value: Any) -> Any:
    """Go decodes a lone `\\ud800` escape as U+FFFD; Python keeps a surrogate that no UTF-8
    encoder (protobuf, aiohttp) accepts later."""
    if isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError:
            return "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in value)
        return value
    if isinstance(value, list):
        return [_fix_surrogates(v) for v in value]
    if isinstance(value, dict):
        return {_fix_surrogates(k): _fix_surrogates(v) for k, v in value.items()}
    return value


def loads(raw: bytes, *, stream: bool = True) -> Any:
    """One JSON value as Go reads it. `stream`: json.Decoder's rules (what follows the value
    is refused only if it starts another one); otherwise json.Unmarshal's (nothing may
    follow). An empty document is EOFError."""
    text = raw.decode(errors="replace")
    stripped = text.lstrip(" \t\r\n")
    if not stripped:
        raise EOFError
    deep = _depth_error(stripped)
    if deep is not None:
        raise GoJSONError(deep)
    try:
        value, end = _DECODER.raw_decode(stripped)
    except json.JSONDecodeError as e:
        raise GoJSONError(_syntax_message(stripped, e)) from None
    except RecursionError:
        raise GoJSONError("invalid character '[' exceeded max depth") from None
    rest = stripped[end:].lstrip(" \t\r\n")
    if rest:
        if not stream:
            raise GoJSONError(f"invalid character {_quote_char(rest[0])} after top-level value")
        if rest[0] not in "]}":
            raise GoJSONError(TRAILING)
    return _fix_surrogates(value)


# --------------------------------------------------------------------------- type checking


class _Abort(Exception):
    """An error an UnmarshalJSON method returned: Go stops decoding at once."""


def _kind_of(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _literal(value: int | float) -> str:
    return value.literal if isinstance(value, _Number) else str(value)


def _fold(key: str) -> str:
    return key.lower()


class _Checker:
    def __init__(self) -> None:
        self.first: str | None = None

    def fail(self, value: str, typ: GoType, ctx: tuple[str, tuple[str, ...]] | None) -> str:
        if ctx is None:
            msg = f"json: cannot unmarshal {value} into Go value of type {typ.name}"
        else:
            msg = (
                f"json: cannot unmarshal {value} into Go struct field "
                f"{ctx[0]}.{'.'.join(ctx[1])} of type {typ.name}"
            )
        if self.first is None:
            self.first = msg
        return msg

    def walk(self, v: Any, t: GoType, ctx: tuple[str, tuple[str, ...]] | None) -> Any:
        """Check `v` against `t`; the value back with struct keys spelt as Go's fields (Go
        matches them case-insensitively, and handlers look them up exactly)."""
        if v is None or t.kind == "any":
            return v  # null leaves any Go value as it is
        kind = t.kind
        if kind == "string":
            if not isinstance(v, str):
                self.fail(_kind_of(v), t, ctx)
        elif kind == "bool":
            if not isinstance(v, bool):
                self.fail(_kind_of(v), t, ctx)
        elif kind in ("int", "uint", "float"):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                self.fail(_kind_of(v), t, ctx)
            else:
                self._number(v, t, ctx)
        elif kind == "strslice":
            # StrSlice.UnmarshalJSON: a []string, else a string; its error stops the decode.
            if isinstance(v, str) or (isinstance(v, list) and all(isinstance(x, str) for x in v)):
                return v
            raise _Abort(self.fail_now(_kind_of(v), STRING, ctx))
        elif kind in ("slice", "array"):
            if not isinstance(v, list):
                self.fail(_kind_of(v), t, ctx)
                return v
            assert t.elem is not None
            n = len(v) if kind == "slice" else t.length
            return [self.walk(item, t.elem, ctx) for item in v[:n]] + v[n:]
        elif kind == "map":
            if not isinstance(v, dict):
                self.fail(_kind_of(v), t, ctx)
                return v
            assert t.elem is not None
            return {key: self.walk(item, t.elem, ctx) for key, item in v.items()}
        elif kind == "struct":
            if not isinstance(v, dict):
                self.fail(_kind_of(v), t, ctx)
                return v
            folded = {_fold(k): k for k in reversed(t.fields)}
            stack = ctx[1] if ctx is not None else ()
            out: dict[str, Any] = {}
            for key, item in v.items():
                name = key if key in t.fields else folded.get(_fold(key))
                if name is None:
                    out[key] = item  # unknown fields are ignored, as Go does
                    continue
                path, typ = t.fields[name]
                out[name] = self.walk(item, typ, (t.short or t.name, (*stack, *path, name)))
            return out
        return v

    def fail_now(self, value: str, typ: GoType, ctx: tuple[str, tuple[str, ...]] | None) -> str:
        first, self.first = self.first, None
        msg = self.fail(value, typ, ctx)
        self.first = first
        return msg

    def _number(self, v: int | float, t: GoType, ctx: tuple[str, tuple[str, ...]] | None) -> None:
        lit = _literal(v)
        if t.kind == "float":
            if isinstance(v, float) and math.isinf(v):
                self.fail(f"number {lit}", t, ctx)
            return
        if not isinstance(v, int) or isinstance(v, bool):
            self.fail(f"number {lit}", t, ctx)
            return
        lo, hi = _INT_RANGE[t.kind]
        if t.bits < 64:
            hi = (1 << (t.bits - (1 if t.kind == "int" else 0))) - 1
            lo = -(hi + 1) if t.kind == "int" else 0
        if not lo <= v <= hi:
            self.fail(f"number {lit}", t, ctx)


def check(value: Any, typ: GoType) -> Any:
    """`value` as it decodes into `typ` (struct keys spelt as Go's fields); GoJSONError with
    Go's message if it does not."""
    checker = _Checker()
    try:
        out = checker.walk(value, typ, None)
    except _Abort as e:
        raise GoJSONError(str(e)) from None
    except RecursionError:
        raise GoJSONError("invalid character '[' exceeded max depth") from None
    if checker.first is not None:
        raise GoJSONError(checker.first)
    return out
