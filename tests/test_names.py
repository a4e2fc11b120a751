"""Names instead of GUIDs, read from Dataverse (the Web API double serves Microsoft's documented
shapes for systemusers, EntityDefinitions attributes and option sets, and a bank account's
primary name), cached, never required."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.dataverse.names import NameReader
from shared.dataverse.webapi import WebApi
from shared.events.entry import AuditEntry, Change
from shared.stores.sqlite import SqliteAuditStore
from shared.trail.reading import TrailView
from shared.trail.timeline import timeline_text, write_csv
from shared.web.page import timeline_page
from tests.conftest import run_cli
from tests.dataverse_double import TOKEN, DataverseDouble
from tests.entries import make_entry

ROOT = Path(__file__).resolve().parent.parent
BANK = "8e5f1a2b-6c7d-ef11-bfe3-6045bd0c1a22"
USER = "4f1c2d3e-5a6b-ef11-9f89-000d3a5c2b71"


@pytest.fixture
def double() -> Iterator[DataverseDouble]:
    with DataverseDouble() as started:
        started.users[USER] = "Maria Garcia"
        started.metadata["processsession"] = {
            "DisplayNames": {"statuscode": "Status Reason", "comments": "Comments"},
            "Choices": {("StatusAttributeMetadata", "statuscode"): {2: "In Progress", 4: "Done"}},
        }
        started.metadata["sample_bankaccount"] = {
            "PrimaryNameAttribute": "sample_name",
            "EntitySetName": "sample_bankaccounts",
        }
        started.records["sample_bankaccounts"] = {BANK: {"sample_name": "Contoso Savings 0042"}}
        yield started


def _entries() -> list[AuditEntry]:
    return [
        make_entry(
            n,
            regarding=BANK,
            user_id=USER,
            initiating_user_id=USER,
            message_name="Update",
            regarding_name=None,
            changes=[
                Change(column="statuscode", old={"value": 2}, new={"value": 4}, old_known=True),
                Change(column="comments", old=None, new="checked", old_known=False),
            ],
        )
        for n in range(3)
    ]


def test_the_timeline_shows_names_labels_and_the_accounts_name(double) -> None:
    names = NameReader(WebApi(double.url, lambda: TOKEN))
    text = "\n".join(timeline_text(_entries(), 1000, "t", names))
    assert f"user: Maria Garcia ({USER})" in text  # the id stays beside the name
    assert "Status Reason (statuscode): In Progress \u2192 Done" in text
    assert "Comments (comments): (not captured) \u2192 checked" in text
    assert f"regarding: sample_bankaccount {BANK} Contoso Savings 0042" in text
    asked = [s.path for s in double.seen]
    # one request per distinct user and per metadata object, whatever the number of events
    assert sum("systemusers(" in p for p in asked) == 1
    assert sum("/Attributes?" in p for p in asked) == 1
    assert sum("StatusAttributeMetadata" in p for p in asked) == 1
    assert sum("sample_bankaccounts(" in p for p in asked) == 1


def test_the_csv_and_the_page_show_them_too(double, tmp_path) -> None:
    names = NameReader(WebApi(double.url, lambda: TOKEN))
    out = io.StringIO()
    write_csv(_entries(), out, names)
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert rows[0]["user_name"] == "Maria Garcia"
    assert rows[0]["regarding_name"] == "Contoso Savings 0042"
    assert "Status Reason (statuscode): In Progress" in rows[0]["changes"]
    store = SqliteAuditStore(tmp_path / "audit.sqlite3")
    store.write(_entries())
    page = timeline_page(store, TrailView.BANK_ACCOUNT, BANK, {}, names=names)
    store.close()
    assert "Maria Garcia" in page.body
    assert "Status Reason" in page.body
    assert "Contoso Savings 0042" in page.body


def test_an_unreachable_dataverse_leaves_ids_and_says_so_once(tmp_path) -> None:
    from devtools.processes import free_port

    said: list[str] = []
    names = NameReader(
        WebApi(f"http://127.0.0.1:{free_port()}", lambda: TOKEN, budget=2),
        on_unavailable=said.append,
    )
    text = "\n".join(timeline_text(_entries(), 1000, "t", names))
    assert f"user: {USER}" in text
    assert "statuscode: 2 \u2192 4" in text
    assert len(said) == 1


def test_the_command_reads_names_only_with_dataverse_url(double, tmp_path) -> None:
    store = SqliteAuditStore(tmp_path / "audit.sqlite3")
    store.write(_entries())
    store.close()
    env = {"AUDIT_SQLITE_PATH": str(tmp_path / "audit.sqlite3")}
    plain = run_cli("timeline", BANK, env=env, check=False)
    assert plain.returncode == 0, plain.stderr
    assert "Maria Garcia" not in plain.stdout
    assert double.seen == []  # without DATAVERSE_URL, no request
    named = run_cli(
        "timeline",
        BANK,
        env={**env, "DATAVERSE_URL": double.url, "DATAVERSE_ACCESS_TOKEN": TOKEN},
        check=False,
    )
    assert named.returncode == 0, named.stderr
    assert "Maria Garcia" in named.stdout
    assert "Contoso Savings 0042" in named.stdout
    refused = run_cli(
        "timeline",
        BANK,
        env={**env, "DATAVERSE_URL": double.url, "DATAVERSE_ACCESS_TOKEN": "x"},
        check=False,
    )
    assert refused.returncode == 0  # names are never required
    assert refused.stderr.count("names from Dataverse are unavailable") == 1
    assert USER in refused.stdout


def test_in_chromium_the_page_shows_names_newest_first(double, tmp_path) -> None:
    """``psaudit serve`` with DATAVERSE_URL set, read in Debian's chromium: the user's name,
    the column's display name and the account's name, newest first."""
    from playwright.sync_api import sync_playwright

    from devtools.processes import free_port
    from tests.test_web_page import BROWSER_ARGS, CHROMIUM

    store = SqliteAuditStore(tmp_path / "audit.sqlite3")
    store.write(_entries())
    store.close()
    port = free_port()
    env = {
        **os.environ,
        "AUDIT_SQLITE_PATH": str(tmp_path / "audit.sqlite3"),
        "DATAVERSE_URL": double.url,
        "DATAVERSE_ACCESS_TOKEN": TOKEN,
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "shared.cli", "serve", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stderr is not None
        assert "serving" in server.stderr.readline()
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{port}/api/bankaccounts/{BANK}/timeline")
            events = page.locator("ol.timeline > li").all_inner_texts()
            assert len(events) == 3
            assert "Maria Garcia" in events[0]
            assert "Status Reason" in events[0]
            assert "Done" in events[0]  # the option set's label: the message carried none
            assert "Contoso Savings 0042" in events[0]
            times = page.locator("ol.timeline time").evaluate_all(
                "nodes => nodes.map(n => n.getAttribute('datetime'))"
            )
            assert times == sorted(times, reverse=True)  # newest first
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=10)
