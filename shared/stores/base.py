"""The AuditStore port: what the pipeline, the CLI and the read API need of a store."""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from pydantic import ValidationError

from shared.errors import ServiceError
from shared.events.entry import AuditEntry
from shared.keys import KeyRing
from shared.stores.seals import StoredRow

log = logging.getLogger(__name__)


class ConflictingDuplicates(ServiceError):
    """Raised by a store after it stored a batch except entries whose ``entry_id`` it already
    held with different event content (a forged or broken copy of an event): ``stored`` maps
    each such entry_id to the version kept (the first one)."""

    def __init__(self, stored: dict[str, AuditEntry]) -> None:
        super().__init__(f"{len(stored)} entry id(s) already stored with other content")
        self.stored = stored


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A stored row that could not be read back as an entry: reported, never fatal."""

    entry_id: str
    column: str
    problem: str

    def __str__(self) -> str:
        return f"entry {self.entry_id}: {self.column}: {self.problem}"


@dataclass(frozen=True, slots=True)
class ViewProblem:
    """A read path (view, index) that does not agree with the stored entries.

    ``kind``: ``missing`` (an entry has no row in a view), ``differs`` (the view row carries
    another version than the entry's), ``orphan`` (a view row with no entry behind it), or
    ``corrupt`` (the store's own integrity check failed; SQLite).
    """

    kind: str
    entry_id: str
    partition_key: str = ""
    row_key: str = ""

    def __str__(self) -> str:
        where = f" ({self.partition_key} / {self.row_key})" if self.partition_key else ""
        return f"{self.kind}: entry {self.entry_id}{where}"


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a read; pass ``continuation`` back to get the next (None = the end).

    ``unreadable`` lists the rows of this page that could not be parsed (a corrupted or
    hand-edited store): the page goes on without them rather than failing as a whole.
    """

    entries: list[AuditEntry] = field(default_factory=list)
    continuation: str | None = None
    unreadable: list[Unreadable] = field(default_factory=list)
    #: entries of this page (returned, not dropped) whose seal does not match (``column`` is
    #: ``seal``): altered in the store, or sealed with a key not in the key ring
    tampered: list[Unreadable] = field(default_factory=list)


def conflicting(entries: Sequence[AuditEntry], held: Iterable[AuditEntry]) -> dict[str, AuditEntry]:
    """The kept version of each entry id that a written entry contradicts: the one held
    before the write, else the first of the batch. Equal event content is no conflict."""
    kept = {entry.entry_id: entry for entry in held}
    conflicts: dict[str, AuditEntry] = {}
    for entry in entries:
        first = kept.setdefault(entry.entry_id, entry)
        if first is not entry and first.event_content() != entry.event_content():
            conflicts[entry.entry_id] = first
    return conflicts


def read_rows(
    rows: Iterable[tuple[str, Callable[[], str], str | None]], ring: KeyRing | None = None
) -> Page:
    """Parse each stored row (its entry id, a way to get its JSON, the seal kept beside it);
    a row that fails is reported by id and column, logged, and skipped. With a key ring, an
    entry whose seal does not match is returned and reported (``tampered``), and logged."""
    entries: list[AuditEntry] = []
    unreadable: list[Unreadable] = []
    tampered: list[Unreadable] = []
    for entry_id, document, seal in rows:
        try:
            text = document()
            entry = AuditEntry.model_validate_json(text)
            entries.append(entry.model_copy(update={"seal": seal}) if seal else entry)
            wrong = ring.check_document(text, seal) if ring is not None else None
            if wrong is not None:
                tampered.append(Unreadable(entry_id, "seal", wrong[1]))
                log.error("audit entry %s does not match its seal: %s", entry_id, wrong[1])
        except ValidationError as exc:
            error = exc.errors()[0]
            column = ".".join(str(part) for part in error["loc"]) or "entry"
            unreadable.append(Unreadable(entry_id, column, error["msg"]))
        except (ValueError, KeyError, TypeError) as exc:
            unreadable.append(Unreadable(entry_id, "entry", f"{type(exc).__name__}: {exc}"))
        else:
            continue
        log.error("audit store row %s cannot be read: %s", entry_id, unreadable[-1])
    return Page(entries, None, unreadable, tampered)


class AuditStore(Protocol):
    """A durable, idempotent home for audit entries.

    ``write`` stores a batch durably before it returns, or raises: ``StoreUnavailable`` (retry
    later; what was stored stays stored) or ``StoreRejected`` (one entry can never be stored).
    Rewriting an existing ``entry_id`` is a success that changes nothing. Reads return entries
    ordered by ``operation_created_on``, then ``entry_id``; ``limit=None`` reads everything,
    a paged read returns at most ``limit`` entries and at most about ``DEFAULT_PAGE_CHARS`` of
    their JSON (at least one entry).
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

    def check_views(self, repair: bool = False) -> list[ViewProblem]:
        """Every read path against the entries; ``repair`` rebuilds what disagrees."""
        ...

    def scan(
        self, start: datetime | None = None, end: datetime | None = None
    ) -> Iterator[StoredRow]:
        """Every stored entry with ``start <= recorded_at < end`` as stored (document, seal,
        the columns reads filter on), in no particular order, streamed."""
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


#: A paged read (``limit`` set) stops adding entries once their JSON passes this many
#: characters, and continues on the next page; one entry larger than that still comes whole.
DEFAULT_PAGE_CHARS = 4 * 1024 * 1024
#: A token this service makes is a few hundred characters; anything longer is not one.
MAX_TOKEN_CHARS = 2048


def decode_continuation(token: str) -> Any:
    """The position inside a token; ValueError when it was not made by this service (bounded:
    a long or deeply nested token is refused before or while it is parsed)."""
    if len(token) > MAX_TOKEN_CHARS or not token.isascii():
        raise ValueError("invalid continuation token")
    try:
        padded = token + "=" * (-len(token) % 4)
        return json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, binascii.Error, RecursionError) as exc:
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
