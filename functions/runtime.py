"""The process-wide service the blueprints share, built on first use (never at import)."""

from __future__ import annotations

import functools

from shared.bootstrap import build_pipeline
from shared.pipeline import Pipeline
from shared.settings import load_settings


@functools.cache
def pipeline() -> Pipeline:
    """Settings, store client and pipeline: created once per worker process, then reused."""
    return build_pipeline(load_settings())
