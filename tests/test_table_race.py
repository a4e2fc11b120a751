"""Two real worker processes race one event's two versions into one Table store on Azurite.

Each event is posted twice, to two queues that two ``psaudit worker`` processes drain at
once: a genuine copy and a forged one (same OrganizationId, OperationId, PrimaryEntityId and
MessageName, so the same entry_id) that regards an ``account``, or a copy whose
OperationCreatedOn differs (which moves every view key of the entry). Exactly one copy of
each event must be stored, in the entry rows and in every view, and the other dead-lettered
as ``conflicting_duplicate``. Then a writer is killed between the commit point and the
views: its redelivery must leave consistent views.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from collections import Counter
from pathlib import Path

import pytest

from devtools.broker_process import BrokerProcess
from shared.bus.standalone import Source, peek_dead_letters, send
from shared.events.envelope import InboundMessage
from shared.pipeline import Pipeline, evaluate
from shared.verdicts import Settlement
from tests.conftest import kv_set, reference, table_store, target_of
from tests.entries import synthetic_message

ROOT = Path(__file__).resolve().parent.parent
PAIRS = 40  # half forged regarding, half moved in time


def _variant(message: InboundMessage, n: int) -> InboundMessage:
    """The other version of event ``n``: regarding an account, or a minute later."""
    document = json.loads(message.body)
    if n % 2 == 0:
        kv_set(
            target_of(document)["Attributes"],
            "regardingobjectid",
            reference("account", str(uuid.uuid5(uuid.NAMESPACE_OID, f"account-{n}"))),
        )
    else:
        document["OperationCreatedOn"] = "/Date(1732662060000)/"
    return InboundMessage(
        body=json.dumps(document).encode(),
        content_type=message.content_type,
        message_id=f"variant-{n}",
    )


def _worker(
    queue: str, broker: BrokerProcess, table: str, connection: str
) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "SERVICEBUS_CONNECTION_STRING": broker.connection_string,
        "AUDIT_STORE": "table",
        "AUDIT_TABLE_NAME": table,
        "AUDIT_TABLE_CONNECTION_STRING": connection,
        "AUDIT_STORE_RETRY_SECONDS": "30",
    }
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "shared.cli",
            "worker",
            "--queue",
            queue,
            "--until-idle",
            "--batch-size",
            "8",
            "--max-wait",
            "3",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_two_workers_racing_store_each_event_once_in_every_view(azurite, tmp_path):
    genuine = [
        InboundMessage(
            body=synthetic_message(n).body, content_type="application/json", message_id=f"g-{n}"
        )
        for n in range(PAIRS)
    ]
    variants = [_variant(m, n) for n, m in enumerate(genuine)]
    entry_ids = {evaluate(m).entry.entry_id for m in genuine}
    assert entry_ids == {evaluate(m).entry.entry_id for m in variants}
    table_name = "race" + uuid.uuid4().hex[:12]
    with BrokerProcess(
        "--queue",
        "a:lock=30:max=10",
        "--queue",
        "b:lock=30:max=10",
        log=tmp_path / "broker.log",
    ) as broker:
        from azure.servicebus import ServiceBusClient

        with ServiceBusClient.from_connection_string(broker.connection_string) as client:
            send(client, Source(queue="a"), genuine)
            send(client, Source(queue="b"), variants)
            workers = [
                _worker(q, broker, table_name, azurite.connection_string) for q in ("a", "b")
            ]
            for worker in workers:
                _, stderr = worker.communicate(timeout=240)
                assert worker.returncode == 0, stderr[-2000:]
            dead = [m for q in ("a", "b") for m in peek_dead_letters(client, Source(queue=q), 500)]

    store = table_store(azurite.connection_string)
    store.table_name = table_name
    store._table = store._service.get_table_client(table_name)
    try:
        stored = store.in_range().entries
        assert store.count() == PAIRS
        assert sorted(e.entry_id for e in stored) == sorted(entry_ids)
        assert Counter(m.dead_letter_reason for m in dead) == {"conflicting_duplicate": PAIRS}
        winners = {e.entry_id: e.message_id for e in stored}
        losers = {str(m.message_id) for m in dead}
        for n in range(PAIRS):  # exactly one copy of each pair stored, the other refused
            entry_id = evaluate(genuine[n]).entry.entry_id
            pair = {f"g-{n}", f"variant-{n}"}
            assert winners[entry_id] in pair
            assert pair - {winners[entry_id]} <= losers
        for entry in stored:  # every view holds the winner, and only it
            by_session = store.by_session(entry.processsession_id).entries
            assert [e.to_json_dict() for e in by_session] == [entry.to_json_dict()]
            trail = store.by_regarding(entry.regarding_id or "none").entries
            assert [e.entry_id for e in trail].count(entry.entry_id) == 1
        assert store.check_views() == []
    finally:
        store.delete_table()
        store.close()


KILLER = textwrap.dedent(
    """
    import os, sys
    from shared.stores import table
    from shared.pipeline import Pipeline
    from tests.entries import synthetic_message

    def die(self, batch):
        os._exit(9)  # killed after the commit point, before the views written after it

    table.TableAuditStore._write_views = die
    store = table.TableAuditStore(sys.argv[2], connection_string=sys.argv[1], partitions=0)
    Pipeline(store).handle([synthetic_message(n) for n in range(5)])
    """
)


def test_a_kill_between_commit_and_views_is_repaired_by_the_redelivery(azurite):
    """In a table made before commit partitions the day view is written after the commit;
    (with commit partitions every view is in the commit's own transaction)."""
    store = table_store(azurite.connection_string, partitions=0)
    try:
        killed = subprocess.run(
            [sys.executable, "-c", KILLER, azurite.connection_string, store.table_name],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert killed.returncode == 9, killed.stderr[-2000:]
        assert store.count() == 5  # committed
        # no day view yet: a reader still shows each committed entry, read from its entry
        # row and marked, until the redelivery writes the views
        early = store.in_range()
        assert len(early.entries) == 5
        assert {(m.column, "no row in this view" in m.problem) for m in early.tampered} == {
            ("view", True)
        }
        problems = store.check_views()
        assert Counter(p.kind for p in problems) == {"missing": 5}  # the day views
        outcomes = Pipeline(store).handle([synthetic_message(n) for n in range(5)])
        assert {o.settlement for o in outcomes} == {Settlement.COMPLETE}
        assert store.check_views() == []
        assert len(store.in_range().entries) == 5
        assert store.in_range().tampered == []
    finally:
        store.delete_table()
        store.close()


@pytest.mark.parametrize("tamper", ["delete", "orphan", "differs"])
def test_check_views_names_each_disagreement_and_repairs_it(azurite, tamper):
    store = table_store(azurite.connection_string)
    try:
        messages = [synthetic_message(n) for n in range(3)]
        Pipeline(store).handle(messages)
        raw = store._table
        view = next(
            iter(
                raw.query_entities(
                    "PartitionKey ge 't|' and PartitionKey lt 't}' "
                    "and RowKey ge 'd|' and RowKey lt 'd}'"
                )
            )
        )
        if tamper == "delete":
            raw.delete_entity(view["PartitionKey"], view["RowKey"])
        elif tamper == "orphan":
            raw.create_entity({**view, "RowKey": view["RowKey"].replace("|", "|0", 1)})
        else:
            raw.upsert_entity(
                {**view, "doc": view["doc"].replace("Create", "Update"), "digest": "0" * 64}
            )
        kind = {"delete": "missing", "orphan": "orphan", "differs": "differs"}[tamper]
        problems = store.check_views()
        assert [p.kind for p in problems] == [kind]
        assert problems[0].entry_id == view["entry_id"]
        assert store.check_views(repair=True) == problems
        assert store.check_views() == []
        assert len(store.in_range().entries) == 3
    finally:
        store.delete_table()
        store.close()


MAKER = textwrap.dedent(
    """
    import sys, time
    from shared.stores.table import TableAuditStore
    from tests.entries import make_entry

    start = float(sys.argv[4])
    while time.time() < start:  # both processes open the new table at the same moment
        time.sleep(0.001)
    store = TableAuditStore(sys.argv[2], connection_string=sys.argv[1], partitions=int(sys.argv[3]))
    base = 1000 * int(sys.argv[3])
    store.write([make_entry(base + n) for n in range(40)])
    print(store.partitions)
    store.close()
    """
)


def test_two_writers_making_one_table_agree_on_its_partitions(azurite):
    """Two processes open a table that does not exist yet, one asking for 4 commit partitions
    and one for 16: the layout recorded first is the one both write in, and every entry of
    both is in its place."""
    import time

    from shared.stores.table import TableAuditStore

    name = f"race{uuid.uuid4().hex[:12]}"
    start = f"{time.time() + 3:.3f}"
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", MAKER, azurite.connection_string, name, str(n), start],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in (4, 16)
    ]
    counts = {int(w.communicate(timeout=120)[0].strip()) for w in writers}
    assert [w.returncode for w in writers] == [0, 0]
    assert len(counts) == 1  # one layout, whichever came first
    store = TableAuditStore(name, connection_string=azurite.connection_string, create=False)
    try:
        assert {store.partitions} == counts
        assert store.count() == 80
        assert store.check_views() == []
        assert len(store.in_range().entries) == 80
    finally:
        store.delete_table()
        store.close()
