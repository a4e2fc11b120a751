"""Reconcile the trail with Dataverse, and backfill what never arrived.

``reconcile`` lists the processsessions modified in ``[since, until)`` through the Web API and
compares each with the trail:

* ``missing``: the trail holds no entry for the session at all;
* ``behind``: the session's ``modifiedon`` is later than its newest entry's
  ``operation_created_on`` by more than ``TOLERANCE`` (2 s: an event's OperationCreatedOn lands
  0-1 s after the row's ``modifiedon`` in the captures we hold), so at least its last change
  never reached the trail;
* ``only_in_trail``: sessions with entries in the window that Dataverse no longer has
  (deleted; reported, not a gap).

What it cannot see: a session deleted before the window (nothing to list), a change that a
later change of the same session overwrote inside the window (only the row's last
``modifiedon`` is visible), and columns the steps do not capture.

``backfill`` writes, for each missing or behind session, one entry read from its row now
(``origin: backfill``; old values unknown), judged by the same rule. Its ``entry_id`` is
derived from the session and the row's ``modifiedon`` (``backfill_entry_id``), so a second run
writes nothing. A live event that arrives later for the same row version is still recorded;
readers then show that live entry in place of the backfilled one (``shared.trail.
without_superseded``): one entry per version, and a backfill never hides a live one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid5

from shared.dataverse.sessions import SessionRow, read_session, sessions_modified
from shared.dataverse.webapi import DataverseError, WebApi
from shared.events.entry import ENTRY_NAMESPACE, REDACTED, AuditEntry, iso_utc
from shared.events.rules import judge_reference
from shared.settings import Settings
from shared.stores.base import AuditStore, all_pages
from shared.trail.resolver import regarding_of
from shared.verdicts import Reason, Verdict

#: how much later than the newest entry a session's modifiedon may be and still be covered
TOLERANCE = timedelta(seconds=2)
#: an entry dated later than the read by more than this is not plausible (clocks differ by
#: seconds; a forged message dated 2100 must not hide every later gap of its session)
FUTURE_SKEW = timedelta(minutes=5)
#: the dates Dataverse holds (DateTime columns): a window outside them is a usage error
EARLIEST = datetime(1753, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 12, 30, tzinfo=UTC)
#: entries read around the window: an entry of a version in the window lies in it, give or take
MARGIN = timedelta(minutes=1)
NIL_GUID = "00000000-0000-0000-0000-000000000000"
#: the columns a backfilled entry shows (as the live entries name them), from the Web API's
COLUMN_NAMES = {
    "name": "name",
    "statecode": "statecode",
    "statuscode": "statuscode",
    "_regardingobjectid_value": "regardingobjectid",
    "_modifiedby_value": "modifiedby",
    "modifiedon": "modifiedon",
}
#: how many entries a backfill writes per store call
WRITE_BATCH = 100


@dataclass
class Reconciliation:
    """What reconcile found."""

    since: datetime
    until: datetime
    sessions: int = 0
    missing: list[SessionRow] = field(default_factory=list)
    behind: list[SessionRow] = field(default_factory=list)
    only_in_trail: list[dict[str, Any]] = field(default_factory=list)
    #: sessions Dataverse links to a bank account whose trail entries lack the regarding
    #: (``rejected/regarding_not_in_message``): that account's timeline lacks them
    unresolved: list[SessionRow] = field(default_factory=list)
    #: entries dated after the read (plus ``FUTURE_SKEW``): they cover nothing, and are shown
    implausible: list[dict[str, Any]] = field(default_factory=list)
    #: an organization id the trail holds (for backfilled entries), if any entry was read
    organization_id: str | None = None

    @property
    def gaps(self) -> list[SessionRow]:
        return [*self.missing, *self.behind, *self.unresolved]

    def to_json(self) -> dict[str, Any]:
        return {
            "since": iso_utc(self.since),
            "until": iso_utc(self.until),
            "sessions": self.sessions,
            "missing": [row.summary() for row in self.missing],
            "behind": [row.summary() for row in self.behind],
            "only_in_trail": self.only_in_trail,
            "unresolved": [row.summary() for row in self.unresolved],
            "implausible": self.implausible,
        }


def newest(entries: Iterable[AuditEntry]) -> dict[str, AuditEntry]:
    """The newest entry (by operation_created_on) of each session."""
    found: dict[str, AuditEntry] = {}
    for entry in entries:
        held = found.get(entry.processsession_id)
        if held is None or entry.operation_created_on > held.operation_created_on:
            found[entry.processsession_id] = entry
    return found


def newest_of_session(
    store: AuditStore,
    session_id: str,
    not_after: datetime | None = None,
    implausible: list[AuditEntry] | None = None,
) -> AuditEntry | None:
    """The newest entry of one session over its whole trail (none dated after
    ``not_after``: an entry from the future records no version Dataverse holds; those are
    added to ``implausible`` when given)."""
    return _newest_pair(store, session_id, not_after, implausible)[0]


def _newest_pair(
    store: AuditStore,
    session_id: str,
    not_after: datetime | None = None,
    implausible: list[AuditEntry] | None = None,
) -> tuple[AuditEntry | None, AuditEntry | None]:
    """The newest entry of one session, and its newest that knows the regarding."""
    kept: list[AuditEntry] = []
    for entry in all_pages(
        lambda token: store.by_session(session_id, limit=500, continuation=token, checked=False)
    ):
        if not_after is not None and entry.operation_created_on > not_after:
            if implausible is not None:
                implausible.append(entry)
        else:
            kept.append(entry)
    known = [e for e in kept if knows_regarding(e)]
    return newest(kept).get(session_id), newest(known).get(session_id)


def covered(row: SessionRow, entry: AuditEntry | None) -> bool:
    """Whether ``entry`` records the row's current version (or a later one)."""
    return entry is not None and row.modified - entry.operation_created_on <= TOLERANCE


def knows_regarding(entry: AuditEntry) -> bool:
    """Whether an entry holds the session's regarding (not ``regarding_not_in_message``)."""
    return entry.reason != Reason.REGARDING_NOT_IN_MESSAGE


def check_window(since: datetime, until: datetime) -> None:
    """ValueError (a usage error) for a window the Web API cannot take: Dataverse's dates run
    from 1753-01-01 to 9999-12-31, and the window must not be empty."""
    for name, moment in (("--since", since), ("--until", until)):
        if not EARLIEST <= moment.astimezone(UTC) <= LATEST:
            raise ValueError(
                f"{name} {moment.isoformat()} is outside the dates Dataverse holds "
                f"({EARLIEST.date()} to {LATEST.date()})"
            )
    if since >= until:
        raise ValueError(f"--since {since.isoformat()} is not earlier than --until")


def _summary(entry: AuditEntry) -> dict[str, Any]:
    return {
        "entry_id": entry.entry_id,
        "processsession_id": entry.processsession_id,
        "operation_created_on": iso_utc(entry.operation_created_on),
        "regarding_logical_name": entry.regarding_logical_name,
        "regarding_id": entry.regarding_id,
    }


def reconcile(
    api: WebApi,
    store: AuditStore,
    since: datetime,
    until: datetime,
    *,
    page_size: int = 500,
    on_page: Callable[[int], None] | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Reconciliation:
    """Compare the sessions modified in ``[since, until)`` with the trail (module docstring).
    Work: one pass over the window's sessions and the window's entries, plus a read of the
    trail of each session with no entry near the window, and one GET per session that has
    entries in the window but is not in the listing. A session listed twice (modified while
    the listing was paged) counts once, at its latest version; entries dated after the read
    (plus ``FUTURE_SKEW``) cover nothing and are reported as ``implausible``."""
    check_window(since, until)
    result = Reconciliation(since, until)
    read_at = clock()
    not_after = read_at + FUTURE_SKEW
    window: list[AuditEntry] = []
    for entry in all_pages(
        lambda token: store.in_range(
            max(since - MARGIN, EARLIEST),
            min(until + MARGIN, LATEST),
            limit=500,
            continuation=token,
        )
    ):
        if entry.operation_created_on > not_after:
            result.implausible.append(_summary(entry))
        else:
            window.append(entry)
    if window:
        result.organization_id = window[0].organization_id
    trail = newest(window)
    trail_known = newest(e for e in window if knows_regarding(e))
    rows: dict[str, SessionRow] = {}
    for row in sessions_modified(api, since, until, page_size=page_size, on_page=on_page):
        held_row = rows.get(row.processsession_id)
        if held_row is None or row.modified >= held_row.modified:
            rows[row.processsession_id] = row
    result.sessions = len(rows)
    far: list[AuditEntry] = []
    for row in rows.values():
        held, known = trail.get(row.processsession_id), trail_known.get(row.processsession_id)
        if held is None:  # nothing near the window: an older entry makes it behind, not missing
            held, known = _newest_pair(store, row.processsession_id, not_after, far)
            if held is None:
                result.missing.append(row)
                continue
        if not covered(row, held):
            result.behind.append(row)
        elif not covered(row, known) and judge_reference(regarding_of(row)).verdict is (
            Verdict.ACCEPTED
        ):
            result.unresolved.append(row)
    result.implausible.extend(_summary(entry) for entry in far)
    in_window = newest(e for e in window if since <= e.operation_created_on < until)
    for session_id, entry in sorted(in_window.items()):
        if session_id in rows:
            continue
        if read_session(api, session_id) is None:
            result.only_in_trail.append(
                {
                    "processsession_id": session_id,
                    "modifiedon": iso_utc(entry.operation_created_on),
                    "regarding_logical_name": entry.regarding_logical_name,
                    "regarding_id": entry.regarding_id,
                    # the trail explains it: the session's deletion is recorded
                    "deletion_recorded": entry.message_name == "Delete",
                }
            )
    return result


def backfill_entry_id(session_id: str, modified: datetime) -> str:
    """The key of the backfilled entry of one row version: the same version, the same id."""
    return str(uuid5(ENTRY_NAMESPACE, f"backfill:{session_id}:{iso_utc(modified)}"))


def _value(column: str, value: Any, row: SessionRow) -> Any:
    if column == "_regardingobjectid_value" and value is not None:
        return {
            "logical_name": row.regarding_logical_name,
            "id": row.regarding_id,
            "name": row.regarding_name,
        }
    if column == "_modifiedby_value" and value is not None:
        return {"logical_name": "systemuser", "id": row.modified_by, "name": None}
    if column == "modifiedon":
        return iso_utc(row.modified)
    return value


def backfill_entry(
    row: SessionRow,
    organization_id: str,
    now: datetime,
    redact: frozenset[str] = frozenset(),
) -> AuditEntry:
    """The entry of a session version read through the Web API: judged by the same rule,
    ``origin: backfill``, the row's values as ``new`` and every ``old`` unknown (null).
    What only an event carries (operation, correlation, broker fields) is the nil GUID or
    null; the user is the row's ``modifiedby``; stage and mode are the registered step's."""
    judgement = judge_reference(regarding_of(row))
    reference = judgement.regarding.value if judgement.regarding else None
    changes = []
    for column, value in sorted(row.columns.items()):
        name = COLUMN_NAMES.get(column)
        if name is None:
            continue
        new = _value(column, value, row)
        if name in redact and new is not None:
            new = REDACTED
        changes.append({"column": name, "old": None, "new": new, "old_known": False})
    user = row.modified_by or NIL_GUID
    created = row.created is not None and abs(row.created - row.modified) <= TOLERANCE
    return AuditEntry(
        entry_id=backfill_entry_id(row.processsession_id, row.modified),
        verdict=judgement.verdict,
        reason=judgement.reason,
        organization_id=organization_id,
        organization_name=None,
        organization_claim=None,
        message_name="Create" if created else "Update",
        processsession_id=row.processsession_id,
        processsession_name=REDACTED if "name" in redact and row.name is not None else row.name,
        regarding_logical_name=reference.logical_name if reference else None,
        regarding_id=str(reference.id) if reference else None,
        regarding_name=reference.name if reference else None,
        regarding_source="web_api",
        user_id=user,
        initiating_user_id=user,
        correlation_id=NIL_GUID,
        request_id=None,
        operation_id=NIL_GUID,
        depth=1,
        stage=40,
        mode=1,
        operation_created_on=row.modified,
        changes=changes,
        message_id=None,
        sequence_number=None,
        enqueued_time=None,
        delivery_count=None,
        recorded_at=now,
        origin="backfill",
        regarding_read_at=now,
    )


def organization_of(api: WebApi, allowed: frozenset[UUID], held_by_trail: str | None) -> str:
    """The organization of backfilled entries: the one ALLOWED_ORGANIZATION_IDS names, else
    the one the trail's entries carry, else what WhoAmI answers, else the nil GUID."""
    if len(allowed) == 1:
        return str(next(iter(allowed)))
    if held_by_trail:
        return held_by_trail
    try:
        answer = api.get("WhoAmI")
        return str(UUID(str(answer.get("OrganizationId"))))
    except (DataverseError, ValueError):
        return NIL_GUID


@dataclass
class Backfill:
    """What a backfill wrote (or, dry, would write), and what it left and why."""

    reconciliation: Reconciliation
    entries: list[AuditEntry] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    written: int = 0


def backfill(
    api: WebApi,
    store: AuditStore,
    since: datetime,
    until: datetime,
    *,
    dry_run: bool = False,
    allowed_organizations: frozenset[UUID] = frozenset(),
    redact: frozenset[str] = frozenset(),
    page_size: int = 500,
    on_page: Callable[[int], None] | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Backfill:
    """Reconcile, then write one entry per missing or behind session (module docstring).
    Each row is read again just before, and skipped when it is gone or when the trail now
    covers its version (a live event arrived meanwhile)."""
    found = reconcile(api, store, since, until, page_size=page_size, on_page=on_page, clock=clock)
    done = Backfill(found)
    if not found.gaps:
        return done
    organization = organization_of(api, allowed_organizations, found.organization_id)
    for listed in found.gaps:
        row = read_session(api, listed.processsession_id, every_column=True)
        if row is None:
            done.skipped.append((listed.processsession_id, "deleted since it was listed"))
            continue
        held = newest_of_session(store, row.processsession_id, clock() + FUTURE_SKEW)
        if covered(row, held) and (held is None or knows_regarding(held)):
            done.skipped.append((row.processsession_id, "the trail holds this version now"))
            continue
        done.entries.append(backfill_entry(row, organization, clock(), redact))
    if not dry_run:
        for start in range(0, len(done.entries), WRITE_BATCH):
            done.written += store.write(done.entries[start : start + WRITE_BATCH])
    return done


def reconcile_previous_day(
    settings: Settings, store: AuditStore, now: datetime
) -> tuple[Reconciliation, dict[str, int]]:
    """Reconcile the UTC day before ``now`` (the timer's job); the result and its counts.
    The timer waits out service protection limits longer than a person at a terminal would
    (``DATAVERSE_TIMER_BUDGET_SECONDS``)."""
    from shared.dataverse.webapi import build_web_api

    if settings.dataverse_url is None:
        raise ValueError("DATAVERSE_URL is not set")
    api = build_web_api(
        settings.dataverse_url,
        budget=settings.dataverse_timer_budget_seconds,
        max_answer_bytes=settings.dataverse_max_answer_bytes,
        max_pages=settings.dataverse_max_pages,
    )
    until = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    found = reconcile(api, store, until - timedelta(days=1), until)
    counts = {
        "sessions": found.sessions,
        "missing": len(found.missing),
        "behind": len(found.behind),
        "only_in_trail": len(found.only_in_trail),
        "unresolved": len(found.unresolved),
        "implausible": len(found.implausible),
    }
    return found, counts
