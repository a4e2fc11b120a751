"""The worker's overlap over real AMQP against the local broker: while a batch is decided and
stored, the next is received; it is decided while the one before is settled; batches are
settled in the order received; the locks of every message held are renewed while a slow
batch is decided; a stop settles every batch in hand; nothing lost, nothing doubled."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest

import shared.bus.standalone as standalone
from shared.bus.batch_settlement import settle_batch
from shared.bus.settlement import adapt_all
from shared.bus.standalone import Source, Worker, peek_dead_letters, send
from shared.events.envelope import InboundMessage
from shared.pipeline import Outcome, Pipeline
from shared.verdicts import Settlement
from tests.entries import synthetic_message


class Journal:
    """What happened, in order, on whichever thread: (event, batch's first message id)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def add(self, event: str, first: str) -> None:
        with self._lock:
            self.events.append((event, first))

    def index(self, event: str, first: str) -> int:
        return self.events.index((event, first))


class SlowPipeline(Pipeline):
    """The real pipeline, after a pause: a store with a long round trip."""

    def __init__(self, store: Any, journal: Journal, pause: float) -> None:
        super().__init__(store)
        self.journal, self.pause = journal, pause

    def handle(self, messages: Sequence[InboundMessage], stop: Any = None) -> list[Outcome]:
        first = str(messages[0].message_id)
        self.journal.add("decide", first)
        time.sleep(self.pause)
        outcomes = super().handle(messages, stop)
        self.journal.add("decided", first)
        return outcomes


@pytest.fixture
def journal(monkeypatch: pytest.MonkeyPatch) -> Journal:
    found = Journal()
    real_adapt, real_settle = adapt_all, settle_batch

    def adapt(batch: list[Any], actions: Any) -> Any:
        found.add("received", str(batch[0].message_id))
        return real_adapt(batch, actions)

    def settle(receiver: Any, readable: Any, outcomes: Any, actions: Any) -> bool:
        result = real_settle(receiver, readable, outcomes, actions)
        found.add("settled", str(readable[0][1].message_id))
        return result

    monkeypatch.setattr(standalone, "adapt_all", adapt)
    monkeypatch.setattr(standalone, "settle_batch", settle)
    return found


def test_the_next_batch_is_received_and_decided_while_the_one_before_is_stored_and_settled(
    servicebus: Any, store: Any, journal: Journal
) -> None:
    source = Source(queue="overlap")
    send(servicebus, source, [synthetic_message(n) for n in range(20)])
    stats = Worker(
        servicebus,
        SlowPipeline(store, journal, 0.5),
        source,
        batch_size=5,
        max_wait_time=2,
        overlap="always",
    ).run(until_idle=True)
    assert stats.settlements == {Settlement.COMPLETE: 20}
    assert store.count() == 20
    firsts = [first for event, first in journal.events if event == "received"]
    assert len(firsts) == 4
    for this, following in itertools.pairwise(firsts):
        # the next batch arrived while this one was being decided
        assert journal.index("received", following) < journal.index("decided", this)
        # and its decision began before this one's settlement was done
        assert journal.index("decide", following) < journal.index("settled", this)
        assert journal.index("settled", this) < journal.index("settled", following)  # in order
    assert peek_dead_letters(servicebus, source) == []
    with source.receiver(servicebus) as receiver:  # nothing left, nothing locked
        assert receiver.receive_messages(max_message_count=1, max_wait_time=1) == []


def test_locks_of_the_batch_waiting_its_turn_are_renewed(
    servicebus: Any, store: Any, journal: Journal
) -> None:
    """The queue's lock lasts 2 s and each decision 2.5 s: the batch received meanwhile
    keeps its locks only if they are renewed. Every message is completed once, none comes
    back."""
    source = Source(queue="overlap-locks")
    send(servicebus, source, [synthetic_message(100 + n) for n in range(6)])
    stats = Worker(
        servicebus,
        SlowPipeline(store, journal, 2.5),
        source,
        batch_size=3,
        max_wait_time=1,
        overlap="always",
    ).run(until_idle=True)
    assert stats.settlements == {Settlement.COMPLETE: 6}
    firsts = [first for event, first in journal.events if event == "received"]
    assert len(firsts) == 2
    assert journal.index("received", firsts[1]) < journal.index("decided", firsts[0])
    assert all(o.message.delivery_count == 0 for o in stats.outcomes)  # none came back
    assert store.count() == 6
    with source.receiver(servicebus) as receiver:
        assert receiver.receive_messages(max_message_count=1, max_wait_time=3) == []


def test_a_stop_settles_every_batch_in_hand(servicebus: Any, store: Any, journal: Journal) -> None:
    source = Source(queue="overlap-stop")
    send(servicebus, source, [synthetic_message(200 + n) for n in range(30)])
    stop = threading.Event()

    class Stopping(SlowPipeline):
        def handle(self, messages: Sequence[InboundMessage], stop_: Any = None) -> list[Outcome]:
            outcomes = super().handle(messages, stop_)
            stop.set()  # told to stop while a second batch is already in hand
            return outcomes

    stats = Worker(
        servicebus,
        Stopping(store, journal, 0.5),
        source,
        batch_size=5,
        max_wait_time=2,
        overlap="always",
    ).run(stop)
    settled = stats.settlements[Settlement.COMPLETE]
    assert stats.messages == settled == store.count()
    assert settled in (5, 10)  # the batch decided, and the one received meanwhile if any
    with source.receiver(servicebus) as receiver:  # the rest is there, unlocked
        rest = receiver.receive_messages(max_message_count=30, max_wait_time=2)
        assert len(rest) == 30 - settled
        for message in rest:
            receiver.complete_message(message)


@pytest.mark.parametrize("faster", [True, False])
def test_the_faster_mode_is_kept_until_both_are_measured_again(faster: bool) -> None:
    """A clock where each batch takes 1 s in one mode and 2 s in the other: after a probe of
    both (two blocks each), the faster one runs ``KEEP`` batches, then both are probed again."""
    from shared.bus.overlap import KEEP, PROBE, OverlapChooser

    now = [0.0]
    chooser = OverlapChooser(clock=lambda: now[0])
    modes = []

    def batch() -> None:
        mode = chooser.overlap()
        modes.append(mode)
        now[0] += 1.0 if mode == faster else 2.0
        chooser.settled(10)

    batch()  # starts the clock
    for _ in range(4 * PROBE):
        batch()
    assert chooser.chosen is faster
    assert modes[1:] == ([False] * PROBE + [True] * PROBE) * 2
    for _ in range(KEEP):
        batch()
    assert modes[1 + 4 * PROBE :] == [faster] * KEEP
    batch()
    assert modes[-1] is False  # measuring again, from one batch at a time


def test_a_worker_told_never_to_overlap_never_does() -> None:
    from shared.bus.overlap import OverlapChooser

    chooser = OverlapChooser("never")
    for _ in range(100):
        assert chooser.overlap() is False
        chooser.settled(5)
