"""Command line: ``python -m shared.cli run | inspect | entries``.

``run`` pushes message files (body + properties pairs, as in ``samples/``) through the same
pipeline the Functions trigger uses, into the configured store. ``inspect`` decides one message
without writing and prints one JSON object. ``entries`` reads the trail back.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from shared.audit import AuditEntry
from shared.envelope import InboundMessage, from_files, properties_path_for
from shared.errors import ServiceError
from shared.pipeline import Outcome, Pipeline, Policy, evaluate
from shared.settings import Settings, StoreKind, load_settings
from shared.stores import AuditStore, all_pages, build_store
from shared.verdicts import Settlement, Verdict

BUNDLED_SAMPLES = Path(__file__).resolve().parent.parent / "samples"
log = logging.getLogger("shared.cli")


def _console(stderr: bool = False) -> Console:
    return Console(
        stderr=stderr,
        highlight=False,
        soft_wrap=False,
        width=160 if not sys.stdout.isatty() else None,
    )


def message_files(paths: Iterable[Path]) -> list[Path]:
    """Body files named by the paths: ``NAME.body`` files, or every one in a folder."""
    bodies: list[Path] = []
    for path in paths:
        if path.is_dir():
            bodies.extend(sorted(path.glob("*.body")))
        elif path.is_file():
            bodies.append(path)
        else:
            raise FileNotFoundError(f"no such file or folder: {path}")
    return bodies


def load_message(body: Path, properties: Path | None = None) -> InboundMessage:
    """A message from a body file and its properties (``NAME.properties.json`` if present)."""
    if properties is None:
        candidate = properties_path_for(body)
        properties = candidate if candidate.is_file() else None
    return from_files(body, properties)


def _verdict_style(verdict: Verdict) -> str:
    return {"accepted": "green", "rejected": "yellow", "ignored": "dim", "malformed": "red"}[
        verdict.value
    ]


def _settlement_label(outcome: Outcome) -> str:
    return {
        Settlement.COMPLETE: "completed",
        Settlement.DEAD_LETTER: "dead-lettered",
        Settlement.RETRY: "not settled (retry)",
    }[outcome.settlement]


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    sources = args.paths or [BUNDLED_SAMPLES]
    bodies = message_files(sources)
    messages = [load_message(body) for body in bodies]
    store = build_store(settings)
    try:
        before = store.count()
        outcomes = Pipeline(store, Policy.from_settings(settings)).handle(messages)
        after = store.count()
    finally:
        store.close()
    console = _console()
    table = Table(title=f"{len(outcomes)} message(s) from {', '.join(map(str, sources))}")
    for column in ("message", "verdict", "reason", "settlement", "entry_id / description"):
        table.add_column(column, overflow="fold")
    for body, outcome in zip(bodies, outcomes, strict=True):
        d = outcome.decision
        table.add_row(
            body.name.removesuffix(".body"),
            f"[{_verdict_style(d.verdict)}]{d.verdict.value}[/]",
            d.reason.value if d.reason else "",
            _settlement_label(outcome),
            d.entry.entry_id if d.entry else (outcome.description or ""),
        )
    console.print(table)
    counts = Counter(o.decision.verdict for o in outcomes)
    dead = sum(o.settlement is Settlement.DEAD_LETTER for o in outcomes)
    retry = sum(o.settlement is Settlement.RETRY for o in outcomes)
    console.print(
        f"{counts[Verdict.ACCEPTED]} accepted, {counts[Verdict.REJECTED]} rejected, "
        f"{counts[Verdict.IGNORED]} ignored, {dead} dead-lettered"
        + (f", {retry} NOT STORED (store failed; rerun)" if retry else "")
    )
    console.print(
        f"{after - before} new entries; the store ({_store_label(settings)}) holds {after}"
    )
    return 1 if retry else 0


def _store_label(settings: Settings) -> str:
    if settings.audit_store is StoreKind.TABLE:
        return f"table {settings.audit_table_name}"
    return f"sqlite {settings.audit_sqlite_path}"


def cmd_inspect(args: argparse.Namespace, settings: Settings) -> int:
    message = load_message(args.body, args.properties)
    if args.content_type is not None:
        message = InboundMessage(**{**_fields(message), "content_type": args.content_type})
    decision = evaluate(message, Policy.from_settings(settings))
    print(
        json.dumps(
            {
                "verdict": decision.verdict.value,
                "reason": decision.reason.value if decision.reason else None,
                "entry": decision.entry.to_json_dict() if decision.entry else None,
            },
            ensure_ascii=False,
        )
    )
    if decision.verdict is Verdict.MALFORMED and decision.description:
        print(f"{decision.reason}: {decision.description}", file=sys.stderr)
    return 0


def _fields(message: InboundMessage) -> dict[str, object]:
    return {name: getattr(message, name) for name in InboundMessage.__slots__}


def _parse_time(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


EXPORT_PAGE_SIZE = 500


def iter_entries(
    store: AuditStore,
    *,
    regarding: str | None = None,
    session: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Iterator[AuditEntry]:
    """The entries the filters select, streamed page by page (memory stays flat)."""
    if regarding:
        pages = all_pages(
            lambda c: store.by_regarding(regarding, limit=EXPORT_PAGE_SIZE, continuation=c)
        )
    elif session:
        pages = all_pages(
            lambda c: store.by_session(session, limit=EXPORT_PAGE_SIZE, continuation=c)
        )
    else:
        pages = all_pages(
            lambda c: store.in_range(since, until, limit=EXPORT_PAGE_SIZE, continuation=c)
        )
    for entry in pages:
        if (since is None or entry.operation_created_on >= since) and (
            until is None or entry.operation_created_on < until
        ):
            yield entry


def write_jsonl(entries: Iterable[AuditEntry], out: TextIO) -> int:
    """One JSON entry per line; returns how many were written."""
    count = 0
    for entry in entries:
        out.write(entry.model_dump_json() + "\n")
        count += 1
    return count


def _selected(store: AuditStore, args: argparse.Namespace) -> Iterator[AuditEntry]:
    return iter_entries(
        store,
        regarding=getattr(args, "regarding", None),
        session=getattr(args, "session", None),
        since=args.since,
        until=args.until,
    )


def cmd_entries(args: argparse.Namespace, settings: Settings) -> int:
    store = build_store(settings)
    try:
        if args.format == "jsonl":
            write_jsonl(_selected(store, args), sys.stdout)
            return 0
        entries = list(_selected(store, args))
    finally:
        store.close()
    table = Table(title=f"audit trail: {len(entries)} entr{'y' if len(entries) == 1 else 'ies'}")
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
    for e in entries:
        table.add_row(
            e.operation_created_on.strftime("%Y-%m-%d %H:%M:%S"),
            e.message_name,
            f"[{_verdict_style(e.verdict)}]{e.verdict.value}[/]",
            e.reason.value if e.reason else "",
            f"{e.processsession_name or ''}\n{e.processsession_id}",
            f"{e.regarding_logical_name}\n{e.regarding_id}" if e.regarding_id else "-",
            _columns_summary([c.column for c in e.changes]),
        )
    _console().print(table)
    return 0


def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    store = build_store(settings)
    try:
        if args.output is None:
            count = write_jsonl(_selected(store, args), sys.stdout)
        else:
            args.output.parent.mkdir(parents=True, exist_ok=True)
            partial = args.output.with_name(args.output.name + ".partial")
            with partial.open("w", encoding="utf-8") as out:
                count = write_jsonl(_selected(store, args), out)
            partial.replace(args.output)  # a failed export never leaves a file that looks whole
    finally:
        store.close()
    print(f"exported {count} entries", file=sys.stderr)
    return 0


def _columns_summary(columns: list[str], shown: int = 4) -> str:
    if len(columns) <= shown + 1:
        return ", ".join(columns)
    return ", ".join(columns[:shown]) + f" (+{len(columns) - shown} more)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m shared.cli",
        description="Audit Dataverse processsession events (see README.md).",
    )
    parser.add_argument("--db", type=Path, help="SQLite file (overrides AUDIT_SQLITE_PATH)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every decision")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="process message files into the audit store")
    run.add_argument(
        "paths",
        nargs="*",
        type=Path,
        help="NAME.body files or folders of them (default: the bundled samples)",
    )
    run.set_defaults(handler=cmd_run)

    inspect = commands.add_parser("inspect", help="decide one message; print one JSON object")
    inspect.add_argument("body", type=Path, help="the message body file")
    inspect.add_argument(
        "--properties",
        type=Path,
        help="its properties JSON (default: NAME.properties.json beside it)",
    )
    inspect.add_argument("--content-type", help="override the content type")
    inspect.set_defaults(handler=cmd_inspect)

    entries = commands.add_parser("entries", help="read the audit trail")
    entries.add_argument("--regarding", help="regarding record id (e.g. a bank account)")
    entries.add_argument("--session", help="processsession id")
    entries.add_argument("--since", type=_parse_time, help="ISO-8601, inclusive")
    entries.add_argument("--until", type=_parse_time, help="ISO-8601, exclusive")
    entries.add_argument("--format", choices=("table", "jsonl"), default="table")
    entries.set_defaults(handler=cmd_entries)

    export = commands.add_parser("export", help="stream the audit trail as JSON lines")
    export.add_argument("--format", choices=("jsonl",), default="jsonl")
    export.add_argument("--since", type=_parse_time, help="ISO-8601, inclusive")
    export.add_argument("--until", type=_parse_time, help="ISO-8601, exclusive")
    export.add_argument("--output", type=Path, help="file to write (default: stdout)")
    export.set_defaults(handler=cmd_export)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        handlers=[RichHandler(console=_console(stderr=True), show_path=False)],
        format="%(message)s",
    )
    if not args.verbose:
        logging.getLogger("shared.pipeline").setLevel(logging.ERROR)
    try:
        overrides = {"audit_sqlite_path": args.db} if args.db else {}
        settings = load_settings(**overrides)
        return int(args.handler(args, settings))
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ServiceError as exc:  # e.g. the store is unreachable: say so, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
