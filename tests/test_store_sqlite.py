"""The SQLite store on a real file: idempotent batches, the three reads, failures."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from shared.errors import StoreUnavailable
from shared.pipeline import evaluate
from shared.stores.sqlite import SqliteAuditStore


def _entries(samples):
    entries = [evaluate(s.message).entry for s in samples.values()]
    return [e for e in entries if e is not None]


def test_write_then_rewrite_is_idempotent(store, samples):
    entries = _entries(samples)
    assert store.write(entries) == 5
    assert store.write(entries) == 0
    assert store.write(entries[:2] + entries[:2]) == 0
    assert store.count() == 5


def test_entries_survive_reopening(tmp_path, samples):
    path = tmp_path / "trail.sqlite3"
    first = SqliteAuditStore(path)
    first.write(_entries(samples))
    first.close()
    again = SqliteAuditStore(path)
    assert again.count() == 5
    again.close()


def test_reads_by_regarding_session_and_time(store, samples):
    entries = _entries(samples)
    store.write(entries)
    trail = store.by_regarding("8E5F1A2B-6C7D-EF11-BFE3-6045BD0C1A22")
    assert [e.processsession_id for e in trail] == ["1b9e7c4d-2a3f-ef11-9f89-000d3a5c2b71"]
    session = store.by_session("{a47d2f90-2a3f-ef11-9f89-000d3a5c2b71}")
    assert [e.message_name for e in session] == ["Update"]
    in_range = store.in_range(
        datetime(2024, 11, 27, tzinfo=UTC), datetime(2024, 11, 29, tzinfo=UTC)
    )
    assert [e.operation_created_on.day for e in in_range] == [27, 28]
    everything = store.in_range()
    times = [e.operation_created_on for e in everything]
    assert times == sorted(times)
    assert len(times) == 5


def test_round_trip_keeps_the_entry(store, samples):
    entry = _entries(samples)[0]
    store.write([entry])
    assert [e.to_json_dict() for e in store.by_session(entry.processsession_id)] == [
        entry.to_json_dict()
    ]


def test_unopenable_path_is_store_unavailable(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreUnavailable, match="cannot open"):
        SqliteAuditStore(blocker / "audit.sqlite3")


def test_write_on_a_broken_connection_is_store_unavailable(tmp_path, samples):
    s = SqliteAuditStore(tmp_path / "a.sqlite3")
    s.close()
    with pytest.raises(StoreUnavailable):
        s.write(_entries(samples))
