"""A node's registry settings beyond one registry: the credentials a build picks from its
X-Registry-Config (dockerd's ResolveAuthConfig)."""

from __future__ import annotations

from runtime.registry_auth import INDEX_SERVER, Credentials, resolve_auth_config


def test_build_credentials_picked_by_registry() -> None:
    hub = {"username": "hubuser", "password": "hubpw"}
    configs = {
        INDEX_SERVER: hub,
        "10.99.0.1:5000": {"auth": "dXNlcjpwdw=="},  # user:pw
        "https://legacy.example:443/v1/": {"username": "old", "password": "o"},
        "docker.io": {"username": "not-hub-key", "password": "x"},
        "broken.example": "not an object",
    }
    assert resolve_auth_config(configs, "docker.io") == Credentials("hubuser", "hubpw")
    assert resolve_auth_config(configs, "10.99.0.1:5000") == Credentials("user", "pw")
    # A legacy key (scheme and path) matches by its host.
    assert resolve_auth_config(configs, "legacy.example:443") == Credentials("old", "o")
    # Docker Hub only under its index key; nothing else matches anything else.
    assert resolve_auth_config({"docker.io": hub}, "docker.io") == Credentials()
    assert resolve_auth_config(configs, "other.example") == Credentials()
    assert resolve_auth_config(configs, "broken.example") == Credentials()
