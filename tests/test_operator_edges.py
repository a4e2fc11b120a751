"""The operator's rough edges (issue 25): help on every option with an example per command,
warnings from run, dlq peek as JSON lines, the worker's batch lines at INFO."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from shared.cli.main import build_parser
from tests.conftest import SAMPLES, load_samples, run_cli


def _walk(parser: argparse.ArgumentParser, path: str) -> list[str]:
    problems = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                if "Example" not in (sub.description or ""):
                    problems.append(f"{path} {name}: no example")
                problems += _walk(sub, f"{path} {name}")
        elif not action.help and action.dest != "help":
            problems.append(f"{path}: {action.option_strings or action.dest} has no help")
    return problems


def test_every_option_has_help_and_every_command_an_example() -> None:
    assert _walk(build_parser(), "psaudit") == []


def test_run_warns_of_what_it_cannot_use_and_takes_a_content_type(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    loose = tmp_path / "loose"
    loose.mkdir()
    shutil.copy(SAMPLES / "json-create-bankaccount.body", loose / "a.body")
    shutil.copy(SAMPLES / "json-create-account.body", loose / "b.body")
    (loose / "b.properties.json").write_text('{"content_type": "application/json", "colour": 1}')
    db = str(tmp_path / "a.sqlite3")
    done = run_cli("--db", db, "run", str(empty), str(loose))
    assert f"{empty} holds no NAME.body message files" in done.stderr
    assert "a.body has no a.properties.json" in done.stderr
    assert "unknown key 'colour' is ignored" in done.stderr
    assert "1 dead-lettered" in done.stdout  # a.body: no content type
    typed = run_cli("--db", db, "run", "--content-type", "application/json", str(loose))
    assert "has no a.properties.json" not in typed.stderr
    assert "0 dead-lettered" in typed.stdout


def test_dlq_peek_as_json_lines_and_the_worker_says_each_batch(broker, tmp_path: Path) -> None:
    env = {
        "SERVICEBUS_CONNECTION_STRING": broker.connection_string,
        "AUDIT_SQLITE_PATH": str(tmp_path / "a.sqlite3"),
    }
    run_cli("send", "--queue", "cli-edges", str(SAMPLES), env=env)
    worker = run_cli("worker", "--queue", "cli-edges", "--until-idle", env=env)
    assert "INFO" in worker.stderr
    assert "worker on queue cli-edges" in worker.stderr
    assert "batch 1 from queue cli-edges: 9 message(s):" in worker.stderr
    assert "WARNING  worker on" not in worker.stderr
    assert "T" in worker.stderr.split()[0]  # an ISO-8601 time first: 2026-12-02T09:15:42Z
    peeked = run_cli("dlq", "peek", "--queue", "cli-edges", "--format", "jsonl", env=env)
    records = [json.loads(line) for line in peeked.stdout.splitlines()]
    malformed = load_samples()["malformed-truncated"].message.message_id
    assert [r["message_id"] for r in records] == [malformed]
    assert records[0]["dead_letter_reason"] == "malformed_json"


def test_every_relative_link_of_the_docs_resolves_inside_the_repository() -> None:
    import re

    root = SAMPLES.parent
    broken = []
    for page in [root / "README.md", root / "samples" / "README.md", *root.glob("docs/*.md")]:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if target.startswith(("http://", "https://", "#", "mailto:")):
                continue
            path = (page.parent / target.split("#", 1)[0]).resolve()
            if not path.is_relative_to(root) or not path.exists():
                broken.append(f"{page.relative_to(root)}: {target}")
    assert broken == []
