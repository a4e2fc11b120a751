"""Timer: reconcile the previous UTC day of the trail with Dataverse (``shared.trail.reconcile``).

Runs on ``AUDIT_RECONCILE_SCHEDULE`` (NCRONTAB; default ``0 30 1 * * *``, 01:30 UTC) when
``DATAVERSE_URL`` is set. It writes nothing: it logs one line with the counts (custom
dimensions ``reconcile_missing``, ``reconcile_behind``...) and emits them as the metric
``processsession_audit.reconcile.sessions`` by ``finding``; the Bicep alerts when missing +
behind > 0. Closing the gaps is ``psaudit backfill``, run by a person (docs/operations.md).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import azure.functions as func

from functions import runtime

bp = func.Blueprint()  # type: ignore[no-untyped-call]
log = logging.getLogger(__name__)


@bp.function_name("reconcile_trail")
@bp.timer_trigger(arg_name="timer", schedule="%AUDIT_RECONCILE_SCHEDULE%", run_on_startup=False)
def reconcile_trail(timer: func.TimerRequest) -> None:
    """One reconcile of yesterday; one log line and the metric."""
    settings = runtime.settings()
    if settings.dataverse_url is None:
        log.warning("reconcile_trail: DATAVERSE_URL is not set; nothing reconciled")
        return
    from shared.trail.reconcile import reconcile_previous_day

    service = runtime.pipeline()
    found, counts = reconcile_previous_day(settings, service.store, datetime.now(UTC))
    service.telemetry.reconciled(counts)
    gaps = counts["missing"] + counts["behind"]
    log.log(
        logging.WARNING if gaps else logging.INFO,
        "reconcile_trail: %s to %s: %d session(s), %d missing, %d behind, %d only in the trail%s",
        found.since.isoformat(),
        found.until.isoformat(),
        counts["sessions"],
        counts["missing"],
        counts["behind"],
        counts["only_in_trail"],
        "; run `psaudit backfill` for that window" if gaps else "",
        extra={f"reconcile_{k}": v for k, v in counts.items()} | {"reconcile_gaps": gaps},
    )
