"""At 80 columns nothing is cut: every table-like command, in a pseudo-terminal of 80 columns,
shows the same ids whole and the same words unbroken as in a wide one, and no line passes
the terminal's width (a narrow terminal gets stacked blocks instead of a table)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.dataverse_double import TOKEN, DataverseDouble
from tests.terminal import in_a_terminal

ROOT = Path(__file__).resolve().parent.parent
KEY = "cd" * 32
GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")
BORDERS = str.maketrans("", "", "│┃┏┓┗┛┡┩┠┨━─┳┻╇╈┼╋┌┐└┘├┤┬┴═║╔╗╚╝╠╣╦╩╬")


def _in_a_terminal(columns: int, args: list[str], env: dict[str, str]) -> str:
    """``psaudit ARGS`` at ``columns``, its terminal escapes removed."""
    return ESCAPES.sub("", in_a_terminal(columns, args, env))


def _words(text: str) -> list[str]:
    return sorted(word.rstrip(":") for word in text.translate(BORDERS).split())


@pytest.fixture(scope="module")
def trail(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("narrow")
    env = {"AUDIT_SQLITE_PATH": str(folder / "audit.sqlite3"), "AUDIT_TRAIL_KEY": KEY}
    subprocess.run(
        [sys.executable, "-m", "shared.cli", "run"],
        cwd=ROOT,
        env={**os.environ, **env},
        check=True,
        capture_output=True,
    )
    return env


@pytest.mark.parametrize(
    "args",
    [
        ["entries"],
        ["run"],
        ["verify", "--format", "table"],
        ["check-store", "--format", "table"],
        ["seal", "--now"],
    ],
)
def test_at_80_columns_ids_are_whole_and_no_line_passes_the_width(trail, args) -> None:
    wide = _in_a_terminal(250, args, trail)
    narrow = _in_a_terminal(80, args, trail)
    assert narrow.strip(), "the command printed nothing"
    for line in narrow.splitlines():
        assert len(line) <= 80, line
    assert set(GUID.findall(narrow)) == set(GUID.findall(wide))
    assert "…" not in narrow
    if args[0] not in {"run", "seal"}:  # these write: two runs print different counts, heads
        # every word of the wide output, unbroken (the stacked layout adds "column:" labels)
        assert set(_words(wide)) <= set(_words(narrow))


def test_reconcile_at_80_columns_keeps_every_session_id_whole(tmp_path) -> None:
    from datetime import UTC, datetime, timedelta

    from shared.stores.sqlite import SqliteAuditStore

    with DataverseDouble() as double:
        sessions = [
            double.add_session(modifiedon=datetime(2026, 12, 1, tzinfo=UTC) + timedelta(hours=n))
            for n in range(3)
        ]
        SqliteAuditStore(tmp_path / "audit.sqlite3").close()
        env = {
            "AUDIT_SQLITE_PATH": str(tmp_path / "audit.sqlite3"),
            "DATAVERSE_URL": double.url,
            "DATAVERSE_ACCESS_TOKEN": TOKEN,
        }
        args = ["reconcile", "--since", "2026-12-01", "--until", "2026-12-02"]
        narrow = _in_a_terminal(80, [*args, "--format", "table"], env)
    for line in narrow.splitlines():
        assert len(line) <= 80, line
    assert set(sessions) <= set(GUID.findall(narrow))
