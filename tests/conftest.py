"""Shared fixtures: the golden samples (one loader) and builders of real-format messages."""

from __future__ import annotations

import copy
import functools
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from shared.events.envelope import InboundMessage, from_files, properties_path_for
from shared.stores.sqlite import SqliteAuditStore

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
ENTITY_TYPE = "Entity:http://schemas.microsoft.com/xrm/2011/Contracts"
REFERENCE_TYPE = "EntityReference:http://schemas.microsoft.com/xrm/2011/Contracts"


@dataclass(frozen=True)
class Sample:
    """A sample message pair and its expected result from samples/expected.json."""

    name: str
    message: InboundMessage
    expected: dict[str, Any]


def load_samples() -> dict[str, Sample]:
    """Every NAME.body + NAME.properties.json pair in samples/, with its expectation."""
    expected = json.loads((SAMPLES / "expected.json").read_text())
    samples = {}
    for body in sorted(SAMPLES.glob("*.body")):
        name = body.name.removesuffix(".body")
        samples[name] = Sample(name, from_files(body, properties_path_for(body)), expected[name])
    return samples


@pytest.fixture(scope="session")
def samples() -> dict[str, Sample]:
    return load_samples()


@pytest.fixture
def store(tmp_path: Path):
    s = SqliteAuditStore(tmp_path / "audit.sqlite3")
    yield s
    s.close()


def sample_document(name: str = "json-create-bankaccount") -> dict[str, Any]:
    """A JSON sample body as a dict, to edit into a variant."""
    document: dict[str, Any] = json.loads((SAMPLES / f"{name}.body").read_bytes())
    return document


def kv_get(pairs: list[dict[str, Any]], key: str) -> Any:
    return next(p["value"] for p in pairs if p["key"] == key)


def kv_set(pairs: list[dict[str, Any]], key: str, value: Any) -> None:
    for pair in pairs:
        if pair["key"] == key:
            pair["value"] = value
            return
    pairs.append({"key": key, "value": value})


def kv_del(pairs: list[dict[str, Any]], key: str) -> None:
    pairs[:] = [p for p in pairs if p["key"] != key]


def target_of(document: dict[str, Any]) -> dict[str, Any]:
    target: dict[str, Any] = kv_get(document["InputParameters"], "Target")
    return target


def reference(logical_name: str, guid: str, name: str | None = None) -> dict[str, Any]:
    return {
        "__type": REFERENCE_TYPE,
        "Id": guid,
        "KeyAttributes": [],
        "LogicalName": logical_name,
        "Name": name,
        "RowVersion": None,
    }


def image(attributes: dict[str, Any], logical_name: str = "processsession") -> dict[str, Any]:
    """An entity image (no __type, as Dataverse sends images)."""
    return {
        "Attributes": [{"key": k, "value": v} for k, v in attributes.items()],
        "EntityState": None,
        "FormattedValues": [],
        "Id": None,
        "KeyAttributes": [],
        "LogicalName": logical_name,
        "RelatedEntities": [],
        "RowVersion": None,
    }


def json_message(
    document: Any,
    properties: dict[str, str] | None = None,
    content_type: str = "application/json",
    **fields: Any,
) -> InboundMessage:
    body = document if isinstance(document, bytes) else json.dumps(document).encode()
    return InboundMessage(
        body=body, content_type=content_type, application_properties=properties or {}, **fields
    )


def copy_document(document: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(document)


@pytest.fixture(scope="session")
def azurite(tmp_path_factory):
    """One in-memory Azurite for the session; each test uses its own table."""
    from devtools.azurite import Azurite, AzuriteUnavailable

    try:
        server = Azurite(tmp_path_factory.mktemp("azurite"))
        server.start()
    except AzuriteUnavailable as exc:  # fail, never skip: CI must run the Table store tests
        pytest.fail(str(exc))
    yield server
    server.stop()


def table_store(connection_string: str, **options: Any):
    """A TableAuditStore on a fresh, uniquely named table."""
    import uuid

    from shared.stores.table import TableAuditStore

    return TableAuditStore(
        f"audit{uuid.uuid4().hex[:16]}", connection_string=connection_string, **options
    )


@pytest.fixture(params=["sqlite", "table", "table-sdk"])
def any_store(request, tmp_path):
    """The same contract, against every AuditStore implementation (real servers only); the
    Table store on its lean transactions and on the SDK's (AUDIT_TABLE_TRANSACTIONS=sdk)."""
    if request.param == "sqlite":
        s = SqliteAuditStore(tmp_path / "audit.sqlite3")
        yield s
        s.close()
    else:
        transactions = "sdk" if request.param == "table-sdk" else "lean"
        s = table_store(
            request.getfixturevalue("azurite").connection_string, transactions=transactions
        )
        yield s
        s.delete_table()
        s.close()


# Hypothesis: bounded in `make test` (profile "ci"), long in `make fuzz` (profile "fuzz").
from hypothesis import HealthCheck  # noqa: E402
from hypothesis import settings as hypothesis_settings  # noqa: E402

hypothesis_settings.register_profile("ci", max_examples=150, deadline=None, derandomize=True)
hypothesis_settings.register_profile(
    "fuzz",
    max_examples=20_000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


QUEUES = (
    "samples",
    "overlap",
    "overlap-locks:lock=2",
    "overlap-stop",
    "outage",
    "poison:max=3",
    "expiry:lock=2",
    "slow:lock=2",
    "replay",
    "graceful",
    "signal",
    "cli",
    "broker-batch",
    "broker-delete",
    "broker-abandon:max=2",
    "backoff:lock=2:max=3",
    "no-backoff:lock=2:max=3",
    "conflicts",
    "long-run",
    "storm",
    "hostile-text",
    "resolve:lock=2",
    "cli-edges",
    "ranges",
    "ranges-retry:lock=2",
    "ranges-lost:lock=1",
    "bounded",
)
BROKER_ENTITIES = (
    *(arg for queue in QUEUES for arg in ("--queue", queue)),
    "--topic",
    "events/audit,other",
)


@pytest.fixture(scope="session")
def broker(tmp_path_factory):
    """The local Service Bus broker (devtools), with the queues the end-to-end tests use."""
    from devtools.broker_process import BrokerProcess

    process = BrokerProcess(
        *BROKER_ENTITIES, log=tmp_path_factory.mktemp("broker") / "broker.log"
    ).start()
    yield process
    process.stop()


@pytest.fixture(scope="session")
def servicebus(broker):
    """One SDK client for the session (each sender/receiver open costs ~0.5 s)."""
    from azure.servicebus import ServiceBusClient

    with ServiceBusClient.from_connection_string(broker.connection_string) as client:
        yield client


@functools.cache
def registered_functions() -> tuple[Any, ...]:
    """The app's functions, indexed once (``app.get_functions()`` refuses a second call)."""
    from function_app import app

    return tuple(app.get_functions())


def run_cli(
    *args: str, env: dict[str, str] | None = None, check: bool = True, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """``python -m shared.cli ARGS`` in a fresh process from the repo root, as a user runs it;
    ``env`` is added to this process's environment."""
    return subprocess.run(
        [sys.executable, "-m", "shared.cli", *args],
        cwd=SAMPLES.parent,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=check,
    )


@pytest.fixture(autouse=True, scope="session")
def _a_data_folder_of_the_tests_own(tmp_path_factory):
    """The default trail lives in the user's data folder (XDG_DATA_HOME): the tests get one
    of their own, so that no test reads or writes a person's real trail."""
    folder = tmp_path_factory.mktemp("xdg-data")
    before = os.environ.get("XDG_DATA_HOME")
    os.environ["XDG_DATA_HOME"] = str(folder)
    yield folder
    if before is None:
        os.environ.pop("XDG_DATA_HOME", None)
    else:
        os.environ["XDG_DATA_HOME"] = before
