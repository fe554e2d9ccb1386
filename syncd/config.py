"""syncd.toml, loaded into typed models; every problem is reported at once, with file and key.

Connector options are validated by each connector's own options model, found through the
connector registry, so the engine never needs to know one vendor's settings.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from syncd.connector import (
    ConnectorOptions,
    ConnectorSpec,
    EnvRef,
    database_url_without_secret,
)
from syncd.errors import ConfigError, Problem

DEFAULT_BLOCKED_VALUES = (
    "test@test.com",
    "test@example.com",
    "noemail@noemail.com",
    "none@none.com",
    "null",
    "none",
    "n/a",
    "na",
    "unknown",
    "undefined",
    "0",
    "0000000000",
    "1234567890",
    "+10000000000",
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class IdentifierKind(_Strict):
    """A kind of identifier: how to normalize it, how far to trust it, how many a profile holds."""

    normalize: Literal["email", "phone", "id", "lower", "none"] = "id"
    priority: int = Field(default=50, ge=0, description="lower merges first")
    limit: int = Field(default=5, ge=1, description="distinct values one profile may hold")


def _default_kinds() -> dict[str, IdentifierKind]:
    return {
        "user_id": IdentifierKind(normalize="id", priority=0, limit=1),
        "email": IdentifierKind(normalize="email", priority=10, limit=5),
        "phone": IdentifierKind(normalize="phone", priority=20, limit=5),
        "anonymous_id": IdentifierKind(normalize="id", priority=90, limit=5),
    }


class IdentityConfig(_Strict):
    """How records are unified: identifier kinds, default phone region, blocked values."""

    default_region: str = "US"
    kinds: dict[str, IdentifierKind] = Field(default_factory=_default_kinds)
    blocked_values: list[str] = Field(default_factory=lambda: list(DEFAULT_BLOCKED_VALUES))

    @field_validator("kinds")
    @classmethod
    def _keep_builtin_kinds(cls, kinds: dict[str, IdentifierKind]) -> dict[str, IdentifierKind]:
        # Declaring one kind must not drop the built-in ones, and changing one key of a
        # built-in kind (say its limit) keeps the rest of its settings.
        merged = _default_kinds()
        for name, kind in kinds.items():
            given = kind.model_dump(exclude_unset=True)
            merged[name] = merged[name].model_copy(update=given) if name in merged else kind
        return merged

    @field_validator("default_region")
    @classmethod
    def _region_is_known(cls, region: str) -> str:
        import phonenumbers

        if region.upper() not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"unknown region {region!r}; use an ISO 3166 alpha-2 code such as US")
        return region.upper()


class StoreConfig(_Strict):
    """Where profiles live: a SQLAlchemy URL, literally (no password) or from the environment."""

    url: str | EnvRef = "sqlite:///var/syncd.db"

    @field_validator("url")
    @classmethod
    def _no_password_in_file(cls, url: str | EnvRef) -> str | EnvRef:
        return database_url_without_secret(url, "url") if isinstance(url, str) else url


class LoggingConfig(_Strict):
    """Where the JSON sync log goes besides stderr, and how much of it."""

    file: str | None = "var/syncd.log"
    level: Literal["debug", "info", "warning", "error"] = "info"


class Schedule(_Strict):
    """How often the daemon runs a connector: every N seconds, or a crontab line."""

    every_seconds: int | None = Field(default=None, ge=1)
    cron: str | None = None


class ConnectorConfig(_Strict):
    """A source or destination entry: its connector type, options and schedule."""

    type: str
    enabled: bool = True
    schedule: Schedule = Field(default_factory=lambda: Schedule(every_seconds=900))
    options: dict[str, Any] = Field(default_factory=dict)


class RawConfig(_Strict):
    """syncd.toml as written."""

    store: StoreConfig = Field(default_factory=StoreConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    identity: IdentityConfig = Field(default_factory=IdentityConfig)
    mappings_dir: str = "mappings"
    workers: int = Field(default=2, ge=1, le=64, description="processes mapping large pulls")
    sources: dict[str, ConnectorConfig] = Field(default_factory=dict)
    destinations: dict[str, ConnectorConfig] = Field(default_factory=dict)


@dataclass(frozen=True)
class ConnectorEntry:
    """A configured connector: its name, spec and validated options."""

    name: str
    spec: ConnectorSpec
    options: ConnectorOptions
    enabled: bool
    schedule: Schedule


@dataclass(frozen=True)
class Config:
    """The validated configuration the engine runs on; raw dicts never go further than this."""

    path: Path
    store_url: str
    logging: LoggingConfig
    identity: IdentityConfig
    mappings_dir: Path
    workers: int
    sources: Mapping[str, ConnectorEntry]
    destinations: Mapping[str, ConnectorEntry]

    @property
    def base_dir(self) -> Path:
        return self.path.parent


Location = tuple[int | str, ...]


def _dotted(loc: Location) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


UNION_BRANCHES = {
    "str",
    "int",
    "float",
    "bool",
    "list[str]",
    "FieldSpec",
    "IdentifierSpec",
    "EnvRef",
}


def _user_key(part: int | str) -> bool:
    """Whether a location part is the user's key, not pydantic naming a branch of a union."""
    return not (isinstance(part, str) and (part in UNION_BRANCHES or part.startswith("function-")))


def problems_from_validation(
    file: str,
    error: ValidationError,
    prefix: str = "",
    unknown_key_fixes: Mapping[Location, str] | None = None,
) -> list[Problem]:
    """Turn pydantic's errors into file:key problems with a fix each.

    A value that may be written two ways (`"path"` or `{ from = ... }`) fails once per way;
    only the failure of the way the user chose is kept. `unknown_key_fixes` gives a better fix
    than "remove it" for unknown keys whose place is known.
    """
    fixes = unknown_key_fixes or {}
    items = error.errors()
    chose_table = {
        _dotted(tuple(p for p in item["loc"] if _user_key(p)))
        for item in items
        if item["type"] != "string_type"
    }
    problems = []
    for item in items:
        loc = tuple(part for part in item["loc"] if _user_key(part))
        key = _dotted(loc)
        if item["type"] == "string_type" and any(
            other != key and other.startswith(key + ".") for other in chose_table
        ):
            continue
        key = f"{prefix}.{key}" if prefix else key
        kind = item["type"]
        if kind == "extra_forbidden":
            fix = fixes.get(loc, "remove it or check its spelling")
            problems.append(Problem(file, key, "unknown key", fix))
        elif kind == "missing":
            problems.append(Problem(file, key, "required key is missing", "add it"))
        else:
            message = item["msg"].removeprefix("Value error, ")
            problems.append(Problem(file, key, message, "correct the value"))
    return problems


def load_connector_spec(kind: str) -> ConnectorSpec:
    """The connector package `connectors.<kind>`'s exported spec."""
    module = importlib.import_module(f"connectors.{kind}")
    spec = getattr(module, "CONNECTOR", None)
    if not isinstance(spec, ConnectorSpec):
        raise TypeError(f"connectors.{kind} does not export CONNECTOR")
    return spec


def _connector_kinds() -> list[str]:
    root = Path(importlib.import_module("connectors").__file__ or "").parent
    return sorted(p.name for p in root.iterdir() if (p / "__init__.py").exists())


def _toml_key(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else json.dumps(name)


def _misplaced_options(data: Mapping[str, Any]) -> dict[Location, str]:
    """Connector options written beside `type` instead of in the entry's options table, each
    with where it belongs: an easy slip when copying a config, for which "check its spelling"
    sends the user looking for a typo that is not there."""
    fixes: dict[Location, str] = {}
    for section in ("sources", "destinations"):
        entries = data.get(section)
        if not isinstance(entries, dict):
            continue
        for name, table in entries.items():
            kind = table.get("type") if isinstance(table, dict) else None
            if kind not in _connector_kinds():
                continue
            options = load_connector_spec(kind).options_model.model_fields
            for key in table:
                if key in options:
                    fixes[(section, name, key)] = (
                        f"move it under [{section}.{_toml_key(name)}.options]"
                    )
    return fixes


def _entry(
    file: str, section: str, name: str, raw: ConnectorConfig, problems: list[Problem]
) -> ConnectorEntry | None:
    key = f"{section}.{name}"
    if raw.type not in _connector_kinds():
        known = ", ".join(_connector_kinds())
        problems.append(
            Problem(file, f"{key}.type", f"unknown connector {raw.type!r}", f"use one of: {known}")
        )
        return None
    spec = load_connector_spec(raw.type)
    factory = spec.make_source if section == "sources" else spec.make_destination
    if factory is None:
        problems.append(
            Problem(file, f"{key}.type", f"{raw.type} cannot be used in [{section}]", "move it")
        )
        return None
    try:
        options = spec.options_model.model_validate(raw.options)
    except ValidationError as error:
        problems.extend(problems_from_validation(file, error, f"{key}.options"))
        return None
    return ConnectorEntry(name, spec, options, raw.enabled, raw.schedule)


def load_config(path: Path) -> Config:
    """Read and validate syncd.toml; raises ConfigError listing every problem found."""
    file = str(path)
    if not path.exists():
        raise ConfigError(
            [Problem(file, "(file)", "config file not found", "create it or pass --config PATH")]
        )
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise ConfigError([Problem(file, "(syntax)", str(error), "fix the TOML syntax")]) from None
    except UnicodeDecodeError:
        raise ConfigError(
            [Problem(file, "(file)", "not UTF-8 text", "save it as UTF-8 (TOML is UTF-8)")]
        ) from None
    except OSError as error:
        raise ConfigError(
            [Problem(file, "(file)", error.strerror or str(error), "pass the path of a file")]
        ) from None
    try:
        raw = RawConfig.model_validate(data)
    except ValidationError as error:
        fixes = _misplaced_options(data)
        raise ConfigError(problems_from_validation(file, error, unknown_key_fixes=fixes)) from None

    problems: list[Problem] = []
    sources: dict[str, ConnectorEntry] = {}
    destinations: dict[str, ConnectorEntry] = {}
    for section, raws, into in (
        ("sources", raw.sources, sources),
        ("destinations", raw.destinations, destinations),
    ):
        for name, entry_raw in raws.items():
            entry = _entry(file, section, name, entry_raw, problems)
            if entry is not None:
                into[name] = entry
    store_url = raw.store.url
    if isinstance(store_url, EnvRef):
        try:
            store_url = store_url.resolve(f"{file}:store.url")
        except ConfigError as error:
            problems.extend(error.problems)
            store_url = ""
    if problems:
        raise ConfigError(problems)
    return Config(
        path=path,
        store_url=anchor_sqlite_path(store_url, path.parent),
        logging=raw.logging,
        identity=raw.identity,
        mappings_dir=(path.parent / raw.mappings_dir),
        workers=raw.workers,
        sources=sources,
        destinations=destinations,
    )


def anchor_sqlite_path(url: str, base: Path) -> str:
    """A relative SQLite path is relative to the config file, not to wherever syncd was started."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and ":memory:" not in url:
        return prefix + str((base / url[len(prefix) :]).resolve())
    return url


def resolve_path(config: Config, value: str) -> Path:
    """A path from the config, relative to the config file's folder."""
    path = Path(os.path.expanduser(value))
    return path if path.is_absolute() else config.base_dir / path


__all__ = [
    "Config",
    "ConnectorEntry",
    "IdentifierKind",
    "IdentityConfig",
    "anchor_sqlite_path",
    "load_config",
    "load_connector_spec",
    "problems_from_validation",
    "resolve_path",
]
