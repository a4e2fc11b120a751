"""The process-wide service the blueprints share, built on first use (never at import)."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shared.pipeline import Pipeline


@functools.cache
def pipeline() -> Pipeline:
    """Settings, store client and pipeline: created once per worker process, then reused.

    The service's modules load here too, on the first invocation, so indexing the app imports
    only the Functions library and the Service Bus extension.
    """
    from shared.bootstrap import build_pipeline
    from shared.settings import load_settings

    return build_pipeline(load_settings())
