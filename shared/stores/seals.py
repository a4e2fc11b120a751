"""The tamper-evident trail: each entry sealed when written, windows sealed after they close,
and ``verify``, which proves that nothing was altered, removed or inserted.

Threat model (docs/operations.md): someone can write to the audit store (the SQLite file, or
Storage Table Data Contributor) but holds neither the trail key nor the seal storage.

**Entry seal** (``AuditEntry.seal``, kept beside the stored document): ``v1:<key id>:<mac>``,
where ``mac`` is the lower-case hex HMAC-SHA-256, under the trail key, of
``b"psaudit-entry-v1\\n"`` followed by the entry's stored document: the UTF-8 JSON text the
store holds (``AuditEntry.json_text``: compact, members in the schema's order, ``seal`` null).
Both stores keep that text byte for byte, so the form is the same in each; a verifier in any
language MACs the stored text as it is. A new version of the form gets a new prefix.

**Window seal** (``SealRecord``): after the window ``[start, end)`` of ``recorded_at`` has
closed, plus a grace period longer than a batch can wait for the store, a record of the
window's entry count, a digest over their seals (the sum modulo 2**256 of the SHA-256 of each
entry's seal text, so the order of a scan does not matter), the previous record's MAC (a
chain: a record removed or altered breaks it) and its own MAC under the trail key. Records go
to storage apart from the entries (a table of the SQLite file, blobs in Azure). Windows are
contiguous: each starts where the previous ended. Several instances may seal at once: a
window's record is created only if absent, so one wins and the others find it.

**Key ring**: ``AUDIT_TRAIL_KEY`` seals new entries and windows; ``AUDIT_TRAIL_PREVIOUS_KEYS``
still verify what older keys sealed. The key id is the first 16 hex digits of the SHA-256 of
``b"psaudit-key-id\\n" + key``, so it names a key without revealing it.
"""

from __future__ import annotations

import bisect
import hashlib
import hmac
import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from pydantic import ValidationError

from shared.events.entry import AuditEntry, iso_utc
from shared.keys import KeyRing

#: A window is sealed this long after it ends: longer than a batch may wait for the store
#: (AUDIT_STORE_RETRY_SECONDS, at most the Functions timeout of 10 minutes).
DEFAULT_GRACE = timedelta(minutes=15)
_MODULUS = 2**256
log = logging.getLogger(__name__)
#: Columns a store keeps beside the document that a reader trusts (reads filter on them).
CHECKED_COLUMNS = ("regarding_id", "processsession_id", "operation_created_on", "recorded_at")


@dataclass(frozen=True)
class SealRecord:
    """One sealed window of ``recorded_at`` (see the module docstring)."""

    start: str
    end: str
    count: int
    digest: str
    previous: str
    key_id: str
    sealed_at: str
    mac: str = ""
    version: int = 1
    #: entries of the window written without a key (no entry seal), sealed by this record on
    #: ``seal --adopt``: covered from ``sealed_at`` on, not from when they were written.
    #: Left out of the JSON (and the MAC) when 0, so records before it verify as they were.
    adopted: int = 0

    def fields(self) -> dict[str, Any]:
        """What the MAC covers: everything but the MAC."""
        data = self._data()
        del data["mac"]
        return data

    def _data(self) -> dict[str, Any]:
        data = asdict(self)
        if not data["adopted"]:
            del data["adopted"]
        return data

    def to_json(self) -> str:
        return json.dumps(self._data(), sort_keys=True, separators=(",", ":"))

    @property
    def head(self) -> str:
        """The chain's head when this record is the last: its window's end and the start of
        its MAC (``2026-12-01T10:00:00.000Z~3fa2c1d4e5f60718``). Whoever keeps it where the
        store's writers cannot reach can later prove the trail still extends it."""
        return f"{self.end}~{self.mac[:16]}"

    @classmethod
    def from_json(cls, text: str) -> SealRecord:
        """A record from its JSON; ValueError when it is not one (a damaged record)."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("a window record is a JSON object")
        record = cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})
        for name, kind in (("count", int), ("version", int), ("adopted", int)):
            if not isinstance(getattr(record, name), kind):
                raise ValueError(f"a window record's {name} is a number")
        for name in ("start", "end", "digest", "previous", "key_id", "sealed_at", "mac"):
            if not isinstance(getattr(record, name), str):
                raise ValueError(f"a window record's {name} is text")
        return record


def parse_records(texts: Iterable[tuple[str, str]]) -> list[SealRecord]:
    """Window records from (name, JSON) pairs; a damaged one is logged and left out, so that
    ``verify`` reports the gap it leaves in the chain."""
    records = []
    for name, text in texts:
        try:
            records.append(SealRecord.from_json(text))
        except (ValueError, TypeError) as exc:
            log.error("window seal %s cannot be read: %s", name, exc)
    return records


@dataclass(frozen=True, slots=True)
class StoredRow:
    """One entry as a store holds it, for sealing and verifying: the row's own id, the stored
    document, the seal kept beside it, and the columns the store filters on."""

    row_id: str
    document: str
    seal: str | None
    columns: dict[str, str | None]


class SealStore(Protocol):
    """Where window seals live, apart from the entries."""

    def records(self) -> list[SealRecord]:
        """Every window record, in window order."""
        ...

    def add(self, record: SealRecord) -> bool:
        """Store a record unless one for its window exists; True when this call stored it."""
        ...


class SealedTrail(Protocol):
    """What sealing and verifying need of an audit store."""

    def scan(
        self, start: datetime | None = None, end: datetime | None = None
    ) -> Iterator[StoredRow]:
        """Every stored entry with ``start <= recorded_at < end``, in no particular order."""
        ...


def _floor_hour(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def _term(row: StoredRow) -> int:
    text = row.seal or "unsealed:" + hashlib.sha256(row.document.encode()).hexdigest()
    return int.from_bytes(hashlib.sha256(text.encode()).digest(), "big")


def _recorded_at(row: StoredRow) -> datetime | None:
    value = row.columns.get("recorded_at")
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")) if value else None
    except ValueError:
        return None


def seal_windows(
    trail: SealedTrail,
    seals: SealStore,
    ring: KeyRing,
    now: datetime,
    *,
    grace: timedelta = DEFAULT_GRACE,
    everything: bool = False,
    adopt: bool = False,
) -> SealRecord | None:
    """Seal what closed since the last record (with ``everything``, what is recorded up to
    ``now``, without waiting: before an audit, and in tests). Returns the new record, or None
    when nothing is due. One record covers the windows since the last one.

    Entries written without a key (no entry seal) are never sealed silently: Unadopted is
    raised unless ``adopt``, and then the record says how many it adopted."""
    records = seals.records()
    previous = records[-1] if records else None
    end = now.astimezone(UTC) if everything else _floor_hour(now - grace)
    end = end.replace(microsecond=end.microsecond // 1000 * 1000)  # as stored: milliseconds
    if previous is not None:
        start = datetime.fromisoformat(previous.end.replace("Z", "+00:00"))
    else:
        first = min(
            (when for row in trail.scan(None, end) if (when := _recorded_at(row))), default=None
        )
        if first is None:
            return None
        start = _floor_hour(first)
    if end <= start:
        return None
    count, digest, unsealed = 0, 0, 0
    for row in trail.scan(start, end):
        count += 1
        digest = (digest + _term(row)) % _MODULUS
        unsealed += not row.seal
    if unsealed and not adopt:
        raise Unadopted(unsealed)
    record = SealRecord(
        start=iso_utc(start),
        end=iso_utc(end),
        count=count,
        digest=f"{digest:064x}",
        previous=previous.mac if previous else "",
        key_id=ring.current_id,
        sealed_at=iso_utc(datetime.now(UTC)),
        adopted=unsealed,
    )
    record = SealRecord(**{**asdict(record), "mac": ring.record_mac(record.fields()) or ""})
    return record if seals.add(record) else None


class Unadopted(ValueError):
    """Raised when a window to seal holds entries written without a key (``seal --adopt``)."""

    def __init__(self, count: int) -> None:
        super().__init__(
            f"{count} entries were written without a trail key and carry no seal: nothing was "
            "sealed. `psaudit seal --adopt` seals them, recording that they were adopted (and "
            "when); verify then reports them as adopted, not as sealed when written"
        )
        self.count = count


def parse_head(text: str) -> tuple[str, str]:
    """A head as ``SealRecord.head`` prints it: (window end, MAC prefix); ValueError else."""
    end, sep, mac = text.strip().partition("~")
    if not sep or not end or len(mac) < 8 or any(c not in "0123456789abcdef" for c in mac):
        raise ValueError(
            f"{text!r} is not a chain head: give it as seal or verify print it, "
            "e.g. 2026-12-01T10:00:00.000Z~3fa2c1d4e5f60718"
        )
    return end, mac


def extends(records: list[SealRecord], head: str) -> bool:
    """Whether the chain of records still holds the record that ``head`` names (the trail
    extends that head: nothing after it was cut, no older copy restored)."""
    end, mac = parse_head(head)
    return any(r.end == end and r.mac.startswith(mac) for r in records)


@dataclass
class Problem:
    """One thing ``verify`` found wrong: an entry's or a window's."""

    kind: str
    detail: str
    entry_id: str | None = None
    window: str | None = None
    #: where a person finds the entry: its time, session and regarding record, when known
    about: dict[str, str | None] | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"kind": self.kind, "detail": self.detail}
        if self.entry_id is not None:
            data["entry_id"] = self.entry_id
        if self.window is not None:
            data["window"] = self.window
        if self.about is not None:
            data["entry"] = self.about
        return data

    def where(self) -> str:
        """The entry or window, for people: ``<id> (2026-12-01 10:00:00 UTC, session <id>,
        sample_bankaccount <id>)``."""
        if self.entry_id is None:
            return self.window or ""
        if not self.about:
            return self.entry_id
        parts = [str(self.about.get("operation_created_on") or "")]
        parts.append(f"session {self.about.get('processsession_id')}")
        if self.about.get("regarding_id"):
            parts.append(f"{self.about.get('regarding_logical_name')} {self.about['regarding_id']}")
        return f"{self.entry_id} ({', '.join(parts)})"


def about(entry: AuditEntry) -> dict[str, str | None]:
    """What ``Problem.about`` holds of an entry."""
    return {
        "operation_created_on": iso_utc(entry.operation_created_on),
        "processsession_id": entry.processsession_id,
        "regarding_logical_name": entry.regarding_logical_name,
        "regarding_id": entry.regarding_id,
    }


@dataclass
class Report:
    """What ``verify`` found: problems, and how much it verified."""

    problems: list[Problem] = field(default_factory=list)
    entries: int = 0
    windows: int = 0
    unsealed: int = 0
    #: entries written without a key that a window record adopted (``seal --adopt``)
    adopted: int = 0
    #: the last window record's head (``SealRecord.head``), None before the first seal
    head: str | None = None
    #: warnings that are not problems of the trail (e.g. the seal container's policy)
    warnings: list[str] = field(default_factory=list)
    #: the seal container's immutability policy (Table store): state, days
    seal_policy: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "problems": [p.to_json() for p in self.problems],
            "entries": self.entries,
            "windows": self.windows,
            "unsealed": self.unsealed,
            "adopted": self.adopted,
            "head": self.head,
            "warnings": self.warnings,
            "seal_policy": self.seal_policy,
        }


def _check_row(row: StoredRow, ring: KeyRing, adopted: bool = False) -> Iterator[Problem]:
    """An entry's own problems: unreadable, moved to another id, altered, unsealed (an entry
    without a seal in a window that adopted it is no problem: the window record seals it)."""
    try:
        entry = AuditEntry.model_validate_json(row.document)
    except (ValidationError, ValueError) as exc:
        yield Problem("unreadable", f"the stored entry cannot be read: {exc}"[:300], row.row_id)
        return
    yield from (
        Problem(p.kind, p.detail, p.entry_id, p.window, about(entry))
        for p in _entry_problems(row, ring, adopted, entry)
    )


def _entry_problems(
    row: StoredRow, ring: KeyRing, adopted: bool, entry: AuditEntry
) -> Iterator[Problem]:
    if entry.entry_id != row.row_id:
        yield Problem(
            "forged",
            f"stored under id {row.row_id}, but the entry is {entry.entry_id}: a copy",
            row.row_id,
        )
    wrong = ring.check_document(row.document, row.seal)
    if wrong is not None and not (adopted and not row.seal):
        yield Problem(wrong[0], wrong[1], row.row_id)
    stated = entry.to_json_dict()
    for column, value in row.columns.items():
        if column in CHECKED_COLUMNS and (value or None) != stated.get(column):
            yield Problem(
                "altered",
                f"column {column} says {value!r}, the sealed entry says {stated.get(column)!r}",
                row.row_id,
            )


def verify_trail(
    trail: SealedTrail,
    seals: SealStore,
    ring: KeyRing,
    now: datetime,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    grace: timedelta = DEFAULT_GRACE,
    progress: Any = None,
) -> Report:
    """Re-read every entry (one streaming pass, memory flat in the trail's size) and every
    window record; report each problem. ``since``/``until`` limit it to the windows and
    entries of that range of ``recorded_at``."""
    report = Report()
    everything = seals.records()
    report.head = everything[-1].head if everything else None
    records = [
        r
        for r in everything
        if (since is None or r.end > iso_utc(since)) and (until is None or r.start < iso_utc(until))
    ]
    report.problems += _check_chain(everything, ring)
    scan_start, scan_end = since, until
    if records:  # whole windows, so that a window's count is never cut by the range
        first = datetime.fromisoformat(records[0].start.replace("Z", "+00:00"))
        last = datetime.fromisoformat(records[-1].end.replace("Z", "+00:00"))
        scan_start = min(since, first) if since is not None else None
        scan_end = max(until, last) if until is not None else None
    starts = [r.start for r in records]
    counts = [0] * len(records)
    digests = [0] * len(records)
    sealed_end = records[-1].end if records else None
    first_start = records[0].start if records else None
    overdue = iso_utc(_floor_hour(now - grace))
    late: dict[str, int] = {}
    for row in trail.scan(scan_start, scan_end):
        report.entries += 1
        when = _recorded_at(row)
        stamp = iso_utc(when) if when else ""
        index = bisect.bisect_right(starts, stamp) - 1
        sealed = index >= 0 and stamp < records[index].end
        adopted = sealed and records[index].adopted > 0 and not row.seal
        report.adopted += adopted
        report.problems += _check_row(row, ring, adopted)
        if sealed:
            counts[index] += 1
            digests[index] = (digests[index] + _term(row)) % _MODULUS
        elif (sealed_end is not None and stamp >= sealed_end) or first_start is None:
            report.unsealed += 1
            if stamp < overdue:  # should have been sealed by now
                hour = iso_utc(_floor_hour(when)) if when else "(no recorded_at)"
                late[hour] = late.get(hour, 0) + 1
        else:  # before the first sealed window, or in a gap: never sealed
            report.problems.append(
                Problem("inserted", f"recorded at {stamp}, outside every sealed window", row.row_id)
            )
        if progress is not None and report.entries % 1000 == 0:
            progress(report.entries)
    for record, count, digest in zip(records, counts, digests, strict=True):
        window = f"{record.start}/{record.end}"
        report.windows += 1
        if count < record.count:
            report.problems.append(
                Problem(
                    "missing",
                    f"{record.count - count} of {record.count} sealed entries are gone",
                    window=window,
                )
            )
        elif count > record.count:
            report.problems.append(
                Problem(
                    "inserted",
                    f"{count - record.count} entries more than the {record.count} sealed",
                    window=window,
                )
            )
        elif f"{digest:064x}" != record.digest:
            report.problems.append(
                Problem("altered", "the window holds other entries than were sealed", window=window)
            )
    for hour, count in sorted(late.items()):
        report.problems.append(
            Problem(
                "unsealed",
                f"{count} entries recorded in this hour are past the grace "
                "period and not sealed: is `psaudit seal` (the timer) running, or was the "
                "latest seal removed?",
                window=hour,
            )
        )
    return report


def _check_chain(records: Iterable[SealRecord], ring: KeyRing) -> list[Problem]:
    """Each record's MAC, its link to the previous one, and contiguity."""
    problems: list[Problem] = []
    previous: SealRecord | None = None
    for record in records:
        window = f"{record.start}/{record.end}"
        expected = ring.record_mac(record.fields(), record.key_id)
        if expected is None:
            problems.append(
                Problem(
                    "seal_broken",
                    f"sealed with key {record.key_id!r}, which is not in the key ring",
                    window=window,
                )
            )
        elif not hmac.compare_digest(expected.encode(), record.mac.encode()):
            problems.append(
                Problem("seal_broken", "the window record does not match its MAC", window=window)
            )
        if previous is not None and (
            record.previous != previous.mac or record.start != previous.end
        ):
            problems.append(
                Problem(
                    "seal_missing",
                    "the chain of window records is broken "
                    f"before this one (previous ends {previous.end})",
                    window=window,
                )
            )
        if previous is None and record.previous:
            problems.append(
                Problem(
                    "seal_missing",
                    "the first window record links to one that is gone",
                    window=window,
                )
            )
        previous = record
    return problems
