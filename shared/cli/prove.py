"""Proving the trail: ``check-store``, ``seal`` and ``verify``."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from datetime import UTC, datetime

from shared.cli.common import (
    Commands,
    check_range,
    output_format,
    say,
    store_label,
    table_or_json_option,
    time_range_options,
    unreachable_store_exits_2,
)
from shared.cli.console import (
    escape_controls,
)
from shared.errors import StoreUnavailable
from shared.settings import Settings
from shared.stores import build_store
from shared.stores.base import AuditStore
from shared.stores.seals import Problem


@unreachable_store_exits_2
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
            say(escape_controls(str(problem)))
        verdict = "every view agrees with the entries" if not left else f"{len(left)} problem(s)"
        say(
            f"{report['store']}: {report['entries']} entries; {verdict}"
            + (f" (repaired {len(found)})" if report["repaired"] else "")
        )
    return 1 if left else 0


@unreachable_store_exits_2
def cmd_seal(args: argparse.Namespace, settings: Settings) -> int:
    """Seal the windows of recorded_at that closed (``--now``: everything so far) and print
    the chain's new head; no key or no store is exit 2; entries written without a key are
    sealed only with ``--adopt`` (exit 1 without it)."""
    from shared.stores import seal_trail
    from shared.stores.seals import Unadopted

    try:
        record = seal_trail(settings, everything=args.now, adopt=args.adopt)
    except Unadopted as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if record is None:
        print("nothing to seal: no window has closed since the last seal", file=sys.stderr)
        return 0
    adopted = (
        f", {record.adopted} of them adopted (written without a key)" if record.adopted else ""
    )
    print(
        f"sealed {record.count} entries recorded from {record.start} to {record.end}{adopted}; "
        "keep the new head where the store's writers cannot reach it (`verify --expect-head`):",
        file=sys.stderr,
    )
    print(record.head)
    return 0


def _view_problems(store: AuditStore) -> list[Problem]:
    """verify's problems of the store's read paths: every view against its entry and every
    entry for each of its views (Table), the indexes' integrity (SQLite)."""
    found: list[Problem] = []
    for view in store.check_views():
        where = f"{view.partition_key} / {view.row_key}" if view.partition_key else view.row_key
        if view.kind == "corrupt":
            found.append(Problem("index_corrupt", f"SQLite integrity check: {view.row_key}"))
            continue
        what = {
            "missing": "the entry has no row in this view: readers of it miss the entry",
            "differs": "the view row carries another document than its entry",
            "orphan": "a view row with no entry behind it",
        }[view.kind]
        found.append(Problem(f"view_{view.kind}", f"{what} ({where})", view.entry_id or None))
    return found


def _name_entries(problems: list[Problem], store: AuditStore, limit: int = 1000) -> None:
    """Give each problem about an entry its time, session and regarding record, read from
    the store where verify did not parse it (a view's problem): a person can find it."""
    from shared.stores.seals import about

    for problem in problems[:limit]:
        if problem.entry_id is None or problem.about is not None:
            continue
        try:
            page = store.by_id(problem.entry_id)
        except (ValueError, StoreUnavailable):
            continue
        if page.entries:
            problem.about = about(page.entries[0])


@unreachable_store_exits_2
def cmd_verify(args: argparse.Namespace, settings: Settings) -> int:
    """Re-read the trail, its views and its seals; exit 0 intact, 1 when anything is wrong
    (or the chain does not extend ``--expect-head``)."""
    from datetime import timedelta

    from shared.stores import build_seal_store, require_existing, require_key_ring
    from shared.stores.seals import Problem, extends, parse_head, verify_trail

    check_range(args)
    if args.expect_head is not None:
        parse_head(args.expect_head)  # a usage error before any work
    ring = require_key_ring(settings)
    require_existing(settings)
    store = build_store(settings, read_only=True)
    show = sys.stderr.isatty()

    def progress(count: int) -> None:
        print(f"\rverified {count:,} entries ...", end="", file=sys.stderr, flush=True)

    try:
        seals = build_seal_store(settings, store, read_only=True)
        report = verify_trail(
            store,
            seals,
            ring,
            datetime.now(UTC),
            since=args.since,
            until=args.until,
            grace=timedelta(minutes=settings.audit_seal_grace_minutes),
            progress=progress if show else None,
        )
        report.problems += _view_problems(store)
        _name_entries(report.problems, store)
        if args.expect_head is not None and not extends(seals.records(), args.expect_head):
            report.problems.append(
                Problem(
                    "head_missing",
                    f"the chain of window records does not hold {args.expect_head}: the tail "
                    "was cut, or an older copy of the trail restored",
                )
            )
        policy = getattr(seals, "policy", None)  # the Table store's seal container (WORM)
        if callable(policy):
            report.seal_policy, warnings = policy(
                settings.audit_seal_container_id, settings.audit_seal_retention_days
            )
            report.warnings += warnings
    finally:
        store.close()
    if show:
        print("\r" + " " * 40 + "\r", end="", file=sys.stderr)
    for warning in report.warnings:
        print(f"warning: {escape_controls(warning)}", file=sys.stderr)
    if output_format(args, piped="json") == "json":
        print(json.dumps(report.to_json(), ensure_ascii=True))
    else:
        for problem in report.problems:
            say(escape_controls(f"{problem.kind}: {problem.where()}: {problem.detail}"))
        state = "intact" if not report.problems else f"{len(report.problems)} problem(s)"
        adopted = f", {report.adopted} adopted (written without a key)" if report.adopted else ""
        say(
            f"{report.entries} entries in {report.windows} sealed window(s), "
            f"{report.unsealed} not sealed yet{adopted}: {state}"
        )
        print(f"head: {report.head or '(nothing sealed yet)'}")
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
    table_or_json_option(check)
    check.set_defaults(handler=cmd_check_store)

    seal = commands.add_parser(
        "seal",
        help="seal the windows of the trail that have closed (needs AUDIT_TRAIL_KEY)",
        description="Records the count and digest of the entries recorded in each window "
        "that closed (plus AUDIT_SEAL_GRACE_MINUTES) since the last seal, MACed and chained. "
        "Example: psaudit seal --now",
    )
    seal.add_argument(
        "--adopt",
        action="store_true",
        help="also seal entries written without a key (a trail started before AUDIT_TRAIL_KEY "
        "was set); the record says how many it adopted, and verify reports them as adopted",
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
        description="Re-reads every entry, every view and every window seal and reports each "
        "problem (altered, missing, forged, inserted, unsealed, seal broken, view_missing, "
        "view_differs, view_orphan, head_missing). Prints the chain's head. Exit 0 when "
        "intact, 1 when not, 2 for a usage or connection error. "
        "Example: psaudit verify --expect-head 2026-12-01T10:00:00.000Z~3fa2c1d4e5f60718",
    )
    time_range_options(verify)
    verify.add_argument(
        "--expect-head",
        metavar="HEAD",
        help="a head that seal or verify printed earlier: exit 1 unless the trail extends it "
        "(a cut tail, a restored older copy)",
    )
    table_or_json_option(verify)
    verify.set_defaults(handler=cmd_verify)
