"""Dataverse registration against a local stand-in of the Web API (the real Web API and Azure
AD cannot run here; the token is a fixed string): every OData request is checked."""

from __future__ import annotations

import json

import pytest

from devtools.processes import free_port
from shared.dataverse.registration import (
    DEFAULT_OLD_VALUE_COLUMNS,
    Registrar,
    Registration,
    RegistrationError,
)
from shared.dataverse.webapi import WebApi
from tests.conftest import run_cli
from tests.dataverse_double import TOKEN, DataverseDouble

SAS_KEY = "c2VuZC1vbmx5LWtleS1mb3ItdGVzdHM="
WANTED = Registration(
    namespace="contoso-audit",
    entity="processsession-events",
    sas_key_name="dataverse-send",
    sas_key=SAS_KEY,
)


@pytest.fixture
def webapi():
    with DataverseDouble() as stand_in:
        yield stand_in
    assert stand_in.violations == []


def _register(webapi: DataverseDouble, registration: Registration = WANTED, **options):
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


def _register_command(*args: str, env: dict[str, str]):
    import subprocess
    import sys
    from pathlib import Path

    return subprocess.run(
        [sys.executable, "-m", "shared.cli", "register", *args],
        cwd=Path(__file__).resolve().parent.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


REGISTER_ARGS = ("--namespace", "sbns", "--queue", "q", "--sas-key-name", "send")


def test_the_plan_needs_no_network_or_credentials():
    import os

    env = {"PATH": os.environ["PATH"], "HOME": "/nonexistent"}  # no token, no key, no login
    done = _register_command(
        "--plan", "--environment-url", "https://contoso.invalid", *REGISTER_ARGS, env=env
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("POST ") == 5
    assert '"saskey": "***"' in done.stdout
    assert "Traceback" not in done.stderr


def test_an_unreachable_environment_is_one_line(tmp_path):
    import os

    from devtools.processes import free_port

    url = f"http://127.0.0.1:{free_port()}"
    env = {**os.environ, "DATAVERSE_SAS_KEY": "S3CRET-KEY-VALUE", "DATAVERSE_ACCESS_TOKEN": "t"}
    done = _register_command("--dry-run", "--environment-url", url, *REGISTER_ARGS, env=env)
    assert done.returncode == 2  # unavailable
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "no answer (ConnectionError); check the environment URL" in done.stderr
    assert "S3CRET-KEY-VALUE" not in done.stdout + done.stderr


@pytest.mark.parametrize(
    "echo",
    [
        "verbatim",
        "json-solidus",  # a JSON writer escaping / as \\/
        "json-plus",  # + as \\u002B
        "html",  # & < > " as entities
        "cut",  # only the first half of the key
    ],
)
def test_an_error_body_that_echoes_the_request_never_shows_the_key(echo):
    import html
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from shared.dataverse.registration import Registrar, Registration, RegistrationError
    from shared.dataverse.webapi import WebApi

    key = "S3CR/ET+KEY&<VALUE>=="

    def echoed(body: str) -> str:
        return {
            "verbatim": body,
            "json-solidus": body.replace("/", "\\/"),
            "json-plus": body.replace("+", "\\u002B"),
            "html": html.escape(body),
            "cut": body.replace(key, key[:9]),
        }[echo]

    class Echo(BaseHTTPRequestHandler):
        def do_GET(self):
            found = b"[]" if "serviceendpoints" in self.path else b'[{"sdkmessageid": "1"}]'
            self._answer(200, b'{"value": ' + found + b"}")

        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"])).decode()
            message = echoed(body).replace('"', "'")
            self._answer(
                400, json.dumps({"error": {"message": f"bad request: {message}"}}).encode()
            )

        def _answer(self, status, payload):
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        api = WebApi(f"http://127.0.0.1:{server.server_port}", lambda: "token")
        registration = Registration(namespace="sbns", entity="q", sas_key_name="send", sas_key=key)
        with pytest.raises(RegistrationError) as raised:
            Registrar(api).register(registration)
    finally:
        server.shutdown()
    text = str(raised.value)
    assert "HTTP 400" in text
    assert "not shown" in text
    for form in (key, key[:9], html.escape(key), key.replace("/", "\\/"), "KEY"):
        assert form not in text


def test_userinfo_in_the_environment_url_is_never_printed():
    from shared.dataverse.registration import RegistrationError
    from shared.dataverse.webapi import WebApi, mask_userinfo

    assert (
        mask_userinfo("https://u:PASS@org.crm.dynamics.com/api")
        == "https://***@org.crm.dynamics.com/api"
    )
    api = WebApi(f"http://user:PASS@127.0.0.1:{free_port()}", lambda: "token")
    with pytest.raises(RegistrationError) as raised:
        api.call("GET", "serviceendpoints")
    assert "PASS" not in str(raised.value)
    assert "***@127.0.0.1" in str(raised.value)
