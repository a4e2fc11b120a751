"""Command line: ``python -m shared.cli COMMAND`` (``--help`` lists them).

* ``run`` pushes message files (body + properties pairs, as in ``samples/``) through the same
  pipeline the Functions trigger uses, into the configured store.
* ``inspect`` decides one message without writing and prints one JSON object.
* ``entries`` and ``export`` read the trail back (table or JSON lines).
* ``seal`` and ``verify`` make and check the tamper-evident trail (``shared.stores.seals``).
* ``check-store`` proves that every view of the store agrees with its entries.
* ``worker``, ``send`` and ``dlq peek|replay`` talk to Service Bus with the azure-servicebus SDK.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from azure.core.exceptions import AzureError

from shared.cli.console import (
    PlainRichHandler,
    console,
    dead_letter_table,
    entries_table,
    escape_controls,
    iso_log_time,
    json_line,
    outcomes_table,
    plain,
    reconcile_table,
    summary,
    summary_of,
)
from shared.dataverse.registration import DEFAULT_OLD_VALUE_COLUMNS, RegistrationError
from shared.errors import ServiceError, StoreUnavailable
from shared.events.entry import AuditEntry
from shared.events.envelope import InboundMessage, from_files, properties_path_for
from shared.pipeline import Pipeline, Policy, evaluate
from shared.settings import Settings, StoreKind, load_settings
from shared.stores import AuditStore, all_pages, build_store
from shared.trail.reading import live_reader, without_superseded
from shared.verdicts import Settlement, Verdict

BUNDLED_SAMPLES = Path(__file__).resolve().parents[2] / "samples"
EXPORT_PAGE_SIZE = 500
log = logging.getLogger("shared.cli")


KNOWN_PROPERTIES = frozenset(
    {
        "content_type",
        "message_id",
        "correlation_id",
        "application_properties",
        "delivery_count",
        "sequence_number",
    }
)


def warn(text: str) -> None:
    print(f"warning: {escape_controls(text)}", file=sys.stderr)


def message_files(paths: Iterable[Path]) -> list[Path]:
    """Body files named by the paths: ``NAME.body`` files, or every one in a folder (a folder
    with none is warned about)."""
    bodies: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(path.glob("*.body"))
            if not found:
                warn(f"{path} holds no NAME.body message files")
            bodies.extend(found)
        elif path.is_file():
            bodies.append(path)
        else:
            raise FileNotFoundError(f"no such file or folder: {path}")
    return bodies


def load_message(
    body: Path,
    properties: Path | None = None,
    content_type: str | None = None,
    warn_missing: bool = False,
) -> InboundMessage:
    """A message from a body file and its properties (``NAME.properties.json`` if present;
    a missing one, and a key this service does not read, are warned about). ``content_type``
    overrides the file's."""
    if properties is None:
        candidate = properties_path_for(body)
        properties = candidate if candidate.is_file() else None
        if properties is None and content_type is None and warn_missing and body.is_file():
            warn(
                f"{body} has no {candidate.name}: the message has no content type and will be "
                "dead-lettered (give --content-type, or the properties file)"
            )
    if properties is not None:
        try:
            keys = json.loads(properties.read_bytes()).keys()
        except (ValueError, AttributeError, OSError):
            keys = KNOWN_PROPERTIES  # from_files says what is wrong with it
        for key in sorted(set(keys) - KNOWN_PROPERTIES):
            known = ", ".join(sorted(KNOWN_PROPERTIES))
            warn(f"{properties}: unknown key {key!r} is ignored (known: {known})")
    message = from_files(body, properties)
    if content_type is not None:
        message = InboundMessage(**{**_fields(message), "content_type": content_type})
    return message


def store_label(settings: Settings) -> str:
    """Which store the settings select, for people (never a connection string)."""
    if settings.audit_store is StoreKind.TABLE:
        return f"table {settings.audit_table_name}"
    return f"sqlite {settings.audit_sqlite_path}"


def store_summary(settings: Settings, before: int, after: int) -> str:
    """``5 new entries; the store (sqlite .data/audit.sqlite3) holds 5``."""
    return f"{after - before} new entries; the store ({store_label(settings)}) holds {after}"


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    sources = args.paths
    bodies = message_files(sources)
    messages = [
        load_message(body, content_type=args.content_type, warn_missing=True) for body in bodies
    ]
    from shared.bootstrap import build_resolver

    resolver = build_resolver(settings)
    store = build_store(settings)
    try:
        before = store.count()
        pipeline = Pipeline(store, Policy.from_settings(settings), resolver=resolver)
        outcomes = pipeline.handle(messages)
        after = store.count()
    finally:
        store.close()
    out = console()
    labels = [body.name.removesuffix(".body") for body in bodies]
    title = f"{len(outcomes)} message(s) from {', '.join(map(str, sources))}"
    out.print(outcomes_table(labels, outcomes, title))
    out.print(summary(outcomes))
    out.print(plain(store_summary(settings, before, after)))
    return 1 if any(o.settlement is Settlement.RETRY for o in outcomes) else 0


def cmd_inspect(args: argparse.Namespace, settings: Settings) -> int:
    message = load_message(args.body, args.properties, args.content_type)
    decision = evaluate(message, Policy.from_settings(settings))
    print(
        json_line(
            json.dumps(
                {
                    "verdict": decision.verdict.value,
                    "reason": decision.reason.value if decision.reason else None,
                    "entry": decision.entry.to_json_dict() if decision.entry else None,
                },
                ensure_ascii=False,
            )
        )
    )
    if decision.verdict is Verdict.MALFORMED and decision.description:
        print(f"{decision.reason}: {escape_controls(decision.description)}", file=sys.stderr)
    return 0


def _fields(message: InboundMessage) -> dict[str, Any]:
    return {name: getattr(message, name) for name in InboundMessage.__slots__}


def _parse_time(text: str) -> datetime:
    """An ISO-8601 date or time (UTC unless it says otherwise), for --since and --until."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a date or time; use ISO-8601, e.g. 2024-11-26 or "
            "2024-11-26T09:15:00Z (UTC unless an offset is given)"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _count(text: str) -> int:
    """A whole number of at least 1, for --batch-size and --max."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return value


def _seconds(text: str) -> float:
    """A number of seconds above 0, for --max-wait."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds above 0")
    return value


def _guid(text: str) -> str:
    """A record id for --regarding and --session, read as the HTTP API reads one."""
    from shared.trail.reading import record_id

    try:
        return record_id(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"{exc}; give a record id such as 8e5f1a2b-6c7d-ef11-bfe3-6045bd0c1a22"
        ) from None


def iter_entries(
    store: AuditStore,
    *,
    regarding: str | None = None,
    session: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Iterator[AuditEntry]:
    """The entries the filters select (every filter given applies), streamed page by page
    (memory stays flat)."""
    if since is not None and until is not None and since >= until:
        raise ValueError(
            f"--since {since.isoformat()} is not earlier than --until {until.isoformat()}"
        )
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
    wanted_session = session.lower() if regarding and session else None
    sessions: dict[str, list[AuditEntry]] = {}
    read_session = live_reader(store)

    def live(session_id: str) -> list[AuditEntry]:
        if session_id not in sessions:
            sessions[session_id] = list(read_session(session_id))
        return sessions[session_id]

    for entry in pages:
        if wanted_session is not None and entry.processsession_id != wanted_session:
            continue  # --regarding read the trail; --session narrows it
        if entry.origin == "backfill" and not without_superseded([entry], live):
            continue  # a live entry records this version: one entry per version
        if (since is None or entry.operation_created_on >= since) and (
            until is None or entry.operation_created_on < until
        ):
            yield entry


def write_jsonl(entries: Iterable[AuditEntry], out: TextIO) -> int:
    """One JSON entry per line; returns how many were written."""
    count = 0
    for entry in entries:
        out.write(json_line(entry.json_text()) + "\n")
        count += 1
    return count


def _selected(store: AuditStore, args: argparse.Namespace) -> Iterator[AuditEntry]:
    _check_range(args)
    return iter_entries(
        store,
        regarding=getattr(args, "regarding", None),
        session=getattr(args, "session", None),
        since=args.since,
        until=args.until,
    )


def _output_format(args: argparse.Namespace, piped: str) -> str:
    """``--format`` as given, else a table on a terminal and ``piped`` (json or jsonl) when
    stdout is a pipe or a file."""
    return str(args.format or ("table" if sys.stdout.isatty() else piped))


def _check_range(args: argparse.Namespace) -> None:
    """--since must come before --until (an empty answer would hide the mistake)."""
    since, until = getattr(args, "since", None), getattr(args, "until", None)
    if since is not None and until is not None and since >= until:
        raise ValueError(
            f"--since {since.isoformat()} is not earlier than --until {until.isoformat()}"
        )


def cmd_entries(args: argparse.Namespace, settings: Settings) -> int:
    store = build_store(settings, read_only=True)
    try:
        if _output_format(args, piped="jsonl") == "jsonl":
            write_jsonl(_selected(store, args), sys.stdout)
            return 0
        entries = list(_selected(store, args))
    finally:
        store.close()
    out = console()
    out.print(entries_table(entries, out.width))
    return 0


def _write_format(fmt: str, entries: Iterable[AuditEntry], out: TextIO) -> int:
    if fmt == "csv":
        from shared.trail.timeline import write_csv

        return write_csv(entries, out)
    return write_jsonl(entries, out)


def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    _check_range(args)
    if args.output is not None:
        _check_output(args.output, args.force)
    store = build_store(settings, read_only=True)
    try:
        if args.output is None:
            count = _write_format(args.format, _selected(store, args), sys.stdout)
        else:
            partial = args.output.with_name(args.output.name + ".partial")
            with partial.open("w", encoding="utf-8", newline="") as out:
                count = _write_format(args.format, _selected(store, args), out)
            partial.replace(args.output)  # a failed export never leaves a file that looks whole
    finally:
        store.close()
    print(f"exported {count} entries", file=sys.stderr)
    return 0


def _text_width() -> int | None:
    """The width to wrap text at: the terminal's, or COLUMNS when set; None (no wrapping)
    when piped with no COLUMNS."""
    import os
    import shutil

    if sys.stdout.isatty() or os.environ.get("COLUMNS", "").strip().isdigit():
        return shutil.get_terminal_size().columns
    return None


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
    store = build_store(settings, read_only=True)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    shown = f"[{args.host}]" if ":" in args.host else args.host

    def listening() -> None:
        print(f"serving http://{shown}:{args.port}/ (Ctrl-C stops)", file=sys.stderr, flush=True)

    try:
        serve(
            store, args.host, args.port, settings.dataverse_url, on_listening=listening, stop=stop
        )
    finally:
        store.close()
    return 0


def cmd_timeline(args: argparse.Namespace, settings: Settings) -> int:
    """One block per event, oldest first; exit 1 when the record has no entry."""
    from shared.trail.timeline import timeline_text, write_csv

    if bool(args.id) == bool(args.session):
        raise ValueError("name a bank account (ID) or a session (--session ID), not both")
    _check_range(args)
    store = build_store(settings, read_only=True)
    try:
        entries = iter_entries(
            store,
            regarding=args.id,
            session=args.session,
            since=args.since,
            until=args.until,
        )
        if args.verdict:
            entries = (e for e in entries if e.verdict.value in args.verdict)
        fmt = args.format or "text"
        if fmt == "jsonl":
            count = write_jsonl(entries, sys.stdout)
        elif fmt == "csv":
            count = write_csv(entries, sys.stdout)
        else:
            title = (
                f"timeline of bank account {args.id}"
                if args.id
                else f"timeline of session {args.session}"
            )
            width = _text_width()
            count = 0
            for line in timeline_text(entries, width or 1_000_000, title):
                count += line == ""
                print(line)
            count -= 1  # the blank line before the count
    finally:
        store.close()
    if count == 0:
        print("no audit entries for that record (and filters)", file=sys.stderr)
        return 1
    return 0


def _service_bus_line(exc: Exception, args: argparse.Namespace, settings: Settings) -> str | None:
    """One line for a Service Bus error of a worker/send/dlq command, naming the entity."""
    from shared.bus.standalone import Source, describe_error

    try:
        source: Source | None = Source.from_settings(
            settings,
            getattr(args, "queue", None),
            getattr(args, "topic", None),
            getattr(args, "subscription", None),
        )
    except ValueError:
        source = None
    return describe_error(exc, settings, source)


def _one_line(exc: BaseException) -> str:
    """The first line of an error, with what to do for a missing Azure credential (whose own
    message lists every credential it tried, over a dozen lines)."""
    from azure.core.exceptions import ClientAuthenticationError

    if isinstance(exc, ClientAuthenticationError):
        return (
            "no Azure credential could sign in: run `az login` (or set AZURE_CLIENT_ID for a "
            "managed identity; for register, reconcile and backfill, DATAVERSE_ACCESS_TOKEN); "
            "-v shows each one tried"
        )
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first}"


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


def _servicebus(args: argparse.Namespace, settings: Settings) -> tuple[Any, Any]:
    from shared.bus.standalone import Source, build_client, namespace_of

    source = Source.from_settings(
        settings, args.queue, args.topic, getattr(args, "subscription", None)
    )
    client = build_client(settings)
    # the SDK retries a wrong name or credential for a while before it fails: a person at a
    # terminal is told at once what it waits for (piped, errors stay one line)
    if sys.stderr.isatty():
        print(
            f"connecting to Service Bus {namespace_of(settings)}, {source} (a wrong namespace, "
            "entity or credential is reported after the client's retries, up to about 20 s)",
            file=sys.stderr,
            flush=True,
        )
    return client, source


_Handler = Callable[[argparse.Namespace, Settings], int]


def _unreachable_store_exits_2(handler: _Handler) -> _Handler:
    """For the commands whose contract says so (check-store, seal, verify): a store that cannot
    be reached or read is exit 2, a connection error, not 1, which means "problems found"."""

    @functools.wraps(handler)
    def run(args: argparse.Namespace, settings: Settings) -> int:
        try:
            return handler(args, settings)
        except StoreUnavailable as exc:
            print(f"error: {escape_controls(exc)}", file=sys.stderr)
            return 2

    return run


@_unreachable_store_exits_2
def cmd_check_store(args: argparse.Namespace, settings: Settings) -> int:
    """Every read path of the store against its entries; exit 0 when they agree, 1 when not
    (after ``--repair``: when the repair left anything), 2 when the store cannot be read."""
    store = build_store(settings, read_only=not args.repair)
    try:
        found = store.check_views(repair=args.repair)
        left = store.check_views() if args.repair and found else found
        report = {
            "store": store_label(settings),
            "entries": store.count(),
            "problems": [asdict(p) for p in found],
            "repaired": bool(args.repair and found),
            "remaining": len(left),
        }
    finally:
        store.close()
    if _output_format(args, piped="json") == "json":
        print(json.dumps(report, ensure_ascii=True))
    else:
        for problem in found:
            print(escape_controls(str(problem)))
        verdict = "every view agrees with the entries" if not left else f"{len(left)} problem(s)"
        print(
            f"{report['store']}: {report['entries']} entries; {verdict}"
            + (f" (repaired {len(found)})" if report["repaired"] else "")
        )
    return 1 if left else 0


@_unreachable_store_exits_2
def cmd_seal(args: argparse.Namespace, settings: Settings) -> int:
    """Seal the windows of recorded_at that closed (``--now``: everything so far); no key is a
    usage error (ValueError: exit 2)."""
    from shared.stores import seal_trail

    record = seal_trail(settings, everything=args.now)
    if record is None:
        print("nothing to seal: no window has closed since the last seal", file=sys.stderr)
    else:
        print(
            f"sealed {record.count} entries recorded from {record.start} to {record.end}",
            file=sys.stderr,
        )
    return 0


@_unreachable_store_exits_2
def cmd_verify(args: argparse.Namespace, settings: Settings) -> int:
    """Re-read the trail and its seals; exit 0 intact, 1 when anything is wrong."""
    from datetime import timedelta

    from shared.stores import build_seal_store, require_key_ring
    from shared.stores.seals import verify_trail

    _check_range(args)
    ring = require_key_ring(settings)
    store = build_store(settings, read_only=True)
    show = sys.stderr.isatty()

    def progress(count: int) -> None:
        print(f"\rverified {count:,} entries ...", end="", file=sys.stderr, flush=True)

    try:
        report = verify_trail(
            store,
            build_seal_store(settings, store),
            ring,
            datetime.now(UTC),
            since=args.since,
            until=args.until,
            grace=timedelta(minutes=settings.audit_seal_grace_minutes),
            progress=progress if show else None,
        )
    finally:
        store.close()
    if show:
        print("\r" + " " * 40 + "\r", end="", file=sys.stderr)
    if _output_format(args, piped="json") == "json":
        print(json.dumps(report.to_json(), ensure_ascii=True))
    else:
        for problem in report.problems:
            where = problem.entry_id or problem.window or ""
            print(escape_controls(f"{problem.kind:<13} {where}  {problem.detail}"))
        state = "intact" if not report.problems else f"{len(report.problems)} problem(s)"
        print(
            f"{report.entries} entries in {report.windows} sealed window(s), "
            f"{report.unsealed} not sealed yet: {state}"
        )
    return 1 if report.problems else 0


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from shared.bootstrap import build_pipeline
    from shared.bus.standalone import Worker

    client, source = _servicebus(args, settings)
    pipeline = build_pipeline(settings)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    until = [f"{args.max} message(s)"] if args.max else []
    until += ["the entity is idle"] if args.until_idle else []
    log.info(
        "worker on %s: %s; store %s (Ctrl-C stops after the batch in hand)",
        source,
        f"until {' or '.join(until)}" if until else "running",
        store_label(settings),
    )
    try:
        with client:
            stats = Worker(
                client, pipeline, source, batch_size=args.batch_size, max_wait_time=args.max_wait
            ).run(stop, until_idle=args.until_idle, max_messages=args.max)
    finally:
        pipeline.store.close()
    outcomes = stats.outcomes
    out = console()
    if until:
        shown = f"the last {len(outcomes)} of " if len(outcomes) < stats.messages else ""
        out.print(
            outcomes_table(
                [o.message.message_id or "" for o in outcomes],
                outcomes,
                f"{shown}{stats.messages} message(s) from {source}",
            )
        )
    out.print(summary_of(stats.verdicts, stats.settlements))
    return 0


def cmd_send(args: argparse.Namespace, settings: Settings) -> int:
    from shared.bus.standalone import send

    client, source = _servicebus(args, settings)
    messages = [load_message(body) for body in message_files(args.paths)]
    with client:
        count = send(client, source, messages)
    print(f"sent {count} message(s) to {source}", file=sys.stderr)
    return 0


def cmd_dlq_peek(args: argparse.Namespace, settings: Settings) -> int:
    from shared.bus.standalone import peek_dead_letters

    client, source = _servicebus(args, settings)
    with client:
        found = peek_dead_letters(client, source, args.max)
    if _output_format(args, piped="jsonl") == "jsonl":
        for m in found:
            record = {
                "message_id": m.message_id,
                "sequence_number": m.sequence_number,
                "dead_letter_reason": m.dead_letter_reason,
                "dead_letter_error_description": m.dead_letter_error_description,
                "enqueued_time": m.enqueued_time_utc.isoformat() if m.enqueued_time_utc else None,
                "delivery_count": m.delivery_count,
                "content_type": m.content_type,
            }
            print(json_line(json.dumps(record)))
        return 0
    console().print(dead_letter_table(found, f"dead-letter queue of {source}: {len(found)}"))
    return 0


#: Dead-letter reasons Service Bus itself sets (besides this service's reason codes).
BROKER_REASONS = ("MaxDeliveryCountExceeded", "TTLExpiredException", "HeaderSizeExceeded")


def cmd_dlq_replay(args: argparse.Namespace, settings: Settings) -> int:
    from shared.bus.standalone import replay_dead_letters
    from shared.verdicts import Reason

    known = [r.value for r in Reason] + list(BROKER_REASONS)
    if args.reason is not None and args.reason not in known:
        raise ValueError(
            f"--reason {args.reason!r} is not a dead-letter reason; use one of: " + ", ".join(known)
        )

    client, source = _servicebus(args, settings)
    with client:
        report = replay_dead_letters(
            client, source, reason=args.reason, dry_run=args.dry_run, limit=args.max
        )
    verb = "would replay" if args.dry_run else "replayed"
    for item in report:
        shown = escape_controls(f"{item.message_id} ({item.reason})")
        print(f"{verb if item.replayed else 'left'} {shown}")
    print(
        f"{verb} {sum(r.replayed for r in report)} of {len(report)} dead-lettered "
        f"message(s) of {source}",
        file=sys.stderr,
    )
    return 0


def _web_api(args: argparse.Namespace, settings: Settings) -> Any:
    """The Web API client of reconcile and backfill: --environment, else DATAVERSE_URL; waits
    for service protection limits are shown on stderr."""
    from shared.dataverse.webapi import build_web_api

    url = args.environment or settings.dataverse_url
    if not url:
        raise ValueError(
            "name the Dataverse environment: --environment https://<org>.crm.dynamics.com or "
            "DATAVERSE_URL"
        )

    def waiting(seconds: float, why: str) -> None:
        print(f"{why}; waiting {seconds:.0f} s", file=sys.stderr, flush=True)

    return build_web_api(url, on_wait=waiting)


def _paging_progress() -> Callable[[int], None] | None:
    """A progress line on a terminal while the sessions are paged (nothing otherwise)."""
    if not sys.stderr.isatty():
        return None
    return lambda count: print(
        f"\rread {count} processsession row(s)…", end="", file=sys.stderr, flush=True
    )


def _dataverse_exits_2(handler: _Handler) -> _Handler:
    """reconcile and backfill: a Web API or store that cannot be reached, or that refuses the
    identity, is exit 2 (1 means gaps were found)."""

    @functools.wraps(handler)
    def run(args: argparse.Namespace, settings: Settings) -> int:
        from shared.dataverse.webapi import DataverseError

        try:
            return handler(args, settings)
        except (DataverseError, StoreUnavailable, AzureError) as exc:
            if sys.stderr.isatty():
                print(file=sys.stderr)
            line = _one_line(exc) if isinstance(exc, AzureError) else str(exc)
            print(f"error: {escape_controls(line)}", file=sys.stderr)
            return 2

    return run


def _trail_to_compare(settings: Settings) -> AuditStore:
    """The trail reconcile reads; a SQLite trail not yet created is an empty one (created,
    and said on stderr: every session then counts as missing)."""
    path = settings.audit_sqlite_path
    if settings.audit_store is StoreKind.SQLITE and not path.exists():
        print(
            f"note: no SQLite audit store at {path} yet (AUDIT_SQLITE_PATH or --db): an empty "
            "trail is created, against which every session is missing",
            file=sys.stderr,
        )
        return build_store(settings)
    return build_store(settings, read_only=True)


@_dataverse_exits_2
def cmd_reconcile(args: argparse.Namespace, settings: Settings) -> int:
    """Exit 0 when no session is missing or behind, 1 when some are, 2 on usage or
    connection errors."""
    from shared.trail.reconcile import reconcile

    _check_range(args)
    api = _web_api(args, settings)
    store = _trail_to_compare(settings)
    try:
        found = reconcile(
            api,
            store,
            args.since,
            args.until,
            page_size=args.page_size,
            on_page=_paging_progress(),
        )
    finally:
        store.close()
    if sys.stderr.isatty():
        print(file=sys.stderr)
    if _output_format(args, piped="json") == "json":
        print(json.dumps(found.to_json()))
    else:
        out = console()
        out.print(reconcile_table(found.to_json(), out.width))
    print(
        f"{found.sessions} session(s) modified in the window: {len(found.missing)} missing, "
        f"{len(found.behind)} behind, {len(found.only_in_trail)} only in the trail",
        file=sys.stderr,
    )
    return 1 if found.gaps else 0


@_dataverse_exits_2
def cmd_backfill(args: argparse.Namespace, settings: Settings) -> int:
    """Write one entry per missing or behind session; ``--dry-run`` writes nothing."""
    from shared.trail.reconcile import backfill

    _check_range(args)
    api = _web_api(args, settings)
    store = _trail_to_compare(settings) if args.dry_run else build_store(settings)
    try:
        done = backfill(
            api,
            store,
            args.since,
            args.until,
            dry_run=args.dry_run,
            allowed_organizations=settings.allowed_organization_ids,
            redact=settings.audit_redact_columns,
            page_size=args.page_size,
            on_page=_paging_progress(),
        )
    finally:
        store.close()
    if sys.stderr.isatty():
        print(file=sys.stderr)
    write_jsonl(done.entries, sys.stdout)
    for session_id, why in done.skipped:
        print(f"skipped {session_id}: {why}", file=sys.stderr)
    verb = "would write" if args.dry_run else f"wrote {done.written} new of"
    print(
        f"{verb} {len(done.entries)} backfilled entr{'y' if len(done.entries) == 1 else 'ies'} "
        f"for {len(done.reconciliation.gaps)} session(s) missing or behind",
        file=sys.stderr,
    )
    return 0


def cmd_register(args: argparse.Namespace, settings: Settings) -> int:
    import os

    from shared.dataverse.registration import Registrar, Registration
    from shared.dataverse.webapi import build_web_api

    sas_key = os.environ.get("DATAVERSE_SAS_KEY", "") or ("<key>" if args.plan else "")
    if not sas_key:
        raise ValueError(
            "set DATAVERSE_SAS_KEY to the key of the send-only SAS rule "
            "(never pass it on the command line)"
        )
    if bool(args.queue) == bool(args.topic):
        raise ValueError("name either --queue or --topic")
    url = args.environment_url.rstrip("/")
    registration = Registration(
        namespace=args.namespace,
        entity=args.queue or args.topic,
        kind="queue" if args.queue else "topic",
        sas_key_name=args.sas_key_name,
        sas_key=sas_key,
        endpoint_name=args.endpoint_name,
        old_value_columns=args.old_value_columns,
    )
    from shared.dataverse.registration import PlanApi

    api: Any = PlanApi(url) if args.plan else build_web_api(url)
    report = Registrar(api, dry_run=args.dry_run or args.plan, rotate_key=args.rotate_key).register(
        registration
    )
    verb = "would send" if args.dry_run or args.plan else "sent"
    if args.plan:
        print(
            "plan for a first registration (nothing read or written; --dry-run compares with "
            "what Dataverse holds):",
            file=sys.stderr,
        )
    for request in report.writes:
        print(request.show())
    for label in report.unchanged:
        print(f"unchanged: {label}")
    print(
        f"{verb} {len(report.writes)} write(s); {len(report.unchanged)} row(s) already as wanted",
        file=sys.stderr,
    )
    return 0


def _entity_options(parser: argparse.ArgumentParser, subscription: bool = True) -> None:
    parser.add_argument("--queue", help="queue name (default: PROCESS_SESSION_QUEUE)")
    parser.add_argument("--topic", help="topic name (default: PROCESS_SESSION_TOPIC)")
    if subscription:
        parser.add_argument(
            "--subscription", help="subscription name (default: PROCESS_SESSION_SUBSCRIPTION)"
        )


def _paths_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "paths",
        nargs="*",
        type=Path,
        default=[BUNDLED_SAMPLES],
        help="NAME.body files or folders of them (default: the bundled samples)",
    )


def _table_or_jsonl_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--format",
        choices=("table", "jsonl"),
        help="table on a terminal, JSON lines when piped (the default picks)",
    )


def _time_range_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--since", type=_parse_time, help="ISO-8601, inclusive")
    parser.add_argument("--until", type=_parse_time, help="ISO-8601, exclusive")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("processsession-audit")
    except PackageNotFoundError:  # run from a checkout without `make install`
        return "(not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="psaudit",
        description="Audit Dataverse processsession events (see README.md).",
    )
    parser.add_argument("--version", action="version", version=f"psaudit {_version()}")
    parser.add_argument("--db", type=Path, help="SQLite file (overrides AUDIT_SQLITE_PATH)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every decision")
    # --db and -v after the command too (psaudit entries --db x.sqlite3)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--db",
        type=Path,
        default=argparse.SUPPRESS,
        help="SQLite file (overrides AUDIT_SQLITE_PATH)",
    )
    common.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log every decision"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    _add_parser = commands.add_parser

    def add_parser(name: str, **options: Any) -> argparse.ArgumentParser:
        return _add_parser(name, parents=[common, *options.pop("parents", [])], **options)

    commands.add_parser = add_parser  # type: ignore[method-assign]

    run = commands.add_parser(
        "run",
        help="process message files into the audit store",
        description="Example: psaudit run samples/ (each NAME.body with NAME.properties.json)",
    )
    _paths_argument(run)
    run.add_argument(
        "--content-type", help="the content type of every message (overrides properties files)"
    )
    run.set_defaults(handler=cmd_run)

    inspect = commands.add_parser(
        "inspect",
        help="decide one message; print one JSON object",
        description="Example: psaudit inspect samples/json-update-no-regarding.body",
    )
    inspect.add_argument("body", type=Path, help="the message body file")
    inspect.add_argument(
        "--properties",
        type=Path,
        help="its properties JSON (default: NAME.properties.json beside it)",
    )
    inspect.add_argument("--content-type", help="override the content type")
    inspect.set_defaults(handler=cmd_inspect)

    entries = commands.add_parser(
        "entries",
        help="read the audit trail",
        description="Example: psaudit entries --regarding 8e5f1a2b-6c7d-ef11-bfe3-6045bd0c1a22 "
        "--since 2024-11-01",
    )
    entries.add_argument(
        "--regarding", type=_guid, help="regarding record id (e.g. a bank account)"
    )
    entries.add_argument("--session", type=_guid, help="processsession id")
    _time_range_options(entries)
    _table_or_jsonl_option(entries)
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
    _time_range_options(export)
    export.add_argument("--output", type=Path, help="file to write (default: stdout)")
    export.add_argument("--force", action="store_true", help="replace an existing --output file")
    export.set_defaults(handler=cmd_export)

    timeline = commands.add_parser(
        "timeline",
        help="a bank account's (or a session's) events, oldest first, as people read them",
        description="Examples: psaudit timeline 6f9c2d4e-8a1b-4c3d-9e5f-0a1b2c3d4e5f; "
        "psaudit timeline --session 0f3b5d7e-2c3f-ef11-9f89-000d3a5c2b71 --format csv",
    )
    timeline.add_argument("id", nargs="?", type=_guid, help="the bank account's id")
    timeline.add_argument("--session", type=_guid, help="a processsession id instead")
    timeline.add_argument(
        "--verdict",
        action="append",
        choices=[v.value for v in Verdict if v is not Verdict.MALFORMED],
        help="only events with this verdict (repeatable)",
    )
    _time_range_options(timeline)
    timeline.add_argument(
        "--format",
        choices=("text", "jsonl", "csv"),
        help="text (default; wrapped between words at the terminal's width), jsonl or csv",
    )
    timeline.set_defaults(handler=cmd_timeline)

    serve = commands.add_parser(
        "serve",
        help="serve the timeline pages and the JSON read API on this machine",
        description="Example: psaudit --db .data/audit.sqlite3 serve --port 7071, then open "
        "http://127.0.0.1:7071/ (no key on loopback; the Functions app is what serves others)",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (loopback)")
    serve.add_argument("--port", type=int, default=7071, help="port (default 7071)")
    serve.set_defaults(handler=cmd_serve)

    check = commands.add_parser(
        "check-store",
        help="check that every view (read path) of the store agrees with its entries",
        description="Table store: every regarding, session and day view row against the entry "
        "rows (missing, differing, orphan). SQLite: PRAGMA integrity_check of its indexes. "
        "Exit 0 when all agree, 1 when not, 2 when the store cannot be read. "
        "Example: AUDIT_STORE=table psaudit check-store --repair",
    )
    check.add_argument(
        "--repair",
        action="store_true",
        help="rewrite each disagreeing view from its entry row, delete views with no entry",
    )
    check.add_argument(
        "--format", choices=("table", "json"), help="lines on a terminal, JSON when piped"
    )
    check.set_defaults(handler=cmd_check_store)

    seal = commands.add_parser(
        "seal",
        help="seal the windows of the trail that have closed (needs AUDIT_TRAIL_KEY)",
        description="Records the count and digest of the entries recorded in each window "
        "that closed (plus AUDIT_SEAL_GRACE_MINUTES) since the last seal, MACed and chained. "
        "Example: psaudit seal --now",
    )
    seal.add_argument(
        "--now",
        action="store_true",
        help="seal everything recorded so far, without waiting for the grace period "
        "(before an audit; run it while no writer is busy)",
    )
    seal.set_defaults(handler=cmd_seal)

    verify = commands.add_parser(
        "verify",
        help="prove the trail intact: no entry altered, removed or forged (needs the key)",
        description="Re-reads every entry and window seal and reports each problem (altered, "
        "missing, forged, inserted, unsealed, seal broken). Exit 0 when intact, 1 when not, "
        "2 for a usage or connection error. Example: psaudit verify --format json",
    )
    _time_range_options(verify)
    verify.add_argument(
        "--format", choices=("table", "json"), help="lines on a terminal, JSON when piped"
    )
    verify.set_defaults(handler=cmd_verify)

    worker = commands.add_parser(
        "worker",
        help="receive from Service Bus and audit (no Functions)",
        description="Example: SERVICEBUS_FULLY_QUALIFIED_NAMESPACE=contoso.servicebus.windows.net "
        "psaudit worker --queue processsession-events",
    )
    _entity_options(worker)
    worker.add_argument(
        "--batch-size", type=_count, default=32, help="messages received per batch (default 32)"
    )
    worker.add_argument(
        "--max-wait", type=_seconds, default=1.0, help="seconds a receive waits for messages"
    )
    worker.add_argument(
        "--until-idle", action="store_true", help="stop when a receive finds the entity empty"
    )
    worker.add_argument(
        "--max",
        type=_count,
        metavar="N",
        help="stop after N messages, each settled (it never receives more than N)",
    )
    worker.set_defaults(handler=cmd_worker)

    send = commands.add_parser(
        "send",
        help="post message files as Dataverse would",
        description="Example: psaudit send --queue processsession-events samples/",
    )
    _entity_options(send, subscription=False)
    _paths_argument(send)
    send.set_defaults(handler=cmd_send)

    dlq = commands.add_parser(
        "dlq",
        help="the dead-letter queue",
        description="Example: psaudit dlq peek --queue processsession-events",
    ).add_subparsers(dest="dlq_command", required=True)
    peek = dlq.add_parser(
        "peek",
        help="list dead-lettered messages without removing them",
        description="Example: psaudit dlq peek --queue processsession-events --format jsonl",
    )
    _entity_options(peek)
    peek.add_argument("--max", type=int, default=100, help="at most this many (default 100)")
    _table_or_jsonl_option(peek)
    peek.set_defaults(handler=cmd_dlq_peek)
    replay = dlq.add_parser(
        "replay",
        help="re-send dead-lettered messages to the entity",
        description="Example: psaudit dlq replay --queue processsession-events "
        "--reason untrusted_organization",
    )
    _entity_options(replay)
    replay.add_argument("--reason", help="only messages dead-lettered with this reason code")
    replay.add_argument("--dry-run", action="store_true", help="only say what would be replayed")
    replay.add_argument("--max", type=int, default=1000, help="at most this many (default 1000)")
    replay.set_defaults(handler=cmd_dlq_replay)

    for name, text in (
        ("reconcile", "compare the trail with the processsessions Dataverse holds"),
        ("backfill", "write an entry for each session reconcile finds missing or behind"),
    ):
        command = commands.add_parser(
            name,
            help=text,
            description=f"Example: psaudit {name} --since 2026-12-01 --until 2026-12-02 "
            "--environment https://contoso.crm.dynamics.com",
        )
        command.add_argument("--since", type=_parse_time, required=True, help="ISO-8601, UTC")
        command.add_argument(
            "--until", type=_parse_time, required=True, help="ISO-8601, UTC (exclusive)"
        )
        command.add_argument(
            "--environment",
            help="https://<org>.crm.dynamics.com (default: DATAVERSE_URL); token from "
            "DATAVERSE_ACCESS_TOKEN, else DefaultAzureCredential",
        )
        command.add_argument(
            "--page-size",
            type=int,
            default=500,
            choices=range(1, 5001),
            metavar="1..5000",
            help="rows asked per page (Prefer: odata.maxpagesize)",
        )
        if name == "reconcile":
            command.add_argument(
                "--format", choices=["table", "json"], help="default: table on a terminal"
            )
            command.set_defaults(handler=cmd_reconcile)
        else:
            command.add_argument(
                "--dry-run", action="store_true", help="print the entries, write nothing"
            )
            command.set_defaults(handler=cmd_backfill)

    register = commands.add_parser(
        "register",
        help="register the service endpoint, steps and images in Dataverse",
        description="Example: DATAVERSE_SAS_KEY=... psaudit register --environment-url "
        "https://contoso.crm.dynamics.com --namespace contoso-audit --queue "
        "processsession-events --dry-run",
    )
    register.add_argument("--environment-url", required=True, help="https://<org>.crm.dynamics.com")
    register.add_argument("--namespace", required=True, help="Service Bus namespace name")
    register.add_argument("--queue", help="the queue Dataverse posts to")
    register.add_argument("--topic", help="or the topic")
    register.add_argument(
        "--sas-key-name",
        required=True,
        help="the send-only rule; its key comes from DATAVERSE_SAS_KEY",
    )
    register.add_argument(
        "--endpoint-name",
        default="ProcessSessionAudit",
        help="the service endpoint's name in Dataverse (default ProcessSessionAudit)",
    )
    register.add_argument(
        "--old-value-columns",
        default=DEFAULT_OLD_VALUE_COLUMNS,
        help="columns of the Update step's PreImage",
    )
    register.add_argument(
        "--rotate-key",
        action="store_true",
        help="send the SAS key to an existing endpoint (after a rotation)",
    )
    register.add_argument(
        "--dry-run", action="store_true", help="read, print the writes it would make, write nothing"
    )
    register.add_argument(
        "--plan",
        action="store_true",
        help="print what a first registration writes, with no network or credentials",
    )
    register.set_defaults(handler=cmd_register)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        handlers=[
            PlainRichHandler(
                console=console(stderr=True), show_path=False, log_time_format=iso_log_time
            )
        ],
        format="%(message)s",
    )
    if args.command == "worker":  # a long-running command says what it does, batch by batch
        for talking in ("shared.cli", "shared.bus.standalone"):
            logging.getLogger(talking).setLevel(logging.INFO)
    if not args.verbose:
        for noisy in ("shared.pipeline", "azure", "uamqp"):
            logging.getLogger(noisy).setLevel(logging.ERROR)
    settings: Settings | None = None
    try:
        overrides = {"audit_sqlite_path": args.db} if args.db else {}
        settings = load_settings(**overrides)
        return int(args.handler(args, settings))
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {escape_controls(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:  # a file the command could not read or write
        print(f"error: {escape_controls(exc)}", file=sys.stderr)
        return 2
    except (ServiceError, AzureError, RegistrationError) as exc:  # a store, broker or API
        line = _service_bus_line(exc, args, settings) if settings is not None else None
        print(f"error: {escape_controls(line or _one_line(exc))}", file=sys.stderr)
        if args.verbose:
            log.exception("the traceback, as -v asks")
        return 1
