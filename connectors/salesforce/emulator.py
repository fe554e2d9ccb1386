"""A loopback Salesforce for tests, the demo and benchmarks: REST v59.0 + Bulk 2.0 over HTTP.

    with SalesforceEmulator(people=500, seed=7) as sf:
        sf.url                                   # http://127.0.0.1:<port>
        sf.modify("Contact", ids, Phone="555")   # one new SystemModstamp for all of them
        sf.delete("Contact", ids)
        sf.inject(Endpoint.QUERY, FaultKind.REQUEST_LIMIT, times=2)
        sf.writes                                # every write request received

It is a real HTTP server (starlette on uvicorn, in a background thread, on an ephemeral port)
that the unmodified simple-salesforce client talks to; see emulator_http for what it answers
and refuses, and faults for what can be made to go wrong.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Self

from connectors.emulated import ready_text, wait_until_stopped
from connectors.salesforce.emulator_http import EmulatorApp
from connectors.salesforce.emulator_state import Credentials, EmulatorState
from connectors.salesforce.faults import Endpoint, FaultKind, FaultPlan, RequestBudget
from connectors.salesforce.org import Org, WriteRequest
from syncd.httpserver import BackgroundServer, ServedInBackground

# Published on purpose: they open nothing but a loopback emulator.
DEFAULT_CREDENTIALS = Credentials(
    username="syncd@example.com",
    password="emulator-password",  # noqa: S106
    security_token="emulator-token",  # noqa: S106
    client_id="syncd-emulator-client",
    client_secret="emulator-client-secret",  # noqa: S106
)


class SalesforceEmulator(ServedInBackground):
    """An emulated Salesforce org seeded from the sample people, served on loopback."""

    def __init__(
        self,
        people: int = 100,
        seed: int = 0,
        *,
        port: int = 0,
        credentials: Credentials = DEFAULT_CREDENTIALS,
        budget: tuple[int, float] | None = None,
        slow_seconds: float = 2.0,
    ) -> None:
        """`budget` = (requests, window seconds) the org allows before REQUEST_LIMIT_EXCEEDED."""
        self.credentials = credentials
        self.org = Org()
        self.org.seed(people, seed)
        self.faults = FaultPlan(slow_seconds=slow_seconds)
        self.state = EmulatorState(self.org, self.faults, credentials)
        self.app = EmulatorApp(self.state, RequestBudget(*budget) if budget else None)
        self._http = BackgroundServer(
            self.app,
            "127.0.0.1",
            port,
            name="Salesforce emulator",
            http="h11",
            timeout_graceful_shutdown=1,
            start_timeout=None,
            stop_timeout=None,
        )

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> Self:
        """Bind the port and serve in a background thread; returns once it accepts calls."""
        # The login answers carry the base URL, so it must be known before the first call.
        self.state.base_url = self._http.bind()
        return super().start()

    # -- looking at the data --------------------------------------------------------------
    def ids(self, sobject: str, include_deleted: bool = False) -> list[str]:
        """Record ids of `sobject` in creation order."""
        return [row["Id"] for row in self.org.rows(sobject, include_deleted)]

    def record(self, sobject: str, record_id: str) -> dict[str, Any]:
        """A copy of one record, deleted or not."""
        with self.org.lock:
            return dict(self.org.records[sobject][record_id])

    def find(self, sobject: str, field: str, value: Any) -> list[dict[str, Any]]:
        """Copies of the live records whose `field` equals `value`."""
        return [row for row in self.org.rows(sobject, False) if row.get(field) == value]

    @property
    def now(self) -> datetime:
        """The org's virtual clock; the next change is stamped one second after it."""
        with self.org.lock:
            return self.org.now

    @property
    def writes(self) -> list[WriteRequest]:
        """Every write request received so far (collections and bulk ingest), in order."""
        with self.org.lock:
            return list(self.org.writes)

    @property
    def bulk_jobs(self) -> list[tuple[str, str, str]]:
        """(kind, operation, object) of every Bulk 2.0 job created so far, in order."""
        return [
            (job.kind, str(job.body.get("operation")), str(job.body.get("object")))
            for job in self.app.bulk.jobs.values()
        ]

    # -- changing the data ----------------------------------------------------------------
    def modify(self, sobject: str, ids: Sequence[str], **changes: Any) -> datetime:
        """Change records as a user would; all of them get one new SystemModstamp (returned)."""
        return self.org.modify(sobject, ids, changes)

    def delete(self, sobject: str, ids: Sequence[str]) -> datetime:
        """Delete records (to the recycle bin: queryAll still sees them, IsDeleted true)."""
        return self.org.delete(sobject, ids)

    # -- faults ---------------------------------------------------------------------------
    def inject(self, endpoint: Endpoint, kind: FaultKind, times: int = 1) -> None:
        """Fail the next `times` calls to `endpoint` with `kind`."""
        self.faults.script(endpoint, kind, times)

    def inject_rate(self, endpoint: Endpoint, kind: FaultKind, share: float, seed: int = 0) -> None:
        """Fail a seeded `share` of the calls to `endpoint` with `kind` (0 switches it off)."""
        self.faults.rate(endpoint, kind, share, seed)

    def expire_sessions(self) -> None:
        """Invalidate every session: the next API call answers 401 INVALID_SESSION_ID."""
        self.state.sessions.clear()

    def refuse_logins(self, times: int) -> None:
        """Refuse the next `times` logins, as after a password change."""
        self.state.refused_logins = times


def serve_forever(port: int, people: int, seed: int) -> None:
    """Run an emulator in the foreground until interrupted (for `syncd emulate salesforce`),
    after saying how to point syncd.toml at it."""
    emulator = SalesforceEmulator(people=people, seed=seed, port=port)
    creds = emulator.credentials
    # Each sample person is a contact or a lead; the accounts are their employers.
    contacts, leads, accounts = (len(emulator.ids(name)) for name in ("Contact", "Lead", "Account"))
    holds = (
        f"{contacts} contacts and {leads} leads of {people} sample people (seed {seed}), "
        f"{accounts} accounts"
    )
    secrets = {
        "password": ("SF_PASSWORD", creds.password),
        "security_token": ("SF_TOKEN", creds.security_token),
    }
    oauth = (
        'or, as a connected app: domain = "emulator.my", and client_id and client_secret '
        f"from the environment ({creds.client_id}, {creds.client_secret}) instead of "
        "username, password and security_token"
    )
    # A Ctrl-C from the moment it serves stops it cleanly.
    try:
        url = emulator.start().url
        options = {"instance_url": url, "username": creds.username}
        print(ready_text("Salesforce", url, holds, options, secrets, notes=[oauth]), flush=True)
        wait_until_stopped()
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m connectors.salesforce.emulator --people N --port P --seed S`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--people", type=int, default=100)
    parser.add_argument("--port", type=int, default=8710)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    serve_forever(args.port, args.people, args.seed)


if __name__ == "__main__":
    main()
