"""Image references as Docker parses them: `Reference`, `parse_reference` and `docker tag` targets.

The grammar and error texts are Docker's distribution/reference (ParseNormalizedNamed); names are
kept fully qualified (docker.io/library/busybox) and printed in the familiar form (busybox).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from proto.docker.errors import InvalidParameter

# A full image id's hex: never valid as a repository name.
HEX64 = re.compile(r"[a-f0-9]{64}")

_ALNUM = r"[a-z0-9]+"
_SEP = r"(?:[._]|__|[-]*)"
_COMPONENT = f"{_ALNUM}(?:{_SEP}{_ALNUM})*"
_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*(?::[0-9]+)?"
_NAME = rf"(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*"
_TAG_RE = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_REFERENCE = re.compile(rf"({_NAME})(?::({_TAG_RE}))?(?:@({_DIGEST}))?", re.ASCII)
TAG_ONLY = re.compile(_TAG_RE, re.ASCII)
_NAME_MAX = 255
_DEFAULT_DOMAIN = "docker.io"


@dataclass(frozen=True)
class Reference:
    """A normalized image reference: `name` is fully qualified (docker.io/library/busybox)."""

    name: str
    tag: str = ""
    digest: str = ""

    def familiar_name(self) -> str:
        prefix = _DEFAULT_DOMAIN + "/"
        if not self.name.startswith(prefix):
            return self.name
        rest = self.name[len(prefix) :]
        if rest.startswith("library/") and rest.count("/") == 1:
            return rest[len("library/") :]
        return rest

    def familiar(self) -> str:
        text = self.familiar_name()
        if self.tag:
            text += ":" + self.tag
        if self.digest:
            text += "@" + self.digest
        return text

    def tagged(self) -> Reference:
        """TagNameOnly: `latest` when neither tag nor digest is given."""
        if self.tag or self.digest:
            return self
        return Reference(self.name, "latest")


def parse_reference(text: str) -> Reference:
    """Docker's ParseNormalizedNamed, with its error texts."""
    if HEX64.fullmatch(text):
        raise InvalidParameter(
            f"invalid repository name ({text}), cannot specify 64-byte hexadecimal strings"
        )
    domain, remainder = _split_domain(text)
    remote = remainder.split(":", 1)[0]
    if remote.lower() != remote:
        raise InvalidParameter("repository name must be lowercase")
    return _parse_exact(f"{domain}/{remainder}")


def tag_target(repo: str, tag: str = "") -> str:
    """The familiar `name:tag` that `docker tag … repo[:tag]` creates, refused as dockerd does.

    An empty `tag` keeps the one in `repo` (`foo:1`), else `latest`, like the API's query.
    """
    new = parse_reference(repo)
    if tag:
        if not TAG_ONLY.fullmatch(tag):
            raise InvalidParameter("invalid tag format")
        new = Reference(new.name, tag)
    if new.digest:
        raise InvalidParameter("refusing to create a tag with a digest reference")
    new = new.tagged()
    if new.familiar_name() == "sha256":
        raise InvalidParameter("refusing to create an ambiguous tag using digest algorithm as name")
    return new.familiar()


def _split_domain(text: str) -> tuple[str, str]:
    first, sep, rest = text.partition("/")
    if not sep or ("." not in first and ":" not in first and first != "localhost"):
        domain, remainder = _DEFAULT_DOMAIN, text
    else:
        domain, remainder = first, rest
    if domain == "index.docker.io":
        domain = _DEFAULT_DOMAIN
    if domain == _DEFAULT_DOMAIN and "/" not in remainder:
        remainder = "library/" + remainder
    return domain, remainder


def _parse_exact(text: str) -> Reference:
    m = _REFERENCE.fullmatch(text)
    if m is None:
        if not text:
            raise InvalidParameter("repository name must have at least one component")
        if _REFERENCE.fullmatch(text.lower()):
            raise InvalidParameter("repository name must be lowercase")
        raise InvalidParameter("invalid reference format")
    name, tag, digest = m.group(1), m.group(2) or "", m.group(3) or ""
    if len(name) > _NAME_MAX:
        raise InvalidParameter(f"repository name must not be more than {_NAME_MAX} characters")
    return Reference(name, tag, digest)
