"""The ``psaudit`` entry point: assembles the groups' commands and runs one."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from azure.core.exceptions import AzureError

from shared.cli import complete, ingest, operate, prove, read
from shared.cli.common import one_line
from shared.cli.console import (
    PlainRichHandler,
    console,
    escape_controls,
    iso_log_time,
)
from shared.dataverse.registration import RegistrationError
from shared.errors import ServiceError, StoreMissing
from shared.settings import Settings, load_settings

log = logging.getLogger("shared.cli")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("processsession-audit")
    except PackageNotFoundError:  # run from a checkout without `make install`
        return "(not installed)"


#: The command groups, by purpose, in the order ``psaudit --help`` lists them.
GROUPS = (
    ("ingest", "take messages in", ingest.add_commands),
    ("read", "read the trail", read.add_commands),
    ("prove", "prove the trail intact", prove.add_commands),
    ("complete", "compare with Dataverse and close gaps", complete.add_commands),
    ("operate", "operate Service Bus and Dataverse", operate.add_commands),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="psaudit",
        description="Audit Dataverse processsession events (see README.md).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", help="one of the commands below"
    )
    _add_parser = commands.add_parser
    listed: list[tuple[str, str]] = []

    def add_parser(name: str, **options: Any) -> argparse.ArgumentParser:
        # listed by group in the epilog below, not in argparse's one flat list
        listed.append((name, options.pop("help", "")))
        return _add_parser(name, parents=[common, *options.pop("parents", [])], **options)

    commands.add_parser = add_parser  # type: ignore[method-assign]
    epilog = ["commands, by purpose (psaudit COMMAND --help for each):"]
    for group, purpose, add_commands in GROUPS:
        del listed[:]
        add_commands(commands)
        epilog.append(f"\n  {group}: {purpose}")
        epilog.extend(f"    {name:<12} {text}" for name, text in listed)
    parser.epilog = "\n".join(epilog)
    return parser


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
    else:  # -v: every decision, including each completed message's (a DEBUG line)
        logging.getLogger("shared.pipeline").setLevel(logging.DEBUG)
    settings: Settings | None = None
    try:
        overrides = {"audit_sqlite_path": args.db} if args.db else {}
        settings = load_settings(**overrides)
        return int(args.handler(args, settings))
    except BrokenPipeError:  # the reader closed the pipe (`| head`): end quietly
        _silence_stdout()
        return 0
    except (FileNotFoundError, ValueError, StoreMissing) as exc:
        print(f"error: {escape_controls(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:  # a file the command could not read or write
        print(f"error: {escape_controls(exc)}", file=sys.stderr)
        return 2
    except (ServiceError, AzureError, RegistrationError) as exc:  # a store, broker or API
        line = _service_bus_line(exc, args, settings) if settings is not None else None
        print(f"error: {escape_controls(line or one_line(exc))}", file=sys.stderr)
        if args.verbose:
            log.exception("the traceback, as -v asks")
        return 2  # unavailable: the same for every command (1 means findings)


def _silence_stdout() -> None:
    """After a closed pipe: point stdout at /dev/null so that the interpreter's own flush at
    exit does not fail again (Python's documented way: the signal module's notes)."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
