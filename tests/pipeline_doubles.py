"""Test doubles for the pipeline's dependencies."""

from __future__ import annotations

from collections.abc import Sequence

from shared.audit import AuditEntry
from shared.errors import StoreUnavailable
from shared.stores.sqlite import SqliteAuditStore


class FlakyStore:
    """A real SQLite store whose writes fail while ``down`` is set (an outage stand-in)."""

    def __init__(self, inner: SqliteAuditStore) -> None:
        self.inner = inner
        self.down = False
        self.failed_writes = 0

    def write(self, entries: Sequence[AuditEntry]) -> int:
        if self.down:
            self.failed_writes += 1
            raise StoreUnavailable("database is locked (simulated outage)")
        return self.inner.write(entries)

    def __getattr__(self, name: str):
        return getattr(self.inner, name)
