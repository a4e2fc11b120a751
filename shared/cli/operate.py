"""Operating the service: ``dlq peek|replay``, ``register`` and ``migrate-table``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from shared.cli.common import (
    Commands,
    entity_options,
    output_format,
    servicebus_client,
    table_or_json_option,
    table_or_jsonl_option,
    unreachable_store_exits_2,
)
from shared.cli.console import (
    console,
    dead_letter_table,
    escape_controls,
    json_line,
)
from shared.dataverse.registration import DEFAULT_OLD_VALUE_COLUMNS
from shared.settings import Settings
from shared.stores.table_rows import DEFAULT_PARTITIONS, MAX_PARTITIONS


def cmd_dlq_peek(args: argparse.Namespace, settings: Settings) -> int:
    from shared.bus.standalone import peek_dead_letters

    client, source = servicebus_client(args, settings)
    with client:
        found = peek_dead_letters(client, source, args.max)
    if output_format(args, piped="jsonl") == "jsonl":
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

    client, source = servicebus_client(args, settings)
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
    url = (args.environment or settings.dataverse_url or "").rstrip("/")
    if not url:
        raise ValueError(
            "name the Dataverse environment: --environment https://<org>.crm.dynamics.com or "
            "DATAVERSE_URL"
        )
    registration = Registration(
        namespace=args.namespace,
        entity=args.queue or args.topic,
        kind="queue" if args.queue else "topic",
        sas_key_name=args.sas_key_name,
        sas_key=sas_key,
        endpoint_name=args.endpoint_name,
        old_value_columns=args.old_value_columns,
        delete_step=args.delete_step,
    )
    from shared.dataverse.registration import PlanApi

    api: Any = (
        PlanApi(url)
        if args.plan
        else build_web_api(url, max_answer_bytes=settings.dataverse_max_answer_bytes)
    )
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


@unreachable_store_exits_2
def cmd_migrate_table(args: argparse.Namespace, settings: Settings) -> int:
    """Copy the Table trail (AUDIT_TABLE_NAME) into a new table with commit partitions; the
    source is only read. Exit 0 when every entry was copied and every view of the new table
    agrees, 1 when rows were left (named), 2 when a table cannot be reached."""
    from shared.settings import StoreKind
    from shared.stores import build_store
    from shared.stores.table import TableAuditStore

    if settings.audit_store is not StoreKind.TABLE:
        raise ValueError("migrate-table copies a Table Storage trail: set AUDIT_STORE=table")
    if args.to == settings.audit_table_name:
        raise ValueError("--to must name a new table, not AUDIT_TABLE_NAME itself")
    target_settings = settings.model_copy(
        update={"audit_table_name": args.to, "audit_table_partitions": args.partitions}
    )
    source = build_store(settings, read_only=True)
    try:
        target = build_store(target_settings)
        try:
            assert isinstance(source, TableAuditStore)  # AUDIT_STORE=table, checked above
            assert isinstance(target, TableAuditStore)
            created, skipped = target.copy_in(source.scan())
            held, problems = target.count(), target.check_views()
            report = {
                "from": settings.audit_table_name,
                "from_partitions": source.partitions,
                "to": args.to,
                "to_partitions": target.partitions,
                "copied": created,
                "entries": held,
                "not_copied": skipped,
                "view_problems": len(problems),
            }
        finally:
            target.close()
    finally:
        source.close()
    if output_format(args, piped="json") == "json":
        print(json.dumps(report, ensure_ascii=True))
    else:
        for entry_id in skipped:
            print(
                f"not copied: entry row {escape_controls(entry_id)} (unreadable, or another "
                "entry's document under this id: `psaudit verify` names it)"
            )
        print(
            f"copied {created} new entries from table {report['from']} "
            f"({report['from_partitions']} commit partition(s)) to {args.to} "
            f"({report['to_partitions']}); it holds {held}; "
            + ("every view agrees" if not problems else f"{len(problems)} view problem(s)")
        )
        if not skipped and not problems:
            print(
                f"next: stop the writers, run this again (it copies what came meanwhile), "
                f"set AUDIT_TABLE_NAME={args.to}, then `psaudit verify`"
            )
    return 1 if skipped or problems else 0


def add_commands(commands: Commands) -> None:
    """Add this group's commands to ``psaudit``."""
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
    entity_options(peek)
    peek.add_argument("--max", type=int, default=100, help="at most this many (default 100)")
    table_or_jsonl_option(peek)
    peek.set_defaults(handler=cmd_dlq_peek)
    replay = dlq.add_parser(
        "replay",
        help="re-send dead-lettered messages to the entity",
        description="Example: psaudit dlq replay --queue processsession-events "
        "--reason untrusted_organization",
    )
    entity_options(replay)
    replay.add_argument("--reason", help="only messages dead-lettered with this reason code")
    replay.add_argument("--dry-run", action="store_true", help="only say what would be replayed")
    replay.add_argument("--max", type=int, default=1000, help="at most this many (default 1000)")
    replay.set_defaults(handler=cmd_dlq_replay)

    register = commands.add_parser(
        "register",
        help="register the service endpoint, steps and images in Dataverse",
        description="Example: DATAVERSE_SAS_KEY=... psaudit register --environment "
        "https://contoso.crm.dynamics.com --namespace contoso-audit --queue "
        "processsession-events --dry-run",
    )
    register.add_argument(
        "--environment",
        "--environment-url",  # the name it had before: kept as an alias
        dest="environment",
        help="https://<org>.crm.dynamics.com (default: DATAVERSE_URL)",
    )
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
        "--delete-step",
        action="store_true",
        help="also register the Delete step with a pre-image (regardingobjectid, name): "
        "sessions' deletions are then recorded",
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

    migrate = commands.add_parser(
        "migrate-table",
        help="copy the Table trail into a new table with commit partitions",
        description="Copies every entry of AUDIT_TABLE_NAME, document and seal unchanged, into "
        "a new table spread over commit partitions, and checks its views; the source is only "
        "read. Run it again after the writers stop (it copies what came meanwhile), then point "
        "AUDIT_TABLE_NAME at the new table. Example: AUDIT_STORE=table psaudit migrate-table "
        "--to processsessionaudit2",
    )
    migrate.add_argument("--to", required=True, help="the new table's name")
    migrate.add_argument(
        "--partitions",
        type=int,
        default=DEFAULT_PARTITIONS,
        choices=range(1, MAX_PARTITIONS + 1),
        metavar="N",
        help="commit partitions of the new table, 1 to 64 (default 16); an existing table "
        "keeps its own",
    )
    table_or_json_option(migrate)
    migrate.set_defaults(handler=cmd_migrate_table)
