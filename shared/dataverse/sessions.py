"""processsession rows read through the Web API, for the resolver, reconcile and backfill.

Column names are the Web API's (https://learn.microsoft.com/power-apps/developer/data-platform/reference/entities/processsession):
a lookup is read as ``_regardingobjectid_value`` (the id), with the table it points to in the
``@Microsoft.Dynamics.CRM.lookuplogicalname`` annotation and its primary name in the
``@OData.Community.Display.V1.FormattedValue`` annotation.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any
from uuid import UUID

from shared.dataverse.model import ascii_lower
from shared.dataverse.webapi import (
    FORMATTED_VALUE,
    LOOKUP_LOGICAL_NAME,
    DataverseError,
    DataverseUnavailable,
    WebApi,
    odata_time,
    parse_time,
    prefer_annotations,
)

ENTITY_SET = "processsessions"
REGARDING = "_regardingobjectid_value"
MODIFIED_BY = "_modifiedby_value"
#: the regarding's table as a column (EntityName): the fallback when the annotation is missing
TYPE_CODE = "regardingobjecttypecode"
#: a table's logical name: ASCII letters, digits and underscores (the rule's own alphabet)
_LOGICAL_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,127}")
#: what the resolver and reconcile's listing read of each row: only what they compare
COLUMNS = ("processsessionid", "modifiedon", REGARDING)
#: the columns a backfilled entry shows (read whole: ``read_session(..., every_column=True)``)
ENTRY_COLUMNS = (
    "processsessionid",
    "name",
    "createdon",
    "modifiedon",
    REGARDING,
    MODIFIED_BY,
    "statecode",
    "statuscode",
)
ANNOTATIONS = prefer_annotations(LOOKUP_LOGICAL_NAME, FORMATTED_VALUE)


def _guid(value: object) -> str | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return str(UUID(value.strip("{}")))
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class SessionRow:
    """One processsession as the Web API gave it (ids lower-case)."""

    processsession_id: str
    #: the Web API's own text of ``modifiedon`` (ISO-8601), and the instant it means
    modifiedon: str
    modified: datetime
    created: datetime | None
    regarding_logical_name: str | None
    regarding_id: str | None
    regarding_name: str | None
    name: str | None
    modified_by: str | None
    columns: dict[str, Any]

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> SessionRow:
        """A row of the answer; DataverseError when it lacks its id or ``modifiedon``."""
        session_id = _guid(row.get("processsessionid"))
        modified = parse_time(row.get("modifiedon"))
        if session_id is None or modified is None:
            raise DataverseError(
                "a processsession row of the answer has no valid processsessionid or modifiedon"
            )
        regarding_id = _guid(row.get(REGARDING))
        logical = row.get(f"{REGARDING}@{LOOKUP_LOGICAL_NAME}")
        shown = row.get(f"{REGARDING}@{FORMATTED_VALUE}")
        name = row.get("name")
        return cls(
            processsession_id=session_id,
            modifiedon=str(row["modifiedon"]),
            modified=modified,
            created=parse_time(row.get("createdon")),
            # ASCII folding only: str.lower() turns KELVIN SIGN (U+212A) into "k"
            regarding_logical_name=ascii_lower(logical)
            if isinstance(logical, str) and regarding_id
            else None,
            regarding_id=regarding_id,
            regarding_name=shown if isinstance(shown, str) and regarding_id else None,
            name=name if isinstance(name, str) else None,
            modified_by=_guid(row.get(MODIFIED_BY)),
            columns={k: v for k, v in row.items() if k in ENTRY_COLUMNS},
        )

    def summary(self) -> dict[str, Any]:
        """What reconcile prints of a session."""
        return {
            "processsession_id": self.processsession_id,
            "modifiedon": self.modifiedon,
            "regarding_logical_name": self.regarding_logical_name,
            "regarding_id": self.regarding_id,
        }


def read_session(api: WebApi, session_id: str, *, every_column: bool = False) -> SessionRow | None:
    """One session by id, or None when Dataverse says it does not exist (404, 0x80040217).
    ``every_column`` (backfill, rare) asks without ``$select``: the row as Dataverse holds
    it, whatever columns the environment has; otherwise only ``COLUMNS``.

    A row whose regarding id comes without its table (the lookup-logical-name annotation
    missing: a proxy or an older endpoint that drops ``Prefer``) is never judged as if it had
    no regarding: the table is read from the row's ``regardingobjecttypecode`` column (the
    table's logical name); when that is missing too, DataverseUnavailable (retried later)."""
    row = api.row(ENTITY_SET, session_id, () if every_column else COLUMNS, prefer=(ANNOTATIONS,))
    if row is None:
        return None
    session = SessionRow.from_json(row)
    if session.regarding_id is None or session.regarding_logical_name is not None:
        return session
    typed = api.row(ENTITY_SET, session_id, (TYPE_CODE,))
    logical = typed.get(TYPE_CODE) if typed is not None else None
    if not isinstance(logical, str) or not _LOGICAL_NAME.fullmatch(logical):
        raise DataverseUnavailable(
            f"processsession {session_id}: the Web API gave the regarding id without its table "
            f"(no {LOOKUP_LOGICAL_NAME} annotation, no {TYPE_CODE}); not judged now"
        )
    return replace(session, regarding_logical_name=ascii_lower(logical))


def sessions_modified(
    api: WebApi,
    since: datetime,
    until: datetime,
    *,
    page_size: int = 500,
    on_page: Callable[[int], None] | None = None,
) -> Iterator[SessionRow]:
    """Every session with ``since <= modifiedon < until``, oldest first, page by page;
    ``on_page(rows so far)`` after each page."""
    query = (
        f"{ENTITY_SET}?$select={','.join(COLUMNS)}"
        f"&$filter=modifiedon ge {odata_time(since)} and modifiedon lt {odata_time(until)}"
        # a unique column after modifiedon, as Microsoft's paging guidance asks, so that rows
        # modified in the same instant keep one order across pages
        "&$orderby=modifiedon asc,processsessionid asc"
    )
    read = 0
    for page in api.pages(query, page_size=page_size, prefer=(ANNOTATIONS,)):
        for row in page:
            yield SessionRow.from_json(row)
        read += len(page)
        if on_page is not None:
            on_page(read)
