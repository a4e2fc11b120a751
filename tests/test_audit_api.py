"""The HTTP read API, called with real ``func.HttpRequest`` objects, against both stores."""

from __future__ import annotations

import json

import azure.functions as func
import pytest

from functions import runtime
from functions.audit_api import bankaccount_audit, processsession_audit
from shared.errors import StoreUnavailable
from shared.pipeline import Pipeline
from tests.entries import make_entry

BANK = "8e5f1a2b-6c7d-ef11-bfe3-6045bd0c1a22"
SESSION = "1b9e7c4d-2a3f-ef11-9f89-000d3a5c2b71"


def _get(function, route: str, record_id: str, **params: str) -> func.HttpResponse:
    request = func.HttpRequest(
        method="GET",
        url=f"/api/{route}/{record_id}/audit",
        body=b"",
        route_params={"id": record_id},
        params=params,
    )
    response: func.HttpResponse = function(request)
    return response


@pytest.fixture
def served(any_store, monkeypatch):
    monkeypatch.setattr(runtime, "pipeline", lambda: Pipeline(any_store))
    return any_store


def test_bank_account_trail_pages_through_every_entry(served):
    entries = [make_entry(i, regarding=BANK) for i in range(7)]
    served.write([*entries, make_entry(99, regarding="2d6b8f13-6c7d-ef11-bfe3-6045bd0c1a22")])
    seen, token, pages = [], None, 0
    while True:
        params = {"limit": "3", **({"continuation": token} if token else {})}
        response = _get(bankaccount_audit, "bankaccounts", "{" + BANK.upper() + "}", **params)
        assert response.status_code == 200
        assert response.mimetype == "application/json"
        body = json.loads(response.get_body())
        assert body["id"] == BANK
        seen += [e["entry_id"] for e in body["entries"]]
        pages += 1
        token = body["continuation"]
        if token is None:
            break
    assert seen == [e.entry_id for e in entries]
    assert pages >= 3


def test_session_trail(served):
    entries = [make_entry(1, session=SESSION), make_entry(2, session=SESSION), make_entry(3)]
    served.write(entries)
    body = json.loads(_get(processsession_audit, "processsessions", SESSION).get_body())
    assert [e["entry_id"] for e in body["entries"]] == [entries[0].entry_id, entries[1].entry_id]
    assert body["continuation"] is None


@pytest.mark.parametrize(
    ("record_id", "params", "message"),
    [
        ("not-a-guid", {}, "is not a GUID"),
        (BANK, {"limit": "0"}, "limit must be"),
        (BANK, {"limit": "5000"}, "limit must be"),
        (BANK, {"limit": "3", "continuation": "garbage!"}, "continuation"),
    ],
)
def test_bad_requests_are_400_with_a_reason(served, record_id, params, message):
    response = _get(bankaccount_audit, "bankaccounts", record_id, **params)
    assert response.status_code == 400
    assert message in json.loads(response.get_body())["error"]


def test_store_outage_is_503_with_retry_after(monkeypatch):
    class DownStore:
        def by_regarding(self, *args, **kwargs):
            raise StoreUnavailable("Table Storage read failed: ServiceRequestError")

    monkeypatch.setattr(runtime, "pipeline", lambda: Pipeline(DownStore()))
    response = _get(bankaccount_audit, "bankaccounts", BANK)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
