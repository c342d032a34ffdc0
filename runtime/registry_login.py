"""`docker login` (POST /auth): check credentials against a registry as dockerd 20.10's loginV2.

Ping `/v2/` (HTTPS, then plain HTTP for an insecure registry), then `GET /v2/` again with the
credentials the challenge asks for: Basic, or a Bearer token fetched for no scope with
`offline_token=true` (a refresh token the service gives back is the IdentityToken answered).
It is RegistryClient and its Authorizer doing it: the same auth code as pull and push.

Answers and errors in dockerd's words: `Login Succeeded`; a token service refusing the
credentials is 401 `Get "https://HOST/v2/": unauthorized: …` (translateV2AuthError); a registry
answering the authenticated `GET /v2/` with anything but 200 (htpasswd Basic auth and a wrong
password) is `login attempt to https://HOST/v2/ failed with status: 401 Unauthorized` (500).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import urlsplit

from proto.docker.errors import DockerError, InvalidParameter, go_quote
from runtime.registry_auth import Credentials
from runtime.registry_client import DOCKER_HUB, RegistryClient, RegistryConfig
from runtime.registry_errors import RegistryError, RequestError

_HUB_NAMES = ("", "docker.io", "index.docker.io")
_HOST = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?")


@dataclass(frozen=True)
class LoginResult:
    status: str
    identity_token: str


def registry_domain(server_address: str) -> str:
    """The registry `docker login SERVER` names (dockerd's Auth: `https://` is assumed, the
    URL's host is kept); none, or Docker Hub's index, is Docker Hub."""
    address = server_address
    if not address.startswith(("https://", "http://")):
        address = "https://" + address
    try:
        host = urlsplit(address).netloc.rpartition("@")[2]
    except ValueError as e:
        raise InvalidParameter(f"unable to parse server address: {e}") from None
    if host.lower() in _HUB_NAMES:
        return DOCKER_HUB
    if not _HOST.fullmatch(host):
        raise InvalidParameter(
            f"unable to parse server address: parse {go_quote(address)}: invalid host"
        )
    return host


async def login(config: RegistryConfig, server_address: str, creds: Credentials) -> LoginResult:
    domain = registry_domain(server_address)
    async with RegistryClient(config, domain, "", creds, offline_token=True) as client:
        url = f"{client.base}/v2/"
        try:
            answer = await client.send("GET", url, ok=range(100, 600))
        except RequestError as e:
            cause = e.cause
            if isinstance(cause, RegistryError) and cause.code == "UNAUTHORIZED":
                raise DockerError(e.message, 401) from None
            raise
        if answer.status != 200:
            text = _status_text(answer.status)
            raise DockerError(f"login attempt to {url} failed with status: {answer.status} {text}")
        token = client.authorizer.refresh_token or creds.identity_token
    return LoginResult("Login Succeeded", token)


def _status_text(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""
