"""The client's contexts, as kubeconfig has them: `$XDG_CONFIG_HOME/robin/config.toml` (else
`~/.config/robin/config.toml`) names robin APIs, each with the token to call it with, and which one is current:

    current-context = "prod"

    [contexts.prod]
    url = "https://robin.example:8080"
    token-file = "~/.config/robin/prod.token"
    project = "web"          # optional: the project of commands given none

The file holds no secret unless `token` is written into it instead of `token-file`; it is written mode 0600."""
from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

KEYS = ("url", "token-file", "token", "project")


class ContextError(ValueError):
    """The file is unreadable or malformed, or names no such context."""


@dataclass(frozen=True)
class Context:
    name: str
    url: str = ""
    token_file: str = ""
    token: str = ""
    project: str = ""


def config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "robin" / "config.toml"


@dataclass
class ContextFile:
    path: Path
    current: str
    contexts: dict[str, Context]

    @classmethod
    def load(cls, path: Path | None = None) -> ContextFile:
        """The file's contexts; none when it does not exist."""
        path = path or config_path()
        try:
            with open(path, "rb") as handle:
                raw = tomllib.load(handle)
        except FileNotFoundError:
            return cls(path, "", {})
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ContextError(f"{path}: {exc}") from exc
        return cls(path, _string(raw, "current-context", path), _contexts(raw.get("contexts", {}), path))

    def chosen(self, name: str | None) -> Context | None:
        """Context `name`, else the current one (None when the file names none)."""
        wanted = name or self.current
        if not wanted:
            return None
        if wanted not in self.contexts:
            known = ", ".join(sorted(self.contexts)) or "none"
            raise ContextError(f"no context {wanted!r} in {self.path} (known: {known})")
        return self.contexts[wanted]

    def save(self) -> None:
        """Written whole to a new file, then renamed over the old one: a crash leaves one or the other."""
        lines = [f"current-context = {_quoted(self.current)}"] if self.current else []
        for context in self.contexts.values():
            lines += ["", f"[contexts.{_quoted(context.name)}]"]
            lines += [f"{key} = {_quoted(value)}" for key, value in _fields(context).items() if value]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(self.path.name + ".new")
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write("\n".join(lines) + "\n")
        os.replace(partial, self.path)


def _fields(context: Context) -> dict[str, str]:
    return {"url": context.url, "token-file": context.token_file, "token": context.token, "project": context.project}


def _quoted(value: str) -> str:
    # A JSON string is a TOML basic string: the same quotes and escapes (json never writes "\/").
    return json.dumps(value)


def _string(table: dict, key: str, path: Path) -> str:
    value = table.get(key, "")
    if not isinstance(value, str):
        raise ContextError(f"{path}: {key} must be a string")
    return value


def _contexts(raw, path: Path) -> dict[str, Context]:
    if not isinstance(raw, dict):
        raise ContextError(f"{path}: contexts must be a table of tables ([contexts.<name>])")
    contexts = {}
    for name, table in raw.items():
        if not isinstance(table, dict):
            raise ContextError(f"{path}: contexts.{name} must be a table")
        unknown = sorted(set(table) - set(KEYS))
        if unknown:
            raise ContextError(f"{path}: contexts.{name}: unknown key {unknown[0]!r} (known: {', '.join(KEYS)})")
        contexts[name] = Context(name, **{key.replace("-", "_"): _string(table, key, path) for key in table})
    return contexts
