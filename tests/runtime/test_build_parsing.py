"""The builder's pure parts: the Dockerfile parser and lexer (BuildKit's rules and words),
.dockerignore matching (dockerd's fileutils rules), build args and the cache's config compare."""

from __future__ import annotations

import pytest

from proto.docker.errors import InvalidParameter
from runtime.build_args import BuildArgs
from runtime.build_images import same_config
from runtime.dockerfile_instructions import parse_stages
from runtime.dockerfile_lex import process_word, process_words
from runtime.dockerfile_parse import ParseError, parse
from runtime.dockerignore import Matcher, read_patterns


def stages(text: str):  # noqa: ANN201
    return parse_stages(parse(text).nodes)


def test_continuations_comments_and_forms() -> None:
    found, meta = stages(
        "ARG V=1\nFROM busybox:${V} AS Base\nRUN echo a \\\n# dropped\n  && echo b\n"
        'CMD ["sh", "-c", "x"]\nENV A=1 B="c d"\nENV OLD form value\n'
        "COPY --chown=1:2 a b /d/\nHEALTHCHECK --retries=2 CMD true\nONBUILD RUN x\n"
    )
    assert [m.code for m in meta] == ["ARG V=1"]
    assert found[0].base == "busybox:${V}" and found[0].name == "base"
    run, cmd, env, old, copy, health, onbuild = found[0].commands
    assert run.args == ["echo a   && echo b"] and not run.json
    assert cmd.args == ["sh", "-c", "x"] and cmd.json
    assert env.args == ["A", "1", "B", '"c d"'] and old.args == ["OLD", "form value"]
    assert copy.args == ["a", "b", "/d/"] and copy.flags == {"chown": "1:2"}
    assert health.health == {"Test": ["CMD-SHELL", "true"], "Retries": 2}
    assert onbuild.expression == "RUN x"


def test_escape_directive() -> None:
    found, _ = stages("# escape=`\nFROM busybox\nRUN echo a `\n  b\n")
    assert found[0].commands[0].args == ["echo a   b"]
    assert parse("# escape=`\nFROM x\n").escape == "`"
    with pytest.raises(ParseError, match="invalid escape token"):
        parse("# escape=x\nFROM x\n")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "FROM busybox\nRUN true\nFOO bar\n",
            "dockerfile parse error line 3: unknown instruction: FOO",
        ),  # noqa: E501
        (
            "FROM a b\n",
            "dockerfile parse error line 1: FROM requires either one or three arguments",
        ),  # noqa: E501
        (
            "FROM a\nCOPY x\n",
            "dockerfile parse error line 2: COPY requires at least two arguments, but only one "
            "was provided. Destination could not be determined",
        ),
        (
            "FROM a\nSHELL sh -c\n",
            "dockerfile parse error line 2: SHELL requires the arguments to be in JSON form",
        ),  # noqa: E501
        (
            "FROM a\nONBUILD FROM b\n",
            "dockerfile parse error line 2: FROM isn't allowed as an ONBUILD trigger",
        ),  # noqa: E501
        ("FROM a\nCOPY --nope=1 x y\n", "dockerfile parse error line 2: Unknown flag: nope"),
        (
            "FROM a AS 1x\n",
            'dockerfile parse error line 1: invalid name for build stage: "1x", '
            "name can't start with a number or contain symbols",
        ),
        ("RUN true\n", "no build stage in current context"),
    ],
)
def test_errors_in_dockers_words(text: str, message: str) -> None:
    with pytest.raises(InvalidParameter) as err:
        stages(text)
    assert str(err.value) == message


def test_parser_errors() -> None:
    with pytest.raises(ParseError, match="^ENV must have two arguments$"):
        parse("FROM a\nENV foo\n")
    with pytest.raises(ParseError, match="file with no instructions"):
        parse("# just a comment\n\n")


def test_lexer() -> None:
    env = ["A=1", "B=two words"]
    assert process_word("\"$A\" ${B:-x} ${C:-dflt} \\$D '$A'", env) == "1 two words dflt $D $A"
    assert process_word("${A:+set}${C:+set}", env) == "set"
    assert process_words('a "b c" $B', env) == ["a", "b c", "two", "words"]
    with pytest.raises(InvalidParameter, match="C: is not allowed to be unset"):
        process_word("${C:?}", env)
    with pytest.raises(InvalidParameter, match="missing ':' in substitution"):
        process_word("${A", env)


def test_dockerignore_rules() -> None:
    m = Matcher(read_patterns("# c\n**/*.log\n!keep.log\n/secret\ndocs/**\n*/tmp\n"))
    assert m.matches("a.log") and m.matches("x/y/z.log") and not m.matches("keep.log")
    assert m.matches("secret") and m.matches("docs/a/b") and m.matches("src/tmp")
    assert m.matches("src/tmp/deep/file")  # a matching parent directory excludes its contents
    assert not m.matches("a.txt") and not m.matches("x/src/tmp")
    assert read_patterns("./a/../b\n!/c/\n") == ["b", "!c"]


def test_build_args() -> None:
    args = BuildArgs({"A": "from-cli", "HTTP_PROXY": "p", "UNUSED": "u"})
    args.add_arg("A", "default")
    args.add_arg("B", "b-default")
    args.add_arg("C", None)
    assert args.all_allowed() == {"A": "from-cli", "B": "b-default", "HTTP_PROXY": "p"}
    assert args.filter_allowed(["B=env"]) == ["A=from-cli", "HTTP_PROXY=p"]
    assert args.unused() == ["UNUSED"]
    stage = args.clone_for_stage()
    assert stage.all_allowed() == {"HTTP_PROXY": "p"}


def test_cache_compare() -> None:
    base = {"Cmd": ["/bin/sh", "-c", "#(nop) ENV A=1"], "Env": ["A=1"], "Labels": {"x": "1"}}
    assert same_config(base, dict(base, Image="sha256:other", Hostname="h"))
    assert not same_config(base, dict(base, Cmd=["/bin/sh", "-c", "#(nop) ENV A=2"]))
    assert not same_config(base, dict(base, Labels={"x": "2"}))
    assert not same_config(base, dict(base, WorkingDir="/app"))
    assert not same_config(dict(base, OpenStdin=True), dict(base, OpenStdin=True))
