"""The mapping language as written in `mappings/*.toml`, validated before it is compiled.

See docs/MAPPINGS.md for the language with examples.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


FieldType = Literal["string", "int", "float", "bool", "datetime", "date", "list"]


class FieldSpec(_Strict):
    """A trait (or event property): where it comes from and how it is cleaned."""

    from_: str | list[str] = Field(alias="from")
    map: dict[str, Any] | None = None
    default: Any = None
    type: FieldType | None = None
    on_error: Literal["quarantine", "null"] = "quarantine"


class IdentifierSpec(_Strict):
    """An identifier: one expression (`from`) or a composite of several (`parts`)."""

    from_: str | None = Field(default=None, alias="from")
    parts: list[str] | None = None
    kind: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> IdentifierSpec:
        if (self.from_ is None) == (self.parts is None):
            raise ValueError('give either from = "path" or parts = ["path", ...], not both')
        if self.parts is not None and len(self.parts) < 2:
            raise ValueError("a composite identifier needs at least two parts")
        return self


class StreamMapping(_Strict):
    """How one stream of one source maps to records or events."""

    source: str
    stream: str
    type: Literal["records", "events"] = "records"
    primary_key: str | None = None
    updated_at: str | None = None
    deleted: str | None = None
    event_id: str | None = None
    event_name: str | None = None
    timestamp: str | None = None
    identifiers: dict[str, str | IdentifierSpec] = Field(default_factory=dict)
    fields: dict[str, str | FieldSpec] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _keys_for_type(self) -> StreamMapping:
        if self.type == "records" and self.primary_key is None:
            raise ValueError('a records stream needs primary_key = "path.to.id"')
        if self.type == "events":
            missing = [
                k for k in ("event_id", "event_name", "timestamp") if getattr(self, k) is None
            ]
            if missing:
                raise ValueError(f"an events stream needs {', '.join(missing)}")
        if not self.identifiers:
            raise ValueError("a stream needs at least one identifier to join profiles")
        return self


SurvivorshipRule = Literal["latest", "source_priority", "first_non_null", "max", "min", "union"]


class TraitRule(_Strict):
    """Which record's value a profile trait takes when several records have one."""

    rule: SurvivorshipRule = "latest"
    sources: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _sources_for_priority(self) -> TraitRule:
        if self.rule == "source_priority" and not self.sources:
            raise ValueError('source_priority needs sources = ["first", "second", ...]')
        return self


class ComputedTrait(_Strict):
    """A trait computed from a profile's records or events."""

    op: Literal["count", "sum", "min", "max", "first_seen", "last_seen", "distinct", "sources"]
    over: Literal["records", "events"] = "events"
    event: str | None = None
    stream: str | None = None
    property: str | None = None
    within_days: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _property_when_needed(self) -> ComputedTrait:
        if self.op in {"sum", "min", "max", "distinct"} and self.property is None:
            raise ValueError(f'op = {self.op!r} needs property = "name"')
        if self.over == "records" and (self.event or self.within_days):
            raise ValueError("event and within_days apply to events only")
        return self


class ProfileMapping(_Strict):
    """mappings/profile.toml: survivorship per trait and computed traits."""

    traits: dict[str, TraitRule] = Field(default_factory=dict)
    computed: dict[str, ComputedTrait] = Field(default_factory=dict)
