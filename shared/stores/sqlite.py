"""SQLite audit store: the default on one machine.

One row per entry, keyed by ``entry_id`` (so ``INSERT OR IGNORE`` makes rewrites no-ops), with
the whole entry as JSON and the columns the reads filter on, indexed. WAL journal with
``synchronous=FULL``: a batch is on disk when ``write`` returns, and one transaction per
batch means a failure stores none of it.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from functools import partial
from pathlib import Path

from shared.errors import StoreMissing, StoreUnavailable
from shared.events.entry import AuditEntry, iso_utc
from shared.keys import KeyRing
from shared.stores.base import (
    DEFAULT_PAGE_CHARS,
    ConflictingDuplicates,
    Page,
    RawRow,
    ViewProblem,
    conflicting,
    decode_continuation,
    encode_continuation,
    normalize_id,
    read_rows,
)
from shared.stores.seals import SealRecord, StoredRow, parse_records

_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_entries (
    entry_id             TEXT PRIMARY KEY,
    verdict              TEXT NOT NULL,
    reason               TEXT,
    regarding_id         TEXT,
    processsession_id    TEXT NOT NULL,
    operation_created_on TEXT NOT NULL,
    recorded_at          TEXT NOT NULL,
    entry                TEXT NOT NULL,
    seal                 TEXT
);
CREATE INDEX IF NOT EXISTS audit_by_regarding
    ON audit_entries (regarding_id, operation_created_on, entry_id);
CREATE INDEX IF NOT EXISTS audit_by_session
    ON audit_entries (processsession_id, operation_created_on, entry_id);
CREATE INDEX IF NOT EXISTS audit_by_time ON audit_entries (operation_created_on, entry_id);
"""
#: The window records, in a file of their own beside the trail (``SqliteSealStore``).
_SEAL_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_seals (
    window_end TEXT PRIMARY KEY,
    record     TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS audit_seals_append_only_update BEFORE UPDATE ON audit_seals
BEGIN SELECT RAISE(ABORT, 'window seals are append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_seals_append_only_delete BEFORE DELETE ON audit_seals
BEGIN SELECT RAISE(ABORT, 'window seals are append-only'); END;
"""
# Added after the first release: created on open, after a migration of older files.
_LATER_SCHEMA = """
CREATE INDEX IF NOT EXISTS audit_by_recorded ON audit_entries (recorded_at);
CREATE TRIGGER IF NOT EXISTS audit_entries_append_only_update BEFORE UPDATE ON audit_entries
BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_entries_append_only_delete BEFORE DELETE ON audit_entries
BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
"""
_ORDER = " ORDER BY operation_created_on, entry_id"
#: what a read selects of each row, in ``_raw``'s order
_READ_COLUMNS = (
    "operation_created_on, entry_id, entry, seal, regarding_id, processsession_id, recorded_at"
)
#: a recorded_at as this store writes it (``iso_utc``); any other value is a hand-made row
_A_TIME = (
    "typeof(recorded_at) = 'text' AND recorded_at GLOB "
    "'[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9]*Z'"
)


def row_of(entry: AuditEntry, ring: KeyRing | None = None) -> tuple[str | None, ...]:
    """An entry as a row of ``audit_entries``, in column order, sealed under ``ring``'s
    current key when there is one."""
    document = entry.json_text()
    return (
        entry.entry_id,
        entry.verdict.value,
        entry.reason.value if entry.reason else None,
        entry.regarding_id,
        entry.processsession_id,
        iso_utc(entry.operation_created_on),
        iso_utc(entry.recorded_at),
        document,
        ring.seal_document(document) if ring is not None else None,
    )


def _fix(exc: BaseException, path: Path) -> str:
    """What a person can do about SQLite's own error, in a few words."""
    text = str(exc).lower()
    if "full" in text:
        return f" (free space on the disk that holds {path}; nothing is lost, it is retried)"
    if "readonly" in text or "read-only" in text or "permission" in text:
        return f" (make {path} and its folder writable by this process)"
    if "locked" in text or "busy" in text:
        return f" (another process holds {path}'s write lock; it is retried)"
    if "disk i/o" in text:
        return f" (check the disk that holds {path})"
    if "unable to open" in text:
        return f" (check that the folder of {path} exists and is writable)"
    return ""


def _lenient_text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def _raw(row: tuple[str, str, str, str | None, str | None, str, str]) -> RawRow:
    """A selected row, with what its index columns claim of the entry (a hand-edited
    ``regarding_id`` would move an entry to another account's timeline: it is marked)."""
    when, entry_id, document, seal, regarding, session, recorded = row
    claims: dict[str, str | None] = {
        "regarding_id": regarding,
        "processsession_id": session,
        "operation_created_on": when,
        "recorded_at": recorded,
    }
    return RawRow(str(entry_id), partial(str, document), seal, claims)


class SqliteAuditStore:
    """AuditStore on one SQLite file (thread-safe: one connection behind a lock)."""

    def __init__(
        self,
        path: Path | str,
        busy_timeout: float = 30.0,
        read_only: bool = False,
        ring: KeyRing | None = None,
        page_chars: int = DEFAULT_PAGE_CHARS,
        live: bool = False,
    ) -> None:
        """Open (and create, with its folder and schema) the store; ``read_only`` opens an
        existing file for reading and never writes: no folder, no schema, no WAL switch, and
        it works on a read-only copy. ``live`` (``serve``, a long-lived reader) reads through
        SQLite's locking, so that it sees what writers commit after it opened."""
        self.path = Path(path)
        self.ring = ring
        self.page_chars = page_chars
        self._lock = threading.Lock()
        try:
            if read_only:
                self._db = self._open_read_only(busy_timeout, live)
                return
            if str(path) != ":memory:":
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                str(path), check_same_thread=False, isolation_level=None, timeout=busy_timeout
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(audit_entries)")}
            if "seal" not in columns:  # a file written before entries were sealed
                self._db.execute("ALTER TABLE audit_entries ADD COLUMN seal TEXT")
            self._db.executescript(_LATER_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise StoreUnavailable(
                f"cannot open SQLite audit store {self.path}: {exc}{_fix(exc, self.path)}"
            ) from exc

    def _open_read_only(self, busy_timeout: float, live: bool = False) -> sqlite3.Connection:
        if not self.path.is_file():
            raise StoreMissing(
                f"no SQLite audit store at {self.path}: check AUDIT_SQLITE_PATH (or --db); "
                "`run` or the worker create it"
            )
        uri = self.path.resolve().as_uri()
        wal = self.path.with_name(self.path.name + "-wal")
        if not wal.exists() and not live:
            # no write-ahead log: no writer has the file open, so it is read as an immutable
            # snapshot, which creates no -wal/-shm files beside it (and works on read-only media)
            return sqlite3.connect(f"{uri}?mode=ro&immutable=1", uri=True, check_same_thread=False)
        # a writer may be working: read through SQLite's locking, which needs the -shm file
        return sqlite3.connect(
            f"{uri}?mode=ro", uri=True, check_same_thread=False, timeout=busy_timeout
        )

    @contextmanager
    def _guard(self, action: str) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                yield self._db
            except sqlite3.Error as exc:
                raise StoreUnavailable(
                    f"SQLite audit store {self.path}: {action} failed: {exc}{_fix(exc, self.path)}"
                ) from exc

    @contextmanager
    def _reading(self, action: str) -> Iterator[sqlite3.Connection]:
        """``_guard`` for reads: a byte changed by hand may leave text that is not UTF-8; it
        is read (with U+FFFD), so that the row is reported instead of failing the read."""
        with self._guard(action) as db:
            db.text_factory = _lenient_text
            try:
                yield db
            finally:
                db.text_factory = str

    def write(self, entries: Sequence[AuditEntry]) -> int:
        """Store a batch in one transaction; existing entry_ids are left as they are."""
        if not entries:
            return 0
        rows = [row_of(e, self.ring) for e in entries]
        with self._guard("write") as db:
            before = db.total_changes
            db.execute("BEGIN IMMEDIATE")
            try:
                held = self._held_versions(db, [e.entry_id for e in entries])
                db.executemany(
                    "INSERT OR IGNORE INTO audit_entries VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows
                )
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:  # a failed COMMIT may have rolled back already
                    db.execute("ROLLBACK")
                raise
            added = db.total_changes - before
        conflicts = conflicting(entries, held)
        if conflicts:
            raise ConflictingDuplicates(conflicts)
        return added

    @staticmethod
    def _held_versions(db: sqlite3.Connection, entry_ids: list[str]) -> list[AuditEntry]:
        """The stored entries under those entry ids (a row that cannot be read is reported by
        ``read_rows`` and never compared)."""
        rows: list[tuple[str, str, str | None]] = []
        for start in range(0, len(entry_ids), 500):
            chunk = entry_ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows += db.execute(
                # only placeholders are formatted in; every value is a bound parameter
                f"SELECT entry_id, entry, seal FROM audit_entries WHERE entry_id IN ({marks})",  # noqa: S608
                chunk,
            ).fetchall()
        return read_rows(
            RawRow(entry_id, partial(str, entry), seal) for entry_id, entry, seal in rows
        ).entries

    def _select(
        self, clauses: list[str], params: list[object], limit: int | None, continuation: str | None
    ) -> Page:
        clauses, params = list(clauses), list(params)
        if continuation is not None:
            position = decode_continuation(continuation)
            if not (isinstance(position, list) and len(position) == 2):
                raise ValueError("invalid continuation token")
            clauses.append("(operation_created_on, entry_id) > (?, ?)")
            params.extend(str(p) for p in position)
        where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        # the clauses are fixed text from this module; every value is a bound parameter
        sql = f"SELECT {_READ_COLUMNS} FROM audit_entries {where}{_ORDER}"  # noqa: S608
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit + 1)  # one more tells whether another page exists
        rows: list[tuple[str, str, str, str | None, str | None, str, str]] = []
        more, size = False, 0
        with self._reading("read") as db:
            for row in db.execute(sql, params):  # stepped row by row: memory bounded
                if limit is not None and (
                    len(rows) == limit or (rows and size + len(str(row[2])) > self.page_chars)
                ):
                    more = True
                    break
                rows.append(row)
                size += len(str(row[2]))
        token = encode_continuation([rows[-1][0], rows[-1][1]]) if more else None
        page = read_rows((_raw(row) for row in rows), self.ring)
        return Page(page.entries, token, page.unreadable, page.tampered)

    def by_regarding(
        self,
        regarding_id: str,
        *,
        limit: int | None = None,
        continuation: str | None = None,
        checked: bool = True,
    ) -> Page:
        """The trail of one regarding record, in time order; ``checked``: the last page adds,
        marked, the entries whose sealed document names this record while their index column
        says otherwise (a hand-edited ``regarding_id`` moves no entry out of its timeline)."""
        wanted = normalize_id(regarding_id)
        page = self._select(["regarding_id = ?"], [wanted], limit, continuation)
        return self._with_moved(page, "regarding_id", wanted) if checked else page

    def by_session(
        self,
        processsession_id: str,
        *,
        limit: int | None = None,
        continuation: str | None = None,
        checked: bool = True,
    ) -> Page:
        """All entries of one dialog session, in time order (moved entries as above)."""
        wanted = normalize_id(processsession_id)
        page = self._select(["processsession_id = ?"], [wanted], limit, continuation)
        return self._with_moved(page, "processsession_id", wanted) if checked else page

    def _with_moved(self, page: Page, column: str, wanted: str) -> Page:
        """On the last page of a keyed read: the rows whose document says ``column`` is
        ``wanted`` while the indexed column says otherwise, read from the documents (one
        scan of the table, only at the end of a read), shown and marked."""
        if page.continuation is not None:
            return page
        path = f"$.{column}"
        with self._reading("read") as db:
            rows = db.execute(
                # column names are this method's own; every value is a bound parameter
                f"SELECT {_READ_COLUMNS} FROM audit_entries WHERE json_valid(entry) "  # noqa: S608
                f"AND json_extract(entry, ?) = ? AND {column} IS NOT ?" + _ORDER,
                [path, wanted, wanted],
            ).fetchall()
        if not rows:
            return page
        moved = read_rows((_raw(row) for row in rows), self.ring)
        return Page(
            [*page.entries, *moved.entries],
            None,
            [*page.unreadable, *moved.unreadable],
            [*page.tampered, *moved.tampered],
        )

    def in_range(
        self,
        start: datetime | None = None,
        end: datetime | None = None,
        *,
        limit: int | None = None,
        continuation: str | None = None,
    ) -> Page:
        """Entries with ``start <= operation_created_on < end``."""
        clauses: list[str] = []
        params: list[object] = []
        if start is not None:
            clauses.append("operation_created_on >= ?")
            params.append(iso_utc(start))
        if end is not None:
            clauses.append("operation_created_on < ?")
            params.append(iso_utc(end))
        return self._select(clauses, params, limit, continuation)

    def by_id(self, entry_id: str) -> Page:
        """The one entry stored under ``entry_id``."""
        return self._select(["entry_id = ?"], [normalize_id(entry_id)], None, None)

    def count(self) -> int:
        """How many entries the store holds."""
        with self._guard("count") as db:
            return int(db.execute("SELECT COUNT(*) FROM audit_entries").fetchone()[0])

    def scan(
        self, start: datetime | None = None, end: datetime | None = None
    ) -> Iterator[StoredRow]:
        """Every stored entry with ``start <= recorded_at < end``, a page at a time (memory
        flat), for sealing and verifying."""
        # every row whatever its recorded_at holds (empty, a number, text that is no time):
        # such a row belongs to no window, and verify reports it, so a ranged scan keeps it too
        clauses: list[str] = []
        params: list[object] = []
        if start is not None:
            clauses.append("recorded_at >= ?")
            params.append(iso_utc(start))
        if end is not None:
            clauses.append("recorded_at < ?")
            params.append(iso_utc(end))
        in_range = " AND ".join(clauses) or "1"
        where = f"(({in_range}) OR NOT ({_A_TIME}))" if clauses else "1"
        last = ""
        while True:
            with self._reading("scan") as db:
                page = db.execute(
                    # fixed text from this method; every value is a bound parameter
                    "SELECT entry_id, entry, seal, regarding_id, processsession_id, "  # noqa: S608
                    "operation_created_on, recorded_at FROM audit_entries "
                    f"WHERE {where} AND entry_id > ? ORDER BY entry_id LIMIT 500",
                    [*params, last],
                ).fetchall()
            for row in page:
                names = ("regarding_id", "processsession_id", "operation_created_on")
                columns = dict(zip(names, row[3:6], strict=True))
                columns["recorded_at"] = row[6]
                yield StoredRow(row[0], row[1], row[2], columns)
            if len(page) < 500:
                return
            last = page[-1][0]

    def check_views(self, repair: bool = False) -> list[ViewProblem]:
        """The three reads are indexes of one table, kept by SQLite in the same transaction as
        the row: ``PRAGMA integrity_check`` proves them; ``repair`` rebuilds them (REINDEX)."""
        with self._guard("integrity check") as db:
            if repair:
                db.execute("REINDEX audit_entries")
            found = [str(row[0]) for row in db.execute("PRAGMA integrity_check").fetchall()]
        return [] if found == ["ok"] else [ViewProblem("corrupt", "", "", p) for p in found]

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()


def default_seal_path(trail: Path) -> Path:
    """Where a SQLite trail's window records live by default: a file of their own beside it
    (``audit.sqlite3`` -> ``audit.seals.sqlite3``), never inside it."""
    return trail.with_name(f"{trail.stem}.seals{trail.suffix or '.sqlite3'}")


class SqliteSealStore:
    """Window seals in a SQLite file of their own (``AUDIT_SEAL_PATH``, by default beside the
    trail), append-only by trigger. Apart from the entries: removing the newest entries and
    their window record takes two files, and the chain's head (``verify --expect-head``),
    kept by someone the store's writers cannot reach, shows any cut.

    Records that older versions kept inside the trail file (its ``audit_seals`` table) are
    copied over the first time the file is opened for writing, and read from there while it
    does not exist yet."""

    def __init__(
        self,
        location: Path | str | SqliteAuditStore,
        *,
        read_only: bool = False,
        trail: SqliteAuditStore | None = None,
    ) -> None:
        if isinstance(location, SqliteAuditStore):
            trail, location = location, default_seal_path(location.path)
        self.path = Path(location)
        self.trail = trail
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        try:
            if read_only:
                if self.path.is_file():
                    uri = self.path.resolve().as_uri()
                    self._db = sqlite3.connect(f"{uri}?mode=ro", uri=True, check_same_thread=False)
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                str(self.path), check_same_thread=False, isolation_level=None, timeout=30
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SEAL_SCHEMA)
            legacy = self._legacy()
            if legacy and not self._rows():
                self._db.executemany("INSERT OR IGNORE INTO audit_seals VALUES (?, ?)", legacy)
        except (sqlite3.Error, OSError) as exc:
            raise StoreUnavailable(
                f"cannot open the window seals {self.path}: {exc}{_fix(exc, self.path)}"
            ) from exc

    def _legacy(self) -> list[tuple[str, str]]:
        """Records an older version kept in the trail file itself."""
        if self.trail is None:
            return []
        with self.trail._guard("read old seals") as db:
            found = db.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'audit_seals'"
            ).fetchone()
            if found is None:
                return []
            rows = db.execute("SELECT window_end, record FROM audit_seals ORDER BY window_end")
            return [(str(end), str(record)) for end, record in rows.fetchall()]

    def _rows(self) -> list[tuple[str, str]]:
        if self._db is None:
            return self._legacy()
        with self._lock:
            try:
                rows = self._db.execute(
                    "SELECT window_end, record FROM audit_seals ORDER BY window_end"
                ).fetchall()
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"window seals {self.path}: read failed: {exc}") from exc
        return [(str(end), str(record)) for end, record in rows]

    def records(self) -> list[SealRecord]:
        return parse_records(self._rows())

    def add(self, record: SealRecord) -> bool:
        if self._db is None:
            raise StoreUnavailable(f"window seals {self.path}: opened read-only")
        with self._lock:
            try:
                before = self._db.total_changes
                self._db.execute(
                    "INSERT OR IGNORE INTO audit_seals VALUES (?, ?)",
                    (record.end, record.to_json()),
                )
                return self._db.total_changes > before
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"window seals {self.path}: write failed: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
