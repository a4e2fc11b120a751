"""Azurite stops in the middle of a stream: nothing is lost, nothing is written twice.

The broker is played by a simple in-process redelivery loop (peek-lock semantics: a message
that is not completed comes back with delivery_count + 1); the store is a real Table store on a
real Azurite that persists to disk, stopped and restarted between batches.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from pathlib import Path

import pytest

from devtools.azurite import Azurite
from shared.events.envelope import InboundMessage
from shared.pipeline import Pipeline
from shared.verdicts import Settlement
from tests.conftest import table_store
from tests.entries import synthetic_message

EVENTS = 60
BATCH = 5
STOP_AFTER_BATCH, RESTART_AFTER_BATCH = 3, 7


def test_outage_loses_and_duplicates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = Azurite(tmp_path, location=tmp_path / "data")
    (tmp_path / "data").mkdir()
    server.start()
    store = table_store(server.connection_string, retry_total=0, connection_timeout=2)
    pipeline = Pipeline(store)
    messages = [synthetic_message(n) for n in range(EVENTS)]
    pending: deque[InboundMessage] = deque(messages)
    completed: list[str] = []
    completed_while_down: list[str] = []
    dead_lettered: list[str] = []
    redeliveries = 0
    try:
        for batch_number in range(1, 200):
            if not pending:
                break
            down = STOP_AFTER_BATCH < batch_number <= RESTART_AFTER_BATCH
            if batch_number == STOP_AFTER_BATCH + 1:
                server.wait_for_disk_save()
                server.stop()
            if batch_number == RESTART_AFTER_BATCH + 1:
                server.start()
            batch = [pending.popleft() for _ in range(min(BATCH, len(pending)))]
            for outcome in pipeline.handle(batch):
                message = outcome.message
                if outcome.settlement is Settlement.COMPLETE:
                    assert outcome.decision.entry is not None
                    completed.append(outcome.decision.entry.entry_id)
                    if down:
                        completed_while_down.append(str(message.message_id))
                elif outcome.settlement is Settlement.RETRY:
                    redeliveries += 1
                    pending.append(
                        dataclasses.replace(
                            message, delivery_count=(message.delivery_count or 0) + 1
                        )
                    )
                else:
                    dead_lettered.append(str(message.message_id))
        stored = [e.entry_id for e in store.in_range().entries]
    finally:
        store.close()
        server.stop()

    lost = len(set(completed) - set(stored))
    duplicated = len(stored) - len(set(stored))
    with capsys.disabled():
        print(
            f"\noutage test: {EVENTS} events, {redeliveries} redeliveries, "
            f"{len(completed)} completed, {len(stored)} stored, lost={lost}, "
            f"duplicated={duplicated}, dead-lettered={len(dead_lettered)}"
        )
    assert redeliveries > 0, "the outage was not observed"
    assert completed_while_down == []
    assert dead_lettered == []
    assert sorted(completed) == sorted(set(completed))
    assert len(completed) == EVENTS
    assert lost == 0
    assert duplicated == 0
    assert sorted(stored) == sorted(completed)
