"""A trail in a table made before commit partitions, copied by ``psaudit migrate-table`` into a
new table with 16: every entry with its document and seal unchanged, every view right, the
seals of the old windows still verifying against the new table, readers showing the same
trail; the source is only read; a second run copies only what came meanwhile; a row that holds
another entry's document is named and not copied."""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from shared.pipeline import Pipeline
from shared.stores.table import TableAuditStore
from shared.stores.table_rows import LAYOUT_KEY, TRAIL
from tests.conftest import run_cli, table_store
from tests.entries import make_entry, synthetic_message
from tests.test_seals import KEY, RING, azurite_blob  # noqa: F401 - a fixture

BANK = "5f1b0c55-0000-4000-8000-00000000beef"


@pytest.fixture
def old_trail(azurite: Any, azurite_blob: Any) -> Iterator[tuple[TableAuditStore, dict[str, str]]]:  # noqa: F811
    """A sealed trail of 40 events (one over an entity) in the layout before partitions."""
    store = table_store(azurite.connection_string, ring=RING, partitions=0)
    env = {
        "AUDIT_STORE": "table",
        "AUDIT_TABLE_NAME": store.table_name,
        "AUDIT_TABLE_CONNECTION_STRING": azurite.connection_string,
        "AUDIT_SEAL_CONNECTION_STRING": azurite_blob.connection_string,
        "AUDIT_SEAL_CONTAINER": "seals" + uuid.uuid4().hex[:12],
        "AUDIT_TRAIL_KEY": KEY,
    }
    Pipeline(store).handle([synthetic_message(n, BANK if n % 3 else None) for n in range(39)])
    rng = random.Random(11)
    noise = "".join(chr(rng.randrange(0x10000, 0x10FFFF)) for _ in range(400_000))
    store.write([make_entry(500, regarding=BANK, processsession_name=noise)])
    assert run_cli("seal", "--now", env=env).returncode == 0
    yield store, env
    store.delete_table()
    store.close()


def _ids(lines: str) -> list[str]:
    return [json.loads(line)["entry_id"] for line in lines.splitlines() if line.strip()]


def test_a_trail_moves_to_commit_partitions_whole_and_still_verifies(
    old_trail: tuple[TableAuditStore, dict[str, str]], azurite: Any
) -> None:
    store, env = old_trail
    assert (store.partitions, store._legacy) == (1, True)
    new = "moved" + uuid.uuid4().hex[:12]
    before = run_cli("timeline", BANK, "--format", "jsonl", env=env).stdout
    moved = run_cli("migrate-table", "--to", new, "--format", "json", env=env, check=False)
    assert moved.returncode == 0, moved.stderr
    report = json.loads(moved.stdout)
    assert report["copied"] == report["entries"] == store.count() == 40
    assert (report["from_partitions"], report["to_partitions"]) == (1, 16)
    assert report["not_copied"] == []
    assert report["view_problems"] == 0

    target = TableAuditStore(new, connection_string=azurite.connection_string, create=False)
    try:
        assert target.partitions == 16
        assert target._table.get_entity(*LAYOUT_KEY)["partitions"] == 16
        used = {
            str(r["PartitionKey"]) for r in target._table.list_entities(select=["PartitionKey"])
        }
        assert TRAIL not in used
        assert not any(p.startswith("d|") for p in used)  # every view in its commit partition
        assert len([p for p in used if p.startswith("t|")]) > 8  # spread
        moved_env = {**env, "AUDIT_TABLE_NAME": new}
        verify = run_cli("verify", "--format", "json", env=moved_env, check=False)
        assert verify.returncode == 0, verify.stdout + verify.stderr
        assert json.loads(verify.stdout)["entries"] == 40
        after = run_cli("timeline", BANK, "--format", "jsonl", env=moved_env).stdout
        assert _ids(after) == _ids(before)  # the same trail, in the same order
        assert [json.loads(line)["seal_status"] for line in after.splitlines()] == ["ok"] * len(
            _ids(after)
        )
        assert store.count() == 40  # the source is only read
        assert store._table.get_entity(store.partition_of(_ids(before)[0]), f"e|{_ids(before)[0]}")

        store.write([make_entry(600, regarding=BANK)])  # a writer not yet stopped
        again = run_cli("migrate-table", "--to", new, "--format", "json", env=env)
        assert json.loads(again.stdout)["copied"] == 1
        assert target.count() == 41
    finally:
        target.delete_table()
        target.close()


def test_a_row_holding_another_entrys_document_is_named_not_copied(
    old_trail: tuple[TableAuditStore, dict[str, str]], azurite: Any
) -> None:
    store, env = old_trail
    raw = store._table
    row = next(
        iter(raw.query_entities("PartitionKey eq 't' and RowKey gt 'e|' and RowKey lt 'e}'"))
    )
    forged = "e|" + str(uuid.uuid4())
    raw.create_entity({**row, "RowKey": forged})
    new = "moved" + uuid.uuid4().hex[:12]
    moved = run_cli("migrate-table", "--to", new, "--format", "json", env=env, check=False)
    try:
        assert moved.returncode == 1
        report = json.loads(moved.stdout)
        assert report["not_copied"] == [forged[2:]]
        assert report["entries"] == 40
        text = run_cli("migrate-table", "--to", new, "--format", "table", env=env, check=False)
        assert f"not copied: entry row {forged[2:]}" in text.stdout
    finally:
        TableAuditStore(new, connection_string=azurite.connection_string).delete_table()


def test_the_table_itself_or_another_store_is_refused(
    old_trail: tuple[TableAuditStore, dict[str, str]],
) -> None:
    store, env = old_trail
    same = run_cli("migrate-table", "--to", store.table_name, env=env, check=False)
    assert same.returncode == 2
    assert "new table" in same.stderr
    sqlite = run_cli(
        "migrate-table", "--to", "other", env={**env, "AUDIT_STORE": "sqlite"}, check=False
    )
    assert sqlite.returncode == 2
    assert "AUDIT_STORE=table" in sqlite.stderr
