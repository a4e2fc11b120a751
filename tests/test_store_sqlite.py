"""What only the SQLite store does: a file that survives reopening, and its failures."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from shared.errors import StoreMissing, StoreUnavailable
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


@pytest.fixture
def small_disk(tmp_path):
    """A real 256 KiB filesystem (tmpfs), so that SQLite meets a genuinely full disk."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_reports_sqlites_own_error_and_loses_nothing(small_disk):
    path = small_disk / "audit.sqlite3"
    store = SqliteAuditStore(path)
    written = 0

    def fill() -> None:
        nonlocal written
        for n in range(10_000):
            store.write([make_entry(n)])
            written += 1

    with pytest.raises(StoreUnavailable) as raised:
        fill()
    message = str(raised.value)
    assert "database or disk is full" in message
    assert str(path) in message
    assert "free space" in message
    assert "rollback" not in message.lower()
    assert store.count() == written  # the failed batch left nothing half-written
    subprocess.run(["mount", "-o", "remount,size=8m", str(small_disk)], check=True)
    assert store.write([make_entry(written)]) == 1  # the same entry, once there is room
    assert store.count() == written + 1
    store.close()


def test_opening_for_reading_never_writes(tmp_path):
    missing = tmp_path / "typo" / "audit.sqlite3"
    with pytest.raises(StoreMissing, match="no SQLite audit store at"):
        SqliteAuditStore(missing, read_only=True)
    assert not missing.parent.exists()
    plain = tmp_path / "plain.sqlite3"
    SqliteAuditStore(plain).close()
    before = sorted(p.name for p in tmp_path.iterdir())
    reader = SqliteAuditStore(plain, read_only=True)
    assert reader.count() == 0
    with pytest.raises(StoreUnavailable, match="readonly"):
        reader.write([make_entry(1)])
    reader.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_read_only_copy_can_be_read(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    store = SqliteAuditStore(source / "audit.sqlite3")
    store.write([make_entry(n) for n in range(3)])
    store.close()
    view = tmp_path / "view"
    view.mkdir()
    bind = subprocess.run(["mount", "--bind", str(source), str(view)], capture_output=True)
    if bind.returncode != 0:
        pytest.skip("cannot bind-mount here")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(view)], check=True)
        reader = SqliteAuditStore(view / "audit.sqlite3", read_only=True)
        assert reader.count() == 3
        assert len(reader.in_range().entries) == 3
        reader.close()
    finally:
        subprocess.run(["umount", "-l", str(view)], check=False)
