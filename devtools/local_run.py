"""``make run``: the main job on one machine, no Azure account.

Starts the local Service Bus broker, posts the bundled samples to a queue as Dataverse would,
runs the standalone worker until the queue is drained, then prints the verdicts, the audit
trail (SQLite by default) and the dead-letter queue, and stops the broker.
"""

from __future__ import annotations

import logging
import sys

from pydantic import SecretStr

from devtools.broker_process import BrokerProcess
from shared.bootstrap import build_pipeline
from shared.bus.standalone import Source, Worker, build_client, peek_dead_letters, send
from shared.cli.common import BUNDLED_SAMPLES, store_summary
from shared.cli.console import (
    console,
    dead_letter_table,
    entries_table,
    outcomes_table,
    plain,
    summary,
)
from shared.cli.ingest import load_message, message_files
from shared.settings import load_settings

QUEUE = "processsession-events"


def main() -> int:
    logging.basicConfig(level=logging.ERROR)
    out = console()
    bodies = message_files([BUNDLED_SAMPLES])
    names = {}
    messages = []
    for body in bodies:
        message = load_message(body)
        names[message.message_id] = body.name.removesuffix(".body")
        messages.append(message)
    out.print("starting the local Service Bus broker (a test tool, a few seconds) ...")
    with BrokerProcess("--queue", f"{QUEUE}:lock=30:max=10") as broker:
        out.print(
            f"local Service Bus broker on 127.0.0.1:{broker.port} (a test tool, not "
            "a production broker)"
        )
        settings = load_settings(servicebus_connection_string=SecretStr(broker.connection_string))
        source = Source(queue=QUEUE)
        pipeline = build_pipeline(settings)
        with build_client(settings) as client:
            sent = send(client, source, messages)
            out.print(f"sent {sent} sample message(s) to {source}")
            before = pipeline.store.count()
            out.print("the worker is draining the queue (it stops once the queue is empty) ...")
            stats = Worker(client, pipeline, source, max_wait_time=2).run(until_idle=True)
            after = pipeline.store.count()
            dead = peek_dead_letters(client, source)
            trail = pipeline.store.in_range().entries
        pipeline.store.close()
    outcomes = stats.outcomes
    labels = [names.get(o.message.message_id, o.message.message_id or "") for o in outcomes]
    out.print(
        outcomes_table(labels, outcomes, f"the worker on {source}: {len(outcomes)} message(s)")
    )
    out.print(summary(outcomes))
    out.print(plain(store_summary(settings, before, after)))
    out.print(entries_table(trail))
    out.print(dead_letter_table(dead, f"dead-letter queue of {source}: {len(dead)}"))
    return 0 if stats.messages == sent else 1


if __name__ == "__main__":
    sys.exit(main())
