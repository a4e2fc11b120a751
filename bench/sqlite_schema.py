"""``make bench``: what each index of the SQLite store costs a write, measured.

The store keeps three secondary indexes, one per read the HTTP API and the CLI make (a
regarding record's trail, a session's entries, a time range). This writes the same rows in
batches of 100, one transaction each (as ``SqliteAuditStore.write`` does: the held-version
SELECT, INSERT OR IGNORE, COMMIT), into schema variants: CPU time per entry, the variants
interleaved in one process, best of several rounds.
Runnable alone: ``python -m bench.sqlite_schema``.
"""

from __future__ import annotations

import logging
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

from bench.corpus import messages
from shared.pipeline import evaluate
from shared.stores.sqlite import _SCHEMA, row_of

ROUNDS = 4
BATCH = 100
MERGED = "one merged key table, 3 rows per entry"
_TABLE, _, _INDEXES = _SCHEMA.partition(";")
_INDEX = {name: f"CREATE INDEX{text}" for name, text in (
    (part.split()[3], part) for part in _INDEXES.split("CREATE INDEX")[1:]
)}  # fmt: skip
VARIANTS = {
    "the store's schema (3 indexes)": _SCHEMA,
    **{
        f"without {name}": _TABLE + ";" + "".join(t for n, t in _INDEX.items() if n != name)
        for name in _INDEX
    },
    "primary key only (no read but by id)": _TABLE + ";",
    "WITHOUT ROWID table, 3 indexes": _TABLE + " WITHOUT ROWID;" + "".join(_INDEX.values()),
    # one merged secondary structure: three key rows per entry (regarding, session, time)
    MERGED: _TABLE
    + "; CREATE TABLE audit_keys (key TEXT, operation_created_on TEXT, entry_id TEXT, "
    "PRIMARY KEY (key, operation_created_on, entry_id)) WITHOUT ROWID;",
}


def _rows(count: int) -> list[tuple[str | None, ...]]:
    decisions = (evaluate(message) for message in messages(count))
    return [row_of(d.entry) for d in decisions if d.entry is not None]


def _write_all(path: Path, schema: str, rows: list[tuple[str | None, ...]]) -> float:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.executescript(schema)
    started = time.process_time()
    for start in range(0, len(rows), BATCH):
        chunk = rows[start : start + BATCH]
        db.execute("BEGIN IMMEDIATE")
        marks = ",".join("?" * len(chunk))
        db.execute(
            f"SELECT entry_id, entry FROM audit_entries WHERE entry_id IN ({marks})",  # noqa: S608
            [row[0] for row in chunk],
        ).fetchall()
        db.executemany("INSERT OR IGNORE INTO audit_entries VALUES (?, ?, ?, ?, ?, ?, ?, ?)", chunk)
        if "audit_keys" in schema:
            keys = [
                (f"{kind}:{value or ''}", row[5], row[0])
                for row in chunk
                for kind, value in (("r", row[3]), ("s", row[4]), ("t", ""))
            ]
            db.executemany("INSERT OR IGNORE INTO audit_keys VALUES (?, ?, ?)", keys)
        db.execute("COMMIT")
    spent = time.process_time() - started
    db.close()
    return spent / len(rows)


def main(count: int = 5_000) -> None:
    logging.disable(logging.WARNING)
    rows = _rows(count)
    print(
        f"SQLite write CPU per entry ({len(rows):,} entries, batches of {BATCH}, WAL, "
        f"synchronous=FULL; interleaved, best of {ROUNDS})",
        flush=True,
    )
    best = dict.fromkeys(VARIANTS, float("inf"))
    with tempfile.TemporaryDirectory() as tmp:
        for round_number in range(ROUNDS):
            for n, (name, schema) in enumerate(VARIANTS.items()):
                path = Path(tmp) / f"r{round_number}-v{n}.sqlite3"
                best[name] = min(best[name], _write_all(path, schema, rows))
    base = best["the store's schema (3 indexes)"]
    for name, seconds in best.items():
        print(f"  {name:42} {seconds * 1e6:6.1f} us/entry  {seconds / base:.2f}x the store's")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5_000)
