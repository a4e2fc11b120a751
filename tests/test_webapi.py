"""The Dataverse Web API client against the Web API double (tests/dataverse_double.py)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from devtools.processes import free_port
from shared.dataverse.sessions import read_session, sessions_modified
from shared.dataverse.webapi import (
    DataverseError,
    DataverseUnavailable,
    WebApi,
    environment_url,
    retry_after,
)
from tests.dataverse_double import TOKEN, DataverseDouble

T0 = datetime(2026, 12, 1, tzinfo=UTC)


@pytest.fixture
def double():
    with DataverseDouble() as started:
        yield started
    assert started.violations == []


def _api(double: DataverseDouble, **options) -> WebApi:
    return WebApi(double.url, lambda: TOKEN, **options)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("contoso.crm.dynamics.com", "needs a scheme and a host"),
        ("http://contoso.crm.dynamics.com", "cross the network in clear"),
        ("http://10.0.0.5:8080", "cross the network in clear"),
        ("ftp://contoso.crm.dynamics.com", "must be https://"),
        ("https://contoso.crm.dynamics.com/?x=1", "no query"),
    ],
)
def test_an_environment_url_must_be_https_unless_loopback(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        environment_url(url)


def test_loopback_http_and_https_are_taken() -> None:
    assert environment_url("http://127.0.0.1:8080/") == "http://127.0.0.1:8080"
    assert environment_url("http://localhost:1") == "http://localhost:1"
    assert environment_url("https://Contoso.crm.dynamics.com") == "https://Contoso.crm.dynamics.com"


def test_paging_follows_each_next_link_as_given_even_when_the_server_pages_smaller(
    double: DataverseDouble,
) -> None:
    for n in range(7):
        double.add_session(modifiedon=T0 + timedelta(minutes=n))
    double.server_page_size = 2  # asked for 3, the server pages by 2
    progress: list[int] = []
    rows = list(
        sessions_modified(
            _api(double), T0, T0 + timedelta(hours=1), page_size=3, on_page=progress.append
        )
    )
    assert [r.modified for r in rows] == [T0 + timedelta(minutes=n) for n in range(7)]
    assert progress == [2, 4, 6, 7]
    gets = [s for s in double.seen if s.method == "GET"]
    assert all(s.headers["Prefer"].startswith("odata.maxpagesize=3") for s in gets)
    assert "$skiptoken" not in gets[0].path
    assert all("$skiptoken=" in s.path for s in gets[1:])
    assert "modifiedon ge 2026-12-01T00:00:00Z and modifiedon lt 2026-12-01T01:00:00Z" in (
        gets[0].path.replace("%20", " ")
    )


def test_a_next_link_to_another_host_is_not_followed(double: DataverseDouble) -> None:
    api = _api(double)
    with pytest.raises(DataverseError, match="another host"):
        api.get("https://elsewhere.example/api/data/v9.2/processsessions")
    assert double.seen == []


def test_429_is_waited_out_for_its_retry_after_and_shown(double: DataverseDouble) -> None:
    session = double.add_session(modifiedon=T0, regarding=("sample_bankaccount", str(T0.year)))
    double.throttle(2, retry_after=1)
    waits: list[tuple[float, str]] = []
    row = read_session(_api(double, on_wait=lambda s, why: waits.append((s, why))), session)
    assert row is not None
    times = [s.at for s in double.seen]
    assert len(times) == 3
    assert times[1] - times[0] >= 1.0
    assert times[2] - times[1] >= 1.0
    assert [w[0] for w in waits] == [1.0, 1.0]
    assert "429" in waits[0][1]


def test_a_wait_past_the_budget_gives_up_at_once(double: DataverseDouble) -> None:
    double.throttle(1, retry_after=600)
    started = datetime.now(UTC)
    with pytest.raises(DataverseUnavailable, match="budget"):
        _api(double, budget=5).get("processsessions")
    assert datetime.now(UTC) - started < timedelta(seconds=3)


def test_503_without_retry_after_backs_off_and_succeeds(double: DataverseDouble) -> None:
    double.throttle(2, retry_after=None, status=503)
    assert _api(double).get("processsessions")["value"] == []
    assert len(double.seen) == 3


def test_a_stop_ends_a_wait(double: DataverseDouble) -> None:
    double.throttle(1, retry_after=30)
    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()
    with pytest.raises(DataverseUnavailable, match="told to stop"):
        _api(double, stop=stop).get("processsessions")


def test_a_refused_token_is_one_line_that_never_shows_the_token(double: DataverseDouble) -> None:
    api = WebApi(double.url, lambda: "SECRET-TOKEN-VALUE")
    with pytest.raises(DataverseError) as raised:
        api.get("processsessions")
    text = str(raised.value)
    assert "HTTP 401" in text
    assert "SECRET-TOKEN-VALUE" not in text
    assert "\n" not in text
    assert raised.value.status == 401


def test_a_missing_row_is_none_and_annotations_name_the_table(double: DataverseDouble) -> None:
    bank = "6f9c2d4e-8a1b-4c3d-9e5f-0a1b2c3d4e5f"
    session = double.add_session(
        modifiedon=T0, regarding=("sample_bankaccount", bank), regarding_name="Savings"
    )
    api = _api(double)
    row = read_session(api, session)
    assert row is not None
    assert (row.regarding_logical_name, row.regarding_id, row.regarding_name) == (
        "sample_bankaccount",
        bank,
        "Savings",
    )
    asked = double.seen[-1].headers["Prefer"]
    assert "Microsoft.Dynamics.CRM.lookuplogicalname" in asked
    assert read_session(api, "0b0c0d0e-0000-4000-8000-000000000001") is None


def test_an_unreachable_environment_is_unavailable_quickly() -> None:
    api = WebApi(f"http://127.0.0.1:{free_port()}", lambda: TOKEN, budget=10)
    with pytest.raises(DataverseUnavailable, match="no answer"):
        api.get("processsessions")


def test_retry_after_reads_seconds_and_http_dates() -> None:
    assert retry_after("7") == 7.0
    assert (
        retry_after(
            "Wed, 02 Dec 2026 10:00:10 GMT",
            now=datetime(2026, 12, 2, 10, 0, tzinfo=UTC).timestamp(),
        )
        == 10.0
    )
    assert retry_after("soon") is None
    assert retry_after(None) is None
