"""The error tree. Every error says what happened and what to do about it.

    SyncdError
    ├── ConfigError            bad syncd.toml or mapping: lists every Problem; exit 2
    ├── StoreError             the profile store could not be opened or migrated
    ├── RecordError            one record cannot be mapped: quarantined, the batch goes on
    └── ConnectorError         an outside system failed
        ├── RetryableError     429, 5xx, timeouts, resets: retried with backoff (retry_after)
        ├── AuthError          bad or expired credentials that a re-login did not fix: fatal
        └── FatalConnectorError  a request the system will never accept: fatal for the run

Retryability is part of the type: the engine retries RetryableError and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass


class SyncdError(Exception):
    """Base of every error syncd raises on purpose."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a config or mapping file, and how to fix it."""

    file: str
    key: str
    message: str
    fix: str

    def __str__(self) -> str:
        return f"{self.file}:{self.key}: {self.message} — {self.fix}"


class ConfigError(SyncdError):
    """syncd.toml or a mapping file is invalid; carries every problem found, not just the first."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class StoreError(SyncdError):
    """The profile store cannot be used (unreachable, wrong schema, locked)."""


class RecordError(SyncdError):
    """A single record cannot be mapped or stored; it is quarantined with this reason."""


class ConnectorError(SyncdError):
    """An outside system answered with an error or did not answer."""


class RetryableError(ConnectorError):
    """A transient failure worth retrying, after `retry_after` seconds when the system said so."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class AuthError(ConnectorError):
    """Credentials were refused; retrying will not help until they are fixed."""


class FatalConnectorError(ConnectorError):
    """The outside system refused a request it will never accept (bad query, unknown field)."""
