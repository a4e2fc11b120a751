"""Taking messages in: ``run`` and ``inspect`` (message files), ``worker`` and ``send``
(Service Bus)."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from shared.cli.common import (
    Commands,
    entity_options,
    paths_argument,
    positive_count,
    positive_seconds,
    servicebus_client,
    store_label,
    store_summary,
    warn,
)
from shared.cli.console import (
    console,
    escape_controls,
    json_line,
    outcomes_table,
    plain,
    summary,
    summary_of,
)
from shared.events.envelope import InboundMessage, from_files, properties_path_for
from shared.pipeline import Pipeline, Policy, evaluate
from shared.settings import Settings
from shared.stores import build_store
from shared.verdicts import Settlement, Verdict

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


def _fields(message: InboundMessage) -> dict[str, Any]:
    return {name: getattr(message, name) for name in InboundMessage.__slots__}


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


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from shared.bootstrap import build_pipeline
    from shared.bus.standalone import Worker

    client, source = servicebus_client(args, settings)
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

    client, source = servicebus_client(args, settings)
    messages = [load_message(body) for body in message_files(args.paths)]
    with client:
        count = send(client, source, messages)
    print(f"sent {count} message(s) to {source}", file=sys.stderr)
    return 0


def add_commands(commands: Commands) -> None:
    """Add this group's commands to ``psaudit``."""
    run = commands.add_parser(
        "run",
        help="process message files into the audit store",
        description="Example: psaudit run ./messages/ (each NAME.body with its "
        "NAME.properties.json); with no path, the bundled samples",
    )
    paths_argument(run)
    run.add_argument(
        "--content-type", help="the content type of every message (overrides properties files)"
    )
    run.set_defaults(handler=cmd_run)

    inspect = commands.add_parser(
        "inspect",
        help="decide one message; print one JSON object",
        description="Example: psaudit inspect ./message.body (NAME.properties.json beside it "
        "gives its content type and properties)",
    )
    inspect.add_argument("body", type=Path, help="the message body file")
    inspect.add_argument(
        "--properties",
        type=Path,
        help="its properties JSON (default: NAME.properties.json beside it)",
    )
    inspect.add_argument("--content-type", help="override the content type")
    inspect.set_defaults(handler=cmd_inspect)

    worker = commands.add_parser(
        "worker",
        help="receive from Service Bus and audit (no Functions)",
        description="Example: SERVICEBUS_FULLY_QUALIFIED_NAMESPACE=contoso.servicebus.windows.net "
        "psaudit worker --queue processsession-events",
    )
    entity_options(worker)
    worker.add_argument(
        "--batch-size",
        type=positive_count,
        default=32,
        help="messages received per batch (default 32)",
    )
    worker.add_argument(
        "--max-wait",
        type=positive_seconds,
        default=1.0,
        help="seconds a receive waits for messages",
    )
    worker.add_argument(
        "--until-idle", action="store_true", help="stop when a receive finds the entity empty"
    )
    worker.add_argument(
        "--max",
        type=positive_count,
        metavar="N",
        help="stop after N messages, each settled (it never receives more than N)",
    )
    worker.set_defaults(handler=cmd_worker)

    send = commands.add_parser(
        "send",
        help="post message files as Dataverse would",
        description="Example: psaudit send --queue processsession-events ./messages/ (no path: "
        "the bundled samples)",
    )
    entity_options(send, subscription=False)
    paths_argument(send)
    send.set_defaults(handler=cmd_send)
