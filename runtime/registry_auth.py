"""Registry authentication as dockerd does it: the challenge of `GET /v2/` decides.

No challenge: anonymous. `Basic`: the credentials on every request (none given: `no basic auth
credentials`). `Bearer realm=…,service=…`: a token for the repository's `pull` scope from the
realm (Docker Hub's token service), fetched with the credentials as Basic auth, with an identity
token as an OAuth refresh token, or anonymously; a registry token from the client is used as is.
"""

from __future__ import annotations

import base64
import contextlib
import re
from dataclasses import dataclass
from typing import Any

import aiohttp

from proto.docker.errors import DockerError
from runtime.registry_errors import error_from_response

_TOKEN_LIMIT = 1 << 20
_PARAM = re.compile(r'\s*([a-zA-Z0-9_.-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))\s*,?')


@dataclass(frozen=True)
class Credentials:
    """What `X-Registry-Auth` carries (types.AuthConfig), for one registry."""

    username: str = ""
    password: str = ""
    identity_token: str = ""
    registry_token: str = ""

    @classmethod
    def from_auth_config(cls, doc: dict[str, Any]) -> Credentials:
        """From the decoded AuthConfig JSON (`auth` is base64 `user:password`)."""
        username = str(doc.get("username") or "")
        password = str(doc.get("password") or "")
        auth = str(doc.get("auth") or "")
        if auth and not username:
            with contextlib.suppress(ValueError, UnicodeDecodeError):
                username, _, password = base64.b64decode(auth).decode().partition(":")
        return cls(
            username=username,
            password=password,
            identity_token=str(doc.get("identitytoken") or ""),
            registry_token=str(doc.get("registrytoken") or ""),
        )


def parse_challenges(header: str) -> list[tuple[str, dict[str, str]]]:
    """`WWW-Authenticate` challenges as (lower-case scheme, parameters)."""
    out: list[tuple[str, dict[str, str]]] = []
    rest = header.strip()
    while rest:
        m = re.match(r"([A-Za-z]+)\s*", rest)
        if m is None:
            break
        scheme, rest = m.group(1).lower(), rest[m.end() :]
        params: dict[str, str] = {}
        while True:
            p = _PARAM.match(rest)
            if p is None or not p.group(0).strip():
                break
            value = p.group(2) if p.group(2) is not None else p.group(3)
            params[p.group(1).lower()] = re.sub(r"\\(.)", r"\1", value or "")
            rest = rest[p.end() :]
        out.append((scheme, params))
        rest = rest.lstrip(", ")
    return out


class Authorizer:
    """The Authorization header for a repository's requests, from the registry's challenge."""

    def __init__(self, creds: Credentials, challenge: str) -> None:
        self.creds = creds
        self.challenges = dict(parse_challenges(challenge))
        self._tokens: dict[str, str] = {}

    @property
    def scheme(self) -> str:
        if "bearer" in self.challenges:
            return "bearer"
        if "basic" in self.challenges:
            return "basic"
        return ""

    async def header(
        self, session: aiohttp.ClientSession, scope: str, url: str, method: str
    ) -> str:
        """The value of `Authorization` (empty: none) for a request under `scope`."""
        if self.scheme == "basic":
            if not self.creds.username:
                raise DockerError(f'{method} "{url}": no basic auth credentials')
            return "Basic " + _basic(self.creds.username, self.creds.password)
        if self.scheme == "bearer":
            if self.creds.registry_token:
                return "Bearer " + self.creds.registry_token
            token = self._tokens.get(scope)
            if token is None:
                token = await self._fetch_token(session, scope, url, method)
                self._tokens[scope] = token
            return "Bearer " + token
        return ""

    async def _fetch_token(
        self, session: aiohttp.ClientSession, scope: str, url: str, method: str
    ) -> str:
        params = self.challenges["bearer"]
        realm = params.get("realm", "")
        if not realm.startswith(("https://", "http://")):
            raise DockerError(f'{method} "{url}": invalid token auth challenge realm: {realm!r}')
        query = {"scope": scope}
        if params.get("service"):
            query["service"] = params["service"]
        try:
            if self.creds.identity_token:
                form = {
                    "grant_type": "refresh_token",
                    "refresh_token": self.creds.identity_token,
                    "client_id": "docker",
                    **query,
                }
                resp_ctx = session.post(realm, data=form)
            else:
                headers = {}
                if self.creds.username:
                    headers["Authorization"] = "Basic " + _basic(
                        self.creds.username, self.creds.password
                    )
                query["client_id"] = "docker"
                if self.creds.username:
                    query["account"] = self.creds.username
                resp_ctx = session.get(realm, params=query, headers=headers)
            async with resp_ctx as resp:
                body = await resp.content.read(_TOKEN_LIMIT)
                if resp.status != 200:
                    err = error_from_response(resp.status, body)
                    raise DockerError(f'{method} "{url}": {err}', err.status)
                doc = await _json(body)
        except aiohttp.ClientError as e:
            raise DockerError(f'{method} "{url}": {e}') from None
        token = doc.get("token") or doc.get("access_token") if isinstance(doc, dict) else None
        if not isinstance(token, str) or not token:
            raise DockerError(f'{method} "{url}": authorization server did not include a token')
        return token


def _basic(username: str, password: str) -> str:
    return base64.b64encode(f"{username}:{password}".encode()).decode()


async def _json(body: bytes) -> Any:
    import json

    try:
        return json.loads(body)
    except ValueError:
        return None
