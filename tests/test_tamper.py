"""Proofs that hold where the auditor looks: tampering done with the storage's own tools (raw
SQL after dropping the triggers; the raw azure-data-tables and azure-storage-blob SDKs against
Azurite) is reported by ``verify`` with its kind, and every reader (``timeline``, ``export``,
the HTTP API's read) shows the genuine entries once each, marked where due."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.pipeline import Pipeline
from shared.stores.sqlite import SqliteAuditStore, default_seal_path
from shared.trail.reading import TrailView, read_trail
from tests.conftest import run_cli, table_store
from tests.entries import synthetic_message
from tests.test_seals import KEY, RING, azurite_blob  # noqa: F401 - a fixture

ROOT = Path(__file__).resolve().parent.parent
BANK = str(uuid.uuid5(uuid.NAMESPACE_OID, "tamper-bank"))
OTHER_BANK = str(uuid.uuid5(uuid.NAMESPACE_OID, "tamper-other-bank"))


def _ids(lines: str) -> list[str]:
    return [json.loads(line)["entry_id"] for line in lines.splitlines() if line.strip()]


def _statuses(lines: str) -> dict[str, str]:
    return {
        json.loads(line)["entry_id"]: json.loads(line)["seal_status"]
        for line in lines.splitlines()
        if line.strip()
    }


# -- the Table store, views tampered with the raw SDK ----------------------------------------


@pytest.fixture
def table_trail(azurite, azurite_blob) -> Iterator[tuple[Any, dict[str, str], list[str]]]:  # noqa: F811
    """Three events of one bank account in a sealed Table trail, and the CLI's settings."""
    store = table_store(azurite.connection_string, ring=RING)
    container = "seals" + uuid.uuid4().hex[:12]
    env = {
        "AUDIT_STORE": "table",
        "AUDIT_TABLE_NAME": store.table_name,
        "AUDIT_TABLE_CONNECTION_STRING": azurite.connection_string,
        "AUDIT_SEAL_CONNECTION_STRING": azurite_blob.connection_string,
        "AUDIT_SEAL_CONTAINER": container,
        "AUDIT_TRAIL_KEY": KEY,
    }
    outcomes = Pipeline(store).handle([synthetic_message(n, BANK) for n in range(3)])
    ids = [o.decision.entry.entry_id for o in outcomes if o.decision.entry is not None]
    assert run_cli("seal", "--now", env=env).returncode == 0
    yield store, env, sorted(ids, key=lambda i: _time_of(store, i))
    store.delete_table()
    store.close()


def _time_of(store: Any, entry_id: str) -> str:
    held = store.stored(entry_id)
    assert held is not None
    return str(held.entry.operation_created_on)


def _view(raw: Any, prefix: str, entry_id: str, partition: str = "t") -> Any:
    """A view row of ``entry_id`` in the commit partitions (``prefix``: r|..., or d| for the
    day view)."""
    query = "PartitionKey ge 't' and PartitionKey lt 't}' and RowKey ge @a and RowKey lt @b"
    if partition == "d":
        prefix = "d|"
    rows = raw.query_entities(query, parameters={"a": prefix, "b": prefix + "}"})
    return next(r for r in rows if str(r["RowKey"]).endswith(entry_id))


def test_views_deleted_and_a_view_given_another_entrys_document(table_trail) -> None:
    """E1 loses its regarding and day views; E2's regarding view gets E3's genuine document
    and seal, keeping its own digest. verify names each; every reader shows E1, E2, E3 once."""
    store, env, (e1, e2, e3) = table_trail
    raw = store._table
    for row in (_view(raw, f"r|{BANK}|", e1), _view(raw, "", e1, partition="d")):
        raw.delete_entity(row["PartitionKey"], row["RowKey"])
    genuine = _view(raw, f"r|{BANK}|", e3)
    target = _view(raw, f"r|{BANK}|", e2)
    raw.upsert_entity({**target, "doc": genuine["doc"], "seal": genuine["seal"]})

    verify = run_cli("verify", "--format", "json", env=env, check=False)
    assert verify.returncode == 1, verify.stderr
    kinds = Counter(p["kind"] for p in json.loads(verify.stdout)["problems"])
    assert kinds == {"view_missing": 2, "view_differs": 1}, kinds
    check = run_cli("check-store", "--format", "json", env=env, check=False)
    assert check.returncode == 1
    assert Counter(p["kind"] for p in json.loads(check.stdout)["problems"]) == {
        "missing": 2,
        "differs": 1,
    }

    timeline = run_cli("timeline", BANK, "--format", "jsonl", env=env, check=False)
    assert timeline.returncode == 1  # an entry shown failed its check: said by the exit code
    assert sorted(_ids(timeline.stdout)) == sorted([e1, e2, e3])
    statuses = _statuses(timeline.stdout)
    assert statuses[e3] == "ok"
    assert statuses[e1] == statuses[e2] == "altered"  # marked in the output itself
    exported = run_cli("export", env=env, check=False)
    assert sorted(_ids(exported.stdout)) == sorted([e1, e2, e3])
    answer = read_trail(store, TrailView.BANK_ACCOUNT, BANK, {})
    assert sorted(e["entry_id"] for e in answer["entries"]) == sorted([e1, e2, e3])
    assert {t["entry_id"] for t in answer["tampered"]} == {e1, e2}
    text = run_cli("timeline", BANK, env=env, check=False).stdout
    assert text.count("seal does not match") == 2

    repaired = run_cli("check-store", "--repair", env=env, check=False)
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert run_cli("verify", env=env, check=False).returncode == 0


def test_hand_made_rows_without_documents_fail_no_read(table_trail) -> None:
    """A view without a document pointing at no entry, and an entry row without a document:
    no 503 loop, no RecursionError: each is reported with its keys, the rest is read."""
    from azure.data.tables import UpdateMode

    store, env, (e1, e2, e3) = table_trail
    raw = store._table
    ghost = str(uuid.uuid4())
    view = _view(raw, f"r|{BANK}|", e3)
    key = str(view["RowKey"]).replace(e3, ghost)
    partition = view["PartitionKey"]
    raw.create_entity({"PartitionKey": partition, "RowKey": key, "entry_id": ghost, "digest": "0"})
    entry = raw.get_entity(store.partition_of(e2), f"e|{e2}")
    raw.upsert_entity({k: v for k, v in entry.items() if k != "doc"}, mode=UpdateMode.REPLACE)

    answer = read_trail(store, TrailView.BANK_ACCOUNT, BANK, {})
    assert {u["entry_id"] for u in answer["unreadable"]} == {ghost}
    # e2's view still carries its genuine document (digest and keys agree): shown from it
    assert sorted(e["entry_id"] for e in answer["entries"]) == sorted([e1, e2, e3])
    timeline = run_cli("timeline", BANK, "--format", "jsonl", env=env, check=False)
    assert timeline.returncode == 1
    assert "Traceback" not in timeline.stderr
    assert ghost in timeline.stderr
    verify = run_cli("verify", "--format", "json", env=env, check=False, timeout=120)
    assert verify.returncode == 1
    assert "RecursionError" not in verify.stderr
    assert "Traceback" not in verify.stderr
    problems = json.loads(verify.stdout)["problems"]
    assert ("unreadable", e2) in {(p["kind"], p.get("entry_id")) for p in problems}
    assert "view_orphan" in {p["kind"] for p in problems}


def test_repair_racing_a_live_writer_deletes_no_committed_view(azurite) -> None:
    """2,000 entries written by another process in batches of 32 while --repair runs again
    and again: no committed entry's view is lost, and a final check is clean."""
    store = table_store(azurite.connection_string)
    total = 2000
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys\n"
            "from shared.pipeline import Pipeline\n"
            "from shared.stores.table import TableAuditStore\n"
            "from tests.entries import synthetic_message\n"
            "store = TableAuditStore(sys.argv[2], connection_string=sys.argv[1])\n"
            "pipeline = Pipeline(store)\n"
            f"for start in range(0, {total}, 32):\n"
            f"    last = min(start + 32, {total})\n"
            "    pipeline.handle([synthetic_message(n) for n in range(start, last)])\n"
            "store.close()\n",
            azurite.connection_string,
            store.table_name,
        ],
        cwd=ROOT,
    )
    repairs = 0
    try:
        while writer.poll() is None:
            store.check_views(repair=True)
            repairs += 1
        assert writer.returncode == 0
        assert repairs >= 2, "the writer finished before a repair could race it"
        assert store.count() == total
        assert store.check_views() == []
        assert len({e.entry_id for e in store.in_range().entries}) == total
        assert store.in_range().tampered == []
    finally:
        if writer.poll() is None:
            writer.kill()
        store.delete_table()
        store.close()


def test_a_403_is_waited_out_never_a_rejection(azurite) -> None:
    """A SAS without write permission answers 403 (AuthorizationPermissionMismatch), as a
    role not yet applied does: transient (retried, then abandoned), never store_rejected.
    Azurite checks a SAS's permissions on single-entity requests only, not inside a batch, so
    the table has the layout before commit partitions, whose day view is a request of its own
    (a batch's 403 is tested with a wrong key in test_table_batch_contract)."""
    from datetime import UTC, datetime, timedelta

    from azure.core.credentials import AzureNamedKeyCredential
    from azure.data.tables import (
        AccountSasPermissions,
        ResourceTypes,
        TableServiceClient,
        generate_account_sas,
    )

    from shared.errors import StoreUnavailable
    from shared.stores.table import TableAuditStore

    store = table_store(azurite.connection_string, partitions=0)
    parts = dict(p.split("=", 1) for p in azurite.connection_string.split(";") if "=" in p)
    credential = AzureNamedKeyCredential(parts["AccountName"], parts["AccountKey"])
    sas = generate_account_sas(
        credential,
        resource_types=ResourceTypes(service=True, object=True),
        permission=AccountSasPermissions(read=True, list=True),
        expiry=datetime.now(UTC) + timedelta(hours=1),
    )
    TableServiceClient.from_connection_string(azurite.connection_string).close()
    read_only = TableAuditStore(
        store.table_name,
        connection_string=f"TableEndpoint={parts['TableEndpoint']};SharedAccessSignature={sas}",
        create=False,
        partitions=0,
    )
    try:
        with pytest.raises(StoreUnavailable, match=r"HTTP 403.*Storage Table Data Contributor"):
            read_only.write([synthetic_message_entry()])
        (outcome,) = Pipeline(read_only).handle([synthetic_message(7)])
        assert outcome.settlement.value == "retry"
        assert outcome.dead_letter_reason == "store_unavailable"
    finally:
        read_only.close()
        store.delete_table()
        store.close()


def synthetic_message_entry() -> Any:
    from shared.pipeline import evaluate

    decision = evaluate(synthetic_message(99))
    assert decision.entry is not None
    return decision.entry


# -- SQLite, tampered with raw SQL ------------------------------------------------------------


def _raw(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)
    for name in [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='trigger'")]:
        db.execute(f"DROP TRIGGER {name}")
    return db


@pytest.fixture
def sqlite_trail(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    db = tmp_path / "audit.sqlite3"
    env = {"AUDIT_SQLITE_PATH": str(db), "AUDIT_TRAIL_KEY": KEY}
    store = SqliteAuditStore(db, ring=RING)
    Pipeline(store).handle([synthetic_message(n, BANK) for n in range(4)])
    store.close()
    return db, env


def test_a_cut_tail_and_a_restored_copy_fail_expect_head(sqlite_trail, tmp_path) -> None:
    db, env = sqlite_trail
    first = run_cli("seal", "--now", env=env)
    old_head = first.stdout.strip()
    assert "~" in old_head
    backup = tmp_path / "backup"
    backup.mkdir()
    for path in (db, default_seal_path(db)):
        shutil.copy(path, backup / path.name)
    store = SqliteAuditStore(db, ring=RING)
    Pipeline(store).handle([synthetic_message(n, BANK) for n in range(10, 14)])
    store.close()
    time.sleep(0.01)
    head = run_cli("seal", "--now", env=env).stdout.strip()
    assert head != old_head
    good = run_cli("verify", "--format", "json", "--expect-head", head, env=env, check=False)
    assert good.returncode == 0, good.stdout
    assert json.loads(good.stdout)["head"] == head

    # the tail cut: the newest window record and its entries removed, triggers dropped
    records = _raw(default_seal_path(db))
    newest = records.execute("SELECT max(window_end) FROM audit_seals").fetchone()[0]
    start = json.loads(
        records.execute("SELECT record FROM audit_seals WHERE window_end = ?", [newest]).fetchone()[
            0
        ]
    )["start"]
    records.execute("DELETE FROM audit_seals WHERE window_end = ?", [newest])
    records.close()
    entries = _raw(db)
    entries.execute("DELETE FROM audit_entries WHERE recorded_at >= ?", [start])
    entries.close()
    plain = run_cli("verify", env=env, check=False)
    assert plain.returncode == 0  # nothing inside the trail shows the cut ...
    cut = run_cli("verify", "--expect-head", head, env=env, check=False)
    assert cut.returncode == 1  # ... the head kept elsewhere does
    assert "head_missing" in cut.stdout

    # an older copy restored whole
    for name in (db.name, default_seal_path(db).name):
        shutil.copy(backup / name, db.parent / name)
    restored = run_cli("verify", "--expect-head", head, "--format", "json", env=env, check=False)
    assert restored.returncode == 1
    assert "head_missing" in {p["kind"] for p in json.loads(restored.stdout)["problems"]}
    assert run_cli("verify", "--expect-head", "nonsense", env=env, check=False).returncode == 2


def test_window_records_live_outside_the_trail_file(sqlite_trail) -> None:
    db, env = sqlite_trail
    run_cli("seal", "--now", env=env)
    tables = {
        r[0]
        for r in sqlite3.connect(db).execute("SELECT name FROM sqlite_master WHERE type='table'")
    }
    assert "audit_seals" not in tables
    assert default_seal_path(db).is_file()
    elsewhere = db.parent / "kept" / "seals.sqlite3"
    env2 = {**env, "AUDIT_SEAL_PATH": str(elsewhere)}
    store = SqliteAuditStore(db, ring=RING)
    Pipeline(store).handle([synthetic_message(30, BANK)])
    store.close()
    run_cli("seal", "--now", env=env2)
    assert elsewhere.is_file()


def test_a_copied_row_with_an_empty_recorded_at_is_found_and_never_shown(sqlite_trail) -> None:
    db, env = sqlite_trail
    run_cli("seal", "--now", env=env)
    raw = _raw(db)
    genuine = raw.execute("SELECT entry_id FROM audit_entries LIMIT 1").fetchone()[0]
    forged = str(uuid.uuid4())
    raw.execute(
        "INSERT INTO audit_entries SELECT ?, verdict, reason, regarding_id, processsession_id, "
        "operation_created_on, '', entry, seal FROM audit_entries WHERE entry_id = ?",
        [forged, genuine],
    )
    raw.close()
    verify = run_cli("verify", "--format", "json", env=env, check=False)
    assert verify.returncode == 1
    problems = json.loads(verify.stdout)["problems"]
    assert {p["kind"] for p in problems if p.get("entry_id") == forged} >= {"forged", "inserted"}
    for command in (["timeline", BANK, "--format", "jsonl"], ["export"]):
        shown = run_cli(*command, env=env, check=False)
        assert shown.returncode == 1
        ids = _ids(shown.stdout)
        assert forged not in ids
        assert ids.count(genuine) == 1
        assert forged in shown.stderr  # listed as a row that cannot be shown


def test_an_edited_index_column_moves_no_entry_unmarked(sqlite_trail) -> None:
    db, env = sqlite_trail
    raw = _raw(db)
    moved = raw.execute("SELECT entry_id FROM audit_entries LIMIT 1").fetchone()[0]
    raw.execute("UPDATE audit_entries SET regarding_id = ? WHERE entry_id = ?", [OTHER_BANK, moved])
    raw.close()
    own = run_cli("timeline", BANK, "--format", "jsonl", env=env, check=False)
    assert moved in _ids(own.stdout)  # still in its own account's timeline ...
    assert _statuses(own.stdout)[moved] == "altered"  # ... marked
    other = run_cli("timeline", OTHER_BANK, "--format", "csv", env=env, check=False)
    assert other.returncode == 1
    assert "altered" in other.stdout
    assert "regarding_id" in other.stdout


def test_a_trail_without_a_key_is_adopted_never_sealed_silently(tmp_path) -> None:
    db = tmp_path / "audit.sqlite3"
    store = SqliteAuditStore(db)  # the quick start: no key
    Pipeline(store).handle([synthetic_message(n) for n in range(3)])
    store.close()
    env = {"AUDIT_SQLITE_PATH": str(db), "AUDIT_TRAIL_KEY": KEY}
    refused = run_cli("seal", "--now", env=env, check=False)
    assert refused.returncode == 1
    assert "--adopt" in refused.stderr
    adopted = run_cli("seal", "--now", "--adopt", env=env)
    assert "3 of them adopted" in adopted.stderr
    verify = run_cli("verify", "--format", "json", env=env)
    report = json.loads(verify.stdout)
    assert (report["problems"], report["adopted"]) == ([], 3)
    assert "adopted" in run_cli("verify", env=env).stdout
    unverified = run_cli("export", env={"AUDIT_SQLITE_PATH": str(db), "AUDIT_TRAIL_KEY": ""})
    assert "unverified" in unverified.stderr
    assert set(_statuses(unverified.stdout).values()) == {"unverified"}


def test_seal_and_verify_on_a_mistyped_path_create_nothing(tmp_path) -> None:
    typo = tmp_path / "typo" / "audit.sqlite3"
    for command in (["seal", "--now"], ["verify"], ["timeline", BANK], ["export"]):
        done = run_cli("--db", str(typo), *command, env={"AUDIT_TRAIL_KEY": KEY}, check=False)
        assert done.returncode == 2, (command, done.stderr)
        assert "no SQLite audit store" in done.stderr
        assert not typo.parent.exists()


def test_serve_started_on_an_idle_file_shows_what_is_written_later(sqlite_trail) -> None:
    import urllib.request

    from devtools.processes import free_port

    db, env = sqlite_trail
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "shared.cli", "serve", "--port", str(port)],
        cwd=ROOT,
        env={**__import__("os").environ, **env},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stderr is not None
        assert "serving" in server.stderr.readline()
        url = f"http://127.0.0.1:{port}/api/bankaccounts/{BANK}/audit"

        def count() -> int:
            with urllib.request.urlopen(url, timeout=10) as answer:
                return len(json.loads(answer.read())["entries"])

        assert count() == 4
        store = SqliteAuditStore(db, ring=RING)
        Pipeline(store).handle([synthetic_message(n, BANK) for n in range(40, 43)])
        store.close()
        assert count() == 7
    finally:
        server.terminate()
        server.wait(timeout=10)


# -- the seal container's WORM policy -----------------------------------------------------------


def test_verify_on_the_table_store_warns_of_a_container_without_worm(table_trail) -> None:
    """Azurite's container has no immutability policy: verify says so, as a warning and in
    its JSON, without failing the trail itself."""
    _, env, _ = table_trail
    done = run_cli("verify", "--format", "json", env=env)
    report = json.loads(done.stdout)
    assert report["seal_policy"] == {"state": "none"}
    assert any("no immutability (WORM) policy" in w for w in report["warnings"])
    assert "warning: the seal container has no immutability" in done.stderr


def _policy(days: int, state: str) -> dict[str, Any]:
    return {"properties": {"immutabilityPeriodSinceCreationInDays": days, "state": state}}


@pytest.mark.parametrize(
    ("answer", "state", "warned"),
    [
        # the documented answer of Get Immutability Policy (Azure Resource Manager):
        # https://learn.microsoft.com/rest/api/storagerp/blob-containers/get-immutability-policy
        (_policy(2555, "Locked"), "Locked", []),
        (_policy(2555, "Unlocked"), "Unlocked", ["not Locked"]),
        (_policy(30, "Locked"), "Locked", ["shorter than the documented 2555"]),
    ],
)
def test_the_policy_read_from_resource_manager_is_judged(answer, state, warned) -> None:
    from shared.stores.blob_seals import policy_findings

    found, warnings = policy_findings(True, answer, 2555, "/subscriptions/x/containers/auditseals")
    assert found["state"] == state
    assert len(warnings) == len(warned)
    for text, warning in zip(warned, warnings, strict=True):
        assert text in warning
    unchecked, why = policy_findings(True, None, 2555, None)
    assert unchecked == {"state": "unchecked"}
    assert "AUDIT_SEAL_CONTAINER_ID" in why[0]
