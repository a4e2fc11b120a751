"""Every case of the hostile corpus ends as its specific reason code or its correct verdict:
never an unhandled exception, never unbounded time or memory. And bad input never blocks good
input, one message at a time or in a batch."""

from __future__ import annotations

import random
import time
import tracemalloc

import pytest

from shared.events.envelope import InboundMessage
from shared.pipeline import Pipeline, evaluate
from shared.verdicts import Settlement, Verdict
from tests.entries import synthetic_message
from tests.hostile_corpus import Case, cases

CORPUS = cases()
# Generous ceilings: a 256 KiB body decodes in milliseconds and a few MiB.
MAX_PEAK_BYTES = 64 * 1024 * 1024
MAX_CPU_SECONDS = 5.0


def _message(case: Case, n: int = 0) -> InboundMessage:
    return InboundMessage(
        body=case.body,
        content_type=case.content_type,
        message_id=f"hostile-{n}",
        application_properties=case.properties,
    )


def test_the_corpus_is_large_and_varied():
    assert len(CORPUS) >= 200
    non_truncation = [c for c in CORPUS if "truncated" not in c.name]
    assert len(non_truncation) >= 150
    assert {c.verdict for c in CORPUS} == {
        Verdict.MALFORMED,
        Verdict.ACCEPTED,
        Verdict.REJECTED,
        Verdict.IGNORED,
    }


@pytest.mark.parametrize("case", CORPUS, ids=[c.name for c in CORPUS])
def test_each_case_gets_its_outcome_in_bounded_time_and_memory(case):
    tracemalloc.start()
    started = time.process_time()
    try:
        decision = evaluate(_message(case))
        cpu = time.process_time() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (decision.verdict, decision.reason) == (case.verdict, case.reason), decision.description
    if decision.verdict is Verdict.MALFORMED:
        assert decision.description, "a dead-letter needs a description a person can act on"
    assert peak < MAX_PEAK_BYTES, f"peak {peak:,} bytes"
    assert cpu < MAX_CPU_SECONDS, f"{cpu:.2f} s of CPU"


def test_hostile_messages_never_block_valid_ones_in_one_batch(store):
    hostile = [c for c in CORPUS if c.verdict is Verdict.MALFORMED]
    rng = random.Random(7)
    valid = [synthetic_message(n) for n in range(40)]
    mixed: list[InboundMessage] = [
        *valid,
        *(_message(c, i) for i, c in enumerate(rng.sample(hostile, 120))),
    ]
    rng.shuffle(mixed)
    outcomes = Pipeline(store).handle(mixed)
    valid_ids = {m.message_id for m in valid}
    for outcome in outcomes:
        expected = (
            Settlement.COMPLETE
            if outcome.message.message_id in valid_ids
            else Settlement.DEAD_LETTER
        )
        assert outcome.settlement is expected
    assert store.count() == 40
    assert len({e.processsession_id for e in store.in_range().entries}) == 40


def test_hostile_messages_never_block_valid_ones_one_at_a_time(store):
    hostile = [c for c in CORPUS if c.verdict is Verdict.MALFORMED][::7]
    pipeline = Pipeline(store)
    valid = [synthetic_message(n) for n in range(len(hostile))]
    for n, (good, bad) in enumerate(zip(valid, hostile, strict=True)):
        assert pipeline.handle([_message(bad, n)])[0].settlement is Settlement.DEAD_LETTER
        assert pipeline.handle([good])[0].settlement is Settlement.COMPLETE
    pipeline.handle(valid)  # redelivered: still one entry each
    assert store.count() == len(valid)
