"""Completeness against Dataverse: ``reconcile`` and ``backfill``."""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Callable
from typing import Any

from azure.core.exceptions import AzureError

from shared.cli.common import (
    Commands,
    Handler,
    check_range,
    one_line,
    output_format,
    parse_time,
    store_label,
    write_jsonl,
)
from shared.cli.console import (
    console,
    escape_controls,
    reconcile_table,
)
from shared.errors import StoreUnavailable
from shared.settings import Settings, StoreKind
from shared.stores import AuditStore, build_store


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

    return build_web_api(
        url,
        on_wait=waiting,
        max_answer_bytes=settings.dataverse_max_answer_bytes,
        max_pages=settings.dataverse_max_pages,
    )


def _paging_progress() -> Callable[[int], None] | None:
    """A progress line on a terminal while the sessions are paged (nothing otherwise)."""
    if not sys.stderr.isatty():
        return None
    return lambda count: print(
        f"\rread {count} processsession row(s)…", end="", file=sys.stderr, flush=True
    )


def _dataverse_exits_2(handler: Handler) -> Handler:
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
            line = one_line(exc) if isinstance(exc, AzureError) else str(exc)
            print(f"error: {escape_controls(line)}", file=sys.stderr)
            return 2

    return run


def _existing_trail(settings: Settings, *, write: bool = False) -> AuditStore:
    """The trail reconcile compares against and backfill writes to, which must exist: a
    missing SQLite file is a usage error (exit 2, its path named), never an empty trail
    created on the spot (a second trail that calls every session missing). ``write`` opens
    it for backfill's writes."""
    path = settings.audit_sqlite_path
    if settings.audit_store is StoreKind.SQLITE and not path.is_file():
        raise FileNotFoundError(
            f"no SQLite audit store at {path} (AUDIT_SQLITE_PATH or --db; in Azure set "
            "AUDIT_STORE=table and AUDIT_TABLE_ENDPOINT): nothing to compare against"
        )
    return build_store(settings, read_only=not write)


@_dataverse_exits_2
def cmd_reconcile(args: argparse.Namespace, settings: Settings) -> int:
    """Exit 0 when no session is missing or behind, 1 when some are, 2 on usage or
    connection errors."""
    from shared.trail.reconcile import reconcile

    check_range(args)
    api = _web_api(args, settings)
    store = _existing_trail(settings)
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
    if output_format(args, piped="json") == "json":
        print(json.dumps(found.to_json()))
    else:
        out = console()
        out.print(reconcile_table(found.to_json()))
    print(
        f"{found.sessions} session(s) modified in the window: {len(found.missing)} missing, "
        f"{len(found.behind)} behind, {len(found.unresolved)} without their regarding, "
        f"{len(found.only_in_trail)} only in the trail"
        + (f", {len(found.implausible)} entries dated in the future" if found.implausible else "")
        + f" (trail: {store_label(settings)})",
        file=sys.stderr,
    )
    return 1 if found.gaps else 0


@_dataverse_exits_2
def cmd_backfill(args: argparse.Namespace, settings: Settings) -> int:
    """Write one entry per missing or behind session; ``--dry-run`` writes nothing."""
    from shared.trail.reconcile import backfill

    check_range(args)
    api = _web_api(args, settings)
    store = _existing_trail(settings, write=not args.dry_run)
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
        f"for {len(done.reconciliation.gaps)} session(s) missing, behind or without their "
        f"regarding (trail: {store_label(settings)})",
        file=sys.stderr,
    )
    return 0


def add_commands(commands: Commands) -> None:
    """Add this group's commands to ``psaudit``."""
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
        command.add_argument("--since", type=parse_time, required=True, help="ISO-8601, UTC")
        command.add_argument(
            "--until", type=parse_time, required=True, help="ISO-8601, UTC (exclusive)"
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
