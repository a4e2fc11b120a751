"""The Functions app: registered triggers and bindings, and settlement of each outcome.

``ServiceBusMessageActions`` talks gRPC to the Functions host and cannot work outside it (the
host cannot run on this machine), so settlement is checked with a recording stand-in that has
the same three methods. Messages are real ``azure.servicebus.ServiceBusReceivedMessage``s.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from azure.servicebus import ServiceBusReceivedMessage
from azure.servicebus._pyamqp.message import Message, Properties  # private: SDK pinned <8

import functions.process_session as process_session
from functions import runtime
from shared.bus.settlement import MAX_DESCRIPTION
from shared.pipeline import Pipeline
from shared.stores.sqlite import SqliteAuditStore
from tests.conftest import registered_functions
from tests.pipeline_doubles import FlakyStore

ROOT = Path(__file__).resolve().parent.parent


class RecordingActions:
    """Stand-in for ServiceBusMessageActions: records each settlement call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str | None, str | None, str | None]] = []

    def complete(self, message) -> None:
        self.calls.append(("complete", message.message_id, None, None))

    def abandon(self, message) -> None:
        self.calls.append(("abandon", message.message_id, None, None))

    def deadletter(self, message, deadletter_reason=None, deadletter_error_description=None):
        self.calls.append(
            ("deadletter", message.message_id, deadletter_reason, deadletter_error_description)
        )


def _sdk_message(sample) -> ServiceBusReceivedMessage:
    m = sample.message
    return ServiceBusReceivedMessage(
        Message(
            data=[m.body],
            application_properties={
                k.encode(): v.encode() for k, v in m.application_properties.items()
            },
            properties=Properties(
                message_id=m.message_id,
                content_type=m.content_type,
                correlation_id=m.correlation_id,
            ),
        ),
        receiver=None,
    )


@pytest.fixture
def wired(store, monkeypatch):
    """The triggers' pipeline, pointed at a test store."""
    flaky = FlakyStore(store)
    monkeypatch.setattr(runtime, "pipeline", lambda: Pipeline(flaky))
    return flaky


def test_registered_functions_and_their_bindings():
    functions = {
        f.get_function_name(): json.loads(f.get_function_json()) for f in registered_functions()
    }
    assert set(functions) == {
        "process_session_queue",
        "process_session_topic",
        "bankaccount_audit",
        "processsession_audit",
        "seal_trail",
        "reconcile_trail",
        "bankaccount_timeline",
        "processsession_timeline",
    }
    assert functions["seal_trail"]["bindings"] == [
        {
            "direction": "IN",
            "type": "timerTrigger",
            "name": "timer",
            "schedule": "%AUDIT_SEAL_SCHEDULE%",
            "runOnStartup": False,
        }
    ]
    queue = functions["process_session_queue"]["bindings"]
    topic = functions["process_session_topic"]["bindings"]
    assert queue == [
        {
            "direction": "IN",
            "type": "serviceBusTrigger",
            "name": "messages",
            "cardinality": "MANY",
            "connection": "ServiceBusConnection",
            "queueName": "%PROCESS_SESSION_QUEUE%",
            "autoCompleteMessages": False,
        }
    ]
    assert topic == [
        {
            "direction": "IN",
            "type": "serviceBusTrigger",
            "name": "messages",
            "cardinality": "MANY",
            "connection": "ServiceBusConnection",
            "topicName": "%PROCESS_SESSION_TOPIC%",
            "subscriptionName": "%PROCESS_SESSION_SUBSCRIPTION%",
            "autoCompleteMessages": False,
        }
    ]


@pytest.mark.parametrize(
    "trigger", [process_session.process_session_queue, process_session.process_session_topic]
)
def test_each_sample_is_settled_by_its_outcome(trigger, wired, samples, store):
    actions = RecordingActions()
    for sample in samples.values():
        trigger([_sdk_message(sample)], actions)
    by_id = {call[1]: call for call in actions.calls}
    kinds = {name: by_id[s.message.message_id][0] for name, s in samples.items()}
    assert kinds == {
        "binary-create-bankaccount": "complete",
        "json-create-account": "complete",
        "json-create-bankaccount": "complete",
        "json-delete": "complete",
        "json-other-entity": "complete",
        "json-update-bankaccount": "complete",
        "json-update-no-regarding": "complete",
        "malformed-truncated": "deadletter",
        "xml-create-bankaccount": "complete",
    }
    truncated = by_id[samples["malformed-truncated"].message.message_id]
    assert truncated[2] == "malformed_json"
    assert len(truncated[3]) <= MAX_DESCRIPTION
    assert store.count() == 7


def test_store_outage_abandons_and_never_completes(wired, samples, store):
    wired.down = True
    actions = RecordingActions()
    sample = samples["json-create-bankaccount"]
    process_session.process_session_queue([_sdk_message(sample)], actions)
    assert [c[0] for c in actions.calls] == ["abandon"]
    wired.down = False
    process_session.process_session_queue([_sdk_message(sample)], actions)
    assert [c[0] for c in actions.calls] == ["abandon", "complete"]
    assert store.count() == 1


def test_failed_settlement_does_not_stop_the_others(wired, samples):
    class LostLock(RecordingActions):
        def complete(self, message) -> None:
            raise RuntimeError("lock lost")

    actions = LostLock()
    process_session.process_session_queue([_sdk_message(samples["malformed-truncated"])], actions)
    process_session.process_session_queue([_sdk_message(samples["json-delete"])], actions)
    assert [c[0] for c in actions.calls] == ["deadletter"]


def test_nothing_under_shared_imports_azure_functions():
    offenders = []
    for path in (ROOT / "shared").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            offenders += [
                f"{path.name}: {n}"
                for n in names
                if n.startswith(("azure.functions", "azurefunctions"))
            ]
    assert offenders == []


def test_importing_the_app_reads_no_settings_and_opens_no_store(tmp_path):
    db = tmp_path / "never.sqlite3"
    env = {**os.environ, "AUDIT_SQLITE_PATH": str(db), "AUDIT_STORE": "not-a-store"}
    subprocess.run(
        [sys.executable, "-c", "import function_app"],
        cwd=ROOT,
        env=env,
        check=True,
        timeout=60,
        capture_output=True,
    )
    assert not db.exists()


def test_a_mixed_batch_is_written_once_and_settled_message_by_message(wired, samples, store):
    class CountingStore(FlakyStore):
        writes = 0

        def write(self, entries):
            CountingStore.writes += 1
            return super().write(entries)

    counting = CountingStore(store)
    actions = RecordingActions()
    batch = [_sdk_message(s) for s in samples.values()]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runtime, "pipeline", lambda: Pipeline(counting))
        process_session.process_session_queue(batch, actions)
    assert CountingStore.writes == 1
    kinds = sorted(call[0] for call in actions.calls)
    assert kinds == ["complete"] * 8 + ["deadletter"]
    assert store.count() == 7


def test_a_store_failure_in_a_batch_completes_no_message_that_has_an_entry(wired, samples, store):
    wired.down = True
    actions = RecordingActions()
    process_session.process_session_queue([_sdk_message(s) for s in samples.values()], actions)
    by_id = {call[1]: call[0] for call in actions.calls}
    for name, sample in samples.items():
        expected = sample.expected["verdict"]
        got = by_id[sample.message.message_id]
        if expected in ("accepted", "rejected"):
            assert got == "abandon", name
        else:
            assert got == ("deadletter" if expected == "malformed" else "complete"), name
    assert store.count() == 0


def test_the_seal_timer_seals_what_closed(tmp_path, monkeypatch, caplog):
    """The timer function's own code, on the settings it reads (SQLite here, blobs in Azure)."""
    import logging
    from datetime import UTC, datetime, timedelta

    from functions.trail_seal import seal_trail
    from shared.settings import load_settings
    from shared.stores.seals import verify_trail
    from shared.stores.sqlite import SqliteSealStore
    from tests.entries import synthetic_message

    key = "ab" * 32
    settings = load_settings(
        audit_sqlite_path=tmp_path / "a.sqlite3", audit_trail_key=key, audit_seal_grace_minutes=0
    )
    monkeypatch.setattr(runtime, "settings", lambda: settings)
    store = SqliteAuditStore(settings.audit_sqlite_path, ring=settings.key_ring())
    two_hours_ago = datetime.now(UTC) - timedelta(hours=2)
    Pipeline(store, clock=lambda: two_hours_ago).handle([synthetic_message(n) for n in range(3)])
    Pipeline(store).handle([synthetic_message(3)])  # this hour's: not closed yet
    with caplog.at_level(logging.INFO):
        seal_trail(None)  # the timer's details are not read
    ring = settings.key_ring()
    assert ring is not None
    records = SqliteSealStore(store).records()
    assert [r.count for r in records] == [3]
    assert records[0].end.endswith(":00:00.000Z")  # whole hours, after the grace period
    assert "sealed 3 entries" in caplog.text
    report = verify_trail(store, SqliteSealStore(store), ring, datetime.now(UTC))
    assert report.problems == []
    assert (report.entries, report.windows, report.unsealed) == (4, 1, 1)
    store.close()
