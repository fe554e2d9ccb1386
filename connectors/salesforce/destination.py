"""Upserts into a Salesforce object by an external-id field, with a result per record.

Up to `bulk_push_threshold` records go through sObject Collections, 200 per request with
allOrNone false, so a record Salesforce rejects never takes the rest of its batch down. Larger
pushes run as one Bulk 2.0 ingest job. Upsert by external id (never find-then-create) makes a
retried or repeated push converge on the same records. Items sharing an external id go in
separate rounds of requests: Salesforce refuses every record of one request whose external id
another record of it has (DUPLICATE_VALUE).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from connectors.salesforce.client import SalesforceClient
from syncd.connector import Outcome, PushItem, PushResult, distinct_rounds, refusal_reason
from syncd.errors import RetryableError

COLLECTION_LIMIT = 200
"""The most records Salesforce accepts in one sObject Collections request."""
_TRANSIENT_RECORD_CODES = {"UNABLE_TO_LOCK_ROW", "SERVER_UNAVAILABLE"}
EXPLANATIONS = {
    "DUPLICATE_EXTERNAL_ID": "more than one record has this external id",
    "DUPLICATE_VALUE": "another record holds this value of a unique field",
    "DUPLICATES_DETECTED": "a duplicate rule of the org refused the record",
    "FIELD_CUSTOM_VALIDATION_EXCEPTION": "a validation rule of the org refused the record",
    "INVALID_EMAIL_ADDRESS": "not a valid email address",
    "INVALID_FIELD_FOR_INSERT_UPDATE": "this user may not write the field",
    "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST": "not one of the picklist's values",
    "INVALID_TYPE_ON_FIELD_IN_RECORD": "the value does not fit the field's type",
    "MISSING_ARGUMENT": "the external id has no value",
    "REQUIRED_FIELD_MISSING": "a required field has no value",
    "STRING_TOO_LONG": "the value is longer than the field allows",
    "UNABLE_TO_LOCK_ROW": "another update held the record",
}
"""A few words on the codes a push meets most, for the reasons recorded in the ledger."""


def _reason(code: str, fields: Sequence[str]) -> str:
    return refusal_reason(code, fields, EXPLANATIONS.get(code))


def _record_result(item: PushItem, result: Mapping[str, Any]) -> PushResult:
    if result.get("success"):
        return PushResult(item.key, Outcome.OK, external_id=str(result["id"]))
    errors = result.get("errors") or [{}]
    code = str(errors[0].get("statusCode", "UNKNOWN"))
    reason = "; ".join(
        _reason(str(e.get("statusCode", "UNKNOWN")), [str(f) for f in e.get("fields") or ()])
        for e in errors
    )
    outcome = Outcome.RETRY if code in _TRANSIENT_RECORD_CODES else Outcome.REJECTED
    return PushResult(item.key, outcome, reason=reason)


def _cell(fields: Mapping[str, Any], name: str) -> str:
    """One Bulk CSV cell: an empty one leaves the field unchanged, #N/A clears it.

    A job's columns are every field of its items, so an item may lack some: the engine left
    them out for the record to keep what it has, which only an empty cell does. An explicit
    None clears the field, as null does through sObject Collections.
    """
    if name not in fields:
        return ""
    value = fields[name]
    if value is None:
        return "#N/A"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _bulk_error(error: str, columns: Sequence[str]) -> tuple[Outcome, str]:
    """The outcome and reason of an sf__Error, "CODE:message:Field Other --".

    The message quotes the refused value and may hold colons itself; the fields named after
    the last colon count only where they are columns of the job, which we named ourselves.
    """
    code, _, rest = error.partition(":")
    named = {name.lower() for name in re.split(r"[\s,]+", rest.rpartition(":")[2])}
    fields = [column for column in columns if column.lower() in named]
    outcome = Outcome.RETRY if code in _TRANSIENT_RECORD_CODES else Outcome.REJECTED
    return outcome, _reason(code, fields)


def _external_id(item: PushItem) -> str:
    # Salesforce matches an external id regardless of case unless the field is unique and
    # case-sensitive; values differing in case alone may be one record, so they go apart too.
    return item.match_value.casefold()


class SalesforceDestination:
    """Pushes desired states to the object named by `target`."""

    max_batch_size = COLLECTION_LIMIT

    def __init__(self, client: SalesforceClient) -> None:
        self.client = client
        self.options = client.options

    def push(self, target: str, items: Sequence[PushItem]) -> list[PushResult]:
        """Upsert `items` into object `target`; PushItem.match_value is the external id."""
        results: dict[str, PushResult] = {}
        for round_items in distinct_rounds(items, _external_id):
            results.update((result.key, result) for result in self._push_round(target, round_items))
        return [results[item.key] for item in items]

    def _push_round(self, target: str, items: Sequence[PushItem]) -> list[PushResult]:
        if len(items) > self.options.bulk_push_threshold:
            return self._push_bulk(target, items)
        results: list[PushResult] = []
        for start in range(0, len(items), COLLECTION_LIMIT):
            results.extend(self._push_collection(target, items[start : start + COLLECTION_LIMIT]))
        return results

    def _push_collection(self, target: str, items: Sequence[PushItem]) -> list[PushResult]:
        ext = self.options.external_id_field
        records = [{**item.fields, ext: item.match_value} for item in items]
        try:
            answers = self.client.upsert_collection(target, ext, records)
        except RetryableError as error:
            # Retries are spent; the engine tries these records again on a later run.
            return [PushResult(item.key, Outcome.RETRY, reason=str(error)) for item in items]
        return [_record_result(item, answer) for item, answer in zip(items, answers, strict=True)]

    def _push_bulk(self, target: str, items: Sequence[PushItem]) -> list[PushResult]:
        ext = self.options.external_id_field
        columns = sorted({name for item in items for name in item.fields if name != ext})
        rows = [
            {
                ext: item.match_value,
                **{c: _cell(item.fields, c) for c in columns},
            }
            for item in items
        ]
        try:
            report = self.client.bulk_upsert(target, ext, rows)
        except RetryableError as error:
            return [PushResult(item.key, Outcome.RETRY, reason=str(error)) for item in items]
        outcomes: dict[str, tuple[Outcome, str | None, str | None]] = {}
        for row in report.get("successfulRecords", []):
            outcomes[row[ext]] = (Outcome.OK, row["sf__Id"], None)
        for row in report.get("failedRecords", []):
            failure, why = _bulk_error(row["sf__Error"], [ext, *columns])
            outcomes[row[ext]] = (failure, None, why)
        results = []
        for item in items:
            outcome, external_id, reason = outcomes.get(
                item.match_value, (Outcome.RETRY, None, "not processed by the bulk job")
            )
            results.append(PushResult(item.key, outcome, external_id=external_id, reason=reason))
        return results

    def close(self) -> None:
        """Release the HTTP connections."""
        self.client.close()
