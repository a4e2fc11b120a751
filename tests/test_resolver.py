"""The regarding resolver (AUDIT_RESOLVE_REGARDING) against the Web API double: in the real
Functions runtime harness, in the worker over AMQP, in ``run``, and in the pipeline itself."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from shared.bus.standalone import Source, Worker, peek_dead_letters, send
from shared.dataverse.webapi import WebApi
from shared.pipeline import Pipeline, Policy, StoreRetry
from shared.stores.sqlite import SqliteAuditStore
from shared.trail.resolver import RegardingResolver
from shared.verdicts import Settlement
from tests.conftest import load_samples, run_cli
from tests.dataverse_double import TOKEN, DataverseDouble
from tests.functions_host.host import FunctionsHost
from tests.test_functions_runtime import _index_and_open_the_store, host_message, sqlite_env

NAME = "json-update-no-regarding"
SESSION = "0f3b5d7e-2c3f-ef11-9f89-000d3a5c2b71"  # its PrimaryEntityId
BANK = "6f9c2d4e-8a1b-4c3d-9e5f-0a1b2c3d4e5f"
T0 = datetime(2026, 12, 1, tzinfo=UTC)


@pytest.fixture
def double():
    with DataverseDouble() as started:
        started.add_session(
            SESSION, modifiedon=T0, regarding=("sample_bankaccount", BANK), regarding_name="Savings"
        )
        yield started
    assert started.violations == []


def _asked_for(double: DataverseDouble, session: str) -> int:
    return sum(1 for s in double.seen if session in s.path)


def _resolving(double: DataverseDouble, store, **retry) -> Pipeline:
    api = WebApi(double.url, lambda: TOKEN, budget=retry.pop("budget", 60))
    return Pipeline(
        store,
        Policy(resolve_regarding=True),
        resolver=RegardingResolver(api),
        retry=StoreRetry(**retry),
    )


def test_the_functions_trigger_resolves_and_waits_out_an_outage_renewing_locks(
    double: DataverseDouble, tmp_path: Path
) -> None:
    samples = load_samples()
    env = sqlite_env(
        tmp_path,
        AUDIT_RESOLVE_REGARDING="true",
        DATAVERSE_URL=double.url,
        DATAVERSE_ACCESS_TOKEN=TOKEN,
        AUDIT_LOCK_RENEWAL_SECONDS="0.3",
    )
    with FunctionsHost(env, tmp_path / "worker.log") as host:
        _index_and_open_the_store(host)
        double.throttle(3, retry_after=1, status=503)  # the Web API is out for 3 s
        sent = [host_message(samples[NAME]), host_message(samples["json-create-bankaccount"])]
        invocation = host.service_bus_batch("process_session_queue", sent)
        assert invocation.succeeded, invocation.exception
        calls = host.settlement.taken()
        resolved = [c.method for c in calls if c.lock_token == str(sent[0].lock_token)]
        assert resolved[-1] == "complete"
        assert resolved.count("renew") >= 3, resolved
        assert {c.method for c in calls} <= {"renew", "complete"}
    assert _asked_for(double, SESSION) == 4  # three refused, then one answer
    store = SqliteAuditStore(tmp_path / "audit.sqlite3", read_only=True)
    entries = {e.processsession_id: e.to_json_dict() for e in store.in_range().entries}
    store.close()
    entry = entries[SESSION]
    assert (entry["verdict"], entry["reason"], entry["regarding_source"]) == (
        "accepted",
        None,
        "web_api",
    )
    assert (entry["regarding_id"], entry["regarding_name"]) == (BANK, "Savings")
    assert entry["regarding_read_at"] is not None
    # the other message held its regarding: no look-up, its source is the message's
    assert (
        entries[samples["json-create-bankaccount"].expected["processsession_id"]][
            "regarding_source"
        ]
        == "target"
    )


def test_the_worker_resolves_over_amqp_and_keeps_its_locks_through_an_outage(
    double: DataverseDouble, servicebus, tmp_path: Path
) -> None:
    store = SqliteAuditStore(tmp_path / "audit.sqlite3")
    source = Source(queue="resolve")
    message = load_samples()[NAME].message
    send(servicebus, source, [message, message])  # one session twice: one look-up per batch
    double.throttle(3, retry_after=1, status=503)  # longer than the broker's 2 s lock
    stats = Worker(servicebus, _resolving(double, store), source, max_wait_time=2).run(
        until_idle=True
    )
    assert stats.settlements == {Settlement.COMPLETE: 2}
    assert peek_dead_letters(servicebus, source) == []
    (entry,) = store.in_range().entries
    assert (entry.verdict.value, entry.regarding_source, entry.delivery_count) == (
        "accepted",
        "web_api",
        0,
    )
    assert _asked_for(double, SESSION) == 4
    store.close()


def test_a_look_up_that_keeps_failing_is_retried_in_place_then_succeeds(
    double: DataverseDouble, tmp_path: Path
) -> None:
    """The client gives up (Retry-After past its 1 s budget) twice; the pipeline waits in
    place and asks again, as it does for a store."""
    store = SqliteAuditStore(tmp_path / "audit.sqlite3")
    double.throttle(2, retry_after=5)
    pipeline = _resolving(double, store, budget=1, first_delay=0.1, max_delay=0.2)
    pipeline.retry = StoreRetry(budget=30, first_delay=0.1, max_delay=0.2)
    (outcome,) = pipeline.handle([load_samples()[NAME].message])
    assert outcome.settlement is Settlement.COMPLETE
    assert outcome.decision.entry is not None
    assert outcome.decision.entry.regarding_source == "web_api"
    store.close()


def test_a_look_up_past_the_budget_retries_the_message_and_writes_nothing(
    double: DataverseDouble, tmp_path: Path
) -> None:
    store = SqliteAuditStore(tmp_path / "audit.sqlite3")
    double.throttle(10, retry_after=5)
    pipeline = _resolving(double, store, budget=1, first_delay=0.1, max_delay=0.2)
    (outcome,) = pipeline.handle([load_samples()[NAME].message])
    assert outcome.settlement is Settlement.RETRY
    assert outcome.settlement_reason is not None
    assert outcome.settlement_reason.value == "dataverse_unavailable"
    assert store.count() == 0
    store.close()


def test_a_session_no_longer_in_dataverse_is_rejected_with_its_own_reason(
    double: DataverseDouble, tmp_path: Path
) -> None:
    store = SqliteAuditStore(tmp_path / "audit.sqlite3")
    double.delete_session(SESSION)
    (outcome,) = _resolving(double, store).handle([load_samples()[NAME].message])
    assert outcome.settlement is Settlement.COMPLETE
    entry = outcome.decision.entry
    assert entry is not None
    assert (entry.verdict.value, entry.reason and entry.reason.value) == (
        "rejected",
        "session_not_in_dataverse",
    )
    store.close()


def test_run_resolves_when_on_and_asks_nothing_when_off(
    double: DataverseDouble, tmp_path: Path
) -> None:
    body = str(Path("samples") / f"{NAME}.body")
    env = {
        "AUDIT_SQLITE_PATH": str(tmp_path / "off.sqlite3"),
        "DATAVERSE_URL": double.url,
        "DATAVERSE_ACCESS_TOKEN": TOKEN,
        "AUDIT_RESOLVE_REGARDING": "false",
    }
    run_cli("run", body, env=env)
    off = run_cli("entries", "--format", "jsonl", env=env).stdout
    assert json.loads(off)["reason"] == "regarding_not_in_message"
    assert double.seen == []
    env |= {"AUDIT_SQLITE_PATH": str(tmp_path / "on.sqlite3"), "AUDIT_RESOLVE_REGARDING": "true"}
    run_cli("run", body, env=env)
    on = json.loads(run_cli("entries", "--format", "jsonl", env=env).stdout)
    assert (on["verdict"], on["regarding_source"], on["regarding_id"]) == (
        "accepted",
        "web_api",
        BANK,
    )
    env.pop("DATAVERSE_URL")
    done = run_cli("run", body, env={**env, "DATAVERSE_URL": ""}, check=False)
    assert done.returncode == 2
    assert "needs DATAVERSE_URL" in done.stderr


def test_the_reconcile_timer_runs_inside_the_worker_and_logs_the_counts(
    double: DataverseDouble, tmp_path: Path
) -> None:
    """The timer, invoked by the real worker library as the host invokes one: yesterday's
    sessions against the trail, one log line with the counts the alert reads."""
    from datetime import timedelta

    yesterday = datetime.now(UTC).replace(hour=12, minute=0, second=0) - timedelta(days=1)
    double.add_session(modifiedon=yesterday, regarding=("sample_bankaccount", BANK))
    env = sqlite_env(
        tmp_path,
        DATAVERSE_URL=double.url,
        DATAVERSE_ACCESS_TOKEN=TOKEN,
        AUDIT_RECONCILE_SCHEDULE="0 30 1 * * *",
    )
    with FunctionsHost(env, tmp_path / "worker.log") as host:
        _index_and_open_the_store(host)
        p = host.protos
        timer = '{"Schedule":{"AdjustForDST":true},"ScheduleStatus":null,"IsPastDue":false}'
        invocation = host.invoke(
            "reconcile_trail", [p.ParameterBinding(name="timer", data=p.TypedData(json=timer))], {}
        )
        assert invocation.succeeded, invocation.exception
        day = yesterday.replace(hour=0)
        n = sum(
            1
            for row in double.rows("processsessions")
            if day.strftime("%Y-%m-%d") == row["modifiedon"][:10]
        )  # ours, and the fixture's when today is 2026-12-02
        assert f"{n} session(s), {n} missing, 0 behind" in host.log_text()
    listing = [s.path for s in double.seen if "processsessions?" in s.path]
    assert len(listing) == 1


def test_with_the_resolver_off_no_web_api_code_is_imported(tmp_path: Path) -> None:
    """Indexing the app and handling a message with the defaults load none of the Web API
    client, the resolver or reconcile: the cold start does not pay for them."""
    import subprocess
    import sys

    script = (
        "import sys, function_app\n"
        "function_app.app.get_functions()\n"
        "from shared.bootstrap import build_pipeline\n"
        "from shared.settings import load_settings\n"
        "from tests.conftest import load_samples\n"
        "p = build_pipeline(load_settings())\n"
        "p.handle([load_samples()['json-update-no-regarding'].message])\n"
        "print(sorted(m for m in sys.modules if m in "
        "{'shared.dataverse.webapi', 'shared.trail.resolver', 'shared.trail.reconcile', "
        "'shared.dataverse.sessions'}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=Path(__file__).resolve().parent.parent,
        env={"AUDIT_SQLITE_PATH": str(tmp_path / "a.sqlite3"), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "[]", done.stderr


def test_a_wrong_dataverse_path_is_never_a_verdict_and_ends_dead_lettered_with_its_reason(
    double: DataverseDouble, tmp_path: Path
) -> None:
    """A wrong DATAVERSE_URL path answers 404 "Resource not found for the segment": not the
    session's absence (0x80040217) but a configuration to fix. The message is redelivered
    (nothing written) until AUDIT_LOOKUP_ATTEMPTS deliveries, then dead-lettered."""
    from dataclasses import replace

    store = SqliteAuditStore(tmp_path / "audit.sqlite3")
    api = WebApi(f"{double.url}/crm", lambda: TOKEN)
    pipeline = Pipeline(
        store, Policy(resolve_regarding=True, lookup_attempts=3), resolver=RegardingResolver(api)
    )
    message = load_samples()[NAME].message
    for delivery, settlement in ((1, Settlement.RETRY), (2, Settlement.RETRY)):
        (outcome,) = pipeline.handle([replace(message, delivery_count=delivery)])
        assert outcome.settlement is settlement
        assert outcome.dead_letter_reason == "dataverse_refused"
    (outcome,) = pipeline.handle([replace(message, delivery_count=3)])
    assert outcome.settlement is Settlement.DEAD_LETTER
    assert outcome.dead_letter_reason == "dataverse_refused"
    assert outcome.description is not None
    assert "HTTP 404" in outcome.description
    assert "dlq replay" in outcome.description
    assert TOKEN not in outcome.description
    assert store.count() == 0
    store.close()


def test_a_session_row_without_the_annotation_is_still_judged_by_its_table(
    double: DataverseDouble, tmp_path: Path
) -> None:
    store = SqliteAuditStore(tmp_path / "audit.sqlite3")
    double.drop_annotations = True
    (outcome,) = _resolving(double, store).handle([load_samples()[NAME].message])
    entry = outcome.decision.entry
    assert entry is not None
    assert (entry.verdict.value, entry.regarding_logical_name, entry.regarding_id) == (
        "accepted",
        "sample_bankaccount",
        BANK,
    )
    store.close()


def test_a_session_row_with_no_table_at_all_is_retried_not_rejected(
    double: DataverseDouble, tmp_path: Path
) -> None:
    store = SqliteAuditStore(tmp_path / "audit.sqlite3")
    double.drop_annotations = True
    double.type_code_column = False
    (outcome,) = _resolving(double, store).handle([load_samples()[NAME].message])
    assert outcome.settlement is Settlement.RETRY
    assert outcome.dead_letter_reason == "dataverse_unavailable"
    assert store.count() == 0
    store.close()
