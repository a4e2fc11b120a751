"""What the commands share: argument types and options, output choices, error lines."""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO, TypeAlias

from shared.cli.console import (
    escape_controls,
    json_line,
)
from shared.errors import StoreUnavailable
from shared.events.entry import AuditEntry
from shared.settings import Settings, StoreKind
from shared.trail.reading import Checked

BUNDLED_SAMPLES = Path(__file__).resolve().parents[2] / "samples"


EXPORT_PAGE_SIZE = 500


def warn(text: str) -> None:
    print(f"warning: {escape_controls(text)}", file=sys.stderr)


def store_label(settings: Settings) -> str:
    """Which store the settings select, for people (never a connection string)."""
    if settings.audit_store is StoreKind.TABLE:
        return f"table {settings.audit_table_name}"
    return f"sqlite {settings.audit_sqlite_path}"


def store_summary(settings: Settings, before: int, after: int) -> str:
    """``5 new entries; the store (sqlite ~/.local/share/psaudit/audit.sqlite3) holds 5``."""
    return f"{after - before} new entries; the store ({store_label(settings)}) holds {after}"


def parse_time(text: str) -> datetime:
    """An ISO-8601 date or time (UTC unless it says otherwise), for --since and --until."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a date or time; use ISO-8601, e.g. 2024-11-26 or "
            "2024-11-26T09:15:00Z (UTC unless an offset is given)"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def positive_count(text: str) -> int:
    """A whole number of at least 1, for --batch-size and --max."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return value


def positive_seconds(text: str) -> float:
    """A number of seconds above 0, for --max-wait."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds above 0")
    return value


def record_guid(text: str) -> str:
    """A record id for --regarding and --session, read as the HTTP API reads one."""
    from shared.trail.reading import record_id

    try:
        return record_id(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"{exc}; give a record id such as 8e5f1a2b-6c7d-ef11-bfe3-6045bd0c1a22"
        ) from None


def write_jsonl(entries: Iterable[AuditEntry | Checked], out: TextIO) -> int:
    """One JSON entry per line; an entry a reader checked carries ``seal_status`` (and
    ``seal_problem`` when it failed); returns how many were written."""
    count = 0
    for item in entries:
        if isinstance(item, Checked):
            extra = {"seal_status": item.status}
            if item.status == "altered":
                extra["seal_problem"] = item.problem or ""
            text = item.entry.json_text()
            text = text[:-1] + "," + json.dumps(extra, separators=(",", ":"))[1:]
        else:
            text = item.json_text()
        out.write(json_line(text) + "\n")
        count += 1
    return count


def output_format(args: argparse.Namespace, piped: str) -> str:
    """``--format`` as given, else a table on a terminal and ``piped`` (json or jsonl) when
    stdout is a pipe or a file."""
    return str(args.format or ("table" if sys.stdout.isatty() else piped))


def check_range(args: argparse.Namespace) -> None:
    """--since must come before --until (an empty answer would hide the mistake)."""
    since, until = getattr(args, "since", None), getattr(args, "until", None)
    if since is not None and until is not None and since >= until:
        raise ValueError(
            f"--since {since.isoformat()} is not earlier than --until {until.isoformat()}"
        )


def one_line(exc: BaseException) -> str:
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


def servicebus_client(args: argparse.Namespace, settings: Settings) -> tuple[Any, Any]:
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


Handler = Callable[[argparse.Namespace, Settings], int]


def unreachable_store_exits_2(handler: Handler) -> Handler:
    """For the commands whose contract says so (check-store, seal, verify, migrate-table): a
    store that cannot be reached or read is exit 2, a connection error, not 1, which means
    "problems found"."""

    @functools.wraps(handler)
    def run(args: argparse.Namespace, settings: Settings) -> int:
        try:
            return handler(args, settings)
        except StoreUnavailable as exc:
            print(f"error: {escape_controls(exc)}", file=sys.stderr)
            return 2

    return run


def entity_options(parser: argparse.ArgumentParser, subscription: bool = True) -> None:
    parser.add_argument("--queue", help="queue name (default: PROCESS_SESSION_QUEUE)")
    parser.add_argument("--topic", help="topic name (default: PROCESS_SESSION_TOPIC)")
    if subscription:
        parser.add_argument(
            "--subscription", help="subscription name (default: PROCESS_SESSION_SUBSCRIPTION)"
        )


def paths_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "paths",
        nargs="*",
        type=Path,
        default=[BUNDLED_SAMPLES],
        help="NAME.body files or folders of them (default: the bundled samples)",
    )


def table_or_json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--format", choices=("table", "json"), help="lines on a terminal, JSON when piped"
    )


def table_or_jsonl_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--format",
        choices=("table", "jsonl"),
        help="table on a terminal, JSON lines when piped (the default picks)",
    )


def time_range_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--since", type=parse_time, help="ISO-8601, inclusive")
    parser.add_argument("--until", type=parse_time, help="ISO-8601, exclusive")


#: The ``psaudit`` subcommands action each group adds its commands to.
Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def text_width() -> int | None:
    """The width to wrap text at: the terminal's, or COLUMNS when set; None (no wrapping)
    when piped with no COLUMNS."""
    import os
    import shutil

    if sys.stdout.isatty() or os.environ.get("COLUMNS", "").strip().isdigit():
        return shutil.get_terminal_size().columns
    return None


def say(line: str) -> None:
    """One logical line on stdout, wrapped between words at the terminal's width (ids and
    words whole; following lines indented), as is when piped."""
    import textwrap

    width = text_width()
    if width is None:
        print(line)
        return
    for part in textwrap.wrap(
        line,
        width=max(width, 20),
        subsequent_indent="    ",
        break_on_hyphens=False,
        break_long_words=True,
    ) or [""]:
        print(part)
