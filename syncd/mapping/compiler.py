"""Compile mapping files once, at start, into plain functions; report every problem at once.

An expression is `path | transform | transform(arg, ...)`: the path is dotted
(`properties.email`, `items.0.sku`) or a quoted constant (`'Order Completed'`); arguments are
Python/JSON literals. The compiled stream turns a raw payload into a MappedRecord or
MappedEvent, or raises RecordError naming the field and the problem.
"""

from __future__ import annotations

import ast
import hashlib
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from syncd.config import Config, IdentityConfig, problems_from_validation
from syncd.errors import ConfigError, Problem, RecordError
from syncd.identity.normalize import UNSTORABLE, IdentifierNormalizer
from syncd.jsontext import unstorable
from syncd.mapping.model import (
    FieldSpec,
    IdentifierSpec,
    ProfileMapping,
    StreamMapping,
)
from syncd.mapping.transforms import REGISTRY, Transform, TransformError, trim_value, value_map

Getter = Callable[[Mapping[str, Any]], Any]
PROFILE_FILE = "profile.toml"

TYPE_TRANSFORMS = {
    "string": "to_str",
    "int": "to_int",
    "float": "to_float",
    "bool": "to_bool",
    "datetime": "datetime",
    "date": "date",
    "list": "split",
}


@dataclass(slots=True)
class MappedRecord:
    """A record after mapping: its key, source timestamp, traits and normalized identifiers."""

    external_id: str
    updated_at: str | None
    deleted: bool
    traits: dict[str, Any]
    identifiers: list[tuple[str, str]]
    notes: list[str] = field(default_factory=list)


@dataclass(slots=True)
class MappedEvent:
    """An event after mapping: its source event id, name, time, properties and identifiers."""

    event_id: str
    name: str
    occurred_at: str
    properties: dict[str, Any]
    identifiers: list[tuple[str, str]]
    notes: list[str] = field(default_factory=list)


def split_pipeline(expression: str) -> list[str]:
    """Split on `|` outside quotes, parentheses and brackets."""
    parts: list[str] = []
    current: list[str] = []
    depth, quote = 0, ""
    for char in expression:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == "|" and depth == 0:
            parts.append("".join(current).strip())
            current = []
            continue
        current.append(char)
    parts.append("".join(current).strip())
    return parts


def _blank_is_absent(value: Any) -> Any:
    # An empty CSV cell or a JSON "" means "no value" to every transform, rule and trait.
    if isinstance(value, str) and not value.strip():
        return None
    return value


def compile_getter(path: str) -> Getter:
    """A function reading `path` from a payload; a quoted path is a constant.

    A blank string reads as None, so a blank cell never overwrites a real value.
    """
    if path[:1] in "'\"":
        constant = ast.literal_eval(path)
        return lambda _payload: constant
    if not path or any(not segment for segment in path.split(".")):
        raise ValueError(f"empty path segment in {path!r}")
    segments = path.split(".")
    if len(segments) == 1:
        key = segments[0]
        return lambda payload: _blank_is_absent(payload.get(key))

    def walk(payload: Mapping[str, Any]) -> Any:
        value: Any = payload
        for segment in segments:
            if isinstance(value, Mapping):
                value = value.get(segment)
            elif isinstance(value, list) and segment.isdigit() and int(segment) < len(value):
                value = value[int(segment)]
            else:
                return None
        return _blank_is_absent(value)

    return walk


def compile_transform(step: str) -> Transform:
    """One `name` or `name(args)` step into its function."""
    name, _, rest = step.partition("(")
    name = name.strip()
    if name not in REGISTRY:
        raise ValueError(f"unknown transform {name!r}; known: {', '.join(sorted(REGISTRY))}")
    args: list[Any] = []
    if rest:
        if not rest.endswith(")"):
            raise ValueError(f"unbalanced parentheses in {step!r}")
        try:
            parsed = ast.literal_eval(f"[{rest[:-1]}]")
        except (ValueError, SyntaxError):
            raise ValueError(f"arguments of {name} must be literals: {step!r}") from None
        args = list(parsed)
    return REGISTRY[name](args)


def chain(functions: list[Transform]) -> Transform:
    if len(functions) == 1:
        return functions[0]

    def chained(value: Any) -> Any:
        for function in functions:
            value = function(value)
        return value

    return chained


def _coalesce_paths(step: str) -> list[str] | None:
    """The paths of `coalesce('path', ...)`, or None when the step is another transform."""
    name, _, rest = step.partition("(")
    if name.strip() != "coalesce":
        return None
    try:
        paths = ast.literal_eval(f"[{rest.removesuffix(')')}]") if rest.endswith(")") else []
    except (ValueError, SyntaxError):
        paths = []
    if not paths or not all(isinstance(path, str) for path in paths):
        raise ValueError("coalesce takes one or more paths, e.g. coalesce('work_email')")
    return paths


def compile_expression(expression: str, extra: Iterable[Transform] = ()) -> Getter:
    """`path | t1 | t2(x)` (plus trailing `extra` steps) into one payload → value function.

    `coalesce('other.path', ...)` is the one step that reads the payload: where the value so
    far is missing, it takes the first of those paths that has one.
    """
    path, *steps = split_pipeline(expression)
    getter = compile_getter(path)
    for step in [s for s in steps if s]:
        fallbacks = _coalesce_paths(step)
        if fallbacks is not None:
            getter = _with_fallbacks(getter, [compile_getter(path) for path in fallbacks])
            continue
        transform = compile_transform(step)
        getter = _then(getter, transform)
    for transform in extra:
        getter = _then(getter, transform)
    return getter


def expression_names(expressions: Iterable[str]) -> tuple[str, ...]:
    """The top-level names that expressions read, of which the first with a value wins (a
    field's `from` list, or one expression with its `coalesce` paths): they have a value only
    where a record holds one of these names. Constants read none."""
    paths = []
    for expression in expressions:
        path, *steps = split_pipeline(expression)
        paths.append(path)
        for step in steps:
            paths.extend(_coalesce_paths(step) or [])
    # A quoted path is a constant; an empty one never compiles.
    return tuple(dict.fromkeys(path.split(".")[0] for path in paths if path[:1] not in "'\""))


def _then(getter: Getter, transform: Transform) -> Getter:
    return lambda payload: transform(getter(payload))


def _with_fallbacks(getter: Getter, fallbacks: list[Getter]) -> Getter:
    def coalesced(payload: Mapping[str, Any]) -> Any:
        value = getter(payload)
        for fallback in fallbacks:
            if value is not None:
                break
            value = fallback(payload)
        return value

    return coalesced


def compile_field(spec: str | FieldSpec) -> tuple[Getter, bool]:
    """A trait's getter, and whether a failing value nulls the field instead of quarantining."""
    if isinstance(spec, str):
        return compile_expression(spec), False
    extra: list[Transform] = []
    if spec.map is not None:
        extra.append(value_map(spec.map))
    if spec.type is not None:
        extra.append(compile_transform(TYPE_TRANSFORMS[spec.type]))
    if spec.default is not None:
        extra.append(compile_transform(f"default({spec.default!r})"))
    sources = [spec.from_] if isinstance(spec.from_, str) else spec.from_
    getters = [compile_expression(source) for source in sources]
    finish = chain(extra) if extra else None
    null_on_error = spec.on_error == "null"
    if len(getters) == 1 and finish is None:
        return getters[0], null_on_error

    def coalesced(payload: Mapping[str, Any]) -> Any:
        value = None
        for getter in getters:
            value = trim_value(getter(payload))
            if value is not None:
                break
        return finish(value) if finish else value

    return coalesced, null_on_error


@dataclass(frozen=True)
class CompiledIdentifier:
    """Reads one identifier (maybe several values) and normalizes it by its kind."""

    label: str
    kind: str
    getter: Getter


def compile_identifier(label: str, spec: str | IdentifierSpec) -> CompiledIdentifier:
    if isinstance(spec, str):
        return CompiledIdentifier(label, label, compile_expression(spec))
    kind = spec.kind or label
    if spec.from_ is not None:
        return CompiledIdentifier(label, kind, compile_expression(spec.from_))
    parts = [compile_expression(part) for part in spec.parts or []]

    def composite(payload: Mapping[str, Any]) -> Any:
        values = [trim_value(part(payload)) for part in parts]
        if any(value is None for value in values):
            return None
        return "|".join(str(value) for value in values)

    return CompiledIdentifier(label, kind, composite)


class Needed:
    """A value a record or event cannot do without: its key, an event's name and time."""

    def __init__(self, what: str, expression: str | None, extra: Iterable[Transform] = ()) -> None:
        self.what = what
        self._getter = compile_expression(expression, extra) if expression else None
        self._reads = expression_names([expression]) if expression else ()

    def value(self, payload: Mapping[str, Any]) -> Any:
        """Raises RecordError when the payload gives none, or one no store can keep."""
        try:
            value = trim_value(self._getter(payload)) if self._getter else None
        except TransformError as error:
            raise RecordError(f"{self.what}: {error}") from None
        if value is None:
            raise RecordError(f"{self.what} is missing{self._absent(payload)}")
        if isinstance(value, str) and unstorable(value):
            # Stored as text of its own (a key, an event's name), so it cannot be cleaned
            # the way JSON columns are without becoming another record's.
            raise RecordError(f"{self.what} {UNSTORABLE}")
        return value

    def _absent(self, payload: Mapping[str, Any]) -> str:
        # A record without the name at all, rather than with a blank value, most often comes
        # from a file whose header spells the column otherwise (`Customer ID`): say so.
        if self._reads and not any(name in payload for name in self._reads):
            return f" (the record has no {' or '.join(self._reads)})"
        return ""


def _groups_read(mapping: StreamMapping) -> list[tuple[str, ...]]:
    """For each value the mapping reads (the key first), the top-level names a record needs
    one of for it to have a value; each group once."""
    required = (mapping.primary_key or mapping.event_id, mapping.event_name, mapping.timestamp)
    groups = [[e] for e in (*required, mapping.updated_at, mapping.deleted) if e]
    for identifier in mapping.identifiers.values():
        if isinstance(identifier, str):
            groups.append([identifier])
        elif identifier.from_ is not None:
            groups.append([identifier.from_])
        else:
            groups.extend([part] for part in identifier.parts or [])
    for spec in mapping.fields.values():
        sources = spec if isinstance(spec, str) else spec.from_
        groups.append([sources] if isinstance(sources, str) else sources)
    return [names for names in dict.fromkeys(map(expression_names, groups)) if names]


class CompiledStream:
    """A stream mapping turned into functions; `map_record`/`map_event` are the hot path."""

    def __init__(
        self, mapping: StreamMapping, normalizer: IdentifierNormalizer, fingerprint: str
    ) -> None:
        self.source = mapping.source
        self.stream = mapping.stream
        self.is_events = mapping.type == "events"
        self.fingerprint = fingerprint
        self._normalizer = normalizer
        self._identifiers = [compile_identifier(k, v) for k, v in mapping.identifiers.items()]
        self._fields = [(name, *compile_field(spec)) for name, spec in mapping.fields.items()]
        self._key = Needed(
            "event_id" if self.is_events else "primary key",
            mapping.primary_key or mapping.event_id,
        )
        self._updated_at = (
            compile_expression(mapping.updated_at, [compile_transform("datetime")])
            if mapping.updated_at
            else None
        )
        self._deleted = (
            compile_expression(mapping.deleted, [compile_transform("to_bool")])
            if mapping.deleted
            else None
        )
        self._name = Needed("event_name", mapping.event_name)
        self._timestamp = Needed("timestamp", mapping.timestamp, [compile_transform("datetime")])
        self._groups_read = _groups_read(mapping)

    def lacking(self, names: Iterable[str]) -> list[str]:
        """What this mapping reads that records holding only `names` (a file's header) lack:
        top-level names, alternatives joined by `or`, the key's first."""
        held = set(names)
        return [" or ".join(group) for group in self._groups_read if held.isdisjoint(group)]

    def _traits(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        traits = {}
        for name, getter, null_on_error in self._fields:
            try:
                value = getter(payload)
            except TransformError as error:
                if null_on_error:
                    continue
                raise RecordError(f"field {name}: {error}") from None
            if value is not None:
                traits[name] = value
        return traits

    def _identity(self, payload: Mapping[str, Any]) -> tuple[list[tuple[str, str]], list[str]]:
        found: list[tuple[str, str]] = []
        notes: list[str] = []
        for identifier in self._identifiers:
            try:
                raw = identifier.getter(payload)
            except TransformError as error:
                notes.append(f"identifier {identifier.label}: {error}")
                continue
            for value in raw if isinstance(raw, list) else (raw,):
                self._normalizer.add(identifier.kind, identifier.label, value, found, notes)
        return found, notes

    def external_id(self, payload: Mapping[str, Any]) -> str:
        """The record's primary key alone; raises RecordError when it has none."""
        return str(self._key.value(payload))

    def map_record(self, payload: Mapping[str, Any]) -> MappedRecord:
        """Raises RecordError when the record cannot be mapped."""
        key = self.external_id(payload)
        try:
            updated_at = self._updated_at(payload) if self._updated_at else None
            deleted = bool(self._deleted(payload)) if self._deleted else False
        except TransformError as error:
            raise RecordError(f"updated_at/deleted: {error}") from None
        identifiers, notes = self._identity(payload)
        return MappedRecord(key, updated_at, deleted, self._traits(payload), identifiers, notes)

    def map_event(self, payload: Mapping[str, Any]) -> MappedEvent:
        """Raises RecordError when the event cannot be mapped."""
        event_id = str(self._key.value(payload))
        name = str(self._name.value(payload))
        occurred_at = str(self._timestamp.value(payload))
        identifiers, notes = self._identity(payload)
        if not identifiers:
            raise RecordError("event carries no usable identifier")
        return MappedEvent(event_id, name, occurred_at, self._traits(payload), identifiers, notes)


@dataclass(frozen=True)
class Mappings:
    """Every compiled stream, keyed by (source, stream), and the profile rules."""

    streams: Mapping[tuple[str, str], CompiledStream]
    profile: ProfileMapping

    def for_stream(self, source: str, stream: str) -> CompiledStream:
        return self.streams[(source, stream)]

    def streams_of(self, source: str) -> list[str]:
        return sorted(stream for (name, stream) in self.streams if name == source)


def _read_toml(path: Path, problems: list[Problem]) -> dict[str, Any] | None:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        problems.append(Problem(str(path), "(syntax)", str(error), "fix the TOML syntax"))
    except OSError as error:
        problems.append(Problem(str(path), "(file)", str(error), "check the file"))
    return None


def _compile_stream(
    path: Path, data: dict[str, Any], identity: IdentityConfig, problems: list[Problem]
) -> CompiledStream | None:
    file = str(path)
    try:
        mapping = StreamMapping.model_validate(data)
    except ValidationError as error:
        problems.extend(problems_from_validation(file, error))
        return None
    before = len(problems)
    for label, spec in mapping.identifiers.items():
        kind = spec if isinstance(spec, str) else (spec.kind or label)
        kind = label if isinstance(spec, str) else kind
        if kind not in identity.kinds:
            known = ", ".join(sorted(identity.kinds))
            problems.append(
                Problem(
                    file,
                    f"identifiers.{label}",
                    f"unknown identifier kind {kind!r}",
                    f"use one of {known}, or declare [identity.kinds.{kind}] in syncd.toml",
                )
            )
    checks: list[tuple[str, Callable[[], object]]] = []
    for label, spec in mapping.identifiers.items():
        checks.append((f"identifiers.{label}", partial(compile_identifier, label, spec)))
    for name, fspec in mapping.fields.items():
        checks.append((f"fields.{name}", partial(compile_field, fspec)))
    for key in ("primary_key", "updated_at", "deleted", "event_id", "event_name", "timestamp"):
        expression = getattr(mapping, key)
        if expression is not None:
            checks.append((key, partial(compile_expression, expression)))
    for key, check in checks:
        try:
            check()
        except (ValueError, TypeError, SyntaxError) as error:
            problems.append(Problem(file, key, str(error), "see docs/MAPPINGS.md for the syntax"))
    if len(problems) > before:
        return None
    # The identity settings decide what a record's identifiers are, just as its mapping does:
    # a change to either must re-map stored records (rebuild) and re-map on re-pull.
    identity_settings = identity.model_dump_json().encode()
    fingerprint = hashlib.sha1(
        path.read_bytes() + b"\x1f" + identity_settings, usedforsecurity=False
    ).hexdigest()[:12]
    return CompiledStream(mapping, IdentifierNormalizer(identity), fingerprint)


def _priority_problems(path: Path, profile: ProfileMapping) -> list[Problem]:
    """A source_priority rule naming a source twice: which place was meant is not known.

    A source the config lacks is allowed: its records may still be in the store."""
    problems: list[Problem] = []
    for name, rule in profile.traits.items():
        repeated = sorted({source for source in rule.sources if rule.sources.count(source) > 1})
        problems.extend(
            Problem(
                str(path),
                f"traits.{name}.sources",
                f"{source!r} is listed twice",
                "list each source once, most trusted first",
            )
            for source in repeated
        )
    return problems


def _mappings_folder(config: Config) -> Path:
    folder = config.mappings_dir
    if not folder.is_dir():
        raise ConfigError(
            [Problem(str(config.path), "mappings_dir", f"{folder} is not a folder", "create it")]
        )
    return folder


def _read_profile(path: Path, problems: list[Problem]) -> ProfileMapping:
    """The profile rules of `path`, or the defaults (the problems then say why)."""
    data = _read_toml(path, problems)
    if data is None:
        return ProfileMapping()
    try:
        profile = ProfileMapping.model_validate(data)
    except ValidationError as error:
        problems.extend(problems_from_validation(str(path), error))
        return ProfileMapping()
    problems.extend(_priority_problems(path, profile))
    return profile


def compile_profile(config: Config) -> ProfileMapping:
    """The profile rules alone, for reading profiles without mapping records: a broken stream
    mapping must not hide how the stored profiles were made. Raises ConfigError listing the
    problems of the profile file."""
    path = _mappings_folder(config) / PROFILE_FILE
    if not path.is_file():
        return ProfileMapping()
    problems: list[Problem] = []
    profile = _read_profile(path, problems)
    if problems:
        raise ConfigError(problems)
    return profile


def compile_mappings(config: Config) -> Mappings:
    """Read and compile every mapping file; raises ConfigError listing all problems."""
    problems: list[Problem] = []
    folder = _mappings_folder(config)
    streams: dict[tuple[str, str], CompiledStream] = {}
    origin: dict[tuple[str, str], Path] = {}
    profile = ProfileMapping()
    # (source, stream) of every stream file, compiled or not: a file that failed is reported
    # once, not again as a source or stream without a mapping.
    attempted: set[tuple[str, str]] = set()
    for path in sorted(folder.glob("*.toml")):
        if path.name == PROFILE_FILE:
            profile = _read_profile(path, problems)
            continue
        data = _read_toml(path, problems)
        if data is None:
            continue
        attempted.add((str(data.get("source")), str(data.get("stream"))))
        compiled = _compile_stream(path, data, config.identity, problems)
        if compiled is None:
            continue
        key = (compiled.source, compiled.stream)
        if compiled.source not in config.sources:
            problems.append(
                Problem(
                    str(path),
                    "source",
                    f"no source named {compiled.source!r} in {config.path.name}",
                    f"add [sources.{compiled.source}] to the config or fix the name",
                )
            )
        elif key in streams:
            problems.append(
                Problem(
                    str(path),
                    "stream",
                    f"{compiled.source}/{compiled.stream} is already mapped by {origin[key].name}",
                    "keep one mapping file per stream",
                )
            )
        else:
            streams[key] = compiled
            origin[key] = path
    for name, entry in config.sources.items():
        declared = entry.spec.declared_streams
        if declared is not None and any(source == name for source, _ in streams):
            known = set(declared(entry.options))
            for (source, stream), path in origin.items():
                if source == name and stream not in known:
                    problems.append(
                        Problem(
                            str(path),
                            "stream",
                            f"source {name!r} has no stream {stream!r}",
                            f"use one of {', '.join(sorted(known))}, or declare it in "
                            f"[sources.{name}.options]",
                        )
                    )
            for stream in sorted(known - {s for src, s in attempted if src == name}):
                problems.append(
                    Problem(
                        str(config.path),
                        f"sources.{name}.options.streams.{stream}",
                        "no mapping file maps this stream",
                        f'add a mapping with source = "{name}" and stream = "{stream}", '
                        "or remove the stream",
                    )
                )
        if not any(source == name for source, _ in attempted):
            problems.append(
                Problem(
                    str(config.path),
                    f"sources.{name}",
                    "no mapping file maps this source",
                    f'add mappings/<file>.toml with source = "{name}"',
                )
            )
    traits = {
        trait
        for stream in streams.values()
        for trait, _, _ in stream._fields
        if not stream.is_events
    }
    for name in profile.computed:
        if name in traits:
            problems.append(
                Problem(
                    str(folder / PROFILE_FILE),
                    f"computed.{name}",
                    "a computed trait has the name of a mapped trait",
                    "rename one of them",
                )
            )
    if problems:
        raise ConfigError(problems)
    return Mappings(streams, profile)
