"""The HubSpot destination: batch upsert by a unique property, and list memberships.

Targets are an object type (`contacts`, `companies`, any type with a unique property) or
`list:<listId>` (a MANUAL or SNAPSHOT contacts list). Every item gets its own outcome:

- OK with the HubSpot record id;
- REJECTED with HubSpot's category and the codes and names of the refused properties (never
  its message, which quotes the values) when HubSpot refuses that record. HubSpot
  refuses a whole batch (400 VALIDATION_ERROR) for one bad value without saying which, so
  such a batch is split in halves until the culprits stand alone: the others still land;
- RETRY when the request failed transiently after every retry, or HubSpot reported nothing
  about the item. Upsert by a unique property is idempotent, so trying again is safe.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import structlog

from connectors.hubspot.client import Answer, HubSpotClient, HubSpotRejected, describe, refusals
from syncd.connector import (
    LIST_PREFIX,
    MEMBER,
    Outcome,
    PushItem,
    PushResult,
    distinct_rounds,
)
from syncd.errors import FatalConnectorError, RetryableError

log = structlog.get_logger(__name__)

SPLITTABLE_STATUSES = frozenset({400, 409})
SCHEMA_ERROR = "PROPERTY_DOESNT_EXIST"
TRANSIENT_CATEGORIES = frozenset({"RATE_LIMITS", "RATE_LIMIT", "INTERNAL_ERROR", "LOCKED"})


def _normalized(id_property: str, value: str) -> str:
    return value.strip().lower() if id_property == "email" else value


def _chunks(items: Sequence[PushItem], size: int) -> Iterator[Sequence[PushItem]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class HubSpotDestination:
    """Pushes desired states to one HubSpot account."""

    def __init__(
        self, client: HubSpotClient, id_property: str = "email", batch_size: int = 100
    ) -> None:
        self._client = client
        self._id_property = id_property
        self.max_batch_size = batch_size

    def push(self, target: str, items: Sequence[PushItem]) -> list[PushResult]:
        """One result per item, in the order of `items`."""
        if target.startswith(LIST_PREFIX):
            outcomes = self._push_list(target.removeprefix(LIST_PREFIX), items)
        else:
            outcomes = self._push_objects(target, items)
        results = [outcomes[item.key] for item in items]
        log.info(
            "hubspot push",
            target=target,
            **{o.value: sum(r.outcome is o for r in results) for o in Outcome},
        )
        return results

    def close(self) -> None:
        """Release the client's connections."""
        self._client.close()

    # -- objects -------------------------------------------------------------------------

    def _push_objects(self, object_type: str, items: Sequence[PushItem]) -> dict[str, PushResult]:
        outcomes: dict[str, PushResult] = {}
        usable = []
        for item in items:
            if item.match_value.strip():
                usable.append(item)
            else:
                outcomes[item.key] = PushResult(
                    item.key, Outcome.REJECTED, reason=f"no {self._id_property} to upsert by"
                )
        for round_items in distinct_rounds(usable, self._record):
            for batch in _chunks(round_items, self.max_batch_size):
                outcomes.update(self._upsert(object_type, batch))
        return outcomes

    def _record(self, item: PushItem) -> str:
        """The item's match value as HubSpot compares it: one record per value."""
        return _normalized(self._id_property, item.match_value)

    def _upsert(self, object_type: str, batch: Sequence[PushItem]) -> dict[str, PushResult]:
        inputs = [
            {
                "idProperty": self._id_property,
                "id": item.match_value,
                "properties": dict(item.fields),
            }
            for item in batch
        ]
        try:
            answer = self._client.batch_upsert(object_type, inputs)
        except HubSpotRejected as refused:
            if refused.status not in SPLITTABLE_STATUSES or any(
                r.code == SCHEMA_ERROR for r in refused.refused
            ):
                # An unknown property fails every record alike: a mapping to fix, not data.
                raise
            if len(batch) == 1:
                reason = refused.reason
                return {batch[0].key: PushResult(batch[0].key, Outcome.REJECTED, reason=reason)}
            middle = len(batch) // 2
            return {
                **self._upsert(object_type, batch[:middle]),
                **self._upsert(object_type, batch[middle:]),
            }
        except RetryableError as failure:
            return {
                item.key: PushResult(item.key, Outcome.RETRY, reason=str(failure)) for item in batch
            }
        return self._read_answer(batch, answer)

    def _read_answer(self, batch: Sequence[PushItem], answer: Answer) -> dict[str, PushResult]:
        body: Mapping[str, Any] = answer.body or {}
        by_value = {_normalized(self._id_property, item.match_value): item for item in batch}
        outcomes: dict[str, PushResult] = {}
        results = body.get("results") or []
        for result in results:
            value = (result.get("properties") or {}).get(self._id_property)
            item = by_value.get(_normalized(self._id_property, str(value))) if value else None
            if item is not None:
                outcomes[item.key] = PushResult(item.key, Outcome.OK, external_id=str(result["id"]))
        errors = body.get("errors") or []
        if not outcomes and not errors and len(results) == len(batch):
            # The id property was not echoed back: HubSpot answers in input order.
            for item, result in zip(batch, results, strict=True):
                outcomes[item.key] = PushResult(item.key, Outcome.OK, external_id=str(result["id"]))
        for error in errors:
            category = str(error.get("category", "UNKNOWN"))
            outcome = Outcome.RETRY if category in TRANSIENT_CATEGORIES else Outcome.REJECTED
            reason = describe(category, refusals(error))
            for value in (error.get("context") or {}).get("ids") or []:
                item = by_value.get(_normalized(self._id_property, str(value)))
                if item is not None and item.key not in outcomes:
                    outcomes[item.key] = PushResult(item.key, outcome, reason=reason)
        for item in batch:
            if item.key not in outcomes:
                outcomes[item.key] = PushResult(
                    item.key, Outcome.RETRY, reason="HubSpot reported no outcome for this record"
                )
        return outcomes

    # -- lists ---------------------------------------------------------------------------

    def _push_list(self, list_id: str, items: Sequence[PushItem]) -> dict[str, PushResult]:
        """Add items whose `fields[MEMBER]` is true (the default), remove the others."""
        outcomes: dict[str, PushResult] = {}
        for batch in _chunks(items, self.max_batch_size):
            try:
                record_ids = self._record_ids(batch)
                for item in batch:
                    if item.key not in record_ids:
                        outcomes[item.key] = PushResult(
                            item.key,
                            Outcome.REJECTED,
                            reason=f"OBJECT_NOT_FOUND: no contact with this {self._id_property}",
                        )
                found = [item for item in batch if item.key in record_ids]
                add = [record_ids[i.key] for i in found if i.fields.get(MEMBER, True)]
                # The plan sends removals before additions: a contact one profile leaves and
                # another now holds is a member, and HubSpot would apply the removal last.
                remove = [
                    record_ids[i.key]
                    for i in found
                    if not i.fields.get(MEMBER, True) and record_ids[i.key] not in add
                ]
                answer = self._change_memberships(list_id, add, remove) if found else {}
            except RetryableError as failure:
                for item in batch:
                    outcomes[item.key] = PushResult(item.key, Outcome.RETRY, reason=str(failure))
                continue
            missing = set(map(str, (answer or {}).get("recordIdsMissing") or []))
            for item in found:
                record_id = record_ids[item.key]
                if record_id in missing:
                    outcomes[item.key] = PushResult(
                        item.key, Outcome.REJECTED, reason="OBJECT_NOT_FOUND: record is missing"
                    )
                else:
                    outcomes[item.key] = PushResult(item.key, Outcome.OK, external_id=record_id)
        return outcomes

    def _change_memberships(self, list_id: str, add: list[str], remove: list[str]) -> Any:
        try:
            return self._client.change_memberships(list_id, add, remove)
        except HubSpotRejected as refused:
            # HubSpot's message would say which list type it is, but messages are never passed
            # on (they may quote what they were sent): what syncd can write is said here.
            raise FatalConnectorError(
                f"HubSpot list {list_id} takes no members from syncd ({refused.status} "
                f"{refused.reason}): it must exist and be a MANUAL or SNAPSHOT list"
            ) from refused

    def _record_ids(self, batch: Sequence[PushItem]) -> dict[str, str]:
        """HubSpot record ids by item key: given as digits, else looked up by id property."""
        ids = {item.key: item.match_value for item in batch if item.match_value.isdigit()}
        lookup = [item for item in batch if item.key not in ids and item.match_value.strip()]
        if lookup:
            answer = self._client.batch_read(
                "contacts",
                sorted({item.match_value for item in lookup}),
                self._id_property,
                [self._id_property],
            )
            found = {
                _normalized(self._id_property, str(value)): str(result["id"])
                for result in (answer.body or {}).get("results") or []
                if (value := (result.get("properties") or {}).get(self._id_property))
            }
            for item in lookup:
                record_id = found.get(_normalized(self._id_property, item.match_value))
                if record_id is not None:
                    ids[item.key] = record_id
        return ids
