"""Build the service from settings: the one place that wires store, policy and pipeline."""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.pipeline import Pipeline, Policy, StoreRetry
from shared.settings import Settings
from shared.stores import build_store
from shared.telemetry import configure

if TYPE_CHECKING:
    from shared.trail.resolver import RegardingResolver


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
        resolver=build_resolver(settings),
    )


def build_resolver(settings: Settings) -> RegardingResolver | None:
    """The regarding resolver when AUDIT_RESOLVE_REGARDING is on (ValueError without
    DATAVERSE_URL); its Web API client is imported only then."""
    if not settings.audit_resolve_regarding:
        return None
    if settings.dataverse_url is None:
        raise ValueError(
            "AUDIT_RESOLVE_REGARDING=true needs DATAVERSE_URL (https://<org>.crm.dynamics.com)"
        )
    from shared.dataverse.webapi import build_web_api
    from shared.trail.resolver import RegardingResolver

    return RegardingResolver(
        build_web_api(
            settings.dataverse_url,
            max_answer_bytes=settings.dataverse_max_answer_bytes,
            max_pages=settings.dataverse_max_pages,
        )
    )
