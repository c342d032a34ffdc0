"""Every pattern a client sends (filters' `name=`, placement `/regex/` and globs, image
`reference=`) is matched here, by RE2: dockerd and classic Swarm use Go's regexp, which is RE2,
so the syntax is theirs and matching is linear in the text, whatever the pattern. Python's `re`
backtracks: `(a+)+$` against a long string would hold the manager's event loop for ever.
"""

from __future__ import annotations

import functools
from typing import Protocol

import re2

ENGINE = "re2"
# Compiled patterns are kept per process; a client sending endless distinct patterns only
# churns this cache, it cannot grow it.
_CACHE_SIZE = 1024
# Above this a pattern is refused (no match), like RE2's own program-size limit but cheaper.
MAX_PATTERN = 4096
_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # a client's bad pattern is an answer (no match), not a log line


class Pattern(Protocol):
    def search(self, text: str) -> object | None: ...


@functools.lru_cache(maxsize=_CACHE_SIZE)
def compile_regex(pattern: str) -> Pattern | None:
    """A compiled Go-syntax regular expression, or None where Go's regexp.Compile fails."""
    if len(pattern) > MAX_PATTERN:
        return None
    try:
        return re2.compile(pattern, _OPTIONS)  # type: ignore[no-any-return]
    except re2.error:
        return None


def search(pattern: str, text: str) -> bool:
    """Go's regexp.MatchString: the pattern found anywhere in text; an invalid one never is."""
    compiled = compile_regex(pattern)
    return compiled is not None and compiled.search(text) is not None


def glob_regex(glob: str) -> str:
    """A shell glob (`*`, `?`, `[...]`) as an anchored RE2 pattern over the whole string."""
    out: list[str] = []
    i = 0
    while i < len(glob):
        ch = glob[i]
        if ch == "*":
            out.append(".*")
        elif ch == "?":
            out.append(".")
        elif ch == "[":
            end = glob.find("]", i + 2 if glob[i + 1 : i + 2] in ("!", "^", "]") else i + 1)
            if end < 0:
                out.append(re2.escape(ch))
            else:
                body = glob[i + 1 : end]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = end
        else:
            out.append(re2.escape(ch))
        i += 1
    return "(?s)^" + "".join(out) + r"\z"


def glob_match(text: str, glob: str) -> bool:
    """fnmatch.fnmatchcase's answer, computed in time linear in the text."""
    compiled = compile_regex(glob_regex(glob))
    return compiled is not None and compiled.search(text) is not None
