"""The regarding resolver (``AUDIT_RESOLVE_REGARDING=true``): where a message does not hold the
session's regarding (an Update whose step has no image holding ``regardingobjectid``), read it
from the session's row through the Web API and judge it by the same rule.

One GET per distinct session of a batch. What it reads is the row as it is *now*, which may be
later than the event: the entry says so (``regarding_source: web_api`` and
``regarding_read_at``). A session that no longer exists is ``rejected`` as
``session_not_in_dataverse``. A failure is transient: the pipeline waits it out in place, as
it does a store's, and the broker redelivers what is still unresolved.

Imported only when the setting is on, so that the Functions cold start never pays for it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

from shared.dataverse.model import EntityReference
from shared.dataverse.sessions import SessionRow, read_session
from shared.dataverse.webapi import WebApi
from shared.events.rules import Judgement, Regarding, RegardingSource, judge_reference
from shared.verdicts import Reason, Verdict


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Resolved:
    """A session's row as read (None: it no longer exists), and when it was read."""

    row: SessionRow | None
    read_at: datetime

    def judgement(self) -> Judgement:
        """The verdict on the regarding the row holds."""
        if self.row is None:
            return Judgement(
                Verdict.REJECTED,
                Reason.SESSION_NOT_IN_DATAVERSE,
                Regarding(None, RegardingSource.WEB_API),
            )
        return judge_reference(regarding_of(self.row))


def regarding_of(row: SessionRow) -> Regarding:
    """The row's regarding as the rules see it."""
    if row.regarding_id is None or row.regarding_logical_name is None:
        return Regarding(None, RegardingSource.WEB_API)
    reference = EntityReference(
        logical_name=row.regarding_logical_name,
        id=UUID(row.regarding_id),
        name=row.regarding_name,
    )
    return Regarding(reference, RegardingSource.WEB_API)


class RegardingResolver:
    """Reads sessions' regarding through one Web API client."""

    def __init__(self, api: WebApi, clock: Callable[[], datetime] = _now) -> None:
        self.api = api
        self.clock = clock

    def look_up(self, session_ids: Iterable[str]) -> dict[str, Resolved]:
        """Each distinct session once; raises the client's error (transient when the Web API
        did not answer within its budget)."""
        found: dict[str, Resolved] = {}
        for session_id in dict.fromkeys(session_ids):
            row = read_session(self.api, session_id)
            found[session_id] = Resolved(row, self.clock())
        return found
