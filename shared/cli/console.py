"""What a person reads in the terminal: rich tables of outcomes, the trail, and the DLQ.

Everything shown that came from a message, a store or the broker is data, never markup or
terminal control: it goes into cells as ``rich.text.Text`` (no ``[...]`` markup is read) with
control characters shown escaped (``\x1b``), so a session named ``[/oops]`` or a description
holding an escape sequence can neither crash a command nor reach the terminal raw.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import textwrap
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from rich.console import Console, ConsoleOptions, RenderResult
from rich.logging import RichHandler
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from shared.events.entry import AuditEntry
from shared.pipeline import Outcome
from shared.trail.reading import ALTERED, Checked
from shared.verdicts import Settlement, Verdict

_STYLE = {"accepted": "green", "rejected": "yellow", "ignored": "dim", "malformed": "red"}
_SETTLED = {
    Settlement.COMPLETE: "completed",
    Settlement.DEAD_LETTER: "dead-lettered",
    Settlement.RETRY: "not settled (retry)",
}


#: C0 and C1 controls and DEL (tab and newline kept), the line and paragraph separators that
#: break a table row, and the bidirectional controls that can make a terminal show text other
#: than what it holds.
_CONTROL = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)
#: What JSON output writes as a \u escape although JSON allows it raw: the same characters
#: outside C0 (which every JSON writer escapes already). Lossless: it parses back the same.
_JSON_UNSAFE = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
#: A table cell shows at most this many characters of a value, then says what it left out.
CELL_CHARS = 300


def json_line(text: str) -> str:
    """A JSON text with every terminal-unsafe character written as a ``\\uXXXX`` escape (they
    can only stand inside strings, where the escape means the same character)."""
    return _JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def escape_controls(value: object) -> str:
    """``value`` as text with every control character written as an escape (``\x07``)."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), str(value))


def cut(text: str, limit: int = CELL_CHARS) -> str:
    """At most ``limit`` characters of ``text``, with a marker saying how many were left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… [{len(text) - limit:,} more characters]"


def plain(value: object, limit: int | None = CELL_CHARS) -> Text:
    """A table cell or line from data: no markup interpretation, controls escaped, cut to
    ``limit`` characters (None: whole)."""
    text = str(value)
    return Text(escape_controls(cut(text, limit) if limit is not None else text))


def iso_log_time(moment: datetime) -> Text:
    """Log times as ISO-8601 UTC (``2026-12-02T09:15:42Z``), whatever the locale."""
    return Text(moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))


class PlainRichHandler(RichHandler):
    """Log lines as plain text: a message may quote data (a description, a name)."""

    def render_message(self, record: logging.LogRecord, message: str) -> Text:
        return plain(message, None)


def console(stderr: bool = False) -> Console:
    """A console as wide as the terminal; when not writing to one, ``COLUMNS`` or 160."""
    width = None if sys.stdout.isatty() else int(os.environ.get("COLUMNS", "") or 160)
    return Console(stderr=stderr, highlight=False, soft_wrap=False, width=width)


def _verdict(verdict: Verdict) -> Text:
    return Text(verdict.value, style=_STYLE[verdict.value])


def outcomes_table(labels: Sequence[str], outcomes: Sequence[Outcome], title: str) -> Adaptive:
    """One row per message: verdict, reason, settlement, entry id or description."""
    table = Table(title=plain(title))
    for column in ("message", "verdict", "reason", "settlement", "entry_id / description"):
        table.add_column(column, overflow="fold")
    for label, outcome in zip(labels, outcomes, strict=True):
        decision = outcome.decision
        table.add_row(
            plain(label),
            _verdict(decision.verdict),
            outcome.dead_letter_reason
            if outcome.settlement is Settlement.DEAD_LETTER
            else (decision.reason.value if decision.reason else ""),
            _SETTLED[outcome.settlement],
            plain(
                decision.entry.entry_id
                if decision.entry and outcome.settlement is Settlement.COMPLETE
                else (outcome.description or "")
            ),
        )
    return Adaptive(table)


def summary(outcomes: Iterable[Outcome]) -> str:
    """``3 accepted, 2 rejected, 2 ignored, 2 dead-lettered`` (and any not stored)."""
    outcomes = list(outcomes)
    return summary_of(
        Counter(o.decision.verdict for o in outcomes), Counter(o.settlement for o in outcomes)
    )


def summary_of(verdicts: Counter[Verdict], settled: Counter[Settlement]) -> str:
    """``summary`` from counts (a long-running worker keeps counts, not outcomes)."""
    text = (
        f"{verdicts[Verdict.ACCEPTED]} accepted, {verdicts[Verdict.REJECTED]} rejected, "
        f"{verdicts[Verdict.IGNORED]} ignored, {settled[Settlement.DEAD_LETTER]} "
        "dead-lettered"
    )
    if settled[Settlement.RETRY]:
        text += f", {settled[Settlement.RETRY]} NOT STORED (the store failed; they will retry)"
    return text


def _columns(columns: list[str], shown: int = 4) -> str:
    if len(columns) <= shown + 1:
        return ", ".join(columns)
    return ", ".join(columns[:shown]) + f" (+{len(columns) - shown} more)"


class Adaptive:
    """A table that stays whole at any width: drawn as a table when every cell fits the
    console, else as stacked blocks (``column: value`` lines, wrapped between words, ids
    whole), so that nothing is cut mid-word and no line passes the terminal's width."""

    def __init__(self, table: Table) -> None:
        self.table = table

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        wide = options.update_width(100_000)  # the width every cell would take, unfolded
        if Measurement.get(console, wide, self.table).maximum <= options.max_width:
            yield self.table
            return
        width = max(options.max_width, 20)
        title = self.table.title
        if title:
            for line in _wrap(str(title.plain if isinstance(title, Text) else title), width):
                yield Text(line, no_wrap=True, overflow="ignore")
        headers = [str(c.header) for c in self.table.columns]
        cells = [list(c.cells) for c in self.table.columns]
        for index in range(self.table.row_count):
            yield Text("")
            for header, column in zip(headers, cells, strict=True):
                value = column[index]
                shown = value.plain if isinstance(value, Text) else str(value)
                shown = " ".join(shown.split("\n")).strip()
                if not shown:
                    continue
                for line in _wrap(f"{header}: {shown}", width):
                    yield Text(line, no_wrap=True, overflow="ignore")


def _wrap(line: str, width: int) -> list[str]:
    """Between words only; a word longer than the whole width (rare: no id is) is broken."""
    return textwrap.wrap(
        line,
        width=width,
        subsequent_indent="    ",
        break_on_hyphens=False,
        break_long_words=True,
    ) or [""]


def entries_table(entries: Sequence[AuditEntry | Checked]) -> Adaptive:
    """The audit trail, oldest first, ids whole (a narrow console gets stacked blocks: see
    ``Adaptive``). An entry that failed its check against the sealed entry says so in its
    verdict cell."""
    title = f"audit trail: {len(entries)} entr{'y' if len(entries) == 1 else 'ies'}"
    table = Table(title=title)
    for column in (
        "when (UTC)",
        "message",
        "verdict",
        "reason",
        "processsession",
        "regarding",
        "changed columns",
    ):
        table.add_column(column, overflow="fold")
    for item in entries:
        e = item.entry if isinstance(item, Checked) else item
        altered = isinstance(item, Checked) and item.status == ALTERED
        table.add_row(
            e.operation_created_on.strftime("%Y-%m-%d %H:%M:%S"),
            plain(e.message_name),
            Text.assemble(_verdict(e.verdict), ("\nSEAL DOES NOT MATCH", "bold red"))
            if altered
            else _verdict(e.verdict),
            e.reason.value if e.reason else "",
            plain(f"{escape_controls(e.processsession_name or '')}\n{e.processsession_id}"),
            plain(f"{escape_controls(e.regarding_logical_name)}\n{e.regarding_id}")
            if e.regarding_id
            else "-",
            plain(_columns([escape_controls(c.column) for c in e.changes])),
        )
    return Adaptive(table)


def dead_letter_table(messages: Sequence[Any], title: str) -> Adaptive:
    """Dead-lettered Service Bus messages: id, reason, description, enqueued, deliveries."""
    table = Table(title=plain(title))
    for column in ("message id", "reason", "description", "enqueued (UTC)", "deliveries"):
        table.add_column(column, overflow="fold")
    for m in messages:
        enqueued = m.enqueued_time_utc.strftime("%Y-%m-%d %H:%M:%S") if m.enqueued_time_utc else ""
        table.add_row(
            plain(m.message_id or ""),
            plain(m.dead_letter_reason or ""),
            plain(m.dead_letter_error_description or ""),
            enqueued,
            str(m.delivery_count),
        )
    return Adaptive(table)


def reconcile_table(found: dict[str, Any]) -> Adaptive:
    """reconcile's findings (its JSON), one row per session: missing, behind, unresolved (the
    trail lacks the regarding), only in trail, and entries dated in the future (implausible);
    ids whole."""
    rows = [
        (kind, item)
        for kind in ("missing", "behind", "unresolved", "only_in_trail")
        for item in found.get(kind, [])
    ] + [
        ("implausible", {**item, "modifiedon": item["operation_created_on"]})
        for item in found.get("implausible", [])
    ]
    title = (
        f"reconcile {found['since']} .. {found['until']}: {found['sessions']} session(s), "
        f"{len(found['missing'])} missing, {len(found['behind'])} behind, "
        f"{len(found.get('unresolved', []))} without their regarding, "
        f"{len(found['only_in_trail'])} only in the trail"
    )
    table = Table(title=title)
    for column in ("finding", "processsession", "modifiedon", "regarding"):
        table.add_column(column, overflow="fold")
    for kind, item in rows:
        regarding = (
            f"{escape_controls(item['regarding_logical_name'] or '')}\n{item['regarding_id']}"
            if item.get("regarding_id")
            else "-"
        )
        table.add_row(
            kind.replace("_", " "),
            plain(item["processsession_id"]),
            plain(escape_controls(item["modifiedon"])),
            plain(regarding),
        )
    return Adaptive(table)
