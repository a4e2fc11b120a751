"""The timeline page: served by ``psaudit serve`` and read in a real browser (Debian's
chromium, driven by Playwright for Python, no browser download), and served by the Functions
app inside the real worker library. Hostile stored values must show as text and run nothing."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from devtools.processes import free_port
from shared.events.entry import Change
from shared.stores.sqlite import SqliteAuditStore
from shared.verdicts import Reason, Verdict
from tests.conftest import SAMPLES
from tests.entries import make_entry

BANK = "8e5f1a2b-6c7d-ef11-bfe3-6045bd0c1a22"
SESSION = "1b9e7c4d-2a3f-ef11-9f89-000d3a5c2b71"
T0 = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
IMG = "<img src=x onerror=\"document.title='pwned';window.__pwned=1\">"
SCRIPT = "<script>window.__pwned=2</script>"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
BROWSER_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def seed(path: Path) -> None:
    """Twelve events of one bank account: accepted and rejected, two with hostile text."""
    store = SqliteAuditStore(path)
    entries = [
        make_entry(
            n,
            regarding=BANK,
            session=SESSION if n == 0 else None,
            when=T0 + timedelta(hours=n),
            processsession_name={3: IMG, 4: SCRIPT}.get(n, f"Dialog {n}"),
            verdict=Verdict.REJECTED if n % 3 == 2 else Verdict.ACCEPTED,
            reason=Reason.REGARDING_NOT_IN_MESSAGE if n % 3 == 2 else None,
            message_name="Update",
            changes=[
                Change(
                    column="comments",
                    old=None,
                    new=SCRIPT if n == 5 else f"note {n}",
                    old_known=False,
                ),
                Change(
                    column="statuscode",
                    old={"value": 1, "label": "In Progress"},
                    new={"value": 4, "label": "Completed"},
                    old_known=True,
                ),
            ],
        )
        for n in range(12)
    ]
    store.write(entries)
    store.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[str]:
    """``psaudit --db PATH serve --port P`` as a user starts it; its base URL."""
    path = tmp_path_factory.mktemp("serve") / "audit.sqlite3"
    seed(path)
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "shared.cli", "--db", str(path), "serve", "--port", str(port)],
        cwd=SAMPLES.parent,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(f"{base}/", timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    yield base
    process.terminate()
    process.wait(timeout=10)
    assert process.returncode == 0


def _get(url: str) -> tuple[int, dict[str, str], str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read().decode()


def test_the_page_needs_no_key_on_loopback_and_has_a_strict_policy(served: str) -> None:
    status, headers, html = _get(f"{served}/api/bankaccounts/{BANK}/timeline")
    assert status == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    policy = headers["Content-Security-Policy"]
    script = re.search(r"script-src ([^;]*)", policy)
    assert script is not None
    assert "'unsafe-inline'" not in script.group(1)
    assert "*" not in script.group(1)
    assert "<script" not in html.lower()
    assert re.search(r"\son\w+\s*=", html) is None
    assert "javascript:" not in html.lower()
    assert "Dialog 1" in html
    assert "&lt;img src=x onerror&#61;" in html


def test_bad_ids_and_filters_are_pages_that_say_why(served: str) -> None:
    status, _, html = _get(f"{served}/api/bankaccounts/not-a-guid/timeline")
    assert status == 400
    assert "is not a GUID" in html
    status, _, html = _get(f"{served}/api/bankaccounts/{BANK}/timeline?limit=0")
    assert status == 400
    missing = "00000000-0000-0000-0000-00000000abcd"
    status, _, html = _get(f"{served}/api/processsessions/{missing}/timeline")
    assert status == 404
    assert "No audit entries" in html
    status, _, body = _get(f"{served}/api/bankaccounts/{BANK}/audit?limit=2")
    assert status == 200
    assert '"continuation"' in body


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        yield launched
        launched.close()


def test_in_chromium_hostile_values_show_as_text_and_run_nothing(served: str, browser) -> None:
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{served}/api/bankaccounts/{BANK}/timeline?limit=20")
    assert page.title() == "Bank account timeline"
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.locator("img").count() == 0
    assert page.locator("script").count() == 0
    text = page.inner_text("main")
    assert IMG in text
    assert SCRIPT in text
    assert errors == []
    page.close()


def test_in_chromium_the_reader_pages_and_filters(served: str, browser) -> None:
    page = browser.new_page()
    page.goto(f"{served}/api/bankaccounts/{BANK}/timeline?limit=5")
    first = page.locator("ol.timeline > li").all_inner_texts()
    assert len(first) == 5
    assert "Dialog 11" in first[0]  # newest first
    assert "statuscode" in first[0]
    assert "In Progress" in first[0]
    assert "(not captured)" in first[0]  # never "(empty)" for an old value nobody captured
    assert "12 events" in page.inner_text("p.count")  # the total
    assert "page 1 of 3" in page.inner_text("p.count")
    assert page.get_by_role("link", name="Previous page").count() == 0
    page.get_by_role("link", name="Next page").click()
    second = page.locator("ol.timeline > li").all_inner_texts()
    assert len(second) == 5
    assert "Dialog 6" in second[0]
    page.get_by_role("link", name="Previous page").click()
    assert "Dialog 11" in page.locator("ol.timeline > li").all_inner_texts()[0]
    page.get_by_role("link", name="oldest first").click()  # the order switch
    assert "Dialog 0" in page.locator("ol.timeline > li").all_inner_texts()[0]
    # filters apply before paging: every rejected event, on one page, counted
    page.goto(f"{served}/api/bankaccounts/{BANK}/timeline?limit=2")
    page.get_by_label("Verdict").select_option("rejected")
    page.get_by_label("From (UTC)").fill("2026-11-30")
    page.get_by_role("button", name="Show").click()
    assert "verdict=rejected" in page.url
    verdicts = page.locator("span.verdict").all_inner_texts()
    assert verdicts == ["rejected"] * 2
    assert "4 events match the filters (of 12)" in page.inner_text("p.count")
    page.get_by_role("link", name="Next page").click()
    assert page.locator("span.verdict").all_inner_texts() == ["rejected"] * 2
    # by column: only events that changed it
    page.goto(f"{served}/api/bankaccounts/{BANK}/timeline?column=nosuchcolumn")
    assert page.locator("ol.timeline > li").count() == 0
    assert "0 events match the filters (of 12)" in page.inner_text("p.count")
    # from the bank account to a session's timeline and back
    page.goto(f"{served}/api/bankaccounts/{BANK}/timeline")
    page.get_by_role("link", name="its timeline").last.click()
    assert f"/api/processsessions/{SESSION}/timeline" in page.url
    assert page.locator("ol.timeline > li").count() == 1
    page.close()


@pytest.mark.parametrize(("name", "width", "height"), [("phone", 390, 844), ("desktop", 1280, 900)])
def test_in_chromium_the_page_fits_a_phone_and_a_desktop(
    served: str, browser, tmp_path: Path, name: str, width: int, height: int
) -> None:
    page = browser.new_page(viewport={"width": width, "height": height})
    page.goto(f"{served}/api/bankaccounts/{BANK}/timeline?limit=3")
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    shot = tmp_path / f"timeline-{name}.png"
    page.screenshot(path=str(shot), full_page=False)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page.close()


def test_the_functions_app_serves_the_page_inside_the_worker(tmp_path: Path) -> None:
    from tests.functions_host.host import FunctionsHost
    from tests.test_functions_runtime import sqlite_env

    seed(tmp_path / "audit.sqlite3")
    env = sqlite_env(tmp_path, DATAVERSE_URL="https://contoso.crm.dynamics.com")
    with FunctionsHost(env, tmp_path / "worker.log") as host:
        host.index()
        status, headers, html = host.http(
            "bankaccount_timeline",
            f"http://localhost/api/bankaccounts/{BANK}/timeline?code=KEY",
            params={"id": BANK},
            query={"code": "KEY", "limit": "4", "order": "oldest"},
        )
    assert status == 200
    assert "script-src 'none'" in headers["Content-Security-Policy"]
    assert "Dialog 6" not in html  # four per page
    assert "&lt;img src=x onerror&#61;" in html
    assert (
        f"/api/bankaccounts/{BANK}/timeline?code=KEY&amp;order=oldest&amp;limit=4&amp;page=2"
        in html
    )
    assert (
        "https://contoso.crm.dynamics.com/main.aspx?pagetype=entityrecord&amp;etn=sample_bankaccount"
        in html
    )
