"""Reading the trail for the HTTP API: validation and the JSON shape, transport-free."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any
from uuid import UUID

if TYPE_CHECKING:
    from shared.events.entry import AuditEntry
    from shared.stores.base import AuditStore, Page, Unreadable

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
_GUID = re.compile(
    r"\{?[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\}?",
    re.ASCII,
)
_LIMIT = re.compile(r"[0-9]{1,4}", re.ASCII)


class TrailView(StrEnum):
    """Which trail a request reads."""

    BANK_ACCOUNT = "bankaccount"
    PROCESS_SESSION = "processsession"


class BadRequest(ValueError):
    """Raised when a trail request's id, limit or continuation token is not valid."""


class NotFound(LookupError):
    """Raised when the trail has no entry at all for the id (a first page that is empty)."""


def record_id(raw: str) -> str:
    """A record id as people give it (braces and any case allowed, as Dataverse shows them),
    in the stores' form; BadRequest (a ValueError) names a text that is not a GUID. ASCII
    only: Python's UUID would also take other digits and a ``urn:uuid:`` prefix."""
    if _GUID.fullmatch(raw.strip()) is None:
        shown = raw if len(raw) <= 80 else raw[:80] + "…"
        raise BadRequest(f"{shown!r} is not a GUID (8-4-4-4-12 hexadecimal digits)")
    return str(UUID(raw.strip().strip("{}")))


def parse_limit(raw: str | None, default: int = DEFAULT_PAGE_SIZE) -> int:
    """ASCII digits only, checked by length before any conversion."""
    if raw is None or raw == "":
        return default
    if _LIMIT.fullmatch(raw) is None or not 1 <= int(raw) <= MAX_PAGE_SIZE:
        raise BadRequest(f"limit must be a whole number from 1 to {MAX_PAGE_SIZE}")
    return int(raw)


def read_page(
    store: AuditStore, view: TrailView, wanted: str, limit: int, continuation: str | None
) -> Page:
    """One page of a bank account's or a session's entries; BadRequest for a continuation
    token this service did not make."""
    try:
        if view is TrailView.BANK_ACCOUNT:
            return store.by_regarding(wanted, limit=limit, continuation=continuation)
        return store.by_session(wanted, limit=limit, continuation=continuation)
    except ValueError as exc:
        raise BadRequest(str(exc)) from exc


def read_trail(
    store: AuditStore, view: TrailView, raw_id: str, params: Mapping[str, str]
) -> dict[str, Any]:
    """One page of a bank account's or a session's trail, as JSON-ready values."""
    wanted = record_id(raw_id)
    limit = parse_limit(params.get("limit"))
    continuation = params.get("continuation") or None
    page = read_page(store, view, wanted, limit, continuation)
    if not page.entries and not page.unreadable and continuation is None:
        raise NotFound(f"no audit entries for {view.value} {wanted}")
    shown = without_superseded(page.entries, live_reader(store))
    answer: dict[str, Any] = {
        "id": wanted,
        "entries": [entry.to_json_dict() for entry in shown],
        "continuation": page.continuation,
    }
    if page.unreadable:  # reported, so that nobody mistakes a skipped row for no row
        answer["unreadable"] = [
            {"entry_id": row.entry_id, "column": row.column, "problem": row.problem}
            for row in page.unreadable
        ]
    tampered = [row for row in page.tampered if row.column != UNSEALED]
    if tampered:  # returned above, and marked: their seal, keys or view disagree
        answer["tampered"] = [
            {"entry_id": row.entry_id, "kind": row.column, "problem": row.problem}
            for row in tampered
        ]
    if getattr(store, "ring", None) is None:  # nothing was checked: say so in the answer
        answer["unverified"] = True
    return answer


#: a live entry within this of a backfilled entry's version records that same version
_SAME_VERSION_SECONDS = 2.0


def without_superseded(
    entries: list[AuditEntry], live_of_session: Callable[[str], Iterable[AuditEntry]]
) -> list[AuditEntry]:
    """``entries`` less each backfilled entry (``origin: backfill``) whose row version a live
    entry of the same session, with its regarding known, records too (its OperationCreatedOn
    within 2 s of the version's ``modifiedon``): one entry per version, the live one.
    ``live_of_session`` is asked only for sessions with a backfilled entry here (rare), once
    each."""
    backfilled = {e.processsession_id for e in entries if e.origin == "backfill"}
    if not backfilled:
        return entries
    # a live entry that does not know its regarding (regarding_not_in_message) does not record
    # the version as the backfilled one does, which read the regarding: both are shown
    live = {
        session: [
            e.operation_created_on
            for e in live_of_session(session)
            if e.origin == "event" and e.reason != "regarding_not_in_message"
        ]
        for session in sorted(backfilled)
    }

    def superseded(entry: AuditEntry) -> bool:
        return entry.origin == "backfill" and any(
            abs((moment - entry.operation_created_on).total_seconds()) <= _SAME_VERSION_SECONDS
            for moment in live[entry.processsession_id]
        )

    return [entry for entry in entries if not superseded(entry)]


def live_reader(store: AuditStore) -> Callable[[str], Iterable[AuditEntry]]:
    """Every entry of one session, for ``without_superseded``."""
    from shared.stores.base import all_pages

    return lambda session: all_pages(
        lambda token: store.by_session(session, limit=500, continuation=token, checked=False)
    )


def disagreements(marks: Iterable[Unreadable]) -> dict[str, str]:
    """Each marked entry's disagreements (seal, keys, view) joined into one text; a mark that
    says only that the entry is unsealed is none."""
    found: dict[str, str] = {}
    for mark in marks:
        if mark.column != UNSEALED:
            held = found.get(mark.entry_id)
            found[mark.entry_id] = f"{held}; {mark.problem}" if held else mark.problem
    return found


#: ``Checked.status``: what a reader proved of an entry it shows
OK, ALTERED, UNSEALED, UNVERIFIED = "ok", "altered", "unsealed", "unverified"


@dataclass(frozen=True, slots=True)
class Checked:
    """An entry as a reader shows it, with what was proved of it: ``ok`` (its keys agree and
    its seal matches), ``altered`` (a seal, key or view disagreed: ``problem`` says which),
    ``unsealed`` (written without a key), ``unverified`` (no key is set: nothing checked)."""

    entry: AuditEntry
    status: str
    problem: str | None = None


@dataclass
class Checks:
    """The marks of a read, entry by entry, and what failed; ``verified``: a key is set."""

    verified: bool
    unreadable: list[Unreadable] = field(default_factory=list)
    altered: int = 0

    def entries(self, read: Callable[[str | None], Page]) -> Iterator[Checked]:
        """Every entry of a paged read, each with its status (one page in memory at once)."""
        continuation: str | None = None
        while True:
            page = read(continuation)
            self.unreadable += page.unreadable
            problems = disagreements(page.tampered)
            unsealed = {m.entry_id for m in page.tampered if m.column == UNSEALED}
            for entry in page.entries:
                yield self.check(entry, problems.get(entry.entry_id), entry.entry_id in unsealed)
            if page.continuation is None:
                return
            continuation = page.continuation

    def check(self, entry: AuditEntry, problem: str | None, unsealed: bool = False) -> Checked:
        if problem:
            self.altered += 1
            return Checked(entry, ALTERED, problem)
        if not self.verified:
            return Checked(entry, UNVERIFIED)
        if unsealed or entry.seal is None:
            return Checked(entry, UNSEALED, "written without a trail key")
        return Checked(entry, OK)

    @property
    def failed(self) -> bool:
        """Whether any entry failed its check or any row could not be read."""
        return bool(self.altered or self.unreadable)


#: what every reader says once, on stderr or in a banner, when no key is set
UNVERIFIED_NOTE = (
    "the trail is unverified: AUDIT_TRAIL_KEY is not set, so no entry is checked against its "
    "seal (what is shown may have been altered)"
)
