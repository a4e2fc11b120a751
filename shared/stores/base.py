"""The AuditStore port: what the pipeline, the CLI and the read API need of a store."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from shared.audit import AuditEntry


class AuditStore(Protocol):
    """A durable, idempotent home for audit entries.

    ``write`` stores a batch durably before it returns, or raises ``StoreUnavailable`` having
    stored none of it; rewriting an existing ``entry_id`` is a success that changes nothing.
    Reads return entries ordered by ``operation_created_on``, then ``entry_id``.
    """

    def write(self, entries: Sequence[AuditEntry]) -> int:
        """Store the entries; return how many were new."""
        ...

    def by_regarding(self, regarding_id: str) -> list[AuditEntry]:
        """The trail of one regarding record (e.g. a bank account), in time order."""
        ...

    def by_session(self, processsession_id: str) -> list[AuditEntry]:
        """All entries of one dialog session, in time order."""
        ...

    def in_range(
        self, start: datetime | None = None, end: datetime | None = None
    ) -> list[AuditEntry]:
        """Entries with ``start <= operation_created_on < end`` (open bounds when None)."""
        ...

    def count(self) -> int:
        """How many entries the store holds."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...
