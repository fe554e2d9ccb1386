"""The emulator's in-memory CRM: object schemas, records, lists, and the writes it accepts.

Everything here is plain Python guarded by one lock; the HTTP layer turns requests into calls
on `CrmData` and `ApiError`s into HubSpot's error answers. Timestamps are epoch milliseconds
internally and ISO-8601 with a `Z` on the wire, as HubSpot writes them.
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from connectors.hubspot.emulator_errors import (
    ApiError,
    PropertyProblem,
    property_values_error,
    validation_error,
)
from connectors.sample_people import in_system, noisy_phone, person

LIFECYCLE_STAGES = frozenset(
    {
        "subscriber",
        "lead",
        "marketingqualifiedlead",
        "salesqualifiedlead",
        "opportunity",
        "customer",
        "evangelist",
        "other",
    }
)
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


@dataclass(frozen=True)
class ObjectSchema:
    """What one object type accepts: its properties and which of them identify a record."""

    name: str
    modified_property: str
    writable: frozenset[str]
    unique: frozenset[str]
    default_properties: tuple[str, ...]

    @property
    def read_only(self) -> frozenset[str]:
        return frozenset({"hs_object_id", "createdate", self.modified_property})

    @property
    def known(self) -> frozenset[str]:
        return self.writable | self.read_only


CONTACTS = ObjectSchema(
    name="contacts",
    modified_property="lastmodifieddate",
    writable=frozenset(
        {
            "email",
            "firstname",
            "lastname",
            "phone",
            "company",
            "city",
            "date_of_birth",
            "lifecyclestage",
            "syncd_key",
        }
    ),
    unique=frozenset({"email", "syncd_key"}),
    default_properties=(
        "createdate",
        "email",
        "firstname",
        "hs_object_id",
        "lastmodifieddate",
        "lastname",
    ),
)
COMPANIES = ObjectSchema(
    name="companies",
    modified_property="hs_lastmodifieddate",
    writable=frozenset({"name", "domain", "city", "phone", "industry", "syncd_key"}),
    unique=frozenset({"syncd_key"}),
    default_properties=("createdate", "domain", "hs_lastmodifieddate", "hs_object_id", "name"),
)
SCHEMAS = {schema.name: schema for schema in (CONTACTS, COMPANIES)}


def iso_ms(ms: int) -> str:
    """Epoch milliseconds as HubSpot writes datetimes: `2024-01-02T03:04:05.678Z`."""
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def parse_ms(value: str) -> int:
    """A datetime filter value as epoch milliseconds: HubSpot takes both forms."""
    if value.lstrip("-").isdigit():
        return int(value)
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


@dataclass
class CrmObject:
    """One stored record of any object type."""

    id: str
    values: dict[str, str]
    created_ms: int
    updated_ms: int
    archived_ms: int | None = None

    def value(self, schema: ObjectSchema, name: str) -> str | None:
        """A property as HubSpot returns it (system properties included)."""
        if name == "hs_object_id":
            return self.id
        if name == "createdate":
            return iso_ms(self.created_ms)
        if name == schema.modified_property:
            return iso_ms(self.updated_ms)
        return self.values.get(name)

    def comparable(self, schema: ObjectSchema, name: str) -> int | str | None:
        """A property as search compares it: instants and ids as numbers, text lower-cased."""
        if name == "hs_object_id":
            return int(self.id)
        if name == "createdate":
            return self.created_ms
        if name == schema.modified_property:
            return self.updated_ms
        raw = self.values.get(name)
        if raw is None or raw == "":
            return None
        return int(raw) if raw.lstrip("-").isdigit() else raw.lower()

    def as_json(self, schema: ObjectSchema, properties: Sequence[str] | None) -> dict[str, Any]:
        """The record as the API returns it, with `properties` (or the type's defaults)."""
        wanted = properties or schema.default_properties
        body: dict[str, Any] = {
            "id": self.id,
            "properties": {
                name: self.value(schema, name) for name in wanted if name in schema.known
            },
            "createdAt": iso_ms(self.created_ms),
            "updatedAt": iso_ms(self.updated_ms),
            "archived": self.archived_ms is not None,
        }
        if self.archived_ms is not None:
            body["archivedAt"] = iso_ms(self.archived_ms)
        return body


@dataclass
class CrmList:
    """A list (ILS) of records; only MANUAL and SNAPSHOT lists take membership writes."""

    list_id: str
    name: str
    object_type: str
    processing_type: str
    members: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class WriteLogEntry:
    """One write request the emulator received, whatever its outcome."""

    method: str
    path: str
    body: Any
    status: int


@dataclass(frozen=True)
class UpsertOutcome:
    """What a batch upsert/create/update did to one input."""

    record: CrmObject
    new: bool
    written: tuple[str, ...]


class CrmData:
    """Contacts, companies and lists of one emulated HubSpot account."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.lock = threading.RLock()
        self._clock = clock
        self._last_ms = 0
        self._next_id = 101
        self.objects: dict[str, dict[str, CrmObject]] = {name: {} for name in SCHEMAS}
        self.lists: dict[str, CrmList] = {}
        self.write_log: list[WriteLogEntry] = []
        # (object type, unique property) -> value -> id of the record last written with it.
        self._unique: dict[tuple[str, str], dict[str, str]] = {}

    # -- time and ids -------------------------------------------------------------------

    def now_ms(self) -> int:
        """The current time, never going backwards, so writes order like HubSpot's."""
        with self.lock:
            self._last_ms = max(int(self._clock() * 1000), self._last_ms)
            return self._last_ms

    def _new_id(self) -> str:
        self._next_id += 1
        return str(self._next_id)

    # -- seeding and test helpers --------------------------------------------------------

    def seed(self, people: int, seed: int, share: float) -> None:
        """Contacts for `share` of `people` sample people, and one company per employer."""
        companies: dict[str, CrmObject] = {}
        for index in range(people):
            if not in_system(seed, index, "hubspot", share):
                continue
            sample = person(seed, index)
            rng = random.Random(f"{seed}:{index}:hubspot-noise")
            created = int(sample.created_at.timestamp() * 1000)
            updated = created + rng.randint(0, 90 * 24 * 3600 * 1000)
            first = sample.first_name.lower() if rng.random() < 0.3 else sample.first_name
            self._store(
                CONTACTS,
                {
                    "email": sample.email,
                    "firstname": first,
                    "lastname": sample.last_name,
                    "phone": noisy_phone(sample.phone, rng),
                    "company": sample.company,
                    "city": sample.city,
                    "date_of_birth": sample.birth_date,
                    "lifecyclestage": rng.choice(("subscriber", "lead", "customer")),
                },
                created,
                updated,
            )
            if sample.company not in companies:
                domain = sample.company.lower().replace(" ", "") + ".example.com"
                companies[sample.company] = self._store(
                    COMPANIES,
                    {"name": sample.company, "domain": domain, "city": sample.city},
                    created,
                    updated,
                )
        self._last_ms = max(self._last_ms, self.max_updated_ms())
        self.create_list("Newsletter (manual)", "MANUAL")
        self.create_list("Active customers (dynamic)", "DYNAMIC")

    def max_updated_ms(self) -> int:
        return max(
            (obj.updated_ms for table in self.objects.values() for obj in table.values()),
            default=0,
        )

    def _store(
        self, schema: ObjectSchema, values: dict[str, str], created: int, updated: int
    ) -> CrmObject:
        obj = CrmObject(self._new_id(), values, created, updated)
        self.objects[schema.name][obj.id] = obj
        self._index(schema, obj)
        return obj

    def _index(self, schema: ObjectSchema, obj: CrmObject) -> None:
        for name in schema.unique:
            value = obj.values.get(name)
            if value:
                self._unique.setdefault((schema.name, name), {})[value] = obj.id

    def create_list(self, name: str, processing_type: str, object_type: str = "0-1") -> CrmList:
        """Add a list; `processing_type` is MANUAL, SNAPSHOT or DYNAMIC."""
        with self.lock:
            crm_list = CrmList(str(len(self.lists) + 1), name, object_type, processing_type)
            self.lists[crm_list.list_id] = crm_list
            return crm_list

    def modify(
        self,
        object_type: str,
        ids: Iterable[str],
        properties: Mapping[str, str] | None = None,
        at_ms: int | None = None,
    ) -> int:
        """Edit records as a user would; they all get the same modification time, returned."""
        with self.lock:
            stamp = self.now_ms() if at_ms is None else at_ms
            for record_id in ids:
                obj = self.objects[object_type][record_id]
                obj.values.update(properties or {})
                obj.updated_ms = stamp
                self._index(SCHEMAS[object_type], obj)
            return stamp

    def archive(self, object_type: str, ids: Iterable[str], at_ms: int | None = None) -> None:
        """Archive (soft-delete) records; lists drop them as HubSpot does."""
        with self.lock:
            stamp = self.now_ms() if at_ms is None else at_ms
            for record_id in ids:
                obj = self.objects[object_type].get(record_id)
                if obj is None or obj.archived_ms is not None:
                    continue
                obj.archived_ms = stamp
                obj.updated_ms = stamp
                for crm_list in self.lists.values():
                    crm_list.members.pop(record_id, None)

    def live(self, object_type: str) -> list[CrmObject]:
        """Records not archived, by id."""
        with self.lock:
            table = self.objects[object_type]
            return [obj for obj in table.values() if obj.archived_ms is None]

    def find(self, schema: ObjectSchema, id_property: str, value: str) -> CrmObject | None:
        """The live record whose `id_property` equals `value` (emails compare lower-case)."""
        if id_property in {"hs_object_id", "id"}:
            obj = self.objects[schema.name].get(value)
            return obj if obj is not None and obj.archived_ms is None else None
        wanted = normalize(id_property, value)
        record_id = self._unique.get((schema.name, id_property), {}).get(wanted)
        obj = self.objects[schema.name].get(record_id or "")
        # The index keeps values a record has since changed: check the record still has it.
        if obj is None or obj.archived_ms is not None or obj.values.get(id_property) != wanted:
            return None
        return obj

    # -- writes --------------------------------------------------------------------------

    def check_properties(self, schema: ObjectSchema, inputs: Sequence[Mapping[str, Any]]) -> None:
        """Refuse the whole batch if any input names an unknown property or a bad value."""
        problems: list[PropertyProblem] = []
        for item in inputs:
            for name, value in item.items():
                problem = property_problem(schema, name, value)
                if problem is not None:
                    problems.append(problem)
        if problems:
            raise property_values_error(problems)

    def upsert(
        self, schema: ObjectSchema, id_property: str, key: str, properties: Mapping[str, Any]
    ) -> UpsertOutcome:
        """Create or update the record whose `id_property` is `key`."""
        existing = self.find(schema, id_property, key)
        values = {name: as_text(name, value) for name, value in properties.items()}
        values[id_property] = normalize(id_property, key)
        stamp = self.now_ms()
        if existing is None:
            created = self._store(schema, values, stamp, stamp)
            return UpsertOutcome(created, True, tuple(values))
        existing.values.update(values)
        existing.updated_ms = stamp
        self._index(schema, existing)
        return UpsertOutcome(existing, False, tuple(values))

    def create(self, schema: ObjectSchema, properties: Mapping[str, Any]) -> UpsertOutcome:
        """Create one record; a taken unique value is a 409 CONFLICT, as in HubSpot."""
        values = {name: as_text(name, value) for name, value in properties.items()}
        for name in schema.unique & values.keys():
            clash = self.find(schema, name, values[name])
            if clash is not None:
                raise ApiError(
                    409,
                    "CONFLICT",
                    f"{schema.name[:-1].capitalize()} already exists. Existing ID: {clash.id}",
                )
        stamp = self.now_ms()
        return UpsertOutcome(self._store(schema, values, stamp, stamp), True, tuple(values))

    def update(
        self, schema: ObjectSchema, obj: CrmObject, properties: Mapping[str, Any]
    ) -> UpsertOutcome:
        """Change properties of an existing record."""
        values = {name: as_text(name, value) for name, value in properties.items()}
        obj.values.update(values)
        obj.updated_ms = self.now_ms()
        self._index(schema, obj)
        return UpsertOutcome(obj, False, tuple(values))


def normalize(name: str, value: str) -> str:
    """HubSpot stores emails trimmed and lower-cased; other values as given."""
    return value.strip().lower() if name == "email" else value


def as_text(name: str, value: Any) -> str:
    """Property values are strings in HubSpot whatever JSON type was sent."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    else:
        text = "" if value is None else str(value)
    return normalize(name, text)


def property_problem(schema: ObjectSchema, name: str, value: Any) -> PropertyProblem | None:
    """Why HubSpot would refuse `name = value` on this object type, if it would."""
    if name not in schema.known:
        return PropertyProblem(name, "PROPERTY_DOESNT_EXIST", f'Property "{name}" does not exist')
    if name in schema.read_only:
        return PropertyProblem(
            name, "READ_ONLY_VALUE", f'"{name}" is a read only property; its value cannot be set.'
        )
    if isinstance(value, dict | list):
        return PropertyProblem(
            name, "INVALID_PROPERTY_VALUE", f'Property "{name}" must be a string, number or bool'
        )
    if name == "email" and value not in (None, "") and not EMAIL_RE.match(str(value).strip()):
        return PropertyProblem(name, "INVALID_EMAIL", f"Email address {value} is invalid")
    if name == "lifecyclestage" and value not in (None, "") and value not in LIFECYCLE_STAGES:
        return PropertyProblem(
            name,
            "INVALID_OPTION",
            f"{value} was not one of the allowed options: {sorted(LIFECYCLE_STAGES)}",
        )
    return None


def require_schema(object_type: str) -> ObjectSchema:
    """The schema of an object type, or HubSpot's 400 for an unknown one."""
    schema = SCHEMAS.get(object_type)
    if schema is None:
        raise validation_error(f"Unable to infer object type from: {object_type}")
    return schema
