"""Metrics through OpenTelemetry: a counter per verdict and a processing-duration histogram.

Exported to Application Insights only when ``APPLICATIONINSIGHTS_CONNECTION_STRING`` is set;
without it nothing is configured, imported or exported. Inside Azure Functions the worker
configures the Azure Monitor distro itself (``PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY=true``
and host.json ``telemetryMode: OpenTelemetry``); the standalone worker configures it here.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any, Protocol

from shared.verdicts import Reason, Settlement, Verdict


class _Decided(Protocol):
    """What ``record`` reads of a decision (``shared.pipeline.Decision``)."""

    @property
    def verdict(self) -> Verdict: ...
    @property
    def reason(self) -> Reason | None: ...


class Counted(Protocol):
    """What ``record`` reads of an outcome (``shared.pipeline.Outcome``), named here so that
    this module does not import the pipeline that imports it."""

    @property
    def decision(self) -> _Decided: ...
    @property
    def settlement(self) -> Settlement: ...


log = logging.getLogger(__name__)
METER = "processsession_audit"


class Telemetry:
    """Instruments on one OpenTelemetry meter, or nothing at all (``meter=None``)."""

    def __init__(self, meter: Any = None) -> None:
        self.enabled = meter is not None
        if meter is not None:
            self._messages = meter.create_counter(
                "processsession_audit.messages",
                unit="1",
                description="messages decided, by verdict, reason and settlement",
            )
            self._duration = meter.create_histogram(
                "processsession_audit.processing.duration",
                unit="ms",
                description="time to decide and store one message (batch time / batch size)",
            )
            self._reconciled = meter.create_counter(
                "processsession_audit.reconcile.sessions",
                unit="1",
                description="sessions a reconcile found, by finding: missing, behind, "
                "only_in_trail, and all sessions read (the alert sums missing + behind)",
            )

    def reconciled(self, counts: dict[str, int]) -> None:
        """The counts of one reconcile, each under its ``finding``."""
        if not self.enabled:
            return
        for finding, count in counts.items():
            self._reconciled.add(count, {"finding": finding})

    def record(self, outcomes: Sequence[Counted], seconds: float) -> None:
        """Count each outcome and record the per-message processing time of the batch."""
        if not self.enabled or not outcomes:
            return
        per_message_ms = seconds * 1000 / len(outcomes)
        for outcome in outcomes:
            attributes = {
                "verdict": outcome.decision.verdict.value,
                "reason": outcome.decision.reason.value if outcome.decision.reason else "",
                "settlement": outcome.settlement.value,
            }
            self._messages.add(1, attributes)
            self._duration.record(per_message_ms, {"verdict": attributes["verdict"]})


#: Libraries whose INFO lines cost more than they tell in Application Insights: the Service Bus
#: extension's uamqp decoder logs nine lines per message, the Azure SDKs one per request.
NOISY_LIBRARIES = ("uamqp", "azure", "azurefunctions", "urllib3")


def quiet_libraries(level: int | str = logging.WARNING) -> None:
    """Set the noisy libraries' loggers to ``level`` (AUDIT_LIBRARY_LOG_LEVEL; WARNING by
    default): the Functions Python worker sets the root logger to INFO, which would export
    every library's INFO line. The service's own loggers (``shared``, ``functions``) keep
    theirs."""
    for name in NOISY_LIBRARIES:
        logging.getLogger(name).setLevel(level)


def configure(connection_string: str | None) -> Telemetry:
    """Telemetry for this process: a no-op without a connection string."""
    if not connection_string:
        return Telemetry()
    in_functions_with_distro = (
        os.environ.get("PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY", "").lower() == "true"
    )
    if not in_functions_with_distro:
        from azure.monitor.opentelemetry import configure_azure_monitor

        configure_azure_monitor(connection_string=connection_string)
    from opentelemetry import metrics

    log.info("OpenTelemetry metrics go to Application Insights")
    return Telemetry(metrics.get_meter(METER))
