"""Build the service from settings: the one place that wires store, policy and pipeline."""

from __future__ import annotations

from shared.pipeline import Pipeline, Policy, StoreRetry
from shared.settings import Settings
from shared.stores import build_store
from shared.telemetry import configure


def build_pipeline(settings: Settings) -> Pipeline:
    """A pipeline over the store the settings select (opened now, reused afterwards), with
    telemetry exported only when Application Insights is configured."""
    secret = settings.applicationinsights_connection_string
    telemetry = configure(secret.get_secret_value() if secret else None)
    return Pipeline(
        build_store(settings),
        Policy.from_settings(settings),
        telemetry=telemetry,
        retry=StoreRetry.from_settings(settings),
    )
