"""Build arguments as dockerd's legacy builder keeps them (builder/dockerfile/buildargs.go):
`--build-arg` values, the ARGs a stage declared (with defaults), the meta ARGs before the first
FROM, and the proxy variables every build may use without declaring them.
"""

from __future__ import annotations

from runtime.imageconfig import env_key

BUILTIN_ARGS = (
    "HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy",
    "FTP_PROXY", "ftp_proxy", "NO_PROXY", "no_proxy",
)  # fmt: skip


class BuildArgs:
    def __init__(self, from_options: dict[str, str | None]) -> None:
        self.from_options = from_options
        self.allowed: dict[str, str | None] = {}
        self.meta: dict[str, str | None] = {}
        self.referenced: set[str] = set()

    def clone_for_stage(self) -> BuildArgs:
        """A new stage's args: the meta args and references carry over, declared ones do not."""
        out = BuildArgs(self.from_options)
        out.meta = dict(self.meta)
        out.referenced = set(self.referenced)
        return out

    def add_arg(self, key: str, value: str | None) -> None:
        self.allowed[key] = value
        self.referenced.add(key)

    def add_meta(self, key: str, value: str | None) -> None:
        self.meta[key] = value

    def is_referenced_or_not_builtin(self, key: str) -> bool:
        return key in self.allowed or key not in BUILTIN_ARGS

    def _all(self, mapping: dict[str, str | None]) -> dict[str, str]:
        """getAllFromMapping: an option wins, then the declared default, then the meta arg."""
        out: dict[str, str] = {}
        for key in dict.fromkeys([*mapping, *BUILTIN_ARGS]):
            option = self.from_options.get(key)
            default = mapping.get(key)
            if option is not None:
                out[key] = option
            elif default is not None:
                out[key] = default
            elif self.meta.get(key) is not None:
                out[key] = self.meta[key] or ""
        return out

    def all_allowed(self) -> dict[str, str]:
        return self._all(self.allowed)

    def all_meta(self) -> dict[str, str]:
        return self._all(self.meta)

    def filter_allowed(self, env: list[str]) -> list[str]:
        """`KEY=value` of the allowed args the config's env does not already set."""
        keys = {env_key(e) for e in env}
        return [f"{k}={v}" for k, v in sorted(self.all_allowed().items()) if k not in keys]

    def unused(self) -> list[str]:
        return sorted(
            k for k in self.from_options if k not in BUILTIN_ARGS and k not in self.referenced
        )
