"""What a registry or the network says, in dockerd's words.

Registries answer errors as `{"errors": [{"code": "MANIFEST_UNKNOWN", "message": …}]}`
(distribution's errcode); dockerd prints one as `manifest unknown: <message>` and wraps the
not-found kinds with the reference (`manifest for busybox:nope not found: …`,
distribution/errors.go notFoundError), everything else is a 500. Connection failures read as Go's
net/http errors: `Get "https://host/v2/": dial tcp: lookup host: no such host`.
"""

from __future__ import annotations

import json
import socket
import ssl

import aiohttp

from proto.docker.errors import DockerError, NotFound

# distribution's errcode descriptors: the default message of each code.
_DEFAULT_MESSAGES = {
    "UNAUTHORIZED": "authentication required",
    "DENIED": "requested access to the resource is denied",
    "UNSUPPORTED": "The operation is unsupported.",
    "TOOMANYREQUESTS": "too many requests",
    "MANIFEST_UNKNOWN": "manifest unknown",
    "NAME_UNKNOWN": "repository name not known to registry",
    "BLOB_UNKNOWN": "blob unknown to registry",
    "MANIFEST_INVALID": "manifest invalid",
    "NAME_INVALID": "invalid repository name",
}


class RequestError(DockerError):
    """A request that failed before the registry could answer it (the network, TLS, or getting
    its credentials), as Go's url.Error prints it: `Get "url": <cause>`. dockerd's push reports
    only `cause` (distribution's retryOnError unwraps it); pull and login report the whole."""

    def __init__(self, method: str, url: str, cause: DockerError) -> None:
        super().__init__(f'{method} "{url}": {cause.message}', cause.status)
        self.cause = cause


class RegistryError(DockerError):
    """An error of the registry's own (errcode): `code` as the registry sent it."""

    def __init__(self, code: str, message: str, status: int = 500) -> None:
        self.code = code
        text = message or _DEFAULT_MESSAGES.get(code, "unknown error")
        super().__init__(f"{code.lower().replace('_', ' ')}: {text}", status)


def error_from_response(status: int, body: bytes, www_authenticate: str = "") -> DockerError:
    """distribution's HandleErrorResponse: the first errcode error of a 4xx answer."""
    if 400 <= status < 500:
        bearer = _bearer_error(www_authenticate)
        if bearer is not None:
            return bearer
        try:
            doc = json.loads(body)
        except ValueError:
            doc = None
        if isinstance(doc, dict):
            errors = doc.get("errors")
            if isinstance(errors, list) and errors and isinstance(errors[0], dict):
                first = errors[0]
                return RegistryError(
                    str(first.get("code", "UNKNOWN")), str(first.get("message", ""))
                )
            if isinstance(doc.get("details"), str) and status == 401:
                return RegistryError("UNAUTHORIZED", doc["details"])
        if status == 401:
            return RegistryError("UNAUTHORIZED", "")
        snippet = body[:200].decode("utf-8", "replace").strip()
        return DockerError(f"error parsing HTTP {status} response body: {json.dumps(snippet)}")
    return DockerError(f"received unexpected HTTP status: {status} {_reason(status)}")


def _bearer_error(header: str) -> DockerError | None:
    """RFC 6750 errors in a Bearer challenge (invalid_token, insufficient_scope)."""
    from runtime.registry_auth import parse_challenges  # one parser for every challenge

    for scheme, params in parse_challenges(header):
        if scheme != "bearer":
            continue
        code = {"invalid_token": "UNAUTHORIZED", "insufficient_scope": "DENIED"}.get(
            params.get("error", "")
        )
        if code:
            return RegistryError(code, params.get("error_description", ""))
    return None


def _reason(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def not_found_for(err: DockerError, familiar: str, familiar_name: str) -> DockerError:
    """translatePullError: denied / manifest unknown / name unknown say what was not found."""
    if not isinstance(err, RegistryError):
        return err
    if err.code == "DENIED":
        return NotFound(
            f"pull access denied for {familiar_name}, repository does not exist or may "
            f"require 'docker login': {err.message}"
        )
    if err.code == "MANIFEST_UNKNOWN":
        return NotFound(f"manifest for {familiar} not found: {err.message}")
    if err.code == "NAME_UNKNOWN":
        return NotFound(f"repository {familiar_name} not found: {err.message}")
    return err


def network_error(method: str, url: str, host: str, port: int, exc: BaseException) -> RequestError:
    """A failed request as Go's url.Error prints it: `Get "url": dial tcp …`."""
    return RequestError(method, url, DockerError(_go_net_text(host, port, exc)))


def _go_net_text(host: str, port: int, exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        cert_error = exc.certificate_error
        if isinstance(cert_error, ssl.SSLCertVerificationError) and cert_error.verify_code in (
            19,
            20,
            21,
        ):
            return "x509: certificate signed by unknown authority"
        return f"x509: {getattr(cert_error, 'verify_message', None) or cert_error}"
    if isinstance(exc, aiohttp.ClientSSLError):
        return f"remote error: tls: {exc}"
    os_error = getattr(exc, "os_error", None)
    if isinstance(os_error, socket.gaierror) or isinstance(exc, socket.gaierror):
        return f"dial tcp: lookup {host}: no such host"
    if isinstance(os_error, ConnectionRefusedError):
        return f"dial tcp {host}:{port}: connect: connection refused"
    if isinstance(os_error, OSError) and os_error.errno is not None:
        return f"dial tcp {host}:{port}: connect: {os_error.strerror.lower()}"
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        return f"dial tcp {host}:{port}: i/o timeout"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "EOF"
    return str(exc) or type(exc).__name__
