"""Destination mapping files (`mappings/destinations/*.toml`): what each destination receives.

A file names a destination of syncd.toml and a target there, the match key (a profile trait or
an identifier kind giving `PushItem.match_value`), which profiles go (all, or those passing
every `when` condition) and the field map: destination field ← expression over the profile's
traits, in the language of stream mappings. Files are validated and compiled once, at start;
every problem is listed at once. See docs/DESTINATIONS.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from syncd.config import Config, problems_from_validation
from syncd.connector import LIST_PREFIX
from syncd.errors import ConfigError, Problem
from syncd.mapping.compiler import Getter, _read_toml, compile_expression
from syncd.mapping.transforms import TransformError

DESTINATIONS_FOLDER = "destinations"
DOCS = "see docs/DESTINATIONS.md"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MatchSpec(_Strict):
    """Where the match value comes from: a profile trait, or an identifier kind."""

    trait: str | None = None
    identifier: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> MatchSpec:
        if (self.trait is None) == (self.identifier is None):
            raise ValueError('give either trait = "name" or identifier = "kind", not both')
        return self


Operator = Literal["exists", "missing", "eq", "ne", "in"]


class Condition(_Strict):
    """One test on a profile trait; a profile goes when all conditions of its file hold."""

    trait: str
    op: Operator = "exists"
    value: Any = None

    @model_validator(mode="after")
    def _value_when_needed(self) -> Condition:
        needs_value = self.op in {"eq", "ne", "in"}
        if needs_value and self.value is None:
            raise ValueError(f"op = {self.op!r} needs value = ...")
        if not needs_value and self.value is not None:
            raise ValueError(f"op = {self.op!r} takes no value")
        if self.op == "in" and not isinstance(self.value, list):
            raise ValueError('op = "in" needs a list: value = ["a", "b"]')
        return self


class DestinationMapping(_Strict):
    """One destination mapping file as written."""

    destination: str
    target: str
    match: MatchSpec
    when: list[Condition] = []
    fields: dict[str, str]

    @model_validator(mode="after")
    def _some_fields(self) -> DestinationMapping:
        if not self.fields and not self.target.startswith(LIST_PREFIX):
            raise ValueError("an object target needs at least one entry in [fields]")
        return self


def _holds(condition: Condition, traits: Mapping[str, Any]) -> bool:
    value = traits.get(condition.trait)
    present = value is not None and value != "" and value != []
    if condition.op == "exists":
        return present
    if condition.op == "missing":
        return not present
    if condition.op == "eq":
        return bool(value == condition.value)
    if condition.op == "ne":
        return bool(value != condition.value)
    return value in condition.value


class FieldError(Exception):
    """A field's expression failed on one profile's traits; the profile is skipped."""


@dataclass(frozen=True)
class CompiledDestination:
    """A destination mapping turned into functions of a profile's traits."""

    file: str
    destination: str
    target: str
    match_trait: str | None
    match_identifier: str | None
    conditions: tuple[Condition, ...]
    getters: tuple[tuple[str, Getter], ...]

    @property
    def is_list(self) -> bool:
        """Whether the target is a list of members, which a profile leaves by being removed."""
        return self.target.startswith(LIST_PREFIX)

    def selects(self, traits: Mapping[str, Any]) -> bool:
        """Whether the profile with these traits goes to this target."""
        return all(_holds(condition, traits) for condition in self.conditions)

    def fields(self, traits: Mapping[str, Any]) -> dict[str, Any]:
        """The destination fields for these traits; a field without a value is left out,
        so the destination keeps what it has. Raises FieldError naming the field."""
        out: dict[str, Any] = {}
        for name, getter in self.getters:
            try:
                value = getter(traits)
            except TransformError as error:
                raise FieldError(f"field {name}: {error}") from None
            if value is not None:
                out[name] = value
        return out


@dataclass(frozen=True)
class DestinationMappings:
    """Every compiled destination mapping, in file order."""

    mappings: tuple[CompiledDestination, ...]

    def of(self, destination: str) -> list[CompiledDestination]:
        """The mappings that feed `destination`."""
        return [m for m in self.mappings if m.destination == destination]


def _compile_one(
    path: Path, data: dict[str, Any], config: Config, problems: list[Problem]
) -> CompiledDestination | None:
    file = str(path)
    try:
        mapping = DestinationMapping.model_validate(data)
    except ValidationError as error:
        problems.extend(problems_from_validation(file, error))
        return None
    before = len(problems)
    if mapping.destination not in config.destinations:
        problems.append(
            Problem(
                file,
                "destination",
                f"no destination named {mapping.destination!r} in {config.path.name}",
                f"add [destinations.{mapping.destination}] to the config or fix the name",
            )
        )
    kind = mapping.match.identifier
    if kind is not None and kind not in config.identity.kinds:
        problems.append(
            Problem(
                file,
                "match.identifier",
                f"unknown identifier kind {kind!r}",
                f"use one of {', '.join(sorted(config.identity.kinds))}",
            )
        )
    getters: list[tuple[str, Getter]] = []
    for name, expression in mapping.fields.items():
        try:
            getters.append((name, compile_expression(expression)))
        except (ValueError, TypeError, SyntaxError) as error:
            problems.append(Problem(file, f"fields.{name}", str(error), DOCS))
    if len(problems) > before:
        return None
    return CompiledDestination(
        file=file,
        destination=mapping.destination,
        target=mapping.target,
        match_trait=mapping.match.trait,
        match_identifier=kind,
        conditions=tuple(mapping.when),
        getters=tuple(getters),
    )


def compile_destinations(config: Config) -> DestinationMappings:
    """Read and compile every destination mapping; raises ConfigError listing all problems.

    Every configured destination needs at least one mapping file, and one (destination,
    target) pair is mapped by one file only.
    """
    problems: list[Problem] = []
    folder = config.mappings_dir / DESTINATIONS_FOLDER
    compiled: list[CompiledDestination] = []
    named: set[str] = set()
    seen: dict[tuple[str, str], str] = {}
    paths = sorted(folder.glob("*.toml")) if folder.is_dir() else []
    for path in paths:
        data = _read_toml(path, problems)
        if data is None:
            continue
        named.add(str(data.get("destination")))
        one = _compile_one(path, data, config, problems)
        if one is None:
            continue
        key = (one.destination, one.target)
        if key in seen:
            problems.append(
                Problem(
                    one.file,
                    "target",
                    f"{one.destination}/{one.target} is already mapped by {Path(seen[key]).name}",
                    "keep one mapping file per destination and target",
                )
            )
            continue
        seen[key] = one.file
        compiled.append(one)
    for name in config.destinations:
        if name not in named:
            problems.append(
                Problem(
                    str(config.path),
                    f"destinations.{name}",
                    "no destination mapping file feeds this destination",
                    f'add {folder.name}/<file>.toml under mappings/ with destination = "{name}"',
                )
            )
    if problems:
        raise ConfigError(problems)
    return DestinationMappings(tuple(compiled))


__all__ = [
    "CompiledDestination",
    "Condition",
    "DestinationMapping",
    "DestinationMappings",
    "FieldError",
    "MatchSpec",
    "compile_destinations",
]
