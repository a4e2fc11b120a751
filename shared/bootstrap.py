"""Build the service from settings: the one place that wires store, policy and pipeline."""

from __future__ import annotations

from shared.pipeline import Pipeline, Policy
from shared.settings import Settings
from shared.stores import build_store


def build_pipeline(settings: Settings) -> Pipeline:
    """A pipeline over the store the settings select (opened now, reused afterwards)."""
    return Pipeline(build_store(settings), Policy.from_settings(settings))
