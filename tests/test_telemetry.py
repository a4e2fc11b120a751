"""Telemetry: structured fields on every log line about a message, OpenTelemetry metrics with
the real SDK (in-memory reader; Application Insights itself cannot be reached here), and
nothing configured or exported without a connection string."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from shared.pipeline import Pipeline
from shared.telemetry import Telemetry
from tests.conftest import load_samples

ROOT = Path(__file__).resolve().parent.parent
FIELDS = ("message_id", "correlation_id", "entry_id", "verdict", "reason", "settlement")


def test_every_line_about_a_message_carries_its_fields(store, caplog):
    samples = load_samples()
    with caplog.at_level(logging.DEBUG, logger="shared.pipeline"):
        Pipeline(store).handle([s.message for s in samples.values()])
    records = [r for r in caplog.records if r.name == "shared.pipeline"]
    assert len(records) == len(samples)
    for record in records:
        for field in FIELDS:
            assert hasattr(record, field), field
    by_id = {r.message_id: r for r in records}
    accepted = by_id[samples["json-create-bankaccount"].message.message_id]
    assert accepted.verdict == "accepted"
    assert accepted.entry_id
    assert accepted.correlation_id == "{5f3c8e2a-9b1d-4c7e-8f6a-0d2b4e6c8a10}"
    malformed = by_id[samples["malformed-truncated"].message.message_id]
    assert (malformed.verdict, malformed.reason, malformed.settlement) == (
        "malformed",
        "malformed_json",
        "dead_letter",
    )
    assert malformed.levelno == logging.WARNING
    assert accepted.levelno == logging.DEBUG  # a completed message is counted, not logged


def test_at_the_default_level_only_what_needs_a_person_is_logged(store, caplog):
    """At INFO (the Functions worker's root level) a batch logs its dead-letters and retries,
    not a line per completed message; the libraries' loggers are at WARNING."""
    from shared.telemetry import NOISY_LIBRARIES, quiet_libraries

    samples = load_samples()
    with caplog.at_level(logging.INFO, logger="shared.pipeline"):
        Pipeline(store).handle([s.message for s in samples.values()])
    lines = [r for r in caplog.records if r.name == "shared.pipeline"]
    assert [r.settlement for r in lines] == ["dead_letter"]  # the one malformed sample
    quiet_libraries()
    for name in NOISY_LIBRARIES:
        assert logging.getLogger(name).getEffectiveLevel() == logging.WARNING
    assert logging.getLogger("uamqp.c_uamqp").isEnabledFor(logging.INFO) is False


def test_counters_per_verdict_and_a_duration_histogram(store):
    reader = InMemoryMetricReader()
    meter = MeterProvider(metric_readers=[reader]).get_meter("test")
    Pipeline(store, telemetry=Telemetry(meter)).handle([s.message for s in load_samples().values()])
    metrics = {
        m.name: m
        for rm in reader.get_metrics_data().resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
    }
    counts: dict[str, int] = {}
    for point in metrics["processsession_audit.messages"].data.data_points:
        verdict = point.attributes["verdict"]
        counts[verdict] = counts.get(verdict, 0) + point.value
    assert counts == {"accepted": 5, "rejected": 2, "ignored": 1, "malformed": 1}
    histogram = metrics["processsession_audit.processing.duration"].data.data_points
    assert sum(p.count for p in histogram) == 9
    assert all(p.sum > 0 for p in histogram)


def _probe(tmp_path: Path, **env: str) -> str:
    code = (
        "import sys; from shared.bootstrap import build_pipeline; "
        "from shared.settings import load_settings; p = build_pipeline(load_settings()); "
        "print('azure.monitor.opentelemetry' in sys.modules, p.telemetry.enabled)"
    )
    environment = {
        k: v for k, v in os.environ.items() if k != "APPLICATIONINSIGHTS_CONNECTION_STRING"
    }
    environment.update({"AUDIT_SQLITE_PATH": str(tmp_path / "a.sqlite3"), **env})
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout.strip()


def test_nothing_is_configured_or_exported_without_a_connection_string(tmp_path):
    assert _probe(tmp_path) == "False False"


def test_a_connection_string_turns_azure_monitor_on(tmp_path):
    fake = (
        "InstrumentationKey=00000000-0000-0000-0000-000000000000;"
        "IngestionEndpoint=http://127.0.0.1:9/"
    )
    assert _probe(tmp_path, APPLICATIONINSIGHTS_CONNECTION_STRING=fake) == "True True"
