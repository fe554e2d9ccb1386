"""The ingest endpoint over HTTP: auth, limits, validation, de-duplication, failure answers."""

from __future__ import annotations

import functools
import gzip
import json
import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from typing import Any

import httpx
import pytest

import syncd.ingest
from syncd.ingest.app import create_app
from syncd.ingest.server import running
from syncd.ingest.spec import IngestMessage
from syncd.ingest.sqlite_sink import SqliteEventSink

KEY = "wk_test_123"
AUTH = (KEY, "")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, SqliteEventSink]]:
    # One server for the module: starting and stopping uvicorn per test costs 0.2 s.
    sink = SqliteEventSink(tmp_path_factory.mktemp("ingest") / "events.sqlite")
    with running(create_app(sink, [KEY])) as url:
        yield url, sink
    sink.close()


@pytest.fixture
def sink(served: tuple[str, SqliteEventSink]) -> SqliteEventSink:
    served[1]._db.execute("DELETE FROM ingest_event")
    return served[1]


@pytest.fixture
def client(served: tuple[str, SqliteEventSink], sink: SqliteEventSink) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served[0]) as client:
        yield client


def track(**extra: Any) -> dict[str, Any]:
    return {"userId": "u-1", "event": "Order Completed", **extra}


def nested(levels: int) -> Any:
    """An empty array inside arrays, `levels` deep in all."""
    value: list[Any] = []
    for _ in range(levels - 1):
        value = [value]
    return value


def stored(sink: SqliteEventSink) -> list[dict[str, Any]]:
    rows = sink._db.execute("SELECT payload FROM ingest_event ORDER BY rowid").fetchall()
    return [json.loads(row[0]) for row in rows]


# --- authentication -------------------------------------------------------------------


def test_missing_write_key_is_401_and_nothing_is_stored(
    client: httpx.Client, sink: SqliteEventSink
) -> None:
    answer = client.post("/v1/track", json=track())
    assert answer.status_code == 401
    assert answer.json()["success"] is False
    assert "missing write key" in answer.json()["error"]
    assert answer.headers["www-authenticate"].startswith("Basic")
    assert sink.count() == 0


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Basic d3Jvbmc6"},  # "wrong:"
        {"Authorization": "Bearer wk_test_123"},
        {"Authorization": "Basic !!not-base64!!"},
    ],
)
def test_wrong_header_key_is_401(
    client: httpx.Client, sink: SqliteEventSink, headers: dict[str, str]
) -> None:
    answer = client.post("/v1/track", json=track(), headers=headers)
    assert answer.status_code == 401
    assert sink.count() == 0


def test_wrong_key_in_body_is_401(client: httpx.Client, sink: SqliteEventSink) -> None:
    answer = client.post("/v1/track", json=track(writeKey="nope"))
    assert answer.status_code == 401
    assert answer.json()["error"] == "unknown write key"
    assert sink.count() == 0


def test_basic_auth_and_body_key_are_both_accepted(
    client: httpx.Client, sink: SqliteEventSink
) -> None:
    assert client.post("/v1/track", json=track(), auth=AUTH).json() == {"success": True}
    answer = client.post("/v1/track", json=track(writeKey=KEY, messageId="m-2"))
    assert answer.status_code == 200
    assert sink.count() == 2
    assert all("writeKey" not in payload for payload in stored(sink))


def test_an_app_without_write_keys_is_refused(sink: SqliteEventSink) -> None:
    with pytest.raises(ValueError, match="write key"):
        create_app(sink, [""])


# --- limits ---------------------------------------------------------------------------


def test_message_over_32_kb_is_413(client: httpx.Client, sink: SqliteEventSink) -> None:
    answer = client.post("/v1/track", json=track(properties={"x": "a" * 33_000}), auth=AUTH)
    assert answer.status_code == 413
    assert "32 KB" in answer.json()["error"]
    assert sink.count() == 0


def test_batch_over_500_kb_is_413(client: httpx.Client, sink: SqliteEventSink) -> None:
    batch = [track(messageId=f"m{i}", properties={"x": "a" * 20_000}) for i in range(30)]
    answer = client.post("/v1/batch", json={"batch": batch}, auth=AUTH)
    assert answer.status_code == 413
    assert "500 KB" in answer.json()["error"]
    assert sink.count() == 0


def test_batch_message_over_32_kb_is_413_naming_its_index(
    client: httpx.Client, sink: SqliteEventSink
) -> None:
    batch = [track(type="track"), track(type="track", properties={"x": "a" * 33_000})]
    answer = client.post("/v1/batch", json={"batch": batch}, auth=AUTH)
    assert answer.status_code == 413
    assert answer.json()["index"] == 1
    assert "32 KB" in answer.json()["error"]
    assert sink.count() == 0


def test_a_batch_of_many_small_messages_within_500_kb_is_accepted(
    client: httpx.Client, sink: SqliteEventSink
) -> None:
    batch = [track(type="track", messageId=f"m{i}", properties={"i": i}) for i in range(1000)]
    assert client.post("/v1/batch", json={"batch": batch}, auth=AUTH).status_code == 200
    assert sink.count() == 1000


# --- compression ----------------------------------------------------------------------


def body_of(value: Any) -> bytes:
    return json.dumps(value).encode()


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [("gzip", gzip.compress), ("x-gzip", gzip.compress), ("deflate", zlib.compress)],
)
def test_a_compressed_body_is_decoded(
    client: httpx.Client, sink: SqliteEventSink, encoding: str, compress: Callable[[bytes], bytes]
) -> None:
    # analytics-python sends its batches so with gzip=True.
    batch = [track(type="track", messageId=f"m{i}") for i in range(3)]
    headers = {"Content-Encoding": encoding.upper()}
    answer = client.post(
        "/v1/batch", content=compress(body_of({"batch": batch})), headers=headers, auth=AUTH
    )
    assert answer.status_code == 200, answer.text
    single = client.post(
        "/v1/track", content=compress(body_of(track())), headers=headers, auth=AUTH
    )
    assert single.status_code == 200, single.text
    assert sink.count() == 4


@pytest.mark.parametrize(
    ("path", "padding", "limit"),
    [("/v1/track", 40_000, "32 KB"), ("/v1/batch", 100_000_000, "500 KB")],
    ids=["a call", "a batch"],
)
def test_the_size_limits_hold_for_the_decompressed_body(
    client: httpx.Client, sink: SqliteEventSink, path: str, padding: int, limit: str
) -> None:
    # 100 MB of spaces take 100 KB compressed: the body is refused, not inflated.
    body = body_of({"batch": [track(type="track")]})
    padded = gzip.compress(body[:-1] + b" " * padding + b"}")
    assert len(padded) < 500 * 1024
    answer = client.post(path, content=padded, headers={"Content-Encoding": "gzip"}, auth=AUTH)
    assert answer.status_code == 413
    assert limit in answer.json()["error"]
    assert sink.count() == 0


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (gzip.compress(body_of(track()))[:-4], "body: its gzip data is cut short"),
        (gzip.compress(body_of(track())) + b"{}", "body: has bytes after the end of its gzip data"),
        (body_of(track()), "body: is not valid gzip data"),
    ],
    ids=["cut short", "followed by more", "not compressed"],
)
def test_broken_gzip_is_400(
    client: httpx.Client, sink: SqliteEventSink, body: bytes, error: str
) -> None:
    answer = client.post("/v1/track", content=body, headers={"Content-Encoding": "gzip"}, auth=AUTH)
    assert answer.status_code == 400
    assert answer.json()["error"].startswith(error)
    assert sink.count() == 0


@pytest.mark.parametrize("encoding", ["br", "zstd", "gzip, gzip"])
def test_another_content_encoding_is_415(
    client: httpx.Client, sink: SqliteEventSink, encoding: str
) -> None:
    headers = {"Content-Encoding": encoding}
    answer = client.post("/v1/track", content=body_of(track()), headers=headers, auth=AUTH)
    assert answer.status_code == 415
    assert answer.json()["error"] == (
        f"body: Content-Encoding {encoding!r} is not supported; send gzip, deflate or no encoding"
    )
    assert sink.count() == 0


def test_an_identity_encoding_is_the_body_as_sent(
    client: httpx.Client, sink: SqliteEventSink
) -> None:
    headers = {"Content-Encoding": "identity"}
    answer = client.post("/v1/track", content=body_of(track()), headers=headers, auth=AUTH)
    assert answer.status_code == 200
    assert sink.count() == 1


# --- malformed payloads ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/track", {"event": "X"}, "userId"),
        ("/v1/track", {"userId": "u"}, "event"),
        ("/v1/track", {"userId": "u", "event": "  "}, "event"),
        ("/v1/track", {"userId": "u", "event": 5}, "event"),
        ("/v1/track", track(timestamp="yesterday"), "timestamp"),
        ("/v1/track", track(timestamp=1700000000), "timestamp"),
        ("/v1/track", track(properties=[1, 2]), "properties"),
        ("/v1/track", track(messageId="鍵" * 342), "messageId"),
        ("/v1/track", track(userId="u" * 1025), "userId"),
        ("/v1/track", track(timestamp="0001-01-01T00:00:00+01:00"), "timestamp"),
        ("/v1/track", track(timestamp="9999-12-31T23:30:00-01:00"), "timestamp"),
        (
            "/v1/track",
            track(originalTimestamp="0001-01-01T00:00:00Z", sentAt="9999-12-31T00:00:00Z"),
            "originalTimestamp",
        ),
        # The message, properties, then 63 arrays: the innermost is the 65th level.
        ("/v1/track", track(properties={"n": nested(63)}), "properties.n" + "[0]" * 62),
        ("/v1/identify", {"userId": "u", "traits": "x"}, "traits"),
        ("/v1/identify", {"anonymousId": "", "userId": None}, "anonymousId"),
        ("/v1/group", {"userId": "u"}, "groupId"),
        ("/v1/alias", {"userId": "u"}, "previousId"),
        ("/v1/alias", {"anonymousId": "a", "previousId": "p"}, "userId"),
        ("/v1/page", {"userId": "u", "context": "web"}, "context"),
        ("/v1/track", [track()], "body"),
        ("/v1/batch", {"batch": {}}, "batch"),
        ("/v1/batch", {"batch": []}, "batch"),
    ],
)
def test_malformed_message_is_400_naming_the_field(
    client: httpx.Client, sink: SqliteEventSink, path: str, body: Any, field: str
) -> None:
    answer = client.post(path, json=body, auth=AUTH)
    assert answer.status_code == 400, answer.text
    assert answer.json()["success"] is False
    assert answer.json()["field"] == field
    assert answer.json()["error"].startswith(field)
    assert sink.count() == 0


def test_invalid_json_is_400(client: httpx.Client, sink: SqliteEventSink) -> None:
    answer = client.post("/v1/track", content=b'{"userId": "u",', auth=AUTH)
    assert answer.status_code == 400
    assert answer.json()["field"] == "body"
    assert "not valid JSON" in answer.json()["error"]
    assert sink.count() == 0


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b'{"userId": "u", "event": "E", "n": ' + b"1" * 5000 + b"}", "integer of more than"),
        (b'{"userId": "u", "event": "E", "n": ' + b"[" * 5000 + b"]" * 5000 + b"}", "nested"),
    ],
    ids=["5,000 digits", "5,000 levels"],
)
def test_json_too_large_for_python_to_read_is_400(
    client: httpx.Client, sink: SqliteEventSink, body: bytes, error: str
) -> None:
    answer = client.post("/v1/track", content=body, auth=AUTH)
    assert answer.status_code == 400, answer.text
    assert answer.json()["field"] == "body"
    assert error in answer.json()["error"]
    assert sink.count() == 0


def test_a_message_64_levels_deep_is_accepted(client: httpx.Client, sink: SqliteEventSink) -> None:
    batch = [{"type": "track", **track(properties={"n": nested(62)})}]
    assert client.post("/v1/batch", json={"batch": batch}, auth=AUTH).status_code == 200
    assert stored(sink)[0]["properties"]["n"] == nested(62)


def test_a_bad_message_rejects_the_whole_batch_naming_its_index(
    client: httpx.Client, sink: SqliteEventSink
) -> None:
    batch = [
        {"type": "identify", "userId": "u", "traits": {"email": "a@example.com"}},
        {"type": "page", "anonymousId": "a"},
        {"type": "track", "anonymousId": "a"},
    ]
    answer = client.post("/v1/batch", json={"batch": batch}, auth=AUTH)
    assert answer.status_code == 400
    assert answer.json() == {
        "success": False,
        "error": "batch[2].event: is required",
        "field": "batch[2].event",
        "index": 2,
    }
    assert sink.count() == 0


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        (
            "/v1/track",
            rb'{"userId": "u", "event": "E", "properties": {"e": "\ud800"}}',
            "properties.e",
        ),
        ("/v1/track", rb'{"userId": "u", "event": "E\u0000"}', "event"),
        (
            "/v1/track",
            b'{"userId": "u", "event": "E", "properties": {"e": "\xed\xa0\x80"}}',
            "properties.e",
        ),
        (
            "/v1/track",
            rb'{"userId": "u", "event": "E", "timestamp": "2024-05-01T10:00:00Z", "properties": {"x\udfff": 1}}',
            "properties",
        ),
        ("/v1/identify", rb'{"userId": "u", "traits": {"a": [{"b": "\u0000"}]}}', "traits.a[0].b"),
        ("/v1/identify", rb'{"userId": "u", "\u0000": 1}', "body"),
        (
            "/v1/batch",
            rb'{"batch": [{"type": "page", "anonymousId": "a"}, {"type": "page", "anonymousId": "a\udc00"}]}',
            "batch[1].anonymousId",
        ),
        (
            "/v1/batch",
            rb'{"batch": [{"type": "page", "anonymousId": "a"}], "context": {"ip": "\ud800"}}',
            "context.ip",
        ),
    ],
    ids=[
        "lone surrogate",
        "NUL",
        "surrogate as UTF-8 bytes",
        "in a key, with a timestamp and no messageId",
        "deep inside",
        "a key of the message",
        "in a batch",
        "in the context of a batch",
    ],
)
def test_text_no_store_can_hold_is_400_naming_the_field(
    client: httpx.Client, sink: SqliteEventSink, path: str, body: bytes, field: str
) -> None:
    # A lone surrogate has no UTF-8 form, so the commit would fail; PostgreSQL refuses NUL.
    answer = client.post(path, content=body, auth=AUTH)
    assert answer.status_code == 400, answer.text
    assert answer.json()["field"] == field
    assert answer.json()["error"].startswith(f"{field}: ")
    assert "NUL" in answer.json()["error"] or "surrogate" in answer.json()["error"]
    assert sink.count() == 0
    assert client.post("/v1/track", json=track(), auth=AUTH).status_code == 200


def test_a_write_key_no_store_can_hold_is_401(client: httpx.Client, sink: SqliteEventSink) -> None:
    answer = client.post(
        "/v1/track", content=rb'{"writeKey": "\ud800", "userId": "u", "event": "E"}'
    )
    assert answer.status_code == 401
    assert answer.json()["error"] == "unknown write key"


def test_unknown_type_in_a_batch_is_400(client: httpx.Client, sink: SqliteEventSink) -> None:
    answer = client.post("/v1/batch", json={"batch": [{"type": "purchase"}]}, auth=AUTH)
    assert answer.status_code == 400
    assert answer.json()["field"] == "batch[0].type"


# --- paths ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "kind"),
    [
        ("/v1/i", {"userId": "u", "traits": {"plan": "pro"}}, "identify"),
        ("/v1/t", track(), "track"),
        ("/v1/p", {"anonymousId": "a", "name": "Home"}, "page"),
        ("/v1/s", {"anonymousId": "a", "name": "Cart"}, "screen"),
        ("/v1/g", {"userId": "u", "groupId": "acme"}, "group"),
        ("/v1/a", {"userId": "u", "previousId": "a"}, "alias"),
    ],
)
def test_short_paths_of_the_browser_sdk(
    client: httpx.Client, sink: SqliteEventSink, path: str, body: dict[str, Any], kind: str
) -> None:
    assert client.post(path, json=body, auth=AUTH).status_code == 200
    assert stored(sink)[0]["type"] == kind


def test_the_path_sets_the_type(client: httpx.Client, sink: SqliteEventSink) -> None:
    client.post("/v1/track", json=track(type="identify"), auth=AUTH)
    assert stored(sink)[0]["type"] == "track"


def test_short_batch_path_with_text_plain_body(client: httpx.Client, sink: SqliteEventSink) -> None:
    # analytics.js posts batches to /v1/b as text/plain with the key in the body.
    body = json.dumps({"writeKey": KEY, "batch": [{"type": "page", "anonymousId": "a"}]})
    answer = client.post("/v1/b", content=body, headers={"Content-Type": "text/plain"})
    assert answer.status_code == 200
    assert sink.count() == 1


def test_unknown_call_is_404(client: httpx.Client) -> None:
    answer = client.post("/v1/purchase", json=track(), auth=AUTH)
    assert answer.status_code == 404
    assert "purchase" in answer.json()["error"]


def test_health(client: httpx.Client) -> None:
    assert client.get("/health").json() == {"status": "ok"}


# --- what is stored -------------------------------------------------------------------


def test_same_message_id_is_stored_once(client: httpx.Client, sink: SqliteEventSink) -> None:
    for _ in range(3):
        assert client.post("/v1/track", json=track(messageId="dup-1"), auth=AUTH).status_code == 200
    batch = [
        {**track(messageId="dup-1"), "type": "track"},
        {**track(messageId="dup-2"), "type": "track"},
    ]
    assert client.post("/v1/batch", json={"batch": batch}, auth=AUTH).status_code == 200
    assert sink.message_ids() == {"dup-1", "dup-2"}


def test_a_retried_message_without_message_id_is_stored_once(
    client: httpx.Client, sink: SqliteEventSink
) -> None:
    body = track(timestamp="2024-05-01T10:00:00.000Z")
    client.post("/v1/track", json=body, auth=AUTH)
    client.post("/v1/track", json=body, auth=AUTH)
    (message_id,) = sink.message_ids()
    assert message_id.startswith("syncd-")


def test_message_ids_are_generated_when_absent(client: httpx.Client, sink: SqliteEventSink) -> None:
    client.post("/v1/track", json=track(), auth=AUTH)
    client.post("/v1/track", json=track(), auth=AUTH)
    ids = sink.message_ids()
    assert len(ids) == 2
    assert all(p["messageId"] in ids for p in stored(sink))


def test_timestamps_are_normalized_and_device_skew_corrected(
    client: httpx.Client, sink: SqliteEventSink
) -> None:
    batch = [
        {"type": "track", "userId": "u", "event": "A", "timestamp": "2024-05-01T12:00:00+02:00"},
        {
            "type": "track",
            "userId": "u",
            "event": "B",
            "originalTimestamp": "2030-01-01T00:00:00Z",
            "sentAt": "2030-01-01T00:00:10Z",
        },
    ]
    client.post("/v1/batch", json={"batch": batch}, auth=AUTH)
    first, second = stored(sink)
    assert first["timestamp"] == "2024-05-01T10:00:00.000Z"
    # The device clock was years ahead: the event happened 10 s before the request arrived.
    assert second["timestamp"] < second["receivedAt"]
    assert second["timestamp"].startswith(second["receivedAt"][:4])


def test_batch_context_is_merged_into_each_message(
    client: httpx.Client, sink: SqliteEventSink
) -> None:
    batch = [
        {"type": "page", "anonymousId": "a", "context": {"page": {"path": "/"}}},
        {"type": "page", "anonymousId": "a", "context": {"library": {"name": "mine"}}},
    ]
    body = {"batch": batch, "context": {"library": {"name": "analytics-python"}}}
    client.post("/v1/batch", json=body, auth=AUTH)
    first, second = stored(sink)
    assert first["context"] == {"library": {"name": "analytics-python"}, "page": {"path": "/"}}
    assert second["context"] == {"library": {"name": "mine"}}


def test_numeric_user_ids_become_strings(client: httpx.Client, sink: SqliteEventSink) -> None:
    client.post("/v1/identify", json={"userId": 42, "traits": {}}, auth=AUTH)
    assert stored(sink)[0]["userId"] == "42"


# --- failures -------------------------------------------------------------------------


class BrokenSink:
    def __init__(self) -> None:
        self.calls = 0

    def write(self, messages: Sequence[IngestMessage]) -> None:
        self.calls += 1
        raise OSError(f"disk full writing {[dict(m.payload) for m in messages]}")


def test_a_sink_failure_is_503_and_nothing_is_acknowledged() -> None:
    sink = BrokenSink()
    with running(create_app(sink, [KEY])) as url:
        answer = httpx.post(f"{url}/v1/track", json=track(email="ann@example.com"), auth=AUTH)
    assert answer.status_code == 503
    # The sink's error may quote the messages: the answer says nothing of it.
    assert answer.json() == {
        "success": False,
        "error": "events not stored, retry later: the commit failed",
    }
    assert answer.headers["retry-after"] == "1"
    assert sink.calls == 1


class GatedSink:
    """Holds every commit until the test opens the gate."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.entered = threading.Event()

    def write(self, messages: Sequence[IngestMessage]) -> None:
        self.entered.set()
        self.gate.wait(5)


def test_too_many_waiting_requests_are_503() -> None:
    sink = GatedSink()
    with (
        running(create_app(sink, [KEY], max_pending_requests=1)) as url,
        ThreadPoolExecutor(3) as pool,
    ):
        post = functools.partial(httpx.post, auth=AUTH, timeout=10)
        committing = pool.submit(post, f"{url}/v1/track", json=track(messageId="a"))
        assert sink.entered.wait(5)
        # One of two more requests may wait for the next commit; the other is refused at once.
        more = [pool.submit(post, f"{url}/v1/track", json=track(messageId=m)) for m in "bc"]
        done, _ = wait(more, timeout=5, return_when=FIRST_COMPLETED)
        sink.gate.set()
        assert len(done) == 1
        assert done.pop().result().status_code == 503
        answers = [future.result() for future in more]
        assert sorted(a.status_code for a in answers) == [200, 503]
        refused = next(a for a in answers if a.status_code == 503)
        assert refused.headers["retry-after"] == "1"
        assert committing.result().status_code == 200


def test_the_public_api() -> None:
    assert sorted(syncd.ingest.__all__) == ["EventSink", "IngestMessage", "create_app", "serve"]
