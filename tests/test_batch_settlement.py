"""Completing in ranges (shared.bus.batch_settlement) over real AMQP against the local broker.

The range path reaches into azure-servicebus's private API, so the first test fails as soon
as a piece it uses changes (then the worker falls back to settling each message, slower but
correct); the others show that nothing is lost, doubled or left locked either way.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from azure.servicebus import ServiceBusReceivedMessage
from azure.servicebus._pyamqp.error import ErrorCondition, MessageSettlementUnconfirmed
from azure.servicebus.exceptions import MessageAlreadySettled

import shared.bus.batch_settlement as batch_settlement
from shared.bus.batch_settlement import RangeCompleter, runs, settle_batch
from shared.bus.settlement import ReceiverActions, adapt_all
from shared.bus.standalone import Source, Worker, peek_dead_letters, send
from shared.events.envelope import InboundMessage
from shared.pipeline import Pipeline
from shared.verdicts import Settlement
from tests.entries import synthetic_message


def _peek(servicebus: Any, source: Source) -> list[ServiceBusReceivedMessage]:
    with source.receiver(servicebus) as receiver:
        return list(receiver.peek_messages(max_message_count=100))


def _malformed(n: int) -> InboundMessage:
    good = synthetic_message(n)
    return dataclasses.replace(good, body=good.body[:-20])


def _receive(receiver: Any, count: int) -> list[ServiceBusReceivedMessage]:
    got: list[ServiceBusReceivedMessage] = []
    while len(got) < count:
        batch = receiver.receive_messages(max_message_count=count - len(got), max_wait_time=5)
        assert batch, f"the broker held {len(got)} of {count} messages"
        got.extend(batch)
    return got


@pytest.fixture
def range_sizes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of each range the worker completes, in order (the completion still happens)."""
    sizes: list[int] = []
    complete = RangeCompleter.complete

    def counting(self: RangeCompleter, run: Any) -> None:
        sizes.append(len(run))
        complete(self, run)

    monkeypatch.setattr(RangeCompleter, "complete", counting)
    return sizes


def test_the_sdk_still_offers_what_completing_in_ranges_uses(servicebus):
    """Fails when azure-servicebus changes a private piece the range path relies on."""
    source = Source(queue="ranges")
    send(servicebus, source, [synthetic_message(n) for n in range(3)])
    with source.receiver(servicebus) as receiver:
        messages = _receive(receiver, 3)
        completer = RangeCompleter.of(receiver)
        assert completer is not None, "the SDK no longer offers range settlement as used here"
        assert all(batch_settlement._settleable(m) for m in messages)
        assert [len(run) for run in runs(messages)] == [3]
        completer.complete(messages)
        assert completer.tags == set()  # the link forgets every tag, not only the first
        with pytest.raises(MessageAlreadySettled):
            receiver.complete_message(messages[1])
    assert _peek(servicebus, source) == []


def test_a_batch_completes_in_ranges_and_dead_letters_one_by_one(servicebus, store):
    source = Source(queue="ranges")
    corpus = [synthetic_message(n) for n in range(10)]
    corpus[4] = _malformed(4)
    send(servicebus, source, corpus)
    with source.receiver(servicebus) as receiver:
        actions = ReceiverActions(receiver)
        readable = adapt_all(_receive(receiver, 10), actions)
        outcomes = Pipeline(store).handle([inbound for _, inbound in readable])
        settlements = [o.settlement for o in outcomes]
        assert settlements.count(Settlement.DEAD_LETTER) == 1
        completed = [
            message
            for (message, _), outcome in zip(readable, outcomes, strict=True)
            if outcome.settlement is Settlement.COMPLETE
        ]
        assert [len(run) for run in runs(completed)] == [4, 5]  # the dead-letter splits them
        assert settle_batch(receiver, readable, outcomes, actions) is True
        assert all(message._settled for message, _ in readable)
        assert receiver._handler._link._received_delivery_tags == set()
    assert _peek(servicebus, source) == []
    dead = peek_dead_letters(servicebus, source)
    assert [m.message_id for m in dead] == [corpus[4].message_id]
    assert dead[0].dead_letter_reason == "malformed_json"
    assert store.count() == 9


def test_a_range_cut_off_by_a_detached_link_is_left_to_the_broker_and_stored_once(
    servicebus, store, monkeypatch, caplog
):
    """The link detaches before the range's answer (the SDK's own error for it): its messages
    come back when their locks expire and are completed then, in a range again, each with one
    entry (the first), nothing dead-lettered or left."""
    source = Source(queue="ranges-retry")
    send(servicebus, source, [synthetic_message(n) for n in range(6)])
    complete = RangeCompleter.complete
    failures = []

    def detached_once(self: RangeCompleter, run: Any) -> None:
        if not failures:
            failures.append(len(run))
            raise MessageSettlementUnconfirmed(
                condition=ErrorCondition.LinkDetachForced,
                description="The link detached before the settlement was confirmed",
            )
        failures.append(len(run))
        complete(self, run)

    monkeypatch.setattr(RangeCompleter, "complete", detached_once)
    with caplog.at_level(logging.WARNING, logger="shared.bus.batch_settlement"):
        stats = Worker(servicebus, Pipeline(store), source, batch_size=6, max_wait_time=5).run(
            until_idle=True
        )
    assert failures == [6, 6]  # ranges stay in use after a detach
    assert "completing 6 message(s) in one disposition failed" in caplog.text
    assert "the broker will redeliver" in caplog.text
    assert stats.messages == 12  # each twice: the lock ran out, the broker redelivered
    assert stats.settlements == {Settlement.COMPLETE: 12}
    assert _peek(servicebus, source) == []
    assert peek_dead_letters(servicebus, source) == []
    entries = store.in_range().entries
    assert len(entries) == 6
    assert {e.delivery_count for e in entries} == {0}  # the first delivery's entry is kept


def test_a_range_failing_otherwise_is_settled_alone_at_once_and_ranges_are_given_up(
    servicebus, store, monkeypatch, caplog
):
    source = Source(queue="ranges")
    send(servicebus, source, [synthetic_message(n) for n in range(8)])
    calls = []

    def broken(self: RangeCompleter, run: Any) -> None:
        calls.append(len(run))
        raise RuntimeError("an error before the disposition went out")

    monkeypatch.setattr(RangeCompleter, "complete", broken)
    with caplog.at_level(logging.WARNING, logger="shared.bus.batch_settlement"):
        stats = Worker(servicebus, Pipeline(store), source, batch_size=4, max_wait_time=2).run(
            until_idle=True
        )
    assert calls == [4]  # the second batch was not tried as a range
    assert "settling each on its own, and every message on its own from now on" in caplog.text
    assert stats.messages == 8  # none redelivered: each was completed alone at once
    assert stats.settlements == {Settlement.COMPLETE: 8}
    assert _peek(servicebus, source) == []
    assert store.count() == 8


def test_a_range_whose_locks_the_broker_let_go_is_refused_by_the_broker(servicebus, store):
    """A real refusal: the client believes it holds the locks, the broker expired them; the
    range fails with the SDK's error, nothing is completed, and the messages come back."""
    source = Source(queue="ranges-lost")
    send(servicebus, source, [synthetic_message(n) for n in range(4)])
    with source.receiver(servicebus) as receiver:
        held = _receive(receiver, 4)
        for message in held:  # as if the client's clock were behind the broker's
            message._expiry = datetime.now(UTC) + timedelta(hours=1)
        time.sleep(1.6)  # the broker's 1 s locks run out
        completer = RangeCompleter.of(receiver)
        assert completer is not None
        with pytest.raises(Exception, match=r"com\.microsoft:message-lock-lost") as refused:
            completer.complete(held)
        # left to the broker (the locks are gone), and ranges stay in use
        assert batch_settlement._after_failure(refused.value) == (False, True)
        assert completer.tags == set()
        assert not any(message._settled for message in held)
    back = _peek(servicebus, source)
    assert len(back) == 4
    assert {m.delivery_count for m in back} == {1}
    with source.receiver(servicebus) as receiver:  # leave the queue empty
        for message in _receive(receiver, 4):
            receiver.complete_message(message)


def test_the_worker_drains_in_ranges_with_one_disposition_a_batch(servicebus, store, range_sizes):
    source = Source(queue="ranges")
    send(servicebus, source, [synthetic_message(n) for n in range(64)])
    stats = Worker(servicebus, Pipeline(store), source, batch_size=16, max_wait_time=2).run(
        until_idle=True
    )
    assert stats.settlements == {Settlement.COMPLETE: 64}
    assert sum(range_sizes) == 64
    assert len(range_sizes) <= stats.batches  # at least one message fewer than a disposition each
    assert len(range_sizes) < 64
    assert _peek(servicebus, source) == []
    assert store.count() == 64


class _Recorded:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def complete(self, message: Any) -> None:
        self.calls.append(("complete", message))

    def abandon(self, message: Any) -> None:
        self.calls.append(("abandon", message))

    def deadletter(self, message: Any, **_: Any) -> None:
        self.calls.append(("deadletter", message))

    def renew_message_lock(self, message: Any) -> None:  # pragma: no cover - not used here
        raise AssertionError


def test_without_the_private_api_each_message_is_settled_through_the_public_one(store):
    inbound = [synthetic_message(n) for n in range(3)]
    outcomes = Pipeline(store).handle(inbound)
    readable = [(f"sdk-{n}", m) for n, m in enumerate(inbound)]
    actions = _Recorded()
    for receiver in (object(), SimpleNamespace(_handler=None), SimpleNamespace(_session=None)):
        assert RangeCompleter.of(receiver) is None
        actions.calls.clear()
        assert settle_batch(receiver, readable, outcomes, actions) is True
        assert actions.calls == [("complete", f"sdk-{n}") for n in range(3)]


def test_runs_end_at_a_gap_and_where_delivery_ids_wrap():
    ids = [7, 8, 9, 11, 12, 2**32 - 1, 0, 1]
    messages = [SimpleNamespace(_delivery_id=i) for i in ids]
    assert [[m._delivery_id for m in run] for run in runs(messages)] == [
        [7, 8, 9],
        [11, 12],
        [2**32 - 1],
        [0, 1],
    ]
    assert list(runs([])) == []


def test_a_broker_that_leaves_a_range_unanswered_gets_each_message_settled_alone(
    tmp_path, store, monkeypatch, caplog, range_sizes
):
    """A real unanswered range: this broker answers each settlement only after 1.5 s, and a
    range waits 0.5 s here. The worker gives ranges up once, for good, and loses nothing."""
    from azure.servicebus import ServiceBusClient

    from devtools.broker_process import BrokerProcess

    monkeypatch.setattr(batch_settlement, "CONFIRM_TIMEOUT", 0.5)
    source = Source(queue="slow-echo")
    with (
        BrokerProcess(
            "--queue", "slow-echo:lock=30", "--settle-latency-ms=1500", log=tmp_path / "log"
        ) as broker,
        ServiceBusClient.from_connection_string(broker.connection_string) as client,
    ):
        send(client, source, [synthetic_message(n) for n in range(6)])
        with caplog.at_level(logging.WARNING, logger="shared.bus.batch_settlement"):
            stats = Worker(client, Pipeline(store), source, batch_size=3, max_wait_time=3).run(
                until_idle=True
            )
        assert range_sizes == [3]  # the first batch's range; the second batch went one by one
        assert "completing 3 message(s) in one disposition got no answer within 0.5 s" in (
            caplog.text
        )
        assert "every message on its own from now on" in caplog.text
        assert stats.settlements == {Settlement.COMPLETE: 6}
        assert _peek(client, source) == []  # the unanswered range was applied late: none back
    assert store.count() == 6


def test_what_each_failure_of_a_range_leads_to():
    from azure.servicebus._pyamqp.error import MessageException

    unanswered = MessageSettlementUnconfirmed(condition=ErrorCondition.ClientError)
    detached = MessageSettlementUnconfirmed(condition=ErrorCondition.LinkDetachForced)
    lock_lost = MessageException(condition=b"com.microsoft:message-lock-lost")
    other = MessageException(condition=b"amqp:not-implemented")
    # (settle its messages alone now, keep using ranges)
    assert batch_settlement._after_failure(unanswered) == (False, False)
    assert batch_settlement._after_failure(detached) == (False, True)
    assert batch_settlement._after_failure(lock_lost) == (False, True)
    assert batch_settlement._after_failure(other) == (True, False)
    assert batch_settlement._after_failure(ValueError("Link already closed.")) == (True, False)
