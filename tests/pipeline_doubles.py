"""Test doubles for the pipeline's dependencies."""

from __future__ import annotations

import time
from collections.abc import Sequence

from shared.errors import StoreUnavailable
from shared.events.entry import AuditEntry
from shared.stores.sqlite import SqliteAuditStore


class FlakyStore:
    """A real SQLite store whose writes fail while ``down`` is set (an outage stand-in)."""

    def __init__(self, inner: SqliteAuditStore, fail_writes: int = 0) -> None:
        self.inner = inner
        self.down = False
        self.fail_writes = fail_writes  # the next N writes fail, then the store recovers
        self.failed_writes = 0

    def write(self, entries: Sequence[AuditEntry]) -> int:
        if self.down or self.fail_writes > 0:
            self.fail_writes -= 1
            self.failed_writes += 1
            raise StoreUnavailable("database is locked (simulated outage)")
        return self.inner.write(entries)

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


class OutageStore:
    """A real SQLite store that is down for the first ``seconds`` after its first write."""

    def __init__(self, inner: SqliteAuditStore, seconds: float) -> None:
        self.inner = inner
        self.seconds = seconds
        self.started: float | None = None
        self.failed_writes = 0

    def write(self, entries: Sequence[AuditEntry]) -> int:
        if self.started is None:
            self.started = time.monotonic()
        if time.monotonic() - self.started < self.seconds:
            self.failed_writes += 1
            raise StoreUnavailable("database is locked (simulated outage)")
        return self.inner.write(entries)

    def __getattr__(self, name: str):
        return getattr(self.inner, name)
