"""What only the Table store does, against a real Azurite: transactions, limits, outages."""

from __future__ import annotations

import logging

import pytest

import shared.stores.table as table_module
from devtools.azurite import KEY
from devtools.processes import free_port
from shared.errors import StoreRejected, StoreUnavailable
from shared.pipeline import Pipeline, evaluate
from shared.stores.table import TableAuditStore
from shared.stores.table_rows import stored_form, view_rows
from shared.verdicts import Settlement
from tests.conftest import table_store
from tests.entries import make_entry, synthetic_message

BANK = "8e5f1a2b-6c7d-ef11-bfe3-6045bd0c1a22"


@pytest.fixture
def table(azurite):
    store = table_store(azurite.connection_string)
    yield store
    store.delete_table()
    store.close()


def test_one_partition_over_100_entries_is_split_into_transactions(table):
    entries = [make_entry(i, regarding=BANK) for i in range(150)]
    assert table.write(entries) == 150
    assert len(table.by_regarding(BANK).entries) == 150


def test_a_partly_written_batch_is_completed_by_the_rewrite(table):
    entries = [make_entry(i, regarding=BANK) for i in range(10)]
    table.write(entries[:4])
    assert table.write(entries) == 6
    assert table.count() == 10


def test_one_entry_row_and_three_views_of_one_document():
    entry = make_entry(1, regarding=BANK)
    stored = stored_form(entry)
    views = view_rows(stored)
    assert [r["RowKey"].split("|")[0] for r in stored.rows] == ["e"]
    assert [r["RowKey"][:2] for r in views[:2]] == ["r|", "s|"]
    assert views[2]["PartitionKey"].startswith("d|")
    assert {r["digest"] for r in [*stored.rows, *views]} == {stored.digest}
    assert {r["doc"] for r in [*stored.rows, *views]} == {entry.json_text()}


def test_an_entry_over_one_entity_spreads_over_parts_and_reads_back_whole(table):
    import random

    rng = random.Random(7)
    noise = "".join(chr(rng.randrange(0x10000, 0x10FFFF)) for _ in range(400_000))
    huge = make_entry(1, regarding=BANK, processsession_name=noise)
    stored = stored_form(huge)
    assert len(stored.rows) > 1
    assert stored.view_properties.get("doc_ref") is True
    assert table.write([huge]) == 1
    assert table.write([huge]) == 0
    for page in (table.by_regarding(BANK), table.by_session(huge.processsession_id)):
        assert [e.to_json_dict() for e in page.entries] == [huge.to_json_dict()]
    assert table.check_views() == []


def test_pipeline_dead_letters_only_the_entry_the_store_refuses(table, monkeypatch):
    """Every body within the limits is storable, so the refusal is forced."""
    messages = [synthetic_message(i) for i in range(3)]
    refused = evaluate(messages[1]).entry.entry_id
    real = table_module.stored_form

    def refuse_one(entry, document=None, **keys):
        if entry.entry_id == refused:
            raise StoreRejected(entry.entry_id, "entry is too large (forced)")
        return real(entry, document, **keys)

    monkeypatch.setattr(table_module, "stored_form", refuse_one)
    outcomes = Pipeline(table).handle(messages)
    assert [o.settlement for o in outcomes] == [
        Settlement.COMPLETE,
        Settlement.DEAD_LETTER,
        Settlement.COMPLETE,
    ]
    assert outcomes[1].dead_letter_reason == "store_rejected"
    assert refused in (outcomes[1].description or "")
    assert table.count() == 2


def test_unreachable_table_service_is_unavailable_and_leaks_no_key(caplog):
    dead = (
        f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={KEY};"
        f"TableEndpoint=http://127.0.0.1:{free_port()}/devstoreaccount1;"
    )
    with caplog.at_level(logging.DEBUG), pytest.raises(StoreUnavailable) as caught:
        TableAuditStore("unreachable", connection_string=dead, retry_total=0)
    assert "opening table" in str(caught.value)
    assert KEY not in str(caught.value)
    assert KEY not in caplog.text


def test_no_endpoint_and_no_connection_string_is_a_clear_error():
    with pytest.raises(ValueError, match="AUDIT_TABLE_ENDPOINT"):
        TableAuditStore("audit")


def test_a_deleted_table_is_recreated_on_write(table):
    table.write([make_entry(1, regarding=BANK)])
    table._service.delete_table(table.table_name)
    assert table.write([make_entry(2, regarding=BANK)]) == 1
    assert [e.entry_id for e in table.by_regarding(BANK).entries] == [make_entry(2).entry_id]


def test_a_date_before_1601_is_refused_at_write_time_and_reads_go_on(azurite):
    from datetime import UTC, datetime

    from shared.pipeline import Pipeline
    from tests.conftest import json_message, sample_document
    from tests.entries import make_entry

    table = table_store(azurite.connection_string)
    ancient = make_entry(1, regarding=BANK, when=datetime(1600, 12, 31, tzinfo=UTC))
    with pytest.raises(StoreRejected, match="before 1601-01-01"):
        table.write([ancient])
    document = sample_document()
    document["OperationCreatedOn"] = "/Date(-11676096000000)/"  # 1600-01-01
    fine = json_message(sample_document("json-update-bankaccount"), message_id="fine")
    outcomes = Pipeline(table).handle([json_message(document, message_id="old"), fine])
    assert [o.settlement.value for o in outcomes] == ["dead_letter", "complete"]
    assert outcomes[0].dead_letter_reason == "store_rejected"
    assert len(table.in_range().entries) == 1
    table.delete_table()
    table.close()


def test_pages_merged_over_the_commit_partitions_are_whole_and_in_order(table):
    """50 entries over 16 partitions, 30 of them in one, pages of 40: each partition is asked
    for a share first and read further only where a page needs more of it; together the pages
    are the trail, once each, in time order, for a regarding record and for a time range."""
    from collections import Counter

    from shared.stores.base import all_pages

    candidates = [make_entry(i, regarding=BANK) for i in range(600)]
    home = table.partition_of(candidates[0].entry_id)
    crowded = [e for e in candidates if table.partition_of(e.entry_id) == home][:30]
    entries = crowded + [e for e in candidates if e not in crowded][:20]
    table.write(entries)
    first_page = sorted(entries, key=lambda e: (e.operation_created_on, e.entry_id))[:40]
    crowded = Counter(table.partition_of(e.entry_id) for e in first_page).most_common(1)[0][1]
    assert crowded > 8  # one partition holds more of the first page than its first share
    expected = [
        e.entry_id for e in sorted(entries, key=lambda e: (e.operation_created_on, e.entry_id))
    ]
    for read in (
        lambda c: table.by_regarding(BANK, limit=40, continuation=c),
        lambda c: table.in_range(limit=40, continuation=c),
    ):
        assert [e.entry_id for e in all_pages(read)] == expected
