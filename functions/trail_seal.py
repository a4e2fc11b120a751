"""Timer: seal the windows of the audit trail that have closed (``shared.stores.seals``).

Runs on ``AUDIT_SEAL_SCHEDULE`` (NCRONTAB, e.g. ``0 20 * * * *``: twenty past every hour, after
the grace period of the hour before). Several instances may fire at once: a window's record is
created only if absent, so one seals it and the others find it sealed.
"""

from __future__ import annotations

import logging

import azure.functions as func

from functions import runtime

bp = func.Blueprint()  # type: ignore[no-untyped-call]
log = logging.getLogger(__name__)


@bp.function_name("seal_trail")
@bp.timer_trigger(arg_name="timer", schedule="%AUDIT_SEAL_SCHEDULE%", run_on_startup=False)
def seal_trail(timer: func.TimerRequest) -> None:
    """Seal what closed since the last seal; one log line with what was sealed."""
    from shared.stores import seal_trail as seal

    record = seal(runtime.settings())
    if record is None:
        log.info("seal_trail: nothing due")
    else:
        # the chain's head goes to Application Insights, which the store's writers cannot
        # rewrite: `psaudit verify --expect-head` proves the trail still extends it
        log.info(
            "seal_trail: sealed %d entries recorded from %s to %s; head %s",
            record.count,
            record.start,
            record.end,
            record.head,
            extra={
                "sealed_entries": record.count,
                "window_end": record.end,
                "chain_head": record.head,
            },
        )
