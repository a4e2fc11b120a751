"""The timeline in the terminal and CSV export, as a user runs them, with hostile stored
values: the same words at 80 columns as at any width (piped and in a pseudo-terminal), changes
as ``column: old → new``, CSV cells a spreadsheet will not run."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from shared.events.entry import Change
from shared.stores.sqlite import SqliteAuditStore
from shared.trail.timeline import neutralise
from tests.conftest import SAMPLES, run_cli
from tests.entries import make_entry
from tests.terminal import in_a_terminal

BANK = "8e5f1a2b-6c7d-ef11-bfe3-6045bd0c1a22"
SESSION = "1b9e7c4d-2a3f-ef11-9f89-000d3a5c2b71"
T0 = datetime(2026, 11, 30, 8, 5, tzinfo=UTC)
HOSTILE = [
    "<script>document.title='pwned'</script>",
    '<img src=x onerror="document.title=1">',
    '=HYPERLINK("http://evil.example","click")',
    "-",
    "+1-2",
    "@SUM(A1)",
    "\tTabbed",
    "\rCarriage",
    "line one\nline two",
    "right\u202eto left",
    "Supercalifragilisticexpialidocious" * 4,
    "sample_bankaccount-with-hyphens-that-must-not-break-anywhere-at-all",
]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A trail of one bank account: an accepted Create and Updates carrying hostile text."""
    store = SqliteAuditStore(tmp_path / "audit.sqlite3")
    entries = [
        make_entry(
            1,
            regarding=BANK,
            session=SESSION,
            when=T0,
            processsession_name="Bank Account Verification",
            message_name="Update",
            changes=[
                Change(
                    column="statuscode",
                    old={"value": 1, "label": "In Progress"},
                    new={"value": 4, "label": "Completed"},
                    old_known=True,
                ),
                Change(
                    column="regardingobjectid",
                    old=None,
                    new={"logical_name": "sample_bankaccount", "id": BANK, "name": "Savings"},
                    old_known=True,
                ),
                Change(column="comments", old=None, new="Confirmed by phone", old_known=False),
            ],
        ),
        *(
            make_entry(
                10 + n,
                regarding=BANK,
                when=T0 + timedelta(minutes=n + 1),
                processsession_name=text,
                message_name="Update",
                changes=[Change(column="comments", old=text, new=f"{text} again", old_known=True)],
            )
            for n, text in enumerate(HOSTILE)
        ),
    ]
    store.write(entries)
    store.close()
    return tmp_path / "audit.sqlite3"


def _timeline(db: Path, columns: int | None, *args: str) -> str:
    env = {"COLUMNS": str(columns)} if columns else {}
    done = subprocess.run(
        [sys.executable, "-m", "shared.cli", "--db", str(db), "timeline", *args],
        cwd=SAMPLES.parent,
        env={k: v for k, v in os.environ.items() if k != "COLUMNS"} | env,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


def _in_a_terminal(db: Path, columns: int, *args: str) -> str:
    """The timeline in a pseudo-terminal of ``columns`` x 50, as the terminal got it."""
    return in_a_terminal(columns, ["--db", str(db), "timeline", *args])


def test_the_wide_timeline_shows_each_event_and_change_on_one_line(db: Path) -> None:
    text = _timeline(db, 1000, BANK)
    lines = text.splitlines()
    assert lines[0] == f"timeline of bank account {BANK}"
    assert "2026-11-30 08:05:00 UTC  Update  accepted" in lines
    assert f"  session: Bank Account Verification {SESSION}" in lines
    assert "  statuscode: In Progress \u2192 Completed" in lines
    assert f"  regardingobjectid: (empty) \u2192 Savings (sample_bankaccount {BANK})" in lines
    # an old value the pre-image did not hold is not "empty": it was not captured
    assert "  comments: (not captured) \u2192 Confirmed by phone" in lines
    user = make_entry(1).user_id
    assert f"  user: {user}" in lines
    assert lines[-1] == f"{1 + len(HOSTILE)} events"
    # hostile text stays one line, with its controls made visible
    assert "  comments: line one\\nline two \u2192 line one\\nline two again" in lines
    assert "right\\u202eto left" in text
    assert "\u202e" not in text
    assert "\x1b" not in text  # plain text when piped


@pytest.mark.parametrize("width", [80, 60])
def test_a_narrow_pipe_breaks_lines_between_words_only(db: Path, width: int) -> None:
    wide, narrow = _timeline(db, 1000, BANK), _timeline(db, width, BANK)
    assert narrow.split() == wide.split()
    long_words = [w for w in wide.split() if len(w) > width]
    for line in narrow.splitlines():
        assert len(line) <= width or any(w in line for w in long_words), line


def test_a_pseudo_terminal_of_80_columns_shows_the_same_words(db: Path) -> None:
    wide = _timeline(db, 1000, BANK)
    shown = _in_a_terminal(db, 80, BANK)
    assert shown.split() == wide.split()
    assert max(len(line) for line in shown.splitlines() if "Supercali" not in line) <= 80


def test_the_session_timeline_and_its_filters(db: Path) -> None:
    text = _timeline(db, None, "--session", SESSION)
    assert text.splitlines()[0] == f"timeline of session {SESSION}"
    assert text.count(" UTC  ") == 1
    rejected = run_cli("--db", str(db), "timeline", BANK, "--verdict", "rejected", check=False)
    assert rejected.returncode == 1
    assert "no audit entries" in rejected.stderr
    both = run_cli("--db", str(db), "timeline", BANK, "--session", SESSION, check=False)
    assert both.returncode == 2


def test_timeline_as_jsonl_and_csv(db: Path) -> None:
    jsonl = _timeline(db, None, BANK, "--format", "jsonl").splitlines()
    assert len(jsonl) == 1 + len(HOSTILE)
    rows = list(csv.reader(io.StringIO(_timeline(db, None, BANK, "--format", "csv"))))
    assert rows[0][0] == "operation_created_on"
    assert len(rows) == 2 + len(HOSTILE)


def test_csv_export_neutralises_every_formula_cell_and_keeps_its_text(db: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "shared.cli", "--db", str(db), "export", "--format", "csv"],
        cwd=SAMPLES.parent,
        capture_output=True,
        check=True,
    )  # bytes: a text pipe would turn the CR of a cell into a newline
    rows = list(csv.DictReader(io.StringIO(done.stdout.decode(), newline="")))
    assert len(rows) == 1 + len(HOSTILE)
    for row in rows:
        for cell in row.values():
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), cell
    names = {row["processsession_name"] for row in rows}
    for text in HOSTILE:
        expected = "'" + text if text.startswith(("=", "+", "-", "@", "\t", "\r")) else text
        assert expected in names, text
    assert "'-" in names  # a lone minus too


def test_neutralise() -> None:
    assert neutralise("=1+1") == "'=1+1"
    assert neutralise("-") == "'-"
    assert neutralise("\rx") == "'\rx"
    assert neutralise("plain = text") == "plain = text"
    assert neutralise("") == ""


def test_export_output_refuses_a_missing_folder_and_an_existing_file(
    db: Path, tmp_path: Path
) -> None:
    missing = run_cli(
        "--db", str(db), "export", "--output", str(tmp_path / "no" / "x.jsonl"), check=False
    )
    assert missing.returncode == 2
    assert "does not exist" in missing.stderr
    target = tmp_path / "x.csv"
    assert (
        run_cli("--db", str(db), "export", "--format", "csv", "--output", str(target)).returncode
        == 0
    )
    again = run_cli("--db", str(db), "export", "--output", str(target), check=False)
    assert again.returncode == 2
    assert "--force" in again.stderr
    assert target.read_text().startswith("operation_created_on,")  # untouched
    forced = run_cli("--db", str(db), "export", "--output", str(target), "--force")
    assert forced.returncode == 0
    assert target.read_text().startswith("{")


def test_db_is_taken_after_the_command_too(db: Path) -> None:
    after = run_cli("entries", "--db", str(db), "--format", "jsonl").stdout
    before = run_cli("--db", str(db), "entries", "--format", "jsonl").stdout
    assert after == before
    assert len(after.splitlines()) == 1 + len(HOSTILE)
