"""What only the SQLite store does: a file that survives reopening, and its failures."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from shared.errors import StoreUnavailable
from shared.stores.sqlite import SqliteAuditStore
from tests.entries import make_entry


def test_entries_survive_reopening(tmp_path):
    path = tmp_path / "trail.sqlite3"
    first = SqliteAuditStore(path)
    first.write([make_entry(i) for i in range(5)])
    first.close()
    again = SqliteAuditStore(path)
    assert again.count() == 5
    again.close()


def test_unopenable_path_is_store_unavailable(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreUnavailable, match="cannot open"):
        SqliteAuditStore(blocker / "audit.sqlite3")


def test_write_on_a_broken_connection_is_store_unavailable(tmp_path):
    store = SqliteAuditStore(tmp_path / "a.sqlite3")
    store.close()
    with pytest.raises(StoreUnavailable):
        store.write([make_entry(1)])


def test_store_sdks_and_xml_load_only_when_used(tmp_path):
    code = (
        "import sys; from shared.bootstrap import build_pipeline; "
        "from shared.settings import load_settings; build_pipeline(load_settings()); "
        "print([m for m in ('azure.data.tables', 'azure.identity', 'defusedxml') "
        "if m in sys.modules])"
    )
    env = {**os.environ, "AUDIT_SQLITE_PATH": str(tmp_path / "a.sqlite3")}
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).parent.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.strip() == "[]"
