"""The trail as people read it: a timeline of events (text, CSV), transport-free.

Every value shown comes from a message, so every value is data: control characters are made
visible (``escape_controls``) and nothing is shortened. Text is wrapped only between words
(a word longer than the line stays whole), so a narrow terminal shows the same words as a
wide one, only broken into other lines.
"""

from __future__ import annotations

import csv
import io
import json
import re
import textwrap
from collections.abc import Iterable, Iterator
from typing import Any

from shared.dataverse.names import Namer, NoNames
from shared.events.entry import AuditEntry, Change
from shared.trail.reading import ALTERED, UNSEALED, UNVERIFIED, Checked

ARROW = "\u2192"
#: no names: ids and logical names (no DATAVERSE_URL, or Dataverse unreachable)
NO_NAMES: Namer = NoNames()
#: what a spreadsheet would run as a formula when a cell begins with it (OWASP, CSV injection)
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
CSV_COLUMNS = (
    "operation_created_on",
    "message_name",
    "verdict",
    "reason",
    "processsession_id",
    "processsession_name",
    "regarding_logical_name",
    "regarding_id",
    "regarding_name",
    "regarding_source",
    "user_id",
    "user_name",
    "initiating_user_id",
    "origin",
    "changes",
    "entry_id",
    "recorded_at",
    "seal_status",
    "seal_problem",
)
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u200b-\u200f\u202a-\u202e\u2066-\u2069]")


def visible(text: str) -> str:
    """``text`` on one line with every control, bidi and zero-width character written as an
    escape (``\\n``, ``\\u202e``), so a stored value cannot forge lines or reorder text."""

    def escape(match: re.Match[str]) -> str:
        char = match.group()
        return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(char, f"\\u{ord(char):04x}")

    return _CONTROLS.sub(escape, text)


def describe(value: Any, column: str | None = None, names: Namer = NO_NAMES) -> str:
    """A change's value for people: a lookup by its name (else table and id), a choice by its
    label (the message's, else the option set's read from Dataverse, else its value), nothing
    as ``(empty)``, anything else as compact JSON."""
    if value is None:
        return "(empty)"
    if isinstance(value, str):
        return visible(value) if value else '""'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, dict):
        if "logical_name" in value and "id" in value and "attributes" not in value:
            name = value.get("name")
            shown = f"{value.get('logical_name')} {value.get('id')}"
            return visible(f"{name} ({shown})") if name else visible(shown)
        if "value" in value and set(value) <= {"value", "label"}:
            label = value.get("label") or (
                names.choice(column, value["value"]) if column is not None else None
            )
            return visible(str(label)) if label else str(value["value"])
    return visible(json.dumps(value, ensure_ascii=False, sort_keys=True))


NOT_CAPTURED = "(not captured)"


def column_name(column: str, names: Namer = NO_NAMES) -> str:
    """A column for people: its display name with the logical name beside it, when known."""
    display = names.column(column)
    return f"{visible(display)} ({visible(column)})" if display else visible(column)


def change_line(change: Change, message_name: str = "Update", names: Namer = NO_NAMES) -> str:
    """``column: old → new``; an old value that was not captured reads ``(not captured)``,
    never ``(empty)``; a Create has no old values and shows only the new one."""
    column = column_name(change.column, names)
    new = describe(change.new, change.column, names)
    if message_name == "Create":
        return f"{column}: {new}"
    if message_name == "Delete":  # the value the row held when it was deleted
        return f"{column}: {describe(change.old, change.column, names)} (when deleted)"
    captured = change.captured(message_name)
    old = describe(change.old, change.column, names) if captured else NOT_CAPTURED
    return f"{column}: {old} {ARROW} {new}"


def person(user_id: str, names: Namer = NO_NAMES) -> str:
    """A user for people: the full name with the id beside it, when known."""
    name = names.user(user_id)
    return f"{visible(name)} ({user_id})" if name else user_id


def regarding_name(entry: AuditEntry, names: Namer = NO_NAMES) -> str | None:
    """The regarding record's name: the message's, else its primary name read from Dataverse."""
    return entry.regarding_name or names.record(entry.regarding_logical_name, entry.regarding_id)


def _when(entry: AuditEntry) -> str:
    return entry.operation_created_on.strftime("%Y-%m-%d %H:%M:%S UTC")


def event_lines(entry: AuditEntry, names: Namer = NO_NAMES) -> list[str]:
    """One event as logical lines (each wrapped later): header, who, what."""
    verdict = entry.verdict.value + (f" ({entry.reason.value})" if entry.reason else "")
    lines = [f"{_when(entry)}  {entry.message_name}  {verdict}"]
    name = visible(entry.processsession_name) if entry.processsession_name else "(no name)"
    lines.append(f"session: {name} {entry.processsession_id}")
    who = f"user: {person(entry.user_id, names)}"
    if entry.initiating_user_id != entry.user_id:
        who += f" initiated by {person(entry.initiating_user_id, names)}"
    lines.append(who)
    if entry.regarding_id:
        regarding = f"regarding: {entry.regarding_logical_name} {entry.regarding_id}"
        shown = regarding_name(entry, names)
        if shown:
            regarding += f" {visible(shown)}"
        lines.append(regarding + f" (from {entry.regarding_source})")
    if entry.message_name == "Delete":
        lines.append("deleted: the session was deleted in Dataverse")
    if entry.origin != "event":
        lines.append(f"origin: {entry.origin} (read from Dataverse; old values unknown)")
    lines += [change_line(c, entry.message_name, names) for c in entry.changes] or [
        "no column changed"
    ]
    return lines


def wrap(line: str, width: int, indent: str) -> list[str]:
    """``line`` wrapped between words only: a long word (an id, a URL) overflows rather than
    breaking; hyphens never break."""
    return textwrap.wrap(
        line,
        width=max(width, 20),
        initial_indent=indent,
        subsequent_indent=indent + "    ",
        break_long_words=False,
        break_on_hyphens=False,
        drop_whitespace=True,
    ) or [indent]


def checked(item: AuditEntry | Checked) -> Checked:
    """An entry with what a reader proved of it (a bare entry: nothing was checked)."""
    return item if isinstance(item, Checked) else Checked(item, UNVERIFIED)


def seal_line(item: Checked) -> str | None:
    """What a block says of its entry's check: nothing when it passed."""
    if item.status == ALTERED:
        return f"seal does not match: {visible(item.problem or '')}"
    if item.status == UNSEALED:
        return "not sealed: written without a trail key"
    return None


def timeline_text(
    entries: Iterable[AuditEntry | Checked], width: int, title: str, names: Namer = NO_NAMES
) -> Iterator[str]:
    """The timeline as text lines of at most ``width`` characters (but for longer words);
    an entry that failed its check says so in its own block."""
    yield from wrap(title, width, "")
    count = 0
    for item in map(checked, entries):
        count += 1
        yield ""
        header, *rest = event_lines(item.entry, names)
        yield from wrap(header, width, "")
        note = seal_line(item)
        if note is not None:
            yield from wrap(f"!! {note}", width, "  ")
        for line in rest:
            yield from wrap(line, width, "  ")
    yield ""
    yield f"{count} event{'' if count == 1 else 's'}"


def neutralise(cell: str) -> str:
    """A cell a spreadsheet will show as text: one beginning with ``= + - @``, a tab or a
    carriage return gets a leading apostrophe (OWASP's advice against CSV injection); the
    text itself is kept."""
    return "'" + cell if cell.startswith(FORMULA_STARTS) else cell


def csv_row(item: AuditEntry | Checked, names: Namer = NO_NAMES) -> list[str]:
    """One entry as CSV cells, changes flattened into one cell (``a: x → y; b: …``), with
    what a reader proved of it (``seal_status``, ``seal_problem``)."""
    shown = checked(item)
    entry = shown.entry
    data = entry.to_json_dict()
    data["seal_status"] = shown.status
    data["seal_problem"] = shown.problem if shown.status == ALTERED else None
    data["user_name"] = names.user(entry.user_id)
    data["regarding_name"] = regarding_name(entry, names)
    cells: list[str] = []
    for column in CSV_COLUMNS:
        if column == "changes":
            value = "; ".join(change_line(c, entry.message_name, names) for c in entry.changes)
        else:
            raw = data.get(column)
            value = "" if raw is None else str(raw)
        cells.append(neutralise(value))
    return cells


def write_csv(
    entries: Iterable[AuditEntry | Checked], out: io.TextIOBase | Any, names: Namer = NO_NAMES
) -> int:
    """A header and one row per entry; returns how many entries were written."""
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    count = 0
    for entry in entries:
        writer.writerow(csv_row(entry, names))
        count += 1
    return count
