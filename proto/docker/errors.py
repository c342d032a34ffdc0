"""Errors a user can cause, each carrying the HTTP status and wording dockerd uses."""

from __future__ import annotations

import json


class DockerError(Exception):
    """A failure reported to a Docker client as `status` + `{"message": message}`."""

    status = 500

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status

    def __str__(self) -> str:
        return self.message


class NotFound(DockerError):
    status = 404


class Conflict(DockerError):
    status = 409


class InvalidParameter(DockerError):
    status = 400


class NotModified(DockerError):
    status = 304


class SystemError_(DockerError):
    status = 500


def go_quote(text: str) -> str:
    """`text` as Go's %q writes it into dockerd's messages: quoted and escaped, with printable
    non-ASCII characters kept as they are (strconv.Quote)."""
    return json.dumps(text, ensure_ascii=False)
