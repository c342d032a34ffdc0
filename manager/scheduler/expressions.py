"""Swarm's placement expression grammar: `key==value`, `key!=value`, soft `~`, globs, `/regex/`."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from proto import patterns

OPERATORS = ("==", "!=")
# Swarm's validation regexes; \Z and ASCII because Go's `$` and `\s` mean exactly that.
_KEY_RE = re.compile(r"^[a-z_][a-z0-9\-_.]+\Z", re.IGNORECASE | re.ASCII)
_VALUE_RE = re.compile(r"^[=!/]?(~)?[a-z0-9:\-_\s.*/()?+\[\]\\^$|]+\Z", re.IGNORECASE | re.ASCII)
_REGEX_META = frozenset(".*?+[](){}\\^$|")


class ExpressionError(ValueError):
    """An expression that does not parse; the message is Swarm's."""


@dataclass(frozen=True)
class Expr:
    key: str  # lower-cased, as Swarm stores it
    operator: str  # "==" or "!="
    value: str  # without the soft `~`
    soft: bool

    def __str__(self) -> str:
        return f"{self.key}{self.operator}{self.value}"

    @property
    def equal(self) -> bool:
        return self.operator == "=="

    def hit(self, candidate: str) -> bool:
        """Whether the value matches one string (before applying the operator)."""
        literal = _literal(self.value)
        if literal is not None:
            return candidate == literal
        pattern = _compile(self.value)
        return pattern is not None and pattern.search(candidate) is not None

    def hit_any(self, candidates: Iterable[str]) -> bool:
        """Whether the value matches any of the strings; O(1) for plain values and sets."""
        literal = _literal(self.value)
        if literal is not None:
            if isinstance(candidates, (set, frozenset)):
                return literal in candidates
            return any(c == literal for c in candidates)
        pattern = _compile(self.value)
        return pattern is not None and any(pattern.search(c) for c in candidates)

    def value_check(self) -> Callable[[str], bool]:
        """A function telling whether the expression holds for a single value."""
        literal = _literal(self.value)
        if literal is not None:
            if self.equal:
                return lambda v: v == literal
            return lambda v: v != literal
        hit, equal = self.hit, self.equal
        return lambda v: hit(v) == equal

    def set_check(self) -> Callable[[set[str]], bool]:
        """A function telling whether the expression holds for a node offering these strings."""
        literal = _literal(self.value)
        if literal is not None:
            if self.equal:
                return lambda s: literal in s
            return lambda s: literal not in s
        hit_any, equal = self.hit_any, self.equal
        return lambda s: hit_any(s) == equal


def parse_expr(entry: str) -> Expr:
    """Parse one `key<op>value` entry (the part after `constraint:`/`affinity:`/`whitelist:`)."""
    for op in OPERATORS:
        if op in entry:
            key, value = entry.split(op, 1)
            if not _KEY_RE.match(key):
                raise ExpressionError(f"Key '{key}' is invalid")
            if not _VALUE_RE.match(value):
                raise ExpressionError(f"Value '{value}' is invalid")
            soft = value.startswith("~")
            return Expr(key=key.lower(), operator=op, value=value.lstrip("~"), soft=soft)
    raise ExpressionError("One of operator ==, != is expected")


def parse_exprs(entries: Iterable[str]) -> list[Expr]:
    return [parse_expr(e) for e in entries]


_literal_cache: dict[str, str | None] = {}


def _literal(value: str) -> str | None:
    """The value itself when matching it is plain string equality (no glob/regex chars)."""
    try:
        return _literal_cache[value]
    except KeyError:
        pass
    is_regex = len(value) >= 2 and value[0] == "/" and value[-1] == "/"
    lit = None if is_regex or any(ch in _REGEX_META for ch in value) else value
    if len(_literal_cache) < 4096:
        _literal_cache[value] = lit
    return lit


def _compile(value: str) -> patterns.Pattern | None:
    """Swarm's pattern: `/re/` is an unanchored regex, anything else a glob where only `*`
    is translated (other regex characters keep their meaning). None if it does not compile
    (Swarm logs it and treats it as no match). RE2, as Swarm's Go regexp: linear matching, and
    inline flags such as `(?i)` anywhere."""
    if len(value) >= 2 and value[0] == "/" and value[-1] == "/":
        return patterns.compile_regex(value[1:-1])
    return patterns.compile_regex("^" + value.replace("*", ".*") + r"\z")
