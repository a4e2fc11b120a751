"""Reading the trail: ``entries``, ``export``, ``timeline`` and ``serve``."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import TextIO

from shared.cli.common import (
    EXPORT_PAGE_SIZE,
    Commands,
    check_range,
    output_format,
    record_guid,
    table_or_jsonl_option,
    text_width,
    time_range_options,
    write_jsonl,
)
from shared.cli.console import (
    console,
    entries_table,
    escape_controls,
)
from shared.dataverse.names import Namer
from shared.events.entry import AuditEntry
from shared.settings import Settings
from shared.stores import AuditStore, build_store
from shared.trail.reading import (
    UNVERIFIED_NOTE,
    Checked,
    Checks,
    live_reader,
    without_superseded,
)
from shared.trail.timeline import NO_NAMES
from shared.verdicts import Verdict


def iter_entries(
    store: AuditStore,
    checks: Checks,
    *,
    regarding: str | None = None,
    session: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Iterator[Checked]:
    """The entries the filters select (every filter given applies), each with what was
    proved of it (``checks`` tallies the failures), streamed page by page (memory flat)."""
    if since is not None and until is not None and since >= until:
        raise ValueError(
            f"--since {since.isoformat()} is not earlier than --until {until.isoformat()}"
        )
    if regarding:
        pages = checks.entries(
            lambda c: store.by_regarding(regarding, limit=EXPORT_PAGE_SIZE, continuation=c)
        )
    elif session:
        pages = checks.entries(
            lambda c: store.by_session(session, limit=EXPORT_PAGE_SIZE, continuation=c)
        )
    else:
        pages = checks.entries(
            lambda c: store.in_range(since, until, limit=EXPORT_PAGE_SIZE, continuation=c)
        )
    wanted_session = session.lower() if regarding and session else None
    sessions: dict[str, list[AuditEntry]] = {}
    read_session = live_reader(store)

    def live(session_id: str) -> list[AuditEntry]:
        if session_id not in sessions:
            sessions[session_id] = list(read_session(session_id))
        return sessions[session_id]

    for item in pages:
        entry = item.entry
        if wanted_session is not None and entry.processsession_id != wanted_session:
            continue  # --regarding read the trail; --session narrows it
        if entry.origin == "backfill" and not without_superseded([entry], live):
            continue  # a live entry records this version: one entry per version
        if (since is None or entry.operation_created_on >= since) and (
            until is None or entry.operation_created_on < until
        ):
            yield item


def _names(settings: Settings) -> Namer:
    """Names from Dataverse (DATAVERSE_URL): users, column display names, choice labels, the
    bank account's name; without it, none and no request. Unreachable: said once."""
    if not settings.dataverse_url:
        return NO_NAMES
    from shared.dataverse.names import NameReader
    from shared.dataverse.webapi import build_web_api

    def unavailable(why: str) -> None:
        print(
            f"warning: names from Dataverse are unavailable ({escape_controls(why)}): ids and "
            "logical names are shown",
            file=sys.stderr,
        )

    api = build_web_api(
        settings.dataverse_url,
        budget=10.0,
        max_answer_bytes=settings.dataverse_max_answer_bytes,
    )
    return NameReader(api, on_unavailable=unavailable)


def _checks(settings: Settings) -> Checks:
    """The tally of a read; without a key, says once on stderr that nothing is checked."""
    verified = settings.key_ring() is not None
    if not verified:
        print(f"warning: {UNVERIFIED_NOTE}", file=sys.stderr)
    return Checks(verified)


def _report(checks: Checks) -> int:
    """What a read found wrong, on stderr; exit 1 when any entry failed its check or any row
    could not be read (the output itself marks each entry: ``seal_status``)."""
    for row in checks.unreadable:
        print(f"error: {escape_controls(str(row))}", file=sys.stderr)
    if checks.altered:
        print(
            f"error: {checks.altered} entr{'y' if checks.altered == 1 else 'ies'} failed "
            "the check against the sealed entry (marked in the output); run `psaudit verify`",
            file=sys.stderr,
        )
    return 1 if checks.failed else 0


def _selected(store: AuditStore, checks: Checks, args: argparse.Namespace) -> Iterator[Checked]:
    check_range(args)
    if getattr(args, "id", None) and args.command == "entries":
        return (c for c in checks.entries(lambda _: store.by_id(args.id)))
    found = iter_entries(
        store,
        checks,
        regarding=getattr(args, "regarding", None),
        session=getattr(args, "session", None),
        since=args.since,
        until=args.until,
    )
    return _filtered(found, args)


def _filtered(found: Iterator[Checked], args: argparse.Namespace) -> Iterator[Checked]:
    """``--user`` (who ran it or on whose behalf) and ``--column`` (a change of that column,
    ASCII case-insensitive), each when given."""
    user = getattr(args, "user", None)
    column = (getattr(args, "column", None) or "").lower() or None
    for item in found:
        entry = item.entry
        if user and user not in (entry.user_id, entry.initiating_user_id):
            continue
        if column and not any(c.column.lower() == column for c in entry.changes):
            continue
        yield item


def _record_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--regarding", type=record_guid, help="only one regarding record's (e.g. a bank account)"
    )
    parser.add_argument("--session", type=record_guid, help="only one processsession's")


def _filter_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--user", type=record_guid, help="only events run by (or on behalf of) this user id"
    )
    parser.add_argument("--column", help="only events that changed this column")


def cmd_entries(args: argparse.Namespace, settings: Settings) -> int:
    store = build_store(settings, read_only=True)
    checks = _checks(settings)
    try:
        if output_format(args, piped="jsonl") == "jsonl":
            count = write_jsonl(_selected(store, checks, args), sys.stdout)
        else:
            entries = list(_selected(store, checks, args))
            count = len(entries)
            out = console()
            out.print(entries_table(entries))
    finally:
        store.close()
    failed = _report(checks)
    if args.id and count == 0:
        print(f"no audit entry with id {args.id}", file=sys.stderr)
        return 1
    return failed


def _write_format(
    fmt: str, entries: Iterable[Checked], out: TextIO, names: Namer = NO_NAMES
) -> int:
    if fmt == "csv":
        from shared.trail.timeline import write_csv

        return write_csv(entries, out, names)
    return write_jsonl(entries, out)


def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    check_range(args)
    if args.output is not None:
        _check_output(args.output, args.force)
    store = build_store(settings, read_only=True)
    checks = _checks(settings)
    try:
        selected = _selected(store, checks, args)
        names = _names(settings) if args.format == "csv" else NO_NAMES
        if args.output is None:
            count = _write_format(args.format, selected, sys.stdout, names)
        else:
            partial = args.output.with_name(args.output.name + ".partial")
            with partial.open("w", encoding="utf-8", newline="") as out:
                count = _write_format(args.format, selected, out, names)
            partial.replace(args.output)  # a failed export never leaves a file that looks whole
    finally:
        store.close()
    print(f"exported {count} entries", file=sys.stderr)
    return _report(checks)


def _check_output(path: Path, force: bool = False) -> None:
    """``export --output`` writes a regular file in a folder that exists; an existing file
    only with ``--force``; never a folder, a device such as /dev/full, or a FIFO."""
    if path.exists() and not path.is_file():
        kind = "a folder" if path.is_dir() else "not a regular file"
        raise ValueError(f"--output {path} is {kind}; name a file to write the export to")
    if not path.parent.is_dir():
        raise ValueError(f"--output {path}: the folder {path.parent} does not exist")
    if path.exists() and not force:
        raise ValueError(f"--output {path} exists; add --force to replace it")


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    """Serve until SIGINT/SIGTERM."""
    from shared.dataverse.webapi import _loopback
    from shared.web.serve import serve

    if not _loopback(args.host):
        print(
            f"warning: serving on {args.host}, which is not loopback: no key protects these "
            "pages; anyone who reaches the port reads the trail",
            file=sys.stderr,
        )
    store = build_store(settings, read_only=True, live=True)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    shown = f"[{args.host}]" if ":" in args.host else args.host

    def listening() -> None:
        print(f"serving http://{shown}:{args.port}/ (Ctrl-C stops)", file=sys.stderr, flush=True)

    try:
        serve(
            store,
            args.host,
            args.port,
            settings.dataverse_url,
            on_listening=listening,
            stop=stop,
            names=_names(settings),
        )
    finally:
        store.close()
    return 0


def cmd_timeline(args: argparse.Namespace, settings: Settings) -> int:
    """One block per event, oldest first; exit 1 when the record has no entry, or when an
    entry shown failed its check against the sealed entry (marked in its block)."""
    from shared.trail.timeline import timeline_text, write_csv

    if bool(args.id) == bool(args.session):
        raise ValueError("name a bank account (ID) or a session (--session ID), not both")
    check_range(args)
    store = build_store(settings, read_only=True)
    checks = _checks(settings)
    try:
        entries = iter_entries(
            store,
            checks,
            regarding=args.id,
            session=args.session,
            since=args.since,
            until=args.until,
        )
        entries = _filtered(entries, args)
        if args.verdict:
            entries = (e for e in entries if e.entry.verdict.value in args.verdict)
        fmt = args.format or "text"
        names = _names(settings) if fmt != "jsonl" else NO_NAMES
        if fmt == "jsonl":
            count = write_jsonl(entries, sys.stdout)
        elif fmt == "csv":
            count = write_csv(entries, sys.stdout, names)
        else:
            title = (
                f"timeline of bank account {args.id}"
                if args.id
                else f"timeline of session {args.session}"
            )
            width = text_width()
            count = 0
            for line in timeline_text(entries, width or 1_000_000, title, names):
                count += line == ""
                print(line)
            count -= 1  # the blank line before the count
    finally:
        store.close()
    failed = _report(checks)
    if count == 0:
        print("no audit entries for that record (and filters)", file=sys.stderr)
        return 1
    return failed


def add_commands(commands: Commands) -> None:
    """Add this group's commands to ``psaudit``."""
    entries = commands.add_parser(
        "entries",
        help="read the audit trail",
        description="Example: psaudit entries --regarding 8e5f1a2b-6c7d-ef11-bfe3-6045bd0c1a22 "
        "--since 2024-11-01",
    )
    _record_options(entries)
    entries.add_argument(
        "--id", type=record_guid, help="one entry by its entry_id (as verify names it)"
    )
    _filter_options(entries)
    time_range_options(entries)
    table_or_jsonl_option(entries)
    entries.set_defaults(handler=cmd_entries)

    export = commands.add_parser(
        "export",
        help="stream the audit trail as JSON lines or CSV",
        description="Example: psaudit export --since 2026-12-01 --format csv --output dec.csv",
    )
    export.add_argument(
        "--format",
        choices=("jsonl", "csv"),
        default="jsonl",
        help="jsonl (one entry per line) or csv (one row per entry, changes flattened, cells "
        "that a spreadsheet would run as formulas neutralised)",
    )
    _record_options(export)
    _filter_options(export)
    time_range_options(export)
    export.add_argument("--output", type=Path, help="file to write (default: stdout)")
    export.add_argument("--force", action="store_true", help="replace an existing --output file")
    export.set_defaults(handler=cmd_export)

    timeline = commands.add_parser(
        "timeline",
        help="a bank account's (or a session's) events, oldest first, as people read them",
        description="Examples: psaudit timeline 6f9c2d4e-8a1b-4c3d-9e5f-0a1b2c3d4e5f; "
        "psaudit timeline --session 0f3b5d7e-2c3f-ef11-9f89-000d3a5c2b71 --format csv",
    )
    timeline.add_argument("id", nargs="?", type=record_guid, help="the bank account's id")
    timeline.add_argument("--session", type=record_guid, help="a processsession id instead")
    timeline.add_argument(
        "--verdict",
        action="append",
        # only what the trail holds: ignored and malformed messages write no entry
        choices=[Verdict.ACCEPTED.value, Verdict.REJECTED.value],
        help="only events with this verdict (repeatable)",
    )
    _filter_options(timeline)
    time_range_options(timeline)
    timeline.add_argument(
        "--format",
        choices=("text", "jsonl", "csv"),
        help="text (default; wrapped between words at the terminal's width), jsonl or csv",
    )
    timeline.set_defaults(handler=cmd_timeline)

    serve = commands.add_parser(
        "serve",
        help="serve the timeline pages and the JSON read API on this machine",
        description="Example: psaudit serve --port 7071, then open "
        "http://127.0.0.1:7071/ (no key on loopback; the Functions app is what serves others)",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (loopback)")
    serve.add_argument("--port", type=int, default=7071, help="port (default 7071)")
    serve.set_defaults(handler=cmd_serve)
