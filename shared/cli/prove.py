"""Proving the trail: ``check-store``, ``seal`` and ``verify``."""

from __future__ import annotations

import argparse
import functools
import json
import sys
from dataclasses import asdict
from datetime import UTC, datetime

from shared.cli.common import (
    Commands,
    Handler,
    check_range,
    output_format,
    store_label,
    time_range_options,
)
from shared.cli.console import (
    escape_controls,
)
from shared.errors import StoreUnavailable
from shared.settings import Settings
from shared.stores import build_store


def _unreachable_store_exits_2(handler: Handler) -> Handler:
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
    if output_format(args, piped="json") == "json":
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

    check_range(args)
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
    if output_format(args, piped="json") == "json":
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


def add_commands(commands: Commands) -> None:
    """Add this group's commands to ``psaudit``."""
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
    time_range_options(verify)
    verify.add_argument(
        "--format", choices=("table", "json"), help="lines on a terminal, JSON when piped"
    )
    verify.set_defaults(handler=cmd_verify)
