"""Dataverse registration against a local stand-in of the Web API (the real Web API and Azure
AD cannot run here; the token is a fixed string): every OData request is checked."""

from __future__ import annotations

import pytest

from shared.registration import (
    DEFAULT_OLD_VALUE_COLUMNS,
    Registrar,
    Registration,
    RegistrationError,
    WebApi,
)
from tests.conftest import run_cli
from tests.webapi_standin import TOKEN, WebApiStandIn

SAS_KEY = "c2VuZC1vbmx5LWtleS1mb3ItdGVzdHM="
WANTED = Registration(
    namespace="contoso-audit",
    entity="processsession-events",
    sas_key_name="dataverse-send",
    sas_key=SAS_KEY,
)


@pytest.fixture
def webapi():
    with WebApiStandIn() as stand_in:
        yield stand_in
    assert stand_in.violations == []


def _register(webapi: WebApiStandIn, registration: Registration = WANTED, **options):
    api = WebApi(webapi.url, lambda: TOKEN)
    return Registrar(api, **options).register(registration)


def test_first_run_creates_endpoint_steps_and_images(webapi):
    report = _register(webapi)
    assert [(r.method, r.url.rsplit("/", 1)[1]) for r in report.writes] == [
        ("POST", "serviceendpoints"),
        ("POST", "sdkmessageprocessingsteps"),
        ("POST", "sdkmessageprocessingsteps"),
        ("POST", "sdkmessageprocessingstepimages"),
        ("POST", "sdkmessageprocessingstepimages"),
    ]
    (endpoint,) = webapi.rows("serviceendpoints")
    assert {
        k: endpoint[k]
        for k in (
            "contract",
            "messageformat",
            "userclaim",
            "authtype",
            "path",
            "saskeyname",
            "saskey",
            "namespaceaddress",
        )
    } == {
        "contract": 2,
        "messageformat": 2,
        "userclaim": 2,
        "authtype": 2,
        "path": "processsession-events",
        "saskeyname": "dataverse-send",
        "saskey": SAS_KEY,
        "namespaceaddress": "sb://contoso-audit.servicebus.windows.net/",
    }
    steps = {s["name"]: s for s in webapi.rows("sdkmessageprocessingsteps")}
    assert set(steps) == {
        "ProcessSessionAudit: Create of processsession",
        "ProcessSessionAudit: Update of processsession",
    }
    for step in steps.values():
        assert (step["stage"], step["mode"]) == (40, 1)
        assert step["_eventhandler_value"] == endpoint["serviceendpointid"]
    filters = {f["sdkmessagefilterid"]: f for f in webapi.rows("sdkmessagefilters")}
    assert {
        filters[s["_sdkmessagefilterid_value"]]["primaryobjecttypecode"] for s in steps.values()
    } == {"processsession"}
    images = {i["entityalias"]: i for i in webapi.rows("sdkmessageprocessingstepimages")}
    update_id = steps["ProcessSessionAudit: Update of processsession"]["sdkmessageprocessingstepid"]
    assert images["PostImage"] == images["PostImage"] | {
        "imagetype": 1,
        "messagepropertyname": "Target",
        "attributes": "regardingobjectid,name",
        "_sdkmessageprocessingstepid_value": update_id,
    }
    assert (images["PreImage"]["imagetype"], images["PreImage"]["attributes"]) == (
        0,
        DEFAULT_OLD_VALUE_COLUMNS,
    )


def test_second_run_changes_nothing(webapi):
    _register(webapi)
    before = len(webapi.writes())
    report = _register(webapi)
    assert report.writes == []
    assert len(report.unchanged) == 5
    assert len(webapi.writes()) == before


def test_dry_run_reads_but_writes_nothing_and_hides_the_key(webapi):
    report = _register(webapi, dry_run=True)
    assert len(report.writes) == 5
    assert webapi.writes() == []
    shown = "\n".join(r.show() for r in report.writes)
    assert SAS_KEY not in shown
    assert '"saskey": "***"' in shown


def test_a_change_patches_only_what_differs(webapi):
    _register(webapi)
    changed = Registration(
        namespace="contoso-audit",
        entity="processsession-topic",
        kind="topic",
        sas_key_name="dataverse-send",
        sas_key=SAS_KEY,
        old_value_columns="statecode,statuscode",
    )
    report = _register(webapi, changed)
    assert [(r.method, sorted(r.body or {})) for r in report.writes] == [
        ("PATCH", ["contract", "path"]),
        ("PATCH", ["attributes"]),
    ]
    assert webapi.rows("serviceendpoints")[0]["contract"] == 5


def test_rotating_the_key_sends_only_the_key(webapi):
    _register(webapi)
    rotated = Registration(
        namespace="contoso-audit",
        entity="processsession-events",
        sas_key_name="dataverse-send",
        sas_key="bmV3LWtleQ==",
    )
    report = _register(webapi, rotated, rotate_key=True)
    assert [sorted(r.body or {}) for r in report.writes] == [["saskey"]]
    assert webapi.rows("serviceendpoints")[0]["saskey"] == "bmV3LWtleQ=="


def test_a_refused_request_says_what_and_why(webapi):
    webapi.fail_next = 403
    with pytest.raises(RegistrationError, match=r"HTTP 403.*prvCreateServiceEndpoint"):
        _register(webapi)


def test_command_line_dry_run_then_real_run(webapi):
    env = {"DATAVERSE_ACCESS_TOKEN": TOKEN, "DATAVERSE_SAS_KEY": SAS_KEY}
    args = [
        "register",
        "--environment-url",
        webapi.url,
        "--namespace",
        "contoso-audit",
        "--queue",
        "processsession-events",
        "--sas-key-name",
        "dataverse-send",
    ]
    dry = run_cli(*args, "--dry-run", env=env)
    assert "would send 5 write(s)" in dry.stderr
    assert SAS_KEY not in dry.stdout + dry.stderr
    assert webapi.writes() == []
    run_cli(*args, env=env)
    again = run_cli(*args, env=env)
    assert "sent 0 write(s); 5 row(s) already as wanted" in again.stderr
