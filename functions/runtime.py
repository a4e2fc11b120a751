"""The process-wide service the blueprints share, built on first use (never at import)."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shared.dataverse.names import Namer
    from shared.pipeline import Pipeline
    from shared.settings import Settings


@functools.cache
def settings() -> Settings:
    """The app settings, read once per worker process on the first invocation."""
    from shared.settings import load_settings
    from shared.telemetry import quiet_libraries

    loaded = load_settings()
    quiet_libraries(loaded.audit_library_log_level)
    return loaded


@functools.cache
def pipeline() -> Pipeline:
    """Settings, store client and pipeline: created once per worker process, then reused.

    The service's modules load here too, on the first invocation, so indexing the app imports
    only the Functions library and the Service Bus extension.
    """
    from shared.bootstrap import build_pipeline

    return build_pipeline(settings())


def settle_concurrency() -> int:
    """Settlements of a batch in flight at once (AUDIT_SETTLE_CONCURRENCY)."""
    return settings().audit_settle_concurrency


def lock_renewal_seconds() -> float:
    """How often a batch's locks are renewed while it is processed (AUDIT_LOCK_RENEWAL_SECONDS)."""
    return settings().audit_lock_renewal_seconds


@functools.cache
def names() -> Namer:
    """Names from Dataverse for the timeline page (DATAVERSE_URL; none without it), cached
    for the worker process's life with the reader's TTL."""
    from shared.trail.timeline import NO_NAMES

    url = settings().dataverse_url
    if not url:
        return NO_NAMES
    from shared.dataverse.names import NameReader
    from shared.dataverse.webapi import build_web_api

    return NameReader(build_web_api(url, budget=10.0))
