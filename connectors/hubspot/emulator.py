"""A faithful loopback emulator of HubSpot CRM v3, for tests, the demo and benchmarks.

It is a real HTTP server (starlette on uvicorn) that the unmodified `hubspot-api-client`
talks to through `HubSpot(access_token=..., host=emulator.url)`. It serves contacts and
companies seeded from the sample population, CRM search, batch read/create/update/upsert/
archive and list memberships, enforces HubSpot's limits and error shapes, and can be told to
fail (see `emulator_faults`).

    with HubSpotEmulator(people=500, seed=7) as hubspot:
        client = HubSpot(access_token=hubspot.access_token, host=hubspot.url)
        hubspot.faults.script("objects.search", FaultKind.RATE_LIMIT, times=2)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping

import structlog

from connectors.emulated import ready_text
from connectors.hubspot.emulator_data import CrmData, CrmList, CrmObject, WriteLogEntry
from connectors.hubspot.emulator_faults import (
    SEARCH_POLICY,
    Fault,
    FaultInjector,
    FaultKind,
    RequestBudget,
    SlidingWindow,
)
from connectors.hubspot.emulator_routes import build_app
from connectors.hubspot.emulator_state import EmulatorState
from syncd.httpserver import BackgroundServer, ServedInBackground

__all__ = ["DEFAULT_TOKEN", "Fault", "FaultKind", "HubSpotEmulator", "serve_forever"]

DEFAULT_TOKEN = "pat-emulator-token"  # noqa: S105 - the public token of a local fake
log = structlog.get_logger(__name__)


class HubSpotEmulator(ServedInBackground):
    """One emulated HubSpot account on 127.0.0.1; `start()`/`stop()` or use it as a context.

    `people` sample people are drawn with `seed`; `share` of them are HubSpot contacts.
    `rate_limit` is the burst budget (requests, seconds), `search_limit` the search endpoints'
    own limit (HubSpot: 5 per second), counted besides; None switches either off.
    """

    def __init__(
        self,
        people: int = 200,
        seed: int = 0,
        share: float = 0.8,
        access_token: str = DEFAULT_TOKEN,
        rate_limit: tuple[int, float] | None = (100, 10.0),
        search_limit: tuple[int, float] | None = (5, 1.0),
        fault_seed: int = 0,
        port: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.access_token = access_token
        self._population = (people, seed, share)
        self._rate_limit = rate_limit
        self._search_limit = search_limit
        self._fault_seed = fault_seed
        self._clock = clock
        self._state = EmulatorState(
            self._seeded(),
            FaultInjector(fault_seed),
            self._budget(),
            self._search_window(),
            {access_token},
        )
        self._http = BackgroundServer(
            build_app(self._state),
            "127.0.0.1",
            port,
            name="HubSpot emulator",
            configure_logging=False,
            timeout_graceful_shutdown=1,
        )

    def _seeded(self) -> CrmData:
        data = CrmData(clock=self._clock)
        data.seed(*self._population)
        return data

    def _budget(self) -> RequestBudget | None:
        return RequestBudget(*self._rate_limit) if self._rate_limit is not None else None

    def _search_window(self) -> SlidingWindow | None:
        if self._search_limit is None:
            return None
        return SlidingWindow(*self._search_limit, SEARCH_POLICY)

    @property
    def data(self) -> CrmData:
        """The account's records, lists and write log."""
        return self._state.data

    @property
    def faults(self) -> FaultInjector:
        """Switch faults on and off (see `FaultInjector`)."""
        return self._state.faults

    @property
    def budget(self) -> RequestBudget | None:
        """The burst budget, or None when switched off."""
        return self._state.budget

    def reset(self) -> None:
        """Back to the seeded state: faults off, logs and limits empty (the server keeps running).

        Waits for requests still being answered (a slow fault) so they cannot write into the
        fresh state.
        """
        deadline = time.monotonic() + 10
        while self._state.in_flight and time.monotonic() < deadline:
            time.sleep(0.01)
        self._state.data = self._seeded()
        self._state.faults = FaultInjector(self._fault_seed)
        self._state.budget = self._budget()
        self._state.search_limit = self._search_window()
        self._state.requests.clear()

    # -- test helpers ----------------------------------------------------------------------

    def records(self, object_type: str = "contacts", archived: bool = False) -> list[CrmObject]:
        """Stored records of a type, by id; archived ones only when `archived`."""
        with self.data.lock:
            table = self.data.objects[object_type]
            rows = [obj for obj in table.values() if (obj.archived_ms is not None) == archived]
            return sorted(rows, key=lambda obj: int(obj.id))

    def modify(
        self,
        object_type: str,
        ids: Iterable[str],
        properties: Mapping[str, str] | None = None,
        at_ms: int | None = None,
    ) -> int:
        """Edit records as a user would (all at one timestamp, returned in epoch ms)."""
        return self.data.modify(object_type, ids, properties, at_ms)

    def archive(self, object_type: str, ids: Iterable[str], at_ms: int | None = None) -> None:
        """Archive records as a user deleting them would."""
        self.data.archive(object_type, ids, at_ms)

    def create_list(self, name: str, processing_type: str = "MANUAL") -> CrmList:
        """Add a contacts list (MANUAL, SNAPSHOT or DYNAMIC)."""
        return self.data.create_list(name, processing_type)

    def list_members(self, list_id: str) -> set[str]:
        """Record ids currently in a list."""
        with self.data.lock:
            return set(self.data.lists[list_id].members)

    def requests(self, endpoint: str | None = None) -> list[tuple[str, int]]:
        """(endpoint, status) of every request answered so far, optionally of one endpoint."""
        with self.data.lock:
            return [r for r in self._state.requests if endpoint in (None, r[0])]

    @property
    def write_log(self) -> list[WriteLogEntry]:
        """Every write request received so far, refused ones included, in order."""
        with self.data.lock:
            return list(self.data.write_log)

    def serve_blocking(self) -> None:
        """Serve in the calling thread until interrupted (SIGINT/SIGTERM), after saying how
        to point syncd.toml at it."""
        people, seed, _ = self._population
        # Only a share of the sample people are contacts: the count said is the one served.
        holds = (
            f"{len(self.records('contacts'))} of {people} sample people (seed {seed}) as "
            f"contacts, and {len(self.records('companies'))} companies"
        )
        secrets = {"access_token": ("HUBSPOT_TOKEN", self.access_token)}
        try:
            # Said once the port is bound, so a client told to connect can.
            url = self._http.bind()
            print(ready_text("HubSpot", url, holds, {"host": url}, secrets), flush=True)
            self._http.run()
        except KeyboardInterrupt:
            # uvicorn shuts down gracefully, then re-raises the Ctrl-C: that is a clean exit.
            log.info("hubspot emulator stopped")


def serve_forever(port: int = 8900, people: int = 500, seed: int = 0) -> None:
    """Serve an emulator on 127.0.0.1:`port` until interrupted (for `syncd emulate hubspot`);
    it starts by printing its URL and the token clients authenticate with."""
    HubSpotEmulator(people=people, seed=seed, port=port).serve_blocking()
