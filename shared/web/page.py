"""The timeline as a web page (HTML), for the Functions app and ``psaudit serve`` alike.

Every value shown comes from a message, so every value is data: Jinja2 escapes it
(autoescape on), and the page carries no script at all under a Content-Security-Policy with
``script-src 'none'``; its one inline style is allowed by its hash. No framework, no CDN: the
page works offline, with a keyboard and a screen reader (headings, lists, labelled form
fields, table headers), and on a phone (one column under 40 rem).
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup, escape

from shared.dataverse.names import Namer
from shared.events.entry import AuditEntry
from shared.events.rules import BANK_ACCOUNT
from shared.stores.base import AuditStore
from shared.trail.reading import (
    UNVERIFIED_NOTE,
    BadRequest,
    TrailView,
    disagreements,
    live_reader,
    parse_limit,
    read_page,
    record_id,
    without_superseded,
)
from shared.trail.timeline import (
    NO_NAMES,
    NOT_CAPTURED,
    column_name,
    describe,
    person,
    regarding_name,
    visible,
)

DEFAULT_LIMIT = 50
STYLE = """
:root{color-scheme:light dark;--line:#8884;--muted:#777;font-family:system-ui,sans-serif}
body{margin:0 auto;max-width:72rem;padding:1rem;line-height:1.45}
h1{font-size:1.4rem;margin:.2rem 0}h2{font-size:1.05rem;margin:0 0 .4rem}
code{font-size:.9em;overflow-wrap:anywhere}.crumb,.id,.count{color:var(--muted);margin:.2rem 0}
.filters{display:flex;flex-wrap:wrap;gap:.6rem 1rem;align-items:end;margin:1rem 0}
.filters label{display:flex;flex-direction:column;font-size:.9rem}
input,select,button{font:inherit;padding:.35rem .5rem;min-height:2.5rem}
.timeline{list-style:none;padding:0;margin:0}
.timeline article{border:1px solid var(--line);border-radius:.5rem;padding:.8rem;margin:.8rem 0}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.2rem .8rem;margin:.4rem 0}
dt{font-weight:600}dd{margin:0;overflow-wrap:anywhere}
.scroll{overflow-x:auto}table{border-collapse:collapse;width:100%}
caption{text-align:left;font-weight:600;padding:.3rem 0}
th,td{border-top:1px solid var(--line);padding:.3rem .5rem;text-align:left;vertical-align:top;
overflow-wrap:anywhere}
.verdict.accepted{color:#1a7f37}.verdict.rejected{color:#b35900}.tampered,.error{color:#c62828}
nav{display:flex;gap:1.5rem;margin:1rem 0}a{color:inherit}
a:focus,input:focus,select:focus,button:focus{outline:3px solid #4a90e2;outline-offset:2px}
@media (max-width:40rem){dl{grid-template-columns:1fr}dd{margin-bottom:.3rem}}
"""
STYLE_HASH = base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'none'; "
    f"style-src 'sha256-{STYLE_HASH}'; img-src 'none'; form-action 'self'; base-uri 'none'; "
    "frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
CONTENT_TYPE = "text/html; charset=utf-8"
KINDS = {TrailView.BANK_ACCOUNT: "bankaccounts", TrailView.PROCESS_SESSION: "processsessions"}
_VERDICTS = (("", "all"), ("accepted", "accepted"), ("rejected", "rejected"))


@dataclass
class HtmlPage:
    """A page to answer: status, the HTML, the headers (CSP and friends)."""

    status: int
    body: str
    headers: dict[str, str] = field(default_factory=lambda: dict(HEADERS))


_HANDLER_TEXT = re.compile(r"(?i)(\bon\w+\s*)=")
_SCRIPT_URL_TEXT = re.compile(r"(?i)(javascript\s*):")


def _as_data(value: Any) -> Any:
    """Every value escaped (autoescape), and beyond that a stored ``onerror=`` or
    ``javascript:`` written with a character reference (``&#61;``, ``&#58;``): the reader sees
    the same text, and not even a naive scan of the HTML finds what looks like a handler."""
    if isinstance(value, Markup) or not isinstance(value, str):
        return value
    text = str(escape(value))
    text = _SCRIPT_URL_TEXT.sub(r"\1&#58;", _HANDLER_TEXT.sub(r"\1&#61;", text))
    return Markup(text)  # noqa: S704 - escaped just above


@cache
def _environment() -> Environment:
    return Environment(
        loader=FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=select_autoescape(["html"], default=True),
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=_as_data,
    )


def _render(status: int, **values: Any) -> HtmlPage:
    template = _environment().get_template("timeline.html")
    defaults: dict[str, Any] = {
        "style": Markup(STYLE),  # noqa: S704 - our constant, allowed by its hash; nothing else is raw
        "record_id": None,
        "error": None,
        "lookup": None,
        "home": "/",
    }
    return HtmlPage(status, template.render(**(defaults | values)))


def _day(raw: str | None, name: str) -> datetime | None:
    if not raw:
        return None
    try:
        moment = datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"{name} must be a date, e.g. 2026-12-01") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def dataverse_record_link(environment: str | None, table: str, row_id: str) -> str | None:
    """The record's form in Dataverse (model-driven app URL), when the environment is known."""
    if not environment:
        return None
    query = urlencode({"pagetype": "entityrecord", "etn": table, "id": row_id})
    return f"{environment.rstrip('/')}/main.aspx?{query}"


class _Links:
    """Links to the timelines, keeping the request's key (``code``) so that paging works
    behind a function key."""

    def __init__(self, base: str, keep: Mapping[str, str]) -> None:
        self.base = base.rstrip("/")
        self.keep = dict(keep)

    def timeline(self, kind: str, row_id: str, **params: str) -> str:
        query = {k: v for k, v in (self.keep | params).items() if v}
        return f"{self.base}/{kind}/{row_id}/timeline" + (f"?{urlencode(query)}" if query else "")


def _event(
    entry: AuditEntry,
    view: TrailView,
    links: _Links,
    tampered: Mapping[str, str],
    names: Namer = NO_NAMES,
) -> dict[str, Any]:
    regarding = None
    if entry.regarding_id:
        regarding = f"{entry.regarding_logical_name} {entry.regarding_id}"
        shown = regarding_name(entry, names)
        if shown:
            regarding += f" ({visible(shown)})"
    bank = entry.regarding_logical_name == BANK_ACCOUNT and entry.regarding_id
    return {
        "iso": entry.operation_created_on.isoformat(),
        "when": entry.operation_created_on.strftime("%Y-%m-%d %H:%M:%S UTC"),
        "message": entry.message_name,
        "verdict": entry.verdict.value,
        "reason": entry.reason.value if entry.reason else None,
        "session_name": visible(entry.processsession_name)
        if entry.processsession_name
        else "(no name)",
        "session_id": entry.processsession_id,
        "session_link": links.timeline("processsessions", entry.processsession_id)
        if view is TrailView.BANK_ACCOUNT
        else None,
        "user": person(entry.user_id, names),
        "initiated_by": person(entry.initiating_user_id, names)
        if entry.initiating_user_id != entry.user_id
        else None,
        "regarding": regarding,
        "regarding_link": links.timeline("bankaccounts", str(entry.regarding_id))
        if bank and view is TrailView.PROCESS_SESSION
        else None,
        "origin": entry.origin,
        "tampered": entry.entry_id in tampered,
        "tampered_problem": tampered.get(entry.entry_id, ""),
        "changes": [
            {
                "column": column_name(c.column, names),
                "old": describe(c.old, c.column, names)
                if c.captured(entry.message_name)
                else NOT_CAPTURED,
                "create": entry.message_name == "Create",
                "new": describe(c.new, c.column, names),
            }
            for c in entry.changes
        ],
    }


#: the most entries a page reads of one record to filter, order and count them (an account
#: has thousands; past this the page says so and asks for a date range)
READ_CAP = 20_000
_ORDERS = (("newest", "newest first"), ("oldest", "oldest first"))


def _read_record(
    store: AuditStore, view: TrailView, wanted: str
) -> tuple[list[AuditEntry], list[Any], list[Any], bool]:
    """Every entry of one record (checked, like every read), up to ``READ_CAP``; with the
    rows that could not be read, the marks, and whether the cap cut the read."""
    entries: list[AuditEntry] = []
    unreadable: list[Any] = []
    tampered: list[Any] = []
    token: str | None = None
    while True:
        page = read_page(store, view, wanted, 500, token)
        entries += page.entries
        unreadable += page.unreadable
        tampered += page.tampered
        token = page.continuation
        if token is None:
            return entries, unreadable, tampered, False
        if len(entries) >= READ_CAP:
            return entries, unreadable, tampered, True


def _page_number(raw: str | None) -> int:
    if raw is None or raw == "":
        return 1
    if not (raw.isascii() and raw.isdigit() and 0 < len(raw) <= 6) or int(raw) < 1:
        raise BadRequest("page must be a whole number from 1")
    return int(raw)


def timeline_page(
    store: AuditStore,
    view: TrailView,
    raw_id: str,
    params: Mapping[str, str],
    *,
    base: str = "/api",
    dataverse_url: str | None = None,
    keep: Mapping[str, str] | None = None,
    names: Namer = NO_NAMES,
) -> HtmlPage:
    """A bank account's or a session's timeline as people expect it: newest first (``order``
    switches), the filters (verdict, dates, user, column) applied before paging, pages
    numbered with previous and next, and the total. 400 for a bad id, filter or page; 404
    when the record has no entry at all. Store errors propagate."""
    kind = KINDS[view]
    label = "Bank account" if view is TrailView.BANK_ACCOUNT else "Process session"
    links = _Links(base, keep or {})
    try:
        wanted = record_id(raw_id)
        limit = parse_limit(params.get("limit"), DEFAULT_LIMIT)
        since, until = _day(params.get("since"), "From"), _day(params.get("until"), "To")
        verdict = params.get("verdict") or ""
        if verdict not in {v for v, _ in _VERDICTS}:
            raise BadRequest("verdict must be accepted, rejected or empty (all)")
        order = params.get("order") or "newest"
        if order not in {o for o, _ in _ORDERS}:
            raise BadRequest("order must be newest or oldest")
        user = record_id(params["user"]) if params.get("user") else ""
        column = (params.get("column") or "").strip()[:100]
        number = _page_number(params.get("page"))
        read, unreadable, marks, capped = _read_record(store, view, wanted)
    except BadRequest as exc:
        return _render(400, title=f"{label} timeline", error=str(exc), kind_label=label)
    if not read and not unreadable:
        return _render(
            404,
            title=f"{label} timeline",
            error=f"No audit entries for {label.lower()} {wanted}.",
            record_id=wanted,
            kind_label=label,
        )
    live = without_superseded(read, live_reader(store))
    wanted_column = column.lower()
    chosen = [
        e
        for e in live
        if (not verdict or e.verdict.value == verdict)
        and (since is None or e.operation_created_on >= since)
        and (until is None or e.operation_created_on < until)
        and (not user or user in (e.user_id, e.initiating_user_id))
        and (not wanted_column or any(c.column.lower() == wanted_column for c in e.changes))
    ]
    chosen.sort(key=lambda e: (e.operation_created_on, e.entry_id), reverse=order == "newest")
    total = len(chosen)
    pages = max(1, -(-total // limit))
    number = min(number, pages)
    shown = chosen[(number - 1) * limit : number * limit]
    filters = {
        "verdict": verdict,
        "since": params.get("since", ""),
        "until": params.get("until", ""),
        "user": user,
        "column": column,
        "order": order if order != "newest" else "",
        "limit": str(limit) if params.get("limit") else "",
    }
    problems = [f"entry {u.entry_id} could not be read: {u.problem}" for u in unreadable]
    if capped:
        problems.append(
            f"only the first {READ_CAP:,} entries of this record were read: choose dates to "
            "see the rest"
        )
    tampered = disagreements(marks)
    table = BANK_ACCOUNT if view is TrailView.BANK_ACCOUNT else "processsession"
    other = "oldest" if order == "newest" else "newest"
    return _render(
        200,
        title=f"{label} timeline",
        kind_label=label,
        record_id=wanted,
        dataverse_link=dataverse_record_link(dataverse_url, table, wanted),
        events=[_event(e, view, links, tampered, names) for e in shown],
        total=total,
        read=len(live),
        filtered=total != len(live),
        page_number=number,
        pages=pages,
        order_label=dict(_ORDERS)[order],
        order_link=links.timeline(kind, wanted, **(filters | {"order": other, "page": ""}))
        if total > 1
        else None,
        other_order_label=dict(_ORDERS)[other],
        problems=problems,
        unverified=UNVERIFIED_NOTE if getattr(store, "ring", None) is None else None,
        verdicts=_VERDICTS,
        verdict=verdict,
        since=filters["since"][:10],
        until=filters["until"][:10],
        user=user,
        column=column,
        order=order,
        orders=_ORDERS,
        limit=limit,
        hidden=sorted(links.keep.items()),
        next_link=links.timeline(kind, wanted, **filters, page=str(number + 1))
        if number < pages
        else None,
        previous_link=links.timeline(kind, wanted, **filters, page=str(number - 1))
        if number > 1
        else None,
    )


def index_page(lookup: str) -> HtmlPage:
    """The start page of ``psaudit serve``: a form that opens a timeline."""
    return _render(200, title="Audit timelines", lookup=lookup)
