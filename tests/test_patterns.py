"""Client-supplied patterns are matched by RE2 (proto/patterns.py), never by Python's
backtracking `re`: an evil pattern must not hold the manager's event loop."""

from __future__ import annotations

import concurrent.futures
import fnmatch

import re2

from manager.scheduler.expressions import parse_expr
from proto import patterns

EVIL = "(a+)+$"
TEXT = "a" * 100_000 + "!"


def test_the_engine_is_re2() -> None:
    assert patterns.ENGINE == "re2"
    compiled = patterns.compile_regex("x+")
    assert isinstance(compiled, re2._Regexp)


def test_an_evil_pattern_returns() -> None:
    # A generous bound on a worker thread: a backtracking engine would not finish in years.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        hit = pool.submit(patterns.search, EVIL, TEXT).result(timeout=30)
        expr = pool.submit(lambda: parse_expr("node==/(a+)+$/").hit(TEXT)).result(timeout=30)
    assert hit is False and expr is False


def test_go_semantics() -> None:
    assert patterns.search("^web", "web-1")
    assert not patterns.search("[", "[")  # Go's regexp.Compile fails: no match, no error
    assert not patterns.search(r"(\w)\1", "aa")  # backreferences are not RE2
    assert patterns.search("a(?i)B", "ab")  # inline flags anywhere, as in Go
    assert not patterns.search("x" * (patterns.MAX_PATTERN + 1), "x")


def test_globs_answer_as_fnmatch() -> None:
    names = ["node-1", "node-10", "a.b", "x[", "redis:latest", "a\nb", "n?de"]
    globs = ["node-*", "node-?", "node-[0-9]", "node-[!1]*", "a?b", "x[", "red*", "a*b", "*"]
    for name in names:
        for glob in globs:
            assert patterns.glob_match(name, glob) == fnmatch.fnmatchcase(name, glob), (name, glob)
