"""Registry authentication as dockerd does it: the challenge of `GET /v2/` decides.

No challenge: anonymous. `Basic`: the credentials on every request (none given: `no basic auth
credentials`). `Bearer realm=…,service=…`: a token for the request's scopes (a repository's
`pull`, or `push,pull`; none for a login) from the realm (Docker Hub's token service), fetched
with the credentials as Basic auth, with an identity token as an OAuth refresh token, or
anonymously; a registry token from the client is used as is. Pull, push and login all go
through `Authorizer`: there is no other auth flow.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from proto.docker.errors import DockerError
from runtime.registry_errors import RequestError, error_from_response

CLIENT_ID = "docker"  # dockerd's registry.AuthClientID
_TOKEN_LIMIT = 1 << 20
_MIN_TOKEN_LIFETIME = 60  # seconds (distribution's minimumTokenLifetimeSeconds)
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


# The key `docker login` (and so the CLI's X-Registry-Config) files Docker Hub's credentials under.
INDEX_SERVER = "https://index.docker.io/v1/"


def resolve_auth_config(configs: dict[str, Any], domain: str) -> Credentials:
    """dockerd's registry.ResolveAuthConfig: the credentials for `domain` among the ones a
    build's X-Registry-Config carries ({server: AuthConfig}). Docker Hub's are under
    INDEX_SERVER only; another registry's under its name, else under a key that is its name once
    the scheme and path are stripped (a legacy config's `https://host/v1/`)."""
    official = domain == "docker.io"
    key = INDEX_SERVER if official else domain
    found = configs.get(key)
    if found is None and not official:
        for server, doc in configs.items():
            bare = server.removeprefix("http://").removeprefix("https://")
            if bare.split("/", 1)[0] == domain:
                found = doc
                break
    return Credentials.from_auth_config(found) if isinstance(found, dict) else Credentials()


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
    """The Authorization header for a repository's requests, from the registry's challenge.

    Bearer tokens are fetched once per set of scopes and kept until they expire (the token's
    `expires_in`, at least a minute, as distribution's token handler). `offline`: ask for a
    refresh token too (`offline_token=true`, as dockerd's login does); one the token service
    gives is kept in `refresh_token` (the IdentityToken `docker login` answers).
    """

    def __init__(self, creds: Credentials, challenge: str, offline: bool = False) -> None:
        self.creds = creds
        self.challenges = dict(parse_challenges(challenge))
        self.offline = offline
        self.refresh_token = ""
        self._tokens: dict[tuple[str, ...], tuple[str, float]] = {}
        self._lock = asyncio.Lock()

    @property
    def scheme(self) -> str:
        if "bearer" in self.challenges:
            return "bearer"
        if "basic" in self.challenges:
            return "basic"
        return ""

    async def header(
        self, session: aiohttp.ClientSession, scopes: Sequence[str], url: str, method: str
    ) -> str:
        """The value of `Authorization` (empty: none) for a request needing `scopes`. Raises
        RequestError naming the request when no credentials can be had."""
        if self.scheme == "basic":
            if not self.creds.username:
                raise RequestError(method, url, DockerError("no basic auth credentials"))
            return "Basic " + _basic(self.creds.username, self.creds.password)
        if self.scheme == "bearer":
            if self.creds.registry_token:
                return "Bearer " + self.creds.registry_token
            key = tuple(scopes)
            async with self._lock:  # parallel layer requests share one token fetch
                token, expires = self._tokens.get(key, ("", 0.0))
                if not token or time.monotonic() >= expires:
                    try:
                        token, lifetime = await self._fetch_token(session, key)
                    except DockerError as e:
                        raise RequestError(method, url, e) from None
                    except aiohttp.ClientError as e:
                        raise RequestError(method, url, DockerError(str(e))) from None
                    self._tokens[key] = (token, time.monotonic() + lifetime)
            return "Bearer " + token
        return ""

    async def _fetch_token(
        self, session: aiohttp.ClientSession, scopes: tuple[str, ...]
    ) -> tuple[str, float]:
        params = self.challenges["bearer"]
        realm = params.get("realm", "")
        if not realm.startswith(("https://", "http://")):
            raise DockerError(f"invalid token auth challenge realm: {realm!r}")
        service = params.get("service", "")
        refresh = self.creds.identity_token
        if refresh:
            # An identity token is an OAuth refresh token (distribution's fetchTokenWithOAuth).
            form = {
                "scope": " ".join(scopes),
                "service": service,
                "client_id": CLIENT_ID,
                "grant_type": "refresh_token",
                "refresh_token": refresh,
            }
            resp_ctx = session.post(realm, data=form)
        else:
            query: list[tuple[str, str]] = [("service", service)] if service else []
            query += [("scope", scope) for scope in scopes]
            if self.offline:
                query += [("offline_token", "true"), ("client_id", CLIENT_ID)]
            headers = {}
            if self.creds.username and self.creds.password:
                query.append(("account", self.creds.username))
                headers["Authorization"] = "Basic " + _basic(
                    self.creds.username, self.creds.password
                )
            resp_ctx = session.get(realm, params=query, headers=headers)
        async with resp_ctx as resp:
            body = await resp.content.read(_TOKEN_LIMIT)
            if resp.status != 200:
                raise error_from_response(resp.status, body)
        doc = _json(body)
        if not isinstance(doc, dict):
            raise DockerError("unable to decode token response")
        token = doc.get("token") or doc.get("access_token")
        if not isinstance(token, str) or not token:
            raise DockerError("authorization server did not include a token in the response")
        new_refresh = doc.get("refresh_token")
        if isinstance(new_refresh, str) and new_refresh:
            self.refresh_token = new_refresh
        expires_in = doc.get("expires_in")
        lifetime = expires_in if isinstance(expires_in, int) else 0
        return token, float(max(lifetime, _MIN_TOKEN_LIFETIME))


def _basic(username: str, password: str) -> str:
    return base64.b64encode(f"{username}:{password}".encode()).decode()


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None
