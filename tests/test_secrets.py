"""A recognisable secret (the storage account key in the connection string) is driven through
every path, failures included, and must appear in no log record, output, exception or entry."""

from __future__ import annotations

import logging
import os

import pytest

from devtools.azurite import KEY
from devtools.processes import free_port
from shared.bootstrap import build_pipeline
from shared.errors import ServiceError
from shared.settings import load_settings
from tests.conftest import load_samples, run_cli


def _dead_connection_string() -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={KEY};"
        f"TableEndpoint=http://127.0.0.1:{free_port()}/devstoreaccount1;"
    )


@pytest.fixture
def everything_logged(caplog):
    caplog.set_level(logging.DEBUG)  # the Azure SDK's HTTP logging included
    return caplog


def test_secret_never_leaks_on_success_or_failure(
    azurite, everything_logged, monkeypatch, tmp_path
):
    texts: list[str] = []
    monkeypatch.setenv("AUDIT_STORE", "table")
    monkeypatch.setenv("AUDIT_TABLE_NAME", "secrets" + os.urandom(4).hex())
    monkeypatch.setenv("AUDIT_TABLE_CONNECTION_STRING", azurite.connection_string)
    settings = load_settings()
    texts += [repr(settings), str(settings), settings.model_dump_json()]

    pipeline = build_pipeline(settings)
    outcomes = pipeline.handle([s.message for s in load_samples().values()])
    texts += [repr(o) for o in outcomes]
    texts += [o.decision.entry.model_dump_json() for o in outcomes if o.decision.entry]
    texts += [pipeline.store.in_range().entries.__repr__()]

    monkeypatch.setenv("AUDIT_TABLE_CONNECTION_STRING", _dead_connection_string())
    with pytest.raises(ServiceError) as caught:
        build_pipeline(load_settings())
    texts += [str(caught.value), repr(caught.value), repr(caught.value.__cause__)]

    env = {"AUDIT_TABLE_CONNECTION_STRING": _dead_connection_string()}
    for command in (["run"], ["entries"], ["export"], ["-v", "run"]):
        done = run_cli(*command, env=env, check=False)
        assert done.returncode != 0
        texts += [done.stdout, done.stderr]

    texts.append(everything_logged.text)
    texts += [str(record.args) for record in everything_logged.records]
    leaks = [text[:200] for text in texts if KEY in text]
    assert leaks == []
    assert len(everything_logged.records) > 0  # the paths did log; none of it held the key
