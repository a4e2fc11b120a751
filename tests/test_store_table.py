"""What only the Table store does, against a real Azurite: transactions, limits, outages."""

from __future__ import annotations

import logging

import pytest

import shared.stores.table as table_module
from devtools.azurite import KEY
from devtools.processes import free_port
from shared.errors import StoreRejected, StoreUnavailable
from shared.pipeline import Pipeline, evaluate
from shared.stores.table import TableAuditStore, to_entities
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


def test_three_views_share_one_row_key():
    entities = to_entities(make_entry(1, regarding=BANK))
    assert [e["PartitionKey"].split("|")[0] for e in entities] == ["regarding", "session", "day"]
    assert len({e["RowKey"] for e in entities}) == 1


def test_entry_over_the_entity_limit_is_rejected_not_cut(table):
    huge = make_entry(1, regarding=BANK, processsession_name="x" * 600_000)
    with pytest.raises(StoreRejected, match="1 MiB"):
        table.write([huge])


def test_pipeline_dead_letters_only_the_entry_the_store_refuses(table, monkeypatch):
    """A body within 256 KiB cannot reach the 1 MiB entity limit, so the refusal is forced."""
    messages = [synthetic_message(i) for i in range(3)]
    refused = evaluate(messages[1]).entry.entry_id
    real = table_module.to_entities

    def refuse_one(entry):
        if entry.entry_id == refused:
            raise StoreRejected(entry.entry_id, "entry is too large (forced)")
        return real(entry)

    monkeypatch.setattr(table_module, "to_entities", refuse_one)
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
