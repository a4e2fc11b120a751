"""The AuditStore port: what the pipeline, the CLI and the read API need of a store."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from pydantic import ValidationError

from shared.errors import ServiceError
from shared.events.entry import AuditEntry, iso_utc
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


@dataclass(frozen=True, slots=True)
class RawRow:
    """A stored row as a store hands it to ``read_rows``: the entry id its key names, a way
    to get its document, the seal kept beside it, what its keys and index columns claim of
    the entry (checked against the sealed document), the digest it carries (Table), and, for
    a view row, a way to read the entry's commit-point row instead."""

    entry_id: str
    document: Callable[[], str]
    seal: str | None
    claims: dict[str, str | None] = field(default_factory=dict)
    digest: str | None = None
    fallback: Callable[[], RawRow | None] | None = None


#: ``Page.tampered`` kinds (the ``column`` of each mark): the document does not match its seal;
#: a key or index column says other than the sealed document; a view row disagreed with its
#: entry, which is shown instead
SEAL, KEY, VIEW = "seal", "key", "view"
#: a mark that is no disagreement: the entry carries no seal (written without a key)
UNSEALED = "unsealed"


def _claimed(entry: AuditEntry, column: str) -> str | None:
    if column == "operation_created_on":
        return iso_utc(entry.operation_created_on)
    if column == "recorded_at":
        return iso_utc(entry.recorded_at)
    value = getattr(entry, column)
    return str(value) if value is not None else None


def disagreement(raw: RawRow, text: str, entry: AuditEntry) -> str | None:
    """What the row's keys, index columns or digest say against its document, if anything."""
    if entry.entry_id != raw.entry_id:
        return f"the row is keyed to entry {raw.entry_id}, its document is entry {entry.entry_id}"
    if raw.digest is not None and hashlib.sha256(text.encode()).hexdigest() != raw.digest:
        return "the row's digest does not match its document"
    for column, value in raw.claims.items():
        if column == "row_key":
            return f"the row's key {value!r} is not one this store makes"
        stated = _claimed(entry, column)
        if (value or None) != stated:
            return f"the row's {column} is {value!r}, the sealed entry's is {stated!r}"
    return None


def read_rows(rows: Iterable[RawRow], ring: KeyRing | None = None) -> Page:
    """Parse each stored row and prove it before anyone sees it: its keys and index columns
    against its document, and, with a key ring, the document against its seal. A row that
    cannot be read is reported by id and column (``unreadable``), logged, and skipped; an
    entry whose seal or keys disagree is returned and marked (``tampered``); a view row that
    disagrees with its entry is never shown as the entry: the entry's commit-point row is
    read instead and shown, marked."""
    entries: list[AuditEntry] = []
    unreadable: list[Unreadable] = []
    tampered: list[Unreadable] = []
    shown: set[str] = set()
    for raw in rows:
        row, note = raw, None
        entry, text, column, problem = _parsed(raw)
        if problem is not None and raw.fallback is not None:
            try:
                commit = raw.fallback()
            except (ValueError, KeyError, TypeError) as exc:
                commit, problem = None, f"{problem}; its entry row: {_why_unreadable(exc)[1]}"
            if commit is None:
                gone = f"{problem}; and entry {raw.entry_id} has no readable entry row"
                unreadable.append(Unreadable(raw.entry_id, VIEW, gone))
                log.error("audit store row %s cannot be read: %s", raw.entry_id, unreadable[-1])
                continue
            row, note = commit, f"a view row disagrees with its entry ({problem}): shown from "
            note += "the entry row, the commit point"
            entry, text, column, problem = _parsed(row)
        if entry is None:
            unreadable.append(Unreadable(row.entry_id, column, problem or ""))
            log.error("audit store row %s cannot be read: %s", row.entry_id, unreadable[-1])
            continue
        if entry.entry_id != row.entry_id:  # a copy of another entry under this id: forged
            forged = f"forged: {problem}; not shown (the genuine entry is read under its own id)"
            unreadable.append(Unreadable(row.entry_id, KEY, forged))
            log.error("audit store row %s: %s", row.entry_id, forged)
            continue
        if entry.entry_id in shown:  # one entry, twice on a page (a copied view): once
            continue
        shown.add(entry.entry_id)
        entries.append(entry.model_copy(update={"seal": row.seal}) if row.seal else entry)
        if note is not None:
            tampered.append(Unreadable(entry.entry_id, VIEW, note))
            log.error("audit entry %s: %s", entry.entry_id, note)
        if problem is not None:
            tampered.append(Unreadable(entry.entry_id, KEY, problem))
            log.error("audit entry %s: %s", entry.entry_id, problem)
        wrong = ring.check_document(text, row.seal) if ring is not None else None
        if wrong is not None:
            kind = UNSEALED if wrong[0] == "unsealed" else SEAL
            tampered.append(Unreadable(entry.entry_id, kind, wrong[1]))
            if kind == SEAL:
                log.error("audit entry %s does not match its seal: %s", entry.entry_id, wrong[1])
    return Page(entries, None, unreadable, tampered)


def _parsed(raw: RawRow) -> tuple[AuditEntry | None, str, str, str | None]:
    """A row's entry, its document, and what is wrong with it: the column it failed on and
    why (no entry), or what its keys say against it (an entry), or nothing."""
    try:
        text = raw.document()
        entry = AuditEntry.model_validate_json(text)
    except (ValidationError, ValueError, KeyError, TypeError) as exc:
        column, problem = _why_unreadable(exc)
        return None, "", column, problem
    return entry, text, "entry", disagreement(raw, text, entry)


def _why_unreadable(exc: Exception) -> tuple[str, str]:
    """The column a row failed on, and why."""
    if isinstance(exc, ValidationError):
        error = exc.errors()[0]
        return ".".join(str(part) for part in error["loc"]) or "entry", str(error["msg"])
    return "entry", f"{type(exc).__name__}: {exc}"[:300]


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
        self,
        regarding_id: str,
        *,
        limit: int | None = None,
        continuation: str | None = None,
        checked: bool = True,
    ) -> Page:
        """The trail of one regarding record (e.g. a bank account), in time order.
        ``checked`` (what people read): the last page also holds, marked, the entries whose
        sealed document names this record but whose index or view row is missing or moved;
        internal look-ups (reconcile, supersession) skip that scan."""
        ...

    def by_session(
        self,
        processsession_id: str,
        *,
        limit: int | None = None,
        continuation: str | None = None,
        checked: bool = True,
    ) -> Page:
        """All entries of one dialog session, in time order (``checked`` as above)."""
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

    def by_id(self, entry_id: str) -> Page:
        """The one entry stored under ``entry_id`` (an empty page when there is none),
        checked like every read."""
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
