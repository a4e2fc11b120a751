"""End to end over real AMQP: the azure-servicebus SDK against the local broker (devtools),
the standalone worker, the pipeline and a real SQLite store."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from uuid import UUID

import pytest
from azure.servicebus.exceptions import MessageLockLostError

from shared.bus.standalone import Source, Worker, peek_dead_letters, replay_dead_letters, send
from shared.pipeline import Pipeline, Policy
from shared.verdicts import Settlement
from tests.conftest import load_samples, run_cli
from tests.entries import synthetic_message
from tests.pipeline_doubles import FlakyStore


def _peek(servicebus, source: Source):
    with source.receiver(servicebus) as receiver:
        return receiver.peek_messages(max_message_count=100)


def test_every_sample_travels_through_the_broker(servicebus, store):
    source = Source(queue="samples")
    samples = load_samples()
    assert send(servicebus, source, [s.message for s in samples.values()]) == 9
    stats = Worker(servicebus, Pipeline(store), source, max_wait_time=2).run(until_idle=True)
    assert len(stats.outcomes) == 9
    assert store.count() == 7
    dead = {m.message_id: m for m in peek_dead_letters(servicebus, source)}
    assert {m.dead_letter_reason for m in dead.values()} == {"malformed_json"}
    truncated = dead[samples["malformed-truncated"].message.message_id]
    assert "JSON does not parse" in truncated.dead_letter_error_description
    assert b"".join(truncated.body) == samples["malformed-truncated"].message.body
    assert _peek(servicebus, source) == []
    assert all(e.message_id and e.sequence_number for e in store.in_range().entries)


def test_store_outage_redelivers_and_each_event_is_stored_once(servicebus, store):
    source = Source(queue="outage")
    flaky = FlakyStore(store, fail_writes=3)
    send(servicebus, source, [synthetic_message(n) for n in range(10)])
    stats = Worker(servicebus, Pipeline(flaky), source, batch_size=4, max_wait_time=2).run(
        until_idle=True
    )
    assert flaky.failed_writes == 3
    assert stats.settlements[Settlement.RETRY] > 0
    assert store.count() == 10
    sessions = [e.processsession_id for e in store.in_range().entries]
    assert len(set(sessions)) == 10
    assert max(e.delivery_count or 0 for e in store.in_range().entries) >= 1
    assert peek_dead_letters(servicebus, source) == []


def test_a_store_that_never_recovers_ends_in_the_dlq_by_max_delivery_count(servicebus, store):
    source = Source(queue="poison")
    flaky = FlakyStore(store)
    flaky.down = True
    send(servicebus, source, [synthetic_message(1)])
    Worker(servicebus, Pipeline(flaky), source, max_wait_time=2).run(until_idle=True)
    dead = peek_dead_letters(servicebus, source)
    assert [m.dead_letter_reason for m in dead] == ["MaxDeliveryCountExceeded"]
    assert flaky.failed_writes == 3
    assert store.count() == 0


def test_lock_expiry_redelivers_and_the_late_complete_is_refused(servicebus, store):
    source = Source(queue="expiry")
    send(servicebus, source, [synthetic_message(5)])
    with source.receiver(servicebus) as crashed:
        held = crashed.receive_messages(max_message_count=1, max_wait_time=5)
        assert len(held) == 1
        time.sleep(2.6)  # the 2 s lock runs out: the broker redelivers
        Worker(servicebus, Pipeline(store), source, max_wait_time=2).run(until_idle=True)
        with pytest.raises(MessageLockLostError):
            crashed.complete_message(held[0])
    entries = store.in_range().entries
    assert len(entries) == 1
    assert entries[0].delivery_count == 1


def test_slow_batches_keep_their_locks(servicebus, store):
    source = Source(queue="slow")

    class SlowPipeline(Pipeline):
        def handle(self, messages, stop=None):
            time.sleep(3.5)  # longer than the 2 s lock: only renewal keeps it
            return super().handle(messages, stop)

    send(servicebus, source, [synthetic_message(n) for n in range(3)])
    stats = Worker(servicebus, SlowPipeline(store), source, max_wait_time=2).run(until_idle=True)
    assert stats.settlements == {Settlement.COMPLETE: 3}
    assert [e.delivery_count for e in store.in_range().entries] == [0, 0, 0]
    assert _peek(servicebus, source) == []


def test_dead_letter_replay_after_the_fix(servicebus, store):
    source = Source(queue="replay")
    good = synthetic_message(7)
    org = UUID(json.loads(good.body)["OrganizationId"])
    strict = Pipeline(store, Policy(allowed_organization_ids=frozenset({UUID(int=1)})))
    truncated = load_samples()["malformed-truncated"].message
    send(servicebus, source, [good, truncated])
    Worker(servicebus, strict, source, max_wait_time=2).run(until_idle=True)
    reasons = sorted(m.dead_letter_reason for m in peek_dead_letters(servicebus, source))
    assert reasons == ["malformed_json", "untrusted_organization"]

    dry = replay_dead_letters(servicebus, source, reason="untrusted_organization", dry_run=True)
    assert [(r.message_id, r.replayed) for r in sorted(dry, key=lambda r: r.replayed)] == [
        (truncated.message_id, False),
        (good.message_id, True),
    ]
    assert len(peek_dead_letters(servicebus, source)) == 2

    replayed = replay_dead_letters(servicebus, source, reason="untrusted_organization")
    assert [r.message_id for r in replayed if r.replayed] == [good.message_id]
    fixed = Pipeline(store, Policy(allowed_organization_ids=frozenset({org})))
    Worker(servicebus, fixed, source, max_wait_time=2).run(until_idle=True)
    assert store.count() == 1
    assert store.in_range().entries[0].message_id == good.message_id
    assert [m.dead_letter_reason for m in peek_dead_letters(servicebus, source)] == [
        "malformed_json"
    ]


def test_worker_stops_after_the_batch_in_hand_and_loses_nothing(servicebus, store):
    source = Source(queue="graceful")
    stop = threading.Event()

    class StopDuringBatch(Pipeline):
        def handle(self, messages, stop_event=None):
            stop.set()  # as if SIGTERM arrived while this batch was being processed
            return super().handle(messages, stop_event)

    send(servicebus, source, [synthetic_message(n) for n in range(20)])
    first = Worker(servicebus, StopDuringBatch(store), source, batch_size=5, max_wait_time=2).run(
        stop
    )
    assert first.settlements == {Settlement.COMPLETE: len(first.outcomes)}
    assert 1 <= len(first.outcomes) <= 5
    left = _peek(servicebus, source)
    assert len(left) == 20 - len(first.outcomes)
    assert {m.delivery_count for m in left} == {0}
    Worker(servicebus, Pipeline(store), source, max_wait_time=2).run(until_idle=True)
    assert store.count() == 20


def test_topic_fans_out_and_the_worker_reads_one_subscription(servicebus, store):
    send(servicebus, Source(topic="events"), [synthetic_message(n) for n in range(3)])
    Worker(
        servicebus, Pipeline(store), Source(topic="events", subscription="audit"), max_wait_time=2
    ).run(until_idle=True)
    assert store.count() == 3
    assert len(_peek(servicebus, Source(topic="events", subscription="other"))) == 3


def test_command_line_send_worker_and_dlq(broker, tmp_path):
    env = {
        "SERVICEBUS_CONNECTION_STRING": broker.connection_string,
        "PROCESS_SESSION_QUEUE": "cli",
        "AUDIT_SQLITE_PATH": str(tmp_path / "a.sqlite3"),
    }

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, env=env)

    assert "sent 9 message(s) to queue cli" in cli("send").stderr
    worker = cli("worker", "--until-idle", "--max-wait", "2")
    assert "5 accepted, 2 rejected, 1 ignored, 1 dead-lettered" in worker.stdout
    peek = cli("dlq", "peek").stdout
    assert "malformed_json" in peek
    dry = cli("dlq", "replay", "--reason", "malformed_json", "--dry-run")
    assert "would replay 1 of 1" in dry.stderr
    assert broker.connection_string not in worker.stdout + worker.stderr + peek


def test_sigterm_stops_the_worker_process_without_stranding_a_message(broker, servicebus, tmp_path):
    source = Source(queue="signal")
    total = 300
    send(servicebus, source, [synthetic_message(n) for n in range(total)])
    db = tmp_path / "a.sqlite3"
    env = {
        **os.environ,
        "SERVICEBUS_CONNECTION_STRING": broker.connection_string,
        "AUDIT_SQLITE_PATH": str(db),
    }
    worker = subprocess.Popen(
        [sys.executable, "-m", "shared.cli", "worker", "--queue", "signal", "--batch-size", "10"],
        cwd=Path(__file__).resolve().parent.parent,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    stored = 0
    while time.monotonic() < deadline and stored == 0:
        time.sleep(0.2)
        if db.exists():
            with sqlite3.connect(db) as check:
                stored = check.execute("SELECT COUNT(*) FROM audit_entries").fetchone()[0]
    worker.send_signal(signal.SIGTERM)
    _, err = worker.communicate(timeout=60)
    assert worker.returncode == 0, err
    with sqlite3.connect(db) as check:
        stored = check.execute("SELECT COUNT(*) FROM audit_entries").fetchone()[0]
    assert 0 < stored < total, "stop the worker while messages remain"
    with source.receiver(servicebus) as receiver:  # nothing may sit locked by the dead worker
        left = []
        while batch := receiver.receive_messages(max_message_count=100, max_wait_time=2):
            left += batch
            for message in batch:
                receiver.complete_message(message)
    assert len(left) == total - stored
    assert {m.delivery_count for m in left} == {0}


def test_service_bus_mistakes_are_one_line_naming_the_entity_and_the_fix(broker):
    env = {"SERVICEBUS_CONNECTION_STRING": broker.connection_string}
    wrong = run_cli("dlq", "peek", "--queue", "no-such-queue", env=env, check=False)
    assert wrong.returncode == 2  # unavailable
    assert len(wrong.stderr.strip().splitlines()) == 1, wrong.stderr
    assert "queue no-such-queue on 127.0.0.1" in wrong.stderr
    assert "does not exist there" in wrong.stderr
    closed = {
        "SERVICEBUS_CONNECTION_STRING": "Endpoint=sb://127.0.0.1:9;SharedAccessKeyName=x;"
        "SharedAccessKey=c2VjcmV0LWtleQ==;UseDevelopmentEmulator=true"
    }
    refused = run_cli("send", "--queue", "q", env=closed, check=False, timeout=240)
    assert refused.returncode == 2
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert "no answer: check the namespace" in refused.stderr
    assert "c2VjcmV0LWtleQ==" not in refused.stderr


def test_a_long_running_worker_keeps_counts_and_only_its_recent_outcomes(
    servicebus, store, monkeypatch
):
    """Memory flat in the number of messages: counts cover every one, outcomes are a window."""
    import shared.bus.standalone as servicebus_module

    monkeypatch.setattr(servicebus_module, "RECENT_OUTCOMES", 25)
    source = Source(queue="long-run")
    send(servicebus, source, [synthetic_message(n) for n in range(120)])
    stats = Worker(servicebus, Pipeline(store), source, batch_size=16, max_wait_time=2).run(
        until_idle=True
    )
    assert stats.messages == 120
    assert stats.settlements == {Settlement.COMPLETE: 120}
    assert sum(stats.verdicts.values()) == 120
    assert len(stats.outcomes) == 25  # the most recent ones, not 120
    assert store.count() == 120
    # and of each, what the report shows: ids, verdict, settlement; no body, no changes
    kept = stats.outcomes[-1]
    assert kept.message.body == b""
    assert kept.message.message_id
    assert kept.decision.entry is not None
    assert kept.decision.entry.changes == []
    assert store.in_range().entries[-1].changes != []  # the store has them whole


def test_the_worker_stops_after_max_messages_and_holds_none_beyond(broker, tmp_path):
    """``--max N`` receives exactly N (a short last batch), settles each, and leaves the rest
    unlocked: a second worker receives them at once."""
    env = {
        "SERVICEBUS_CONNECTION_STRING": broker.connection_string,
        "PROCESS_SESSION_QUEUE": "bounded",
        "AUDIT_SQLITE_PATH": str(tmp_path / "a.sqlite3"),
    }
    samples = sorted(load_samples().values(), key=lambda s: s.name)
    valid = [s.message for s in samples if not s.name.startswith("malformed")]
    from azure.servicebus import ServiceBusClient

    with ServiceBusClient.from_connection_string(broker.connection_string) as client:
        send(client, Source(queue="bounded"), valid)
    first = run_cli("worker", "--max", "5", "--batch-size", "3", "--max-wait", "2", env=env)
    assert "5 message(s) from queue bounded" in first.stdout
    assert "until 5 message(s)" in first.stderr
    rest = run_cli("worker", "--until-idle", "--max-wait", "2", env=env)
    assert f"{len(valid) - 5} message(s) from queue bounded" in rest.stdout
    with sqlite3.connect(tmp_path / "a.sqlite3") as db:
        assert db.execute("select count(*) from audit_entries").fetchone()[0] == 7


@pytest.mark.parametrize(
    ("option", "value"),
    [("--max", "0"), ("--batch-size", "-3"), ("--batch-size", "x"), ("--max-wait", "0")],
)
def test_worker_counts_and_waits_must_be_positive(option, value):
    done = run_cli("worker", "--queue", "q", option, value, check=False)
    assert done.returncode == 2
    assert f"argument {option}" in done.stderr
    assert "at least 1" in done.stderr or "above 0" in done.stderr
