"""The AuditStore port: what the pipeline, the CLI and the read API need of a store."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from shared.audit import AuditEntry


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a read; pass ``continuation`` back to get the next (None = the end)."""

    entries: list[AuditEntry] = field(default_factory=list)
    continuation: str | None = None


class AuditStore(Protocol):
    """A durable, idempotent home for audit entries.

    ``write`` stores a batch durably before it returns, or raises: ``StoreUnavailable`` (retry
    later; what was stored stays stored) or ``StoreRejected`` (one entry can never be stored).
    Rewriting an existing ``entry_id`` is a success that changes nothing. Reads return entries
    ordered by ``operation_created_on``, then ``entry_id``; ``limit=None`` reads everything.
    """

    def write(self, entries: Sequence[AuditEntry]) -> int:
        """Store the entries; return how many were new."""
        ...

    def by_regarding(
        self, regarding_id: str, *, limit: int | None = None, continuation: str | None = None
    ) -> Page:
        """The trail of one regarding record (e.g. a bank account), in time order."""
        ...

    def by_session(
        self, processsession_id: str, *, limit: int | None = None, continuation: str | None = None
    ) -> Page:
        """All entries of one dialog session, in time order."""
        ...

    def in_range(
        self,
        start: datetime | None = None,
        end: datetime | None = None,
        *,
        limit: int | None = None,
        continuation: str | None = None,
    ) -> Page:
        """Entries with ``start <= operation_created_on < end`` (open bounds when None)."""
        ...

    def count(self) -> int:
        """How many entries the store holds."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


def normalize_id(value: str) -> str:
    """GUIDs as the stores key them: lower-case, no braces."""
    return value.strip().strip("{}").lower()


def encode_continuation(position: Any) -> str:
    """An opaque, URL-safe continuation token for a store's position."""
    raw = json.dumps(position, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_continuation(token: str) -> Any:
    """The position inside a token; ValueError when it was not made by this service."""
    try:
        padded = token + "=" * (-len(token) % 4)
        return json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, binascii.Error) as exc:
        raise ValueError("invalid continuation token") from exc


def all_pages(read: Callable[[str | None], Page]) -> Iterator[AuditEntry]:
    """Every entry of a paged read, one page in memory at a time (for exports)."""
    continuation: str | None = None
    while True:
        page = read(continuation)
        yield from page.entries
        if page.continuation is None:
            return
        continuation = page.continuation
