"""The command line end to end, in a subprocess, against a real SQLite file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SAMPLES, run_cli


def _cli(*args: str, db: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, env={"AUDIT_SQLITE_PATH": str(db)}, check=check)


def test_run_twice_adds_no_entries_the_second_time(tmp_path):
    db = tmp_path / "audit.sqlite3"
    first = _cli("run", db=db)
    assert "5 accepted, 2 rejected, 1 ignored, 1 dead-lettered" in first.stdout
    assert "7 new entries" in first.stdout
    assert "holds 7" in first.stdout
    second = _cli("run", db=db)
    assert "0 new entries" in second.stdout
    assert "holds 7" in second.stdout


def test_run_accepts_files_and_folders(tmp_path):
    db = tmp_path / "audit.sqlite3"
    result = _cli("run", str(SAMPLES / "json-create-bankaccount.body"), db=db)
    assert "1 accepted, 0 rejected, 0 ignored, 0 dead-lettered" in result.stdout
    missing = _cli("run", str(tmp_path / "nope"), db=db, check=False)
    assert missing.returncode == 2
    assert "no such file" in missing.stderr


def test_entries_reads_the_trail_as_jsonl_and_filters(tmp_path):
    db = tmp_path / "audit.sqlite3"
    _cli("run", db=db)
    lines = _cli("entries", "--format", "jsonl", db=db).stdout.splitlines()
    entries = [json.loads(line) for line in lines]
    assert len(entries) == 7
    assert [e["operation_created_on"] for e in entries] == sorted(
        e["operation_created_on"] for e in entries
    )
    one = _cli(
        "entries", "--regarding", "8e5f1a2b-6c7d-ef11-bfe3-6045bd0c1a22", "--format", "jsonl", db=db
    ).stdout.splitlines()
    assert [json.loads(x)["processsession_id"] for x in one] == [
        "1b9e7c4d-2a3f-ef11-9f89-000d3a5c2b71",
        "7d9f1b3c-2c3f-ef11-9f89-000d3a5c2b71",  # a session of it, deleted (json-delete)
        "66b8dafc-2c3f-ef11-9f89-000d3a5c2b71",  # the .NETBinary sample, same bank account
    ]
    ranged = _cli(
        "entries", "--since", "2024-11-28", "--until", "2024-12-01", "--format", "jsonl", db=db
    ).stdout.splitlines()
    assert len(ranged) == 3  # two Creates and the deletion of 2024-11-30
    table = _cli("entries", "--format", "table", db=db).stdout
    assert "audit trail: 7 entries" in table


def test_inspect_finds_the_properties_file_beside_the_body(tmp_path):
    result = _cli("inspect", str(SAMPLES / "malformed-truncated.body"), db=tmp_path / "x.sqlite3")
    assert json.loads(result.stdout) == {
        "verdict": "malformed",
        "reason": "malformed_json",
        "entry": None,
    }
    assert "JSON does not parse" in result.stderr
    binary = _cli(
        "inspect", str(SAMPLES / "binary-create-bankaccount.body"), db=tmp_path / "x.sqlite3"
    )
    assert json.loads(binary.stdout)["verdict"] == "accepted"  # application/msbin1 beside it


def test_inspect_without_properties_has_no_content_type(tmp_path):
    body = tmp_path / "lonely.json"
    body.write_bytes((SAMPLES / "json-create-bankaccount.body").read_bytes())
    result = _cli("inspect", str(body), db=tmp_path / "x.sqlite3")
    assert json.loads(result.stdout)["reason"] == "unsupported_content_type"
    forced = _cli(
        "inspect", str(body), "--content-type", "application/json", db=tmp_path / "x.sqlite3"
    )
    assert json.loads(forced.stdout)["verdict"] == "accepted"


def test_export_streams_the_trail_to_a_file(tmp_path):
    db = tmp_path / "audit.sqlite3"
    _cli("run", db=db)
    out = tmp_path / "exports" / "trail.jsonl"
    out.parent.mkdir()  # a folder that does not exist is refused (tests/test_timeline.py)
    result = _cli("export", "--output", str(out), "--since", "2024-11-27T00:00:00Z", db=db)
    lines = out.read_text().splitlines()
    assert len(lines) == 6
    assert "exported 6 entries" in result.stderr
    assert not out.with_name("trail.jsonl.partial").exists()


def test_table_store_from_the_command_line(azurite, tmp_path):
    env_store = {
        "AUDIT_STORE": "table",
        "AUDIT_TABLE_NAME": "cli" + os.urandom(6).hex(),
        "AUDIT_TABLE_CONNECTION_STRING": azurite.connection_string,
    }

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, env=env_store)

    first = cli("run")
    assert "7 new entries; the store (table " in first.stdout
    assert "holds 7" in cli("run").stdout
    exported = cli("export").stdout.splitlines()
    assert len(exported) == 7
    assert azurite.connection_string not in first.stdout + first.stderr


def test_unreachable_store_is_a_clear_error_not_a_traceback(tmp_path):
    env = {
        "AUDIT_STORE": "table",
        "AUDIT_TABLE_CONNECTION_STRING": "DefaultEndpointsProtocol=http;AccountName=a;"
        "AccountKey=c2VjcmV0LWtleS1mb3ItdGVzdHM=;TableEndpoint=http://127.0.0.1:9/a;",
    }
    result = run_cli("entries", env=env, check=False)
    assert result.returncode == 2  # unavailable (1 means findings)
    # opening reads the table's layout row: the first request, and the one that fails
    assert (
        "error: StoreUnavailable: Table Storage opening table 'processsessionaudit' failed at "
        "http://127.0.0.1:9/a" in result.stderr
    )
    assert "Traceback" not in result.stderr
    assert "c2VjcmV0LWtleS1mb3ItdGVzdHM=" not in result.stderr + result.stdout


def _properties(tmp_path: Path, name: str, content: str) -> Path:
    path = tmp_path / name
    path.write_text(content)
    return path


def test_bad_inputs_get_one_line_and_a_non_zero_exit(tmp_path):
    body = str(SAMPLES / "json-create-bankaccount.body")
    db = tmp_path / "x.sqlite3"
    cases = [
        (("inspect", str(tmp_path)), "is a folder"),
        (("inspect", body, "--properties", str(tmp_path)), "is a folder"),
        (("inspect", str(tmp_path / "missing.body")), "no such message body"),
        (("inspect", "/dev/null"), "not a regular file"),
        (
            (
                "inspect",
                body,
                "--properties",
                str(_properties(tmp_path, "l.json", '{"application_properties": [1]}')),
            ),
            "application_properties must be a JSON object",
        ),
        (
            (
                "inspect",
                body,
                "--properties",
                str(_properties(tmp_path, "d.json", '{"delivery_count": "abc"}')),
            ),
            "delivery_count must be a whole number",
        ),
        (
            ("inspect", body, "--properties", str(_properties(tmp_path, "j.json", "{nope"))),
            "not a JSON properties file",
        ),
        (("export", "--output", str(tmp_path)), "is a folder"),
        (("export", "--output", "/dev/full"), "not a regular file"),
    ]
    _cli("run", str(SAMPLES / "json-create-bankaccount.body"), db=db)
    for args, says in cases:
        done = _cli(*args, db=db, check=False)
        assert done.returncode == 2, (args, done.stderr)
        assert says in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert Path("/dev/full").is_char_device()  # the export left the device alone


def test_reading_a_store_that_is_not_there_creates_nothing(tmp_path):
    typo = tmp_path / "typo" / "audit.sqlite3"
    done = _cli("entries", db=typo, check=False)
    assert done.returncode == 2  # unavailable, as for every command (1 means findings)
    assert "no SQLite audit store at" in done.stderr
    assert not typo.parent.exists()


BAD_SETTINGS = [
    ("AUDIT_STORE", "mongo", "'sqlite' or 'table'"),
    ("AUDIT_SQLITE_BUSY_TIMEOUT", "-1", "greater than 0"),
    ("AUDIT_LOCK_RENEWAL_SECONDS", "0", "greater than 0"),
    ("AUDIT_STORE_RETRY_SECONDS", "forever", "valid number"),
    ("AUDIT_STORE_RETRY_MAX_DELAY", "0", "greater than 0"),
    ("AUDIT_TABLE_NAME", "1bad", "pattern"),
    ("ALLOWED_ORGANIZATION_IDS", "not-a-guid", "UUID"),
    ("AUDIT_REDACT_COLUMNS", None, None),  # any text is a column list: nothing can be bad
    ("AUDIT_MAX_BODY_BYTES", "abc", "valid integer"),
    ("AUDIT_MAX_NESTING_DEPTH", "0", "greater than 0"),
]


@pytest.mark.parametrize(("variable", "bad", "says"), [b for b in BAD_SETTINGS if b[1]])
def test_a_bad_setting_is_one_line_naming_the_variable_and_value(tmp_path, variable, bad, says):
    done = run_cli("inspect", str(SAMPLES / "json-delete.body"), env={variable: bad}, check=False)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1, done.stderr
    assert f"{variable}={bad!r}" in done.stderr
    assert says in done.stderr
    assert "Traceback" not in done.stderr


def test_arguments_are_checked_with_a_hint(tmp_path):
    db = tmp_path / "a.sqlite3"
    _cli("run", str(SAMPLES / "json-create-bankaccount.body"), db=db)
    guid = _cli("entries", "--regarding", "not-a-guid", db=db, check=False)
    assert guid.returncode == 2
    assert "'not-a-guid' is not a GUID" in guid.stderr
    when = _cli("entries", "--since", "yesterday", db=db, check=False)
    assert "use ISO-8601, e.g. 2024-11-26" in when.stderr
    braces = _cli("entries", "--regarding", "{8E5F1A2B-6C7D-EF11-BFE3-6045BD0C1A22}", db=db)
    assert len(braces.stdout.splitlines()) == 1  # piped: one JSON line per entry


def test_the_installed_command_works_from_any_folder(tmp_path):
    command = Path(sys.executable).parent / "psaudit"
    assert command.exists(), "make install installs psaudit into the venv"
    env = {**os.environ, "AUDIT_SQLITE_PATH": str(tmp_path / "a.sqlite3"), "COLUMNS": "200"}
    run = subprocess.run(
        [str(command), "run"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert "5 accepted, 2 rejected, 1 ignored, 1 dead-lettered" in run.stdout  # bundled samples
    for args in (["entries"], ["export"], ["inspect", str(SAMPLES / "json-delete.body")]):
        done = subprocess.run(
            [str(command), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, (args, done.stderr)


def test_at_80_columns_the_table_keeps_ids_whole_and_piped_output_is_json_lines(tmp_path):
    db = tmp_path / "a.sqlite3"
    _cli("run", db=db)
    narrow = run_cli(
        "entries", "--format", "table", env={"AUDIT_SQLITE_PATH": str(db), "COLUMNS": "80"}
    )
    lines = narrow.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "…" not in narrow.stdout
    assert "1b9e7c4d-2a3f-ef11-9f89-000d3a5c2b71" in narrow.stdout  # whole: copyable
    piped = _cli("entries", db=db).stdout.splitlines()
    assert len(piped) == 7
    assert {json.loads(line)["verdict"] for line in piped} == {"accepted", "rejected"}


def test_entries_applies_regarding_and_session_together(tmp_path):
    from shared.pipeline import Pipeline
    from shared.stores.sqlite import SqliteAuditStore
    from tests.entries import synthetic_message

    bank = "8e5f1a2b-6c7d-ef11-bfe3-6045bd0c1a22"
    db = tmp_path / "audit.sqlite3"
    store = SqliteAuditStore(db)
    Pipeline(store).handle([synthetic_message(n, regarding=bank) for n in range(3)])
    session = store.by_regarding(bank).entries[1].processsession_id
    store.close()
    env = {"AUDIT_SQLITE_PATH": str(db)}
    both = run_cli(
        "entries", "--regarding", bank, "--session", session, "--format", "jsonl", env=env
    )
    assert [json.loads(line)["processsession_id"] for line in both.stdout.splitlines()] == [session]


def test_since_after_until_is_an_error_not_an_empty_answer(tmp_path):
    env = {"AUDIT_SQLITE_PATH": str(tmp_path / "a.sqlite3")}
    run_cli("run", env=env)
    for command in (["entries"], ["export"]):
        done = run_cli(
            *command, "--since", "2025-01-02", "--until", "2025-01-01", env=env, check=False
        )
        assert done.returncode == 2
        assert "is not earlier than --until" in done.stderr


def test_dlq_replay_refuses_an_unknown_reason_and_lists_the_known_ones():
    done = run_cli(
        "dlq",
        "replay",
        "--queue",
        "q",
        "--reason",
        "malformed_jsn",
        check=False,
        env={"SERVICEBUS_CONNECTION_STRING": ""},
    )
    assert done.returncode == 2
    assert "malformed_json" in done.stderr
    assert "MaxDeliveryCountExceeded" in done.stderr


def test_version():
    done = run_cli("--version")
    assert done.stdout.startswith("psaudit ")


def test_a_reader_piped_into_head_ends_quietly(tmp_path):
    """The pipe closes after a few bytes of a long output: no 'Broken pipe' error, no
    traceback, exit 0 (the reader's own status, through bash's PIPESTATUS)."""
    import sys

    from shared.pipeline import Pipeline
    from shared.stores.sqlite import SqliteAuditStore
    from tests.entries import synthetic_message

    db = tmp_path / "audit.sqlite3"
    store = SqliteAuditStore(db)
    Pipeline(store).handle([synthetic_message(n) for n in range(400)])  # > a pipe's buffer
    store.close()
    for command in ("export", "entries --format jsonl", "timeline --session " + _a_session(db)):
        done = subprocess.run(
            [
                "bash",
                "-c",
                f"{sys.executable} -m shared.cli --db {db} {command} | head -c 10 >/dev/null;"
                " echo status=${PIPESTATUS[0]}",
            ],
            cwd=Path(__file__).resolve().parent.parent,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert "status=0" in done.stdout, (command, done.stdout, done.stderr)
        assert "Broken pipe" not in done.stderr
        assert "Traceback" not in done.stderr


def _a_session(db: Path) -> str:
    import sqlite3

    with sqlite3.connect(db) as read:
        return str(read.execute("SELECT processsession_id FROM audit_entries").fetchone()[0])


def test_one_entry_by_id_and_filters_by_user_and_column(tmp_path):
    import json

    db = tmp_path / "audit.sqlite3"
    _cli("run", db=db)
    everything = [json.loads(line) for line in _cli("export", db=db).stdout.splitlines()]
    first = everything[0]
    one = _cli("entries", "--id", first["entry_id"].upper(), "--format", "jsonl", db=db)
    assert [json.loads(line)["entry_id"] for line in one.stdout.splitlines()] == [first["entry_id"]]
    missing = _cli("entries", "--id", "00000000-0000-0000-0000-000000000001", db=db, check=False)
    assert missing.returncode == 1
    assert "no audit entry with id" in missing.stderr
    by_user = _cli("export", "--user", first["user_id"], db=db).stdout.splitlines()
    assert by_user
    assert all(first["user_id"] in (e := json.loads(line))["user_id"] + e["initiating_user_id"]
               for line in by_user)  # fmt: skip
    by_column = [
        json.loads(line)
        for line in _cli("export", "--column", "COMMENTS", db=db).stdout.splitlines()
    ]
    assert by_column
    assert all(any(c["column"] == "comments" for c in e["changes"]) for e in by_column)
    assert len(by_column) < len(everything)
    regarding = first["regarding_id"]
    by_account = _cli("export", "--regarding", regarding, db=db).stdout.splitlines()
    assert {json.loads(line)["regarding_id"] for line in by_account} == {regarding}


def test_verify_names_each_problems_entry_by_date_session_and_account(tmp_path):
    import json
    import sqlite3

    key = "ab" * 32
    db = tmp_path / "audit.sqlite3"
    env = {"AUDIT_TRAIL_KEY": key, "AUDIT_SQLITE_PATH": str(db)}
    run_cli("run", env=env)
    run_cli("seal", "--now", env=env)
    raw = sqlite3.connect(db, isolation_level=None)
    raw.execute("DROP TRIGGER audit_entries_append_only_update")
    entry_id, session, regarding = raw.execute(
        "SELECT entry_id, processsession_id, regarding_id FROM audit_entries "
        "WHERE regarding_id IS NOT NULL LIMIT 1"
    ).fetchone()
    raw.execute(
        "UPDATE audit_entries SET entry = replace(entry, 'Bank', 'Blank') WHERE entry_id = ?",
        [entry_id],
    )
    raw.close()
    text = run_cli("verify", "--format", "table", env=env, check=False)
    assert text.returncode == 1
    line = next(line for line in text.stdout.splitlines() if entry_id in line)
    assert session in line
    assert regarding in line
    assert "UTC" in line or "Z" in line
    report = json.loads(run_cli("verify", "--format", "json", env=env, check=False).stdout)
    named = next(p for p in report["problems"] if p.get("entry_id") == entry_id)
    assert named["entry"]["processsession_id"] == session
    assert named["entry"]["regarding_id"] == regarding


def test_one_trail_wherever_you_stand(tmp_path):
    """Without AUDIT_SQLITE_PATH the trail is the user's (XDG_DATA_HOME), whatever the current
    folder: run from one folder, read from another, the same entries; summaries name it."""
    import os
    import sys

    data = tmp_path / "data"
    env = {**os.environ, "XDG_DATA_HOME": str(data), "COLUMNS": "200"}
    env.pop("AUDIT_SQLITE_PATH", None)
    elsewhere = tmp_path / "somewhere" / "else"
    elsewhere.mkdir(parents=True)

    def psaudit(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "shared.cli", *args],
            cwd=cwd,
            env={**env, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )

    ran = psaudit("run", cwd=tmp_path)
    trail = data / "psaudit" / "audit.sqlite3"
    assert str(trail) in ran.stdout  # the summary says which trail
    assert trail.is_file()
    exported = psaudit("export", cwd=elsewhere).stdout.splitlines()
    assert len(exported) == 7
    assert not (tmp_path / ".data").exists()
    assert not (elsewhere / ".data").exists()
