"""Dockerfile text to instruction nodes: BuildKit's frontend/dockerfile/parser as dockerd 20.10
vendors it (its legacy builder's parser), so the same files parse the same way and fail with the
same words.

Parser directives (`# escape=`` ` ``, `# syntax=`) at the top, comments, blank lines, line
continuation with the escape token (comment lines inside a continued instruction are dropped),
a UTF-8 BOM, leading `--flags`, and each instruction's argument form: JSON array or shell
string (RUN, CMD, ENTRYPOINT, SHELL), JSON or whitespace list (COPY, ADD, VOLUME), name/value
pairs (ENV, LABEL: `k=v …` or the old `k v`), ARG words, HEALTHCHECK's type + command, and
ONBUILD's sub-instruction. Heredocs (`<<EOF`) are a BuildKit-only feature and are not read.
Checking what each instruction's arguments mean is runtime/dockerfile_instructions.py.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from proto.docker.errors import InvalidParameter

_WHITESPACE = re.compile(r"[\t\v\f\r ]+")
_DIRECTIVE = re.compile(r"^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$")
_VALID_DIRECTIVES = {"escape", "syntax"}
_NOT_STRING_ARRAY = "when using JSON array syntax, arrays must be comprised of strings only"


class ParseError(InvalidParameter):
    """A Dockerfile that cannot be read; `line` is where (1-based), as the message says."""

    def __init__(self, message: str, line: int = 0) -> None:
        super().__init__(message)
        self.line = line


@dataclass
class Node:
    """One instruction: its lower-case name, arguments, `--flags`, and where it was."""

    cmd: str
    args: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    json: bool = False
    original: str = ""
    start_line: int = 0
    end_line: int = 0
    comments: list[str] = field(default_factory=list)
    sub: Node | None = None  # ONBUILD's instruction


@dataclass
class ParseResult:
    nodes: list[Node]
    escape: str
    warnings: list[str]


class _Directives:
    def __init__(self) -> None:
        self.escape = "\\"
        self.done = False
        self.seen: set[str] = set()
        self._set_escape("\\")

    def _set_escape(self, token: str) -> None:
        if token not in ("`", "\\"):
            raise ParseError(f"invalid escape token '{token}' does not match ` or \\")
        self.escape = token
        e = re.escape(token)
        self.continuation = re.compile(rf"([^{e}]){e}[ \t]*$|^{e}[ \t]*$")

    def check(self, line: str) -> None:
        if self.done:
            return
        match = _DIRECTIVE.match(line)
        if not match or match.group(1).lower() not in _VALID_DIRECTIVES:
            self.done = True
            return
        key = match.group(1).lower()
        if key in self.seen:
            raise ParseError(f"only one {key} parser directive can be used")
        self.seen.add(key)
        if key == "escape":
            self._set_escape(match.group(2))


def _is_comment(line: str) -> bool:
    return line.lstrip().startswith("#")


def _trim_continuation(line: str, d: _Directives) -> tuple[str, bool]:
    if d.continuation.search(line):
        return d.continuation.sub(r"\1", line), False
    return line, True


def _strip_comment(line: str) -> str:
    return "" if line.startswith("#") else line


def parse(text: str) -> ParseResult:
    """The instruction nodes of a Dockerfile (parser.Parse)."""
    d = _Directives()
    lines = [line.removesuffix("\r") for line in text.removeprefix("\ufeff").split("\n")]
    if lines and lines[-1] == "":
        lines.pop()
    nodes: list[Node] = []
    warnings: list[str] = []
    comments: list[str] = []
    current = 0
    i = 0
    while i < len(lines):
        raw = lines[i]
        i += 1
        if _is_comment(raw):
            comment = raw.lstrip()[1:].strip()
            comments = [*comments, comment] if comment else []
        stripped = raw.lstrip()
        try:
            d.check(stripped)
        except ParseError as e:
            raise ParseError(str(e), current) from None
        current += 1
        start = current
        line, end_of_line = _trim_continuation(_strip_comment(stripped), d)
        if end_of_line and line == "":
            continue
        empty_continuation = False
        while not end_of_line and i < len(lines):
            nxt = lines[i]
            i += 1
            d.check(nxt)
            current += 1
            if _is_comment(nxt):
                continue
            if not nxt.strip():
                empty_continuation = True
                continue
            part, end_of_line = _trim_continuation(_strip_comment(nxt), d)
            line += part
        if empty_continuation:
            warnings.append("[WARNING]: Empty continuation line found in:\n    " + line)
        try:
            node = node_from_line(line, d.escape)
        except ParseError as e:
            raise ParseError(str(e), start) from None
        node.start_line, node.end_line, node.comments = start, current, comments
        comments = []
        nodes.append(node)
    if warnings:
        warnings.append(
            "[WARNING]: Empty continuation lines will become errors in a future release."
        )
    if not nodes:
        raise ParseError("file with no instructions", current)
    return ParseResult(nodes, d.escape, warnings)


def node_from_line(line: str, escape: str) -> Node:
    """One (joined) instruction line to its node (newNodeFromLine)."""
    parts = _WHITESPACE.split(line.strip(), maxsplit=1)
    cmd = parts[0].lower()
    rest, flags = _extract_flags(parts[1]) if len(parts) == 2 else ("", [])
    rest = rest.strip()
    node = Node(cmd=cmd, flags=flags, original=line)
    if cmd in ("add", "copy", "volume"):
        node.args, node.json = _maybe_json_list(rest)
    elif cmd in ("cmd", "entrypoint", "run", "shell"):
        node.args, node.json = _maybe_json(rest)
    elif cmd in ("env", "label"):
        node.args = _name_values(rest, cmd.upper(), escape)
    elif cmd == "arg":
        node.args = parse_words(rest, escape)
    elif cmd in ("expose", "from"):
        node.args = _WHITESPACE.split(rest) if rest else []
    elif cmd in ("maintainer", "stopsignal", "user", "workdir"):
        node.args = [rest] if rest else []
    elif cmd == "healthcheck":
        node.args, node.json = _health(rest)
    elif cmd == "onbuild" and rest:
        node.sub = node_from_line(rest, escape)
        node.args = [node.sub.cmd, *node.sub.args]
    return node


def _extract_flags(line: str) -> tuple[str, list[str]]:
    """Leading `--name[=value]` words (extractBuilderFlags); `--` ends them."""
    words: list[str] = []
    pos = 0
    n = len(line)
    while True:
        while pos < n and line[pos].isspace():
            pos += 1
        if pos == n:
            return "", words
        if not line.startswith("--", pos):
            return line[pos:], words
        word = ""
        quote = ""
        blank_ok = False
        while pos < n:
            ch = line[pos]
            if quote:
                if ch == quote:
                    quote = ""
                elif ch == "\\" and pos + 1 < n:
                    pos += 1
                    word += line[pos]
                elif ch != "\\":
                    word += ch
                pos += 1
                continue
            if ch.isspace():
                break
            if ch in ("'", '"'):
                quote, blank_ok = ch, True
            elif ch == "\\":
                if pos + 1 < n:
                    pos += 1
                    word += line[pos]
            else:
                word += ch
            pos += 1
        if word == "--":
            return line[pos:], words
        if blank_ok or word:
            words.append(word)


def parse_words(rest: str, escape: str) -> list[str]:
    """Blank-separated words; quotes and escapes are kept for the lexer (parseWords)."""
    words: list[str] = []
    word = ""
    quote = ""
    blank_ok = False
    in_word = False
    i = 0
    n = len(rest)
    while i < n:
        ch = rest[i]
        if not in_word:
            if ch.isspace():
                i += 1
                continue
            in_word = True
        if quote:
            if ch == quote:
                quote = ""
            if ch == escape and quote != "'":
                if i + 1 == n:
                    i += 1
                    continue
                word += ch
                i += 1
                ch = rest[i]
            word += ch
            i += 1
            continue
        if ch.isspace():
            if blank_ok or word:
                words.append(word)
            word, blank_ok, in_word = "", False, False
            i += 1
            continue
        if ch in ("'", '"'):
            quote, blank_ok = ch, True
        if ch == escape:
            if i + 1 == n:
                i += 1
                continue
            word += ch
            i += 1
            ch = rest[i]
        word += ch
        i += 1
    if in_word and (blank_ok or word):
        words.append(word)
    return words


def _name_values(rest: str, key: str, escape: str) -> list[str]:
    """ENV/LABEL: [k1, v1, k2, v2, …] from `k=v …` or the old `k v` form (parseNameVal)."""
    words = parse_words(rest, escape)
    if not words:
        return []
    if "=" not in words[0]:
        parts = _WHITESPACE.split(rest, maxsplit=1)
        if len(parts) < 2:
            raise ParseError(f"{key} must have two arguments")
        return [parts[0], parts[1]]
    out: list[str] = []
    for word in words:
        if "=" not in word:
            raise ParseError(
                f"Syntax error - can't find = in {json.dumps(word)}. "
                "Must be of the form: name=value"
            )
        name, value = word.split("=", 1)
        out += [name, value]
    return out


class _NotJSON(Exception):
    pass


def _json_array(rest: str) -> list[str]:
    rest = rest.lstrip()
    if not rest.startswith("["):
        raise _NotJSON
    try:
        value, _ = json.JSONDecoder().raw_decode(rest)
    except ValueError:
        raise _NotJSON from None
    if not isinstance(value, list):
        raise _NotJSON
    if not all(isinstance(v, str) for v in value):
        raise ParseError(_NOT_STRING_ARRAY)
    return value


def _maybe_json(rest: str) -> tuple[list[str], bool]:
    if not rest:
        return [], False
    try:
        return _json_array(rest), True
    except _NotJSON:
        return [rest], False


def _maybe_json_list(rest: str) -> tuple[list[str], bool]:
    try:
        return _json_array(rest), True
    except _NotJSON:
        return (_WHITESPACE.split(rest) if rest else []), False


def _health(rest: str) -> tuple[list[str], bool]:
    parts = re.split(r"\s+", rest, maxsplit=1)
    if not rest or not parts[0]:
        return [], False
    typ = parts[0]
    args, is_json = _maybe_json(parts[1].lstrip() if len(parts) > 1 else "")
    return [typ, *args], is_json
