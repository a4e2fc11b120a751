"""Text from messages, stores and the broker is data: never markup, never terminal control, and
a redacted column's value appears nowhere. Each check runs the real command in a process of its
own and reads what it printed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from azure.servicebus import ServiceBusMessage

from shared.bus.standalone import Source, send
from shared.pipeline import Pipeline, evaluate
from shared.stores.sqlite import SqliteAuditStore
from tests.conftest import json_message, kv_set, run_cli, sample_document, target_of
from tests.entries import synthetic_message

HOSTILE = "[/oops] dialog [bold red]x[/] \x1b]0;pwned\x07\x1b[2J\u202eevil"
MARKER = "MARKER-9731-SECRET"


def _no_raw_controls(text: str) -> None:
    assert "\x1b" not in text
    assert "\x07" not in text
    assert "\u202e" not in text


def _message_file(tmp_path: Path, name: str, *, column: str, money_value: str) -> Path:
    """A sample body (with its properties file) whose ``column`` is a Money holding text: the
    refusal's description quotes that text."""
    document = sample_document()
    kv_set(target_of(document)["Attributes"], column, {"__type": "Money:x", "Value": money_value})
    body = tmp_path / f"{name}.body"
    body.write_text(json.dumps(document))
    (tmp_path / f"{name}.properties.json").write_text(
        json.dumps({"content_type": "application/json", "message_id": name})
    )
    return body


def _hostile_session(tmp_path: Path) -> Path:
    document = sample_document()
    kv_set(target_of(document)["Attributes"], "name", HOSTILE)
    db = tmp_path / "audit.sqlite3"
    store = SqliteAuditStore(db)
    Pipeline(store).handle([json_message(document)])
    store.close()
    return db


def test_entries_prints_hostile_names_as_plain_text(tmp_path):
    db = _hostile_session(tmp_path)
    table = run_cli("entries", "--format", "table", env={"AUDIT_SQLITE_PATH": str(db)})
    assert "[/oops] dialog [bold red]x[/]" in table.stdout
    assert "\\x1b]0;pwned\\x07" in table.stdout
    _no_raw_controls(table.stdout + table.stderr)
    lines = run_cli("entries", "--format", "jsonl", env={"AUDIT_SQLITE_PATH": str(db)})
    assert json.loads(lines.stdout)["processsession_name"] == HOSTILE  # the data is kept whole


def test_run_prints_a_hostile_description_as_plain_text(tmp_path):
    body = _message_file(tmp_path, "hostile", column="probe", money_value=HOSTILE)
    done = run_cli("run", str(body), env={"AUDIT_SQLITE_PATH": str(tmp_path / "a.sqlite3")})
    assert "[/oops]" in done.stdout
    assert "0 accepted, 0 rejected, 0 ignored, 1 dead-lettered" in done.stdout
    _no_raw_controls(done.stdout + done.stderr)


def test_worker_and_dlq_peek_print_hostile_descriptions_as_plain_text(broker, servicebus, tmp_path):
    source = Source(queue="hostile-text")
    send(servicebus, source, [synthetic_message(3)])
    with source.receiver(servicebus) as receiver:  # another tool dead-lettered it like this
        (held,) = receiver.receive_messages(max_message_count=1, max_wait_time=5)
        receiver.dead_letter_message(held, reason="[red]x[/]", error_description=HOSTILE)
    with source.sender(servicebus) as sender:
        document = sample_document()
        kv_set(target_of(document)["Attributes"], "probe", {"__type": "Money:x", "Value": HOSTILE})
        sender.send_messages(
            ServiceBusMessage(json.dumps(document), content_type="application/json")
        )
    env = {
        "SERVICEBUS_CONNECTION_STRING": broker.connection_string,
        "PROCESS_SESSION_QUEUE": "hostile-text",
        "AUDIT_SQLITE_PATH": str(tmp_path / "a.sqlite3"),
    }
    worker = run_cli("worker", "--until-idle", "--max-wait", "2", env=env)
    assert "1 dead-lettered" in worker.stdout
    _no_raw_controls(worker.stdout + worker.stderr)
    peek = run_cli("dlq", "peek", env=env)
    assert "[red]x[/]" in peek.stdout
    assert "[/oops]" in peek.stdout
    _no_raw_controls(peek.stdout + peek.stderr)


def test_the_local_run_dlq_table_is_plain_text():
    from io import StringIO

    from rich.console import Console

    from shared.cli.console import dead_letter_table

    class Dead:
        message_id = "\x1b[31mid"
        dead_letter_reason = "[/bad]"
        dead_letter_error_description = HOSTILE
        enqueued_time_utc = None
        delivery_count = 1

    buffer = StringIO()
    Console(file=buffer, width=200).print(dead_letter_table([Dead()], "[/title]"))
    printed = buffer.getvalue()
    assert "[/bad]" in printed
    assert "[/title]" in printed
    _no_raw_controls(printed)


def test_a_redacted_columns_value_appears_in_no_output(tmp_path):
    body = _message_file(tmp_path, "secret", column="comments", money_value=MARKER)
    env = {"AUDIT_REDACT_COLUMNS": "comments,name", "AUDIT_SQLITE_PATH": str(tmp_path / "a.db")}
    outputs = [
        run_cli("-v", "inspect", str(body), env=env),
        run_cli("-v", "run", str(body), env=env, check=False),
    ]
    for done in outputs:
        assert MARKER not in done.stdout + done.stderr
    assert "redacted column 'comments'" in outputs[0].stderr
    # without redaction the same refusal names the value: the test can fail
    plain_run = run_cli("inspect", str(body), env={"AUDIT_SQLITE_PATH": str(tmp_path / "b.db")})
    assert MARKER in plain_run.stderr


def test_redacting_name_also_redacts_the_session_name():
    from shared.pipeline import Policy

    document = sample_document()
    kv_set(target_of(document)["Attributes"], "name", MARKER)
    decision = evaluate(json_message(document), Policy(redact_columns=frozenset({"name"})))
    assert decision.entry is not None
    assert decision.entry.processsession_name == "[redacted]"
    assert MARKER not in decision.entry.model_dump_json()


def test_hostile_text_is_escaped_in_cli_error_lines(tmp_path):
    missing = tmp_path / "no\x1b[2Jsuch"
    done = subprocess.run(
        [sys.executable, "-m", "shared.cli", "inspect", str(missing)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
        timeout=60,
    )
    assert done.returncode != 0
    _no_raw_controls(done.stderr)


UNSAFE = "a\u009bb\u009dc\u202ed\u2028e\u2029f\u0085g\u2066h"


def _raw_unsafe(text: str) -> list[str]:
    return [c for c in "\u009b\u009d\u202e\u2028\u2029\u0085\u2066" if c in text]


def test_json_outputs_escape_c1_bidi_and_line_separators_losslessly(tmp_path):
    document = sample_document()
    kv_set(target_of(document)["Attributes"], "name", UNSAFE)
    body = tmp_path / "unsafe.body"
    body.write_text(json.dumps(document))
    (tmp_path / "unsafe.properties.json").write_text(
        json.dumps({"content_type": "application/json", "message_id": "unsafe"})
    )
    env = {"AUDIT_SQLITE_PATH": str(tmp_path / "audit.sqlite3")}
    run_cli("run", str(body), env=env)
    outputs = {
        "inspect": run_cli("inspect", str(body), env=env).stdout,
        "entries": run_cli("entries", "--format", "jsonl", env=env).stdout,
        "export": run_cli("export", env=env).stdout,
    }
    for name, out in outputs.items():
        assert _raw_unsafe(out) == [], name
        assert "\\u009b" in out, name
        parsed = json.loads(out)
        entry = parsed["entry"] if name == "inspect" else parsed
        assert entry["processsession_name"] == UNSAFE, name  # nothing lost


def test_tables_escape_line_separators_and_cut_long_values(tmp_path):
    document = sample_document()
    kv_set(target_of(document)["Attributes"], "name", UNSAFE + "x" * 250_000)
    db = tmp_path / "audit.sqlite3"
    store = SqliteAuditStore(db)
    Pipeline(store).handle([json_message(document)])
    store.close()
    table = run_cli("entries", "--format", "table", env={"AUDIT_SQLITE_PATH": str(db)})
    assert _raw_unsafe(table.stdout) == []
    assert "\\u2028" in table.stdout or "\\x85" in table.stdout
    assert "more characters]" in table.stdout
    assert len(table.stdout.splitlines()) < 100  # not 28,000 lines
