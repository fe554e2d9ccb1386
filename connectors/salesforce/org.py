"""The emulator's in-memory Salesforce org: objects, seeded records, upserts and a write log.

Records live as dicts of Python values (aware datetimes, bools, None); the HTTP layer formats
them the way each API does. Every change happens at one tick of a virtual clock, so all the
records touched by one operation share one SystemModstamp, as they do in Salesforce when one
transaction updates them; tests rely on that to build page boundaries inside one timestamp.
"""

from __future__ import annotations

import copy
import random
import re
import threading
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from connectors.sample_people import (
    COMPANIES,
    EPOCH,
    in_system,
    noisy_email,
    noisy_phone,
    person,
)

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
AUDIT_FIELDS = ("Id", "IsDeleted", "CreatedDate", "LastModifiedDate", "SystemModstamp")


@dataclass(frozen=True)
class FieldSpec:
    """One field of an object as describe shows it."""

    name: str
    type: str
    updateable: bool = True
    required: bool = False
    external_id: bool = False
    length: int = 0
    """The most characters a text field holds (0 for other types), as describe says."""


@dataclass(frozen=True)
class ObjectSpec:
    """One sObject type: its key prefix and fields."""

    name: str
    key_prefix: str
    fields: tuple[FieldSpec, ...]

    def field_types(self) -> dict[str, str]:
        """Field name -> type, as the SOQL planner wants them."""
        return {spec.name: spec.type for spec in self.fields}

    def field(self, name: str) -> FieldSpec | None:
        """The field named `name`, case-insensitively as Salesforce matches field names."""
        return next((spec for spec in self.fields if spec.name.lower() == name.lower()), None)

    def canonical(self, name: str) -> str:
        """The field's name as describe spells it; KeyError for a field the object lacks."""
        spec = self.field(name)
        if spec is None:
            raise KeyError(name)
        return spec.name


def _audit() -> tuple[FieldSpec, ...]:
    return (
        FieldSpec("Id", "id", updateable=False),
        FieldSpec("IsDeleted", "boolean", updateable=False),
        FieldSpec("CreatedDate", "datetime", updateable=False),
        FieldSpec("LastModifiedDate", "datetime", updateable=False),
        FieldSpec("SystemModstamp", "datetime", updateable=False),
    )


OBJECTS: dict[str, ObjectSpec] = {
    "Account": ObjectSpec(
        "Account",
        "001",
        (
            *_audit(),
            FieldSpec("Name", "string", required=True, length=255),
            FieldSpec("BillingCity", "string", length=40),
        ),
    ),
    "Contact": ObjectSpec(
        "Contact",
        "003",
        (
            *_audit(),
            FieldSpec("AccountId", "reference"),
            FieldSpec("FirstName", "string", length=40),
            FieldSpec("LastName", "string", required=True, length=80),
            FieldSpec("Email", "email"),
            FieldSpec("Phone", "phone"),
            FieldSpec("MailingCity", "string", length=40),
            FieldSpec("Birthdate", "date"),
            FieldSpec("Syncd_Id__c", "string", external_id=True, length=255),
        ),
    ),
    "Lead": ObjectSpec(
        "Lead",
        "00Q",
        (
            *_audit(),
            FieldSpec("FirstName", "string", length=40),
            FieldSpec("LastName", "string", required=True, length=80),
            FieldSpec("Company", "string", required=True, length=255),
            FieldSpec("Email", "email"),
            FieldSpec("Phone", "phone"),
            FieldSpec("City", "string", length=40),
            FieldSpec("Status", "picklist"),
            FieldSpec("Syncd_Id__c", "string", external_id=True, length=255),
        ),
    ),
}


@dataclass(frozen=True)
class RecordError:
    """A per-record refusal, as in the `errors` array of a collection result."""

    status_code: str
    message: str
    fields: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        """The error as an entry of a result's `errors` array."""
        return {
            "statusCode": self.status_code,
            "message": self.message,
            "fields": list(self.fields),
        }


_ROLLED_BACK = RecordError(
    "ALL_OR_NONE_OPERATION_ROLLED_BACK",
    "Record rolled back because not all records were valid and the request was using "
    "AllOrNone header",
)


def _shared_keys(
    external_field: str, records: Sequence[Mapping[str, Any]]
) -> dict[int, RecordError]:
    """DUPLICATE_VALUE for each record whose external id another record of the call has."""
    keys = [record.get(external_field) for record in records]
    counts = Counter(str(key) for key in keys if key not in (None, ""))
    return {
        position: RecordError("DUPLICATE_VALUE", f"Duplicate external id specified: {key}")
        for position, key in enumerate(keys)
        if key not in (None, "") and counts[str(key)] > 1
    }


@dataclass(frozen=True)
class UpsertOutcome:
    """The result of upserting one record: its id and whether it was created, or an error."""

    record_id: str | None
    created: bool = False
    error: RecordError | None = None


@dataclass(frozen=True)
class WriteRequest:
    """One write request the org received: which API, which object and how many records."""

    api: str
    sobject: str
    records: int


@dataclass
class Org:
    """Every record of the emulated org, guarded by one lock (HTTP thread and test thread)."""

    lock: threading.RLock = field(default_factory=threading.RLock)
    records: dict[str, dict[str, dict[str, Any]]] = field(
        default_factory=lambda: {name: {} for name in OBJECTS}
    )
    writes: list[WriteRequest] = field(default_factory=list)
    now: datetime = EPOCH + timedelta(days=400)
    _counter: int = 0

    # -- ids and time ------------------------------------------------------------------
    def new_id(self, sobject: str) -> str:
        """The next record id of `sobject`, in creation (and string) order."""
        self._counter += 1
        # 15 characters as Salesforce shows them, then the case-safe 3-character suffix
        # (all AAA here because the counter has no upper-case letters).
        return f"{OBJECTS[sobject].key_prefix}5g{self._counter:010d}AAA"

    def tick(self) -> datetime:
        """Advance the virtual clock one second; the new time stamps one operation."""
        self.now += timedelta(seconds=1)
        return self.now

    # -- seeding -----------------------------------------------------------------------
    def seed(self, people: int, seed: int) -> None:
        """Accounts for the sample companies, then a Contact or a Lead per sample person.

        Timestamps are the person's creation time floored to the day, so several records
        share one SystemModstamp on purpose.
        """
        with self.lock:
            accounts = {}
            for company in COMPANIES:
                account = self._insert("Account", {"Name": company}, EPOCH)
                accounts[company] = account["Id"]
            for index in range(people):
                p = person(seed, index)
                rng = random.Random(f"{seed}:{index}:salesforce")
                stamp = p.created_at.replace(hour=0, minute=0, second=0, microsecond=0)
                fields: dict[str, Any] = {
                    "FirstName": p.first_name if rng.random() > 0.1 else p.first_name.lower(),
                    "LastName": p.last_name,
                    "Email": noisy_email(p.email, rng),
                    "Phone": noisy_phone(p.phone, rng) if rng.random() > 0.15 else None,
                }
                if in_system(seed, index, "salesforce_lead", 0.25):
                    fields |= {"Company": p.company, "City": p.city, "Status": "Open"}
                    self._insert("Lead", fields, stamp)
                else:
                    fields |= {
                        "AccountId": accounts[p.company],
                        "MailingCity": p.city,
                        "Birthdate": p.birth_date,
                    }
                    self._insert("Contact", fields, stamp)

    def _insert(self, sobject: str, fields: Mapping[str, Any], at: datetime) -> dict[str, Any]:
        row: dict[str, Any] = {spec.name: None for spec in OBJECTS[sobject].fields}
        row |= fields
        row |= {
            "Id": self.new_id(sobject),
            "IsDeleted": False,
            "CreatedDate": at,
            "LastModifiedDate": at,
            "SystemModstamp": at,
        }
        self.records[sobject][row["Id"]] = row
        return row

    # -- reads -------------------------------------------------------------------------
    def rows(self, sobject: str, include_deleted: bool) -> list[dict[str, Any]]:
        """Snapshot copies of the rows, in id order (creation order)."""
        with self.lock:
            return [
                dict(row)
                for row in self.records[sobject].values()
                if include_deleted or not row["IsDeleted"]
            ]

    # -- test helpers ------------------------------------------------------------------
    def modify(self, sobject: str, ids: Iterable[str], changes: Mapping[str, Any]) -> datetime:
        """Apply `changes` to the records at one new SystemModstamp, which is returned."""
        with self.lock:
            at = self.tick()
            for record_id in ids:
                row = self.records[sobject][record_id]
                row |= changes
                row["LastModifiedDate"] = row["SystemModstamp"] = at
            return at

    def delete(self, sobject: str, ids: Iterable[str]) -> datetime:
        """Move the records to the recycle bin (IsDeleted, visible to queryAll)."""
        return self.modify(sobject, ids, {"IsDeleted": True})

    # -- writes ------------------------------------------------------------------------
    def check_record(self, spec: ObjectSpec, record: Mapping[str, Any]) -> RecordError | None:
        """A per-record refusal for fields that exist but cannot take this value."""
        for name, value in record.items():
            field_spec = spec.field(name)
            if field_spec is None:
                continue
            if not field_spec.updateable:
                return RecordError(
                    "INVALID_FIELD_FOR_INSERT_UPDATE",
                    f"Unable to create/update fields: {field_spec.name}. Please check the "
                    "security settings of this field and verify that it is read/write for "
                    "your profile or permission set.",
                    (field_spec.name,),
                )
            if (
                field_spec.type == "email"
                and value not in (None, "")
                and not _EMAIL.match(str(value).strip())
            ):
                return RecordError(
                    "INVALID_EMAIL_ADDRESS",
                    f"{field_spec.name}: invalid email address: {value}",
                    (field_spec.name,),
                )
            if field_spec.length and isinstance(value, str) and len(value) > field_spec.length:
                return RecordError(
                    "STRING_TOO_LONG",
                    f"{field_spec.name}: data value too large: {value} "
                    f"(max length={field_spec.length})",
                    (field_spec.name,),
                )
        return None

    def upsert(
        self,
        sobject: str,
        external_field: str,
        records: Sequence[Mapping[str, Any]],
        api: str,
        *,
        all_or_none: bool = False,
        refused: Mapping[int, RecordError] | None = None,
    ) -> list[UpsertOutcome]:
        """Upsert by `external_field`; one outcome per record, in order. Logs the request.

        `refused` forces an error on records by position (a validation rule firing). Records
        sharing an external id all fail with DUPLICATE_VALUE: Salesforce will not pick one of
        them to write. With `all_or_none`, any error rolls the whole request back, as
        Salesforce does.
        """
        spec = OBJECTS[sobject]
        forced = {**_shared_keys(external_field, records), **(refused or {})}
        with self.lock:
            self.writes.append(WriteRequest(api, sobject, len(records)))
            before = copy.deepcopy(self.records[sobject]) if all_or_none else None
            at = self.tick()
            outcomes = [
                UpsertOutcome(None, error=forced[i])
                if i in forced
                else self._upsert_one(spec, external_field, record, at)
                for i, record in enumerate(records)
            ]
            if before is not None and any(o.error for o in outcomes):
                self.records[sobject] = before
                outcomes = [
                    o if o.error else UpsertOutcome(None, error=_ROLLED_BACK) for o in outcomes
                ]
            return outcomes

    def _upsert_one(
        self, spec: ObjectSpec, external_field: str, record: Mapping[str, Any], at: datetime
    ) -> UpsertOutcome:
        key = record.get(external_field)
        if key in (None, ""):
            return UpsertOutcome(
                None,
                error=RecordError(
                    "MISSING_ARGUMENT", f"{external_field} not specified", (external_field,)
                ),
            )
        values = {k: v for k, v in record.items() if k != external_field}
        refusal = self.check_record(spec, values)
        if refusal is not None:
            return UpsertOutcome(None, error=refusal)
        canonical = {spec.canonical(k): v for k, v in values.items()}
        matches = [
            row
            for row in self.records[spec.name].values()
            if not row["IsDeleted"] and row[external_field] == key
        ]
        if len(matches) > 1:
            return UpsertOutcome(
                None,
                error=RecordError(
                    "DUPLICATE_EXTERNAL_ID",
                    f"{external_field}: more than one record found for external id field: "
                    f"[{', '.join(row['Id'] for row in matches)}]",
                    (external_field,),
                ),
            )
        if matches:
            row = matches[0]
            row |= canonical
            row["LastModifiedDate"] = row["SystemModstamp"] = at
            return UpsertOutcome(row["Id"], created=False)
        missing = [
            s.name for s in spec.fields if s.required and canonical.get(s.name) in (None, "")
        ]
        if missing:
            return UpsertOutcome(
                None,
                error=RecordError(
                    "REQUIRED_FIELD_MISSING",
                    f"Required fields are missing: [{', '.join(missing)}]",
                    tuple(missing),
                ),
            )
        row = self._insert(spec.name, canonical | {external_field: key}, at)
        return UpsertOutcome(row["Id"], created=True)
