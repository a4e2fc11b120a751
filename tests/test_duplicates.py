"""Duplicates through the real SDK and the local broker: a true duplicate (redelivery, re-post)
is silent and stored once; a copy of an event that disagrees with the stored one is refused."""

from __future__ import annotations

import json
import logging
import uuid

import pytest

from shared.bus.standalone import Source, Worker, peek_dead_letters, send
from shared.events.envelope import InboundMessage
from shared.pipeline import Pipeline
from tests.conftest import kv_set, reference, target_of
from tests.entries import synthetic_message


def _forged(genuine: InboundMessage) -> InboundMessage:
    """Same organization, OperationId, entity and message as ``genuine``; regarding an account."""
    document = json.loads(genuine.body)
    kv_set(
        target_of(document)["Attributes"],
        "regardingobjectid",
        reference("account", "a1b2c3d4-6c7d-ef11-bfe3-6045bd0c1a22"),
    )
    return InboundMessage(
        body=json.dumps(document).encode(),
        content_type="application/json",
        message_id=uuid.uuid4().hex,
    )


def test_a_forged_copy_sent_first_puts_the_genuine_event_in_the_dlq_loudly(
    servicebus, store, caplog: pytest.LogCaptureFixture
):
    source = Source(queue="conflicts")
    genuine = synthetic_message(41)
    send(servicebus, source, [_forged(genuine)])
    Worker(servicebus, Pipeline(store), source, max_wait_time=2).run(until_idle=True)
    send(servicebus, source, [genuine])
    with caplog.at_level(logging.ERROR):
        Worker(servicebus, Pipeline(store), source, max_wait_time=2).run(until_idle=True)
    dead = peek_dead_letters(servicebus, source)
    assert [(m.message_id, m.dead_letter_reason) for m in dead] == [
        (genuine.message_id, "conflicting_duplicate")
    ]
    assert "regarding_id" in (dead[0].dead_letter_error_description or "")
    assert any("conflicting duplicate" in r.getMessage() for r in caplog.records)
    assert [e.regarding_logical_name for e in store.in_range().entries] == ["account"]


def test_a_duplicate_storm_leaves_one_entry_each_and_an_empty_dlq(servicebus, store):
    source = Source(queue="storm")
    events = [synthetic_message(n) for n in range(30)]
    copies = [
        InboundMessage(body=e.body, content_type=e.content_type, message_id=uuid.uuid4().hex)
        for e in events
    ]
    send(servicebus, source, events + copies + events)  # each event three times
    Worker(servicebus, Pipeline(store), source, batch_size=16, max_wait_time=2).run(until_idle=True)
    assert peek_dead_letters(servicebus, source) == []
    assert store.count() == 30
