"""A store outage longer than MaxDeliveryCount x lock duration, through the real SDK and the
local broker: with in-place backoff (locks renewed meanwhile) nothing is dead-lettered, lost or
duplicated; without it, the same outage fills the DLQ. The Functions side of the same promise
is in tests/test_functions_runtime.py."""

from __future__ import annotations

from shared.bus.standalone import Source, Worker, peek_dead_letters, send
from shared.pipeline import Pipeline, StoreRetry
from shared.verdicts import Settlement
from tests.entries import synthetic_message
from tests.pipeline_doubles import OutageStore

EVENTS = 300
#: The queues have a 2 s lock and MaxDeliveryCount 3: abandoning at once survives ~0 s of
#: outage, waiting out the lock each time at most 6 s. The outage lasts longer than that.
OUTAGE_SECONDS = 8.0


def test_a_long_outage_dead_letters_nothing_when_the_worker_backs_off(servicebus, store):
    source = Source(queue="backoff")
    assert send(servicebus, source, [synthetic_message(n) for n in range(EVENTS)]) == EVENTS
    outage = OutageStore(store, OUTAGE_SECONDS)
    pipeline = Pipeline(outage, retry=StoreRetry(budget=30.0, first_delay=0.2, max_delay=1.0))
    stats = Worker(servicebus, pipeline, source, batch_size=32, max_wait_time=2).run(
        until_idle=True
    )
    entries = store.in_range().entries
    print(
        f"backoff: {EVENTS} events, outage {OUTAGE_SECONDS:.0f} s, {outage.failed_writes} failed "
        f"writes, {len(entries)} stored, dead-lettered {len(peek_dead_letters(servicebus, source))}"
    )
    assert outage.failed_writes > 3
    assert peek_dead_letters(servicebus, source) == []
    assert len(entries) == EVENTS
    assert len({e.processsession_id for e in entries}) == EVENTS  # one entry per event
    assert stats.settlements[Settlement.RETRY] == 0
    assert max(e.delivery_count or 0 for e in entries) == 0  # the lock was never lost


def test_the_same_outage_without_backoff_fills_the_dlq(servicebus, store):
    source = Source(queue="no-backoff")
    send(servicebus, source, [synthetic_message(n) for n in range(20)])
    outage = OutageStore(store, OUTAGE_SECONDS)
    Worker(servicebus, Pipeline(outage), source, max_wait_time=2).run(until_idle=True)
    dead = peek_dead_letters(servicebus, source)
    assert {m.dead_letter_reason for m in dead} == {"MaxDeliveryCountExceeded"}
    assert len(dead) == 20
