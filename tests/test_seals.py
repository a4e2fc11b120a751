"""The tamper-evident trail: entries sealed when written, windows sealed, and ``verify``
naming every kind of tampering done with the storage's own tools (raw SQL on the SQLite file,
the azure-data-tables client on the Table store's raw entities, seals removed or edited)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.keys import KeyRing, TrailKeyError, key_id, parse_key
from shared.pipeline import Pipeline
from shared.stores.seals import seal_windows, verify_trail
from shared.stores.sqlite import SqliteAuditStore, SqliteSealStore, default_seal_path
from tests.entries import synthetic_message

ROOT = Path(__file__).resolve().parent.parent
KEY = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
OTHER = "ff" * 32
RING = KeyRing.from_texts(KEY)
LATER = datetime.now(UTC) + timedelta(days=1)  # every window closed, grace included


def _now() -> datetime:
    return datetime.now(UTC)


def _kinds(report: Any) -> list[str]:
    return sorted(p.kind for p in report.problems)


@pytest.fixture
def sealed_sqlite(tmp_path: Path) -> Iterator[SqliteAuditStore]:
    store = SqliteAuditStore(tmp_path / "audit.sqlite3", ring=RING)
    Pipeline(store).handle([synthetic_message(n) for n in range(8)])
    assert seal_windows(store, SqliteSealStore(store), RING, _now(), everything=True)
    yield store
    store.close()


def _raw(store: SqliteAuditStore, sql: str | None = None) -> sqlite3.Connection:
    """The file as anyone holding it would open it: the append-only triggers dropped. SQL on
    the window records goes to their own file (``default_seal_path``)."""
    path = store.path
    if sql is not None and "audit_seals" in sql:
        path = default_seal_path(store.path)
    db = sqlite3.connect(path, isolation_level=None)
    for name in [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='trigger'")]:
        db.execute(f"DROP TRIGGER {name}")
    return db


def test_an_untouched_trail_verifies(sealed_sqlite):
    report = verify_trail(sealed_sqlite, SqliteSealStore(sealed_sqlite), RING, LATER)
    assert report.problems == []
    assert (report.entries, report.windows, report.unsealed) == (8, 1, 0)


def test_the_store_refuses_updates_and_deletes(sealed_sqlite):
    db = sqlite3.connect(sealed_sqlite.path)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("DELETE FROM audit_entries")
    seals = sqlite3.connect(default_seal_path(sealed_sqlite.path))
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        seals.execute("UPDATE audit_seals SET record = ''")


@pytest.mark.parametrize(
    ("sql", "kinds"),
    [
        (  # change a field inside the entry
            "UPDATE audit_entries SET entry = replace(entry, 'accepted', 'rejected') "
            "WHERE rowid = 1",
            ["altered"],  # the entry's own MAC (the window's digest is over the seals)
        ),
        (  # change a column the reads filter on, not the entry
            "UPDATE audit_entries SET regarding_id = 'aaaaaaaa-0000-0000-0000-000000000000' "
            "WHERE rowid = 1",
            ["altered"],
        ),
        ("DELETE FROM audit_entries WHERE rowid = 2", ["missing"]),
        (  # copy a row under a new id
            "INSERT INTO audit_entries SELECT 'bbbbbbbb-0000-0000-0000-000000000000', verdict, "
            "reason, regarding_id, processsession_id, operation_created_on, recorded_at, entry, "
            "seal FROM audit_entries WHERE rowid = 3",
            ["forged", "inserted"],
        ),
        ("UPDATE audit_entries SET seal = NULL WHERE rowid = 4", ["altered", "unsealed"]),
        ("DELETE FROM audit_seals", ["unsealed"]),  # overdue, and nothing sealed it
        (
            "UPDATE audit_seals SET record = replace(record, '\"count\":8', '\"count\":7')",
            ["inserted", "seal_broken"],
        ),
    ],
)
def test_each_kind_of_tampering_is_named(sealed_sqlite, sql, kinds):
    _raw(sealed_sqlite, sql).execute(sql)
    report = verify_trail(sealed_sqlite, SqliteSealStore(sealed_sqlite), RING, LATER)
    assert _kinds(report) == sorted(kinds)


def test_a_removed_latest_seal_leaves_an_overdue_unsealed_tail(sealed_sqlite):
    Pipeline(sealed_sqlite).handle([synthetic_message(n) for n in range(8, 10)])
    seal_windows(sealed_sqlite, SqliteSealStore(sealed_sqlite), RING, _now(), everything=True)
    cut = "DELETE FROM audit_seals WHERE window_end = (SELECT max(window_end) FROM audit_seals)"
    _raw(sealed_sqlite, cut).execute(cut)
    report = verify_trail(sealed_sqlite, SqliteSealStore(sealed_sqlite), RING, LATER)
    assert report.unsealed == 2
    assert _kinds(report) == ["unsealed"]
    fresh = verify_trail(sealed_sqlite, SqliteSealStore(sealed_sqlite), RING, datetime.now(UTC))
    assert fresh.problems == []  # recorded minutes ago: not due for a seal yet
    assert fresh.unsealed == 2


def test_another_key_verifies_nothing(sealed_sqlite):
    report = verify_trail(
        sealed_sqlite, SqliteSealStore(sealed_sqlite), KeyRing.from_texts(OTHER), LATER
    )
    assert set(_kinds(report)) == {"unknown_key", "seal_broken"}


def test_a_rotated_key_seals_new_entries_and_still_verifies_the_old(sealed_sqlite):
    rotated = KeyRing.from_texts(OTHER, KEY)
    sealed_sqlite.ring = rotated
    Pipeline(sealed_sqlite).handle([synthetic_message(n) for n in range(20, 23)])
    seals = SqliteSealStore(sealed_sqlite)
    seal_windows(sealed_sqlite, seals, rotated, _now(), everything=True)
    report = verify_trail(sealed_sqlite, seals, rotated, LATER)
    assert report.problems == []
    assert report.entries == 11
    newest = sealed_sqlite.in_range().entries
    assert {e.seal.split(":")[1] for e in newest if e.seal} == {
        key_id(RING.current),
        rotated.current_id,
    }


def test_readers_mark_an_entry_whose_seal_does_not_match(sealed_sqlite):
    victim = sealed_sqlite.in_range().entries[0]
    _raw(sealed_sqlite).execute(
        "UPDATE audit_entries SET entry = replace(entry, 'accepted', 'rejected') "
        "WHERE entry_id = ?",
        (victim.entry_id,),
    )
    page = sealed_sqlite.in_range()
    assert len(page.entries) == 8  # returned, not dropped
    assert [t.entry_id for t in page.tampered] == [victim.entry_id]


@given(st.data())
def test_any_single_byte_change_to_a_stored_entry_is_reported(tmp_path_factory, data):
    folder = tmp_path_factory.mktemp("byte")
    store = SqliteAuditStore(folder / "a.sqlite3", ring=RING)
    try:
        Pipeline(store).handle([synthetic_message(1), synthetic_message(2)])
        seal_windows(store, SqliteSealStore(store), RING, _now(), everything=True)
        db = _raw(store)
        entry_id, document, seal = db.execute(
            "SELECT entry_id, entry, seal FROM audit_entries ORDER BY entry_id LIMIT 1"
        ).fetchone()
        column = data.draw(st.sampled_from(["entry", "seal"]))
        raw = bytearray((document if column == "entry" else seal).encode())
        at = data.draw(st.integers(0, len(raw) - 1))
        raw[at] = data.draw(st.integers(0, 255).filter(lambda b: b != raw[at]))
        db.execute(  # the bytes as they are, valid UTF-8 or not, as a hex editor would
            f"UPDATE audit_entries SET {column} = CAST(? AS TEXT) WHERE entry_id = ?",
            (bytes(raw), entry_id),
        )
        report = verify_trail(store, SqliteSealStore(store), RING, LATER)
        assert report.problems, f"byte {at} of {column} changed and nothing was reported"
    finally:
        store.close()


def test_keys_are_64_hex_characters():
    assert len(parse_key(KEY)) == 32
    for bad in ("abc", "zz" * 32, KEY + "00"):
        with pytest.raises(TrailKeyError):
            parse_key(bad)


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shared.cli", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_run_seal_verify_through_the_cli(tmp_path):
    db = str(tmp_path / "trail" / "audit.sqlite3")
    env = {"AUDIT_TRAIL_KEY": KEY}
    assert _cli(["--db", db, "run"], env).returncode == 0
    assert _cli(["--db", db, "seal", "--now"], env).returncode == 0
    good = _cli(["--db", db, "verify", "--format", "json"], env)
    assert good.returncode == 0, good.stderr
    report = json.loads(good.stdout)
    assert report["problems"] == []
    assert report["entries"] == 7
    assert report["windows"] == 1
    wrong = _cli(["--db", db, "verify", "--format", "json"], {"AUDIT_TRAIL_KEY": OTHER})
    assert wrong.returncode == 1
    assert _cli(["--db", db, "verify"], {"AUDIT_TRAIL_KEY": ""}).returncode != 0
    nokey = _cli(["--db", db, "verify"], {})
    assert nokey.returncode == 2
    assert "AUDIT_TRAIL_KEY" in nokey.stderr
    assert KEY not in good.stdout + good.stderr + wrong.stdout + wrong.stderr


# -- the Table store, with its seals in Azurite's Blob service --------------------------------


@pytest.fixture(scope="module")
def azurite_blob(tmp_path_factory):
    from devtools.azurite import Azurite

    server = Azurite(tmp_path_factory.mktemp("blob"), service="blob")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def sealed_table(azurite, azurite_blob):
    from shared.stores.blob_seals import BlobSealStore
    from tests.conftest import table_store

    store = table_store(azurite.connection_string, ring=RING)
    seals = BlobSealStore(
        "seals" + uuid.uuid4().hex[:12], connection_string=azurite_blob.connection_string
    )
    Pipeline(store).handle([synthetic_message(n) for n in range(6)])
    assert seal_windows(store, seals, RING, _now(), everything=True) is not None
    yield store, seals
    store.delete_table()
    store.close()


def test_table_store_untouched_verifies(sealed_table):
    store, seals = sealed_table
    report = verify_trail(store, seals, RING, LATER)
    assert report.problems == []
    assert (report.entries, report.windows) == (6, 1)
    empty = seal_windows(store, seals, RING, LATER)  # the windows since: sealed, empty
    assert empty is not None
    assert empty.count == 0
    assert verify_trail(store, seals, RING, LATER).problems == []


@pytest.mark.parametrize("tamper", ["field", "delete", "copy", "seal_blob"])
def test_table_store_tampering_is_named(sealed_table, tamper):
    store, seals = sealed_table
    raw = store._table
    row = next(
        iter(
            raw.query_entities(
                "PartitionKey ge 't' and PartitionKey lt 't}' and RowKey gt 'e|' and RowKey lt 'e}'"
            )
        )
    )
    if tamper == "field":
        raw.upsert_entity({**row, "doc": row["doc"].replace("accepted", "rejected")})
        expected = ["altered"]
    elif tamper == "delete":
        raw.delete_entity(row["PartitionKey"], row["RowKey"])
        expected = ["missing"]
    elif tamper == "copy":
        raw.create_entity({**row, "RowKey": "e|cccccccc-0000-0000-0000-000000000000"})
        expected = ["forged", "inserted"]
    else:
        blob = next(iter(seals._container.list_blobs()))
        text = seals._container.download_blob(blob.name).readall().decode()
        seals._container.upload_blob(
            blob.name, text.replace('"count":6', '"count":5'), overwrite=True
        )
        expected = ["inserted", "seal_broken"]
    assert _kinds(verify_trail(store, seals, RING, LATER)) == sorted(expected)


WRITER = """
import sys
from shared.keys import KeyRing
from shared.pipeline import Pipeline
from shared.stores.sqlite import SqliteAuditStore
from tests.entries import synthetic_message

store = SqliteAuditStore(sys.argv[1], ring=KeyRing.from_texts(sys.argv[2]))
first = int(sys.argv[3])
for start in range(first, first + 60, 6):  # small batches, interleaving with the other writer
    Pipeline(store).handle([synthetic_message(n) for n in range(start, start + 6)])
store.close()
"""


def test_two_writers_at_once_and_an_outage_waited_out_still_verify_clean(tmp_path):
    from shared.pipeline import StoreRetry
    from tests.pipeline_doubles import OutageStore

    db = tmp_path / "audit.sqlite3"
    SqliteAuditStore(db, ring=RING).close()
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(db), KEY, str(first)], cwd=ROOT)
        for first in (0, 1000)
    ]
    for writer in writers:
        assert writer.wait(timeout=120) == 0
    store = SqliteAuditStore(db, ring=RING)
    outage = OutageStore(store, 1.5)  # down, then up: the batch waits in place and is written
    retry = StoreRetry(budget=20.0, first_delay=0.1, max_delay=0.5)
    outcomes = Pipeline(outage, retry=retry).handle(
        [synthetic_message(n) for n in range(2000, 2010)]
    )
    assert outage.failed_writes > 0
    assert {o.settlement.value for o in outcomes} == {"complete"}
    seals = SqliteSealStore(store)
    assert seal_windows(store, seals, RING, _now(), everything=True) is not None
    report = verify_trail(store, seals, RING, LATER)
    assert report.problems == []
    assert report.entries == 130
    store.close()


def test_table_store_two_writers_at_once_verify_clean(azurite, azurite_blob):
    from shared.stores.blob_seals import BlobSealStore
    from tests.conftest import table_store

    store = table_store(azurite.connection_string, ring=RING)
    script = (
        "import sys\n"
        "from shared.keys import KeyRing\n"
        "from shared.pipeline import Pipeline\n"
        "from shared.stores.table import TableAuditStore\n"
        "from tests.entries import synthetic_message\n"
        "store = TableAuditStore(sys.argv[2], connection_string=sys.argv[1], "
        "ring=KeyRing.from_texts(sys.argv[3]))\n"
        "first = int(sys.argv[4])\n"
        "for start in range(first, first + 40, 8):\n"
        "    Pipeline(store).handle([synthetic_message(n % 50) for n in range(start, start + 8)])\n"
    )
    try:
        writers = [  # overlapping events: both write sessions 10..39 at once
            subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    script,
                    azurite.connection_string,
                    store.table_name,
                    KEY,
                    str(first),
                ],
                cwd=ROOT,
            )
            for first in (0, 10)
        ]
        for writer in writers:
            assert writer.wait(timeout=120) == 0
        seals = BlobSealStore(
            "seals" + uuid.uuid4().hex[:12], connection_string=azurite_blob.connection_string
        )
        assert seal_windows(store, seals, RING, _now(), everything=True) is not None
        report = verify_trail(store, seals, RING, LATER)
        assert report.problems == []
        assert report.entries == 50
        assert store.check_views() == []
    finally:
        store.delete_table()
        store.close()
