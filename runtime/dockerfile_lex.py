"""The Dockerfile shell lexer (BuildKit's frontend/dockerfile/shell, as dockerd 20.10 vendors it):
one word or a list of words with quotes removed, the escape token applied and `$VAR`,
`${VAR}`, `${VAR:-word}`, `${VAR:+word}`, `${VAR?msg}`, `${VAR:?msg}` expanded from an
environment list. Errors carry the lexer's own words (`failed to process "…": …`).
"""

from __future__ import annotations

import json

from proto.docker.errors import InvalidParameter

_EOF = ""
_SPECIAL_PARAMS = set("@*#?-$!0")


class LexError(Exception):
    pass


def build_envs(env: list[str]) -> dict[str, str]:
    """`NAME=value` entries to a map (a bare NAME is an empty value); later entries win."""
    out: dict[str, str] = {}
    for entry in env:
        key, _, value = entry.partition("=")
        out[key] = value
    return out


class _Words:
    """BuildKit's wordsStruct: splits expanded text on blanks, keeps quoted text whole."""

    def __init__(self) -> None:
        self.word = ""
        self.words: list[str] = []
        self.in_word = False

    def add_char(self, ch: str) -> None:
        if ch.isspace() and self.in_word:
            if self.word:
                self.words.append(self.word)
                self.word = ""
                self.in_word = False
        elif not ch.isspace():
            self.add_raw(ch)

    def add_raw(self, text: str) -> None:
        self.word += text
        self.in_word = True

    def add_string(self, text: str) -> None:
        for ch in text:
            self.add_char(ch)

    def get(self) -> list[str]:
        if self.word:
            self.words.append(self.word)
            self.word = ""
            self.in_word = False
        return self.words


class _Scanner:
    def __init__(self, text: str, env: dict[str, str], escape: str) -> None:
        self.text = text
        self.pos = 0
        self.env = env
        self.escape = escape

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else _EOF

    def next(self) -> str:
        ch = self.peek()
        if ch:
            self.pos += 1
        return ch

    def stop_on(self, stop: str) -> tuple[str, list[str]]:
        result: list[str] = []
        words = _Words()
        while self.peek() != _EOF:
            ch = self.peek()
            if stop and ch == stop:
                self.next()
                return "".join(result), words.get()
            if ch in ("'", '"', "$"):
                if ch == "'":
                    tmp = self._single_quote()
                elif ch == '"':
                    tmp = self._double_quote()
                else:
                    tmp = self._dollar()
                result.append(tmp)
                if ch == "$":
                    words.add_string(tmp)
                else:
                    words.add_raw(tmp)
                continue
            ch = self.next()
            if ch == self.escape:
                ch = self.next()
                if ch == _EOF:
                    break
                words.add_raw(ch)
            else:
                words.add_char(ch)
            result.append(ch)
        if stop:
            raise LexError(f"unexpected end of statement while looking for matching {stop}")
        return "".join(result), words.get()

    def _single_quote(self) -> str:
        self.next()
        out: list[str] = []
        while True:
            ch = self.next()
            if ch == _EOF:
                raise LexError(
                    "unexpected end of statement while looking for matching single-quote"
                )
            if ch == "'":
                return "".join(out)
            out.append(ch)

    def _double_quote(self) -> str:
        self.next()
        out: list[str] = []
        while True:
            ch = self.peek()
            if ch == _EOF:
                raise LexError(
                    "unexpected end of statement while looking for matching double-quote"
                )
            if ch == '"':
                self.next()
                return "".join(out)
            if ch == "$":
                out.append(self._dollar())
                continue
            ch = self.next()
            if ch == self.escape:
                nxt = self.peek()
                if nxt == _EOF:
                    continue
                if nxt in ('"', "$", self.escape):
                    ch = self.next()
            out.append(ch)

    def _dollar(self) -> str:
        self.next()
        if self.peek() != "{":
            name = self._name()
            if not name:
                return "$"
            return self.env.get(name, "")
        self.next()
        if self.peek() == _EOF:
            raise LexError("syntax error: missing '}'")
        if self.peek() in ("{", "}", ":"):
            raise LexError("syntax error: bad substitution")
        name = self._name()
        ch = self.next()
        if ch == "}":
            return self.env.get(name, "")
        if ch == "?":
            word = self._sub_word()
            if name not in self.env:
                raise LexError(f"{name}: {word or 'is not allowed to be unset'}")
            return self.env[name]
        if ch == ":":
            modifier = self.next()
            word = self._sub_word()
            value = self.env.get(name, "")
            if modifier == "+":
                return word if value else value
            if modifier == "-":
                return value or word
            if modifier == "?":
                if name not in self.env:
                    raise LexError(f"{name}: {word or 'is not allowed to be unset'}")
                if not value:
                    raise LexError(f"{name}: {word or 'is not allowed to be empty'}")
                return value
            raise LexError(f"unsupported modifier ({modifier}) in substitution")
        raise LexError("missing ':' in substitution")

    def _sub_word(self) -> str:
        try:
            word, _ = self.stop_on("}")
        except LexError:
            if self.peek() == _EOF:
                raise LexError("syntax error: missing '}'") from None
            raise
        return word

    def _name(self) -> str:
        name: list[str] = []
        while self.peek() != _EOF:
            ch = self.peek()
            if not name and ch.isdigit():
                while self.peek() != _EOF and self.peek().isdigit():
                    name.append(self.next())
                return "".join(name)
            if not name and ch in _SPECIAL_PARAMS:
                return self.next()
            if not (ch.isalpha() or ch.isdigit() or ch == "_"):
                break
            name.append(self.next())
        return "".join(name)


def _process(text: str, env: list[str] | dict[str, str], escape: str) -> tuple[str, list[str]]:
    envs = env if isinstance(env, dict) else build_envs(env)
    try:
        return _Scanner(text, envs, escape).stop_on(_EOF)
    except LexError as e:
        raise InvalidParameter(f"failed to process {json.dumps(text)}: {e}") from None


def process_word(text: str, env: list[str] | dict[str, str], escape: str = "\\") -> str:
    """One word: quotes removed, escapes applied, variables expanded (ProcessWord)."""
    return _process(text, env, escape)[0]


def process_words(text: str, env: list[str] | dict[str, str], escape: str = "\\") -> list[str]:
    """The words of `text` after expansion, split on blanks outside quotes (ProcessWords)."""
    return _process(text, env, escape)[1]
