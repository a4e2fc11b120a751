"""Drain the local Service Bus broker: the bare SDK loop, the worker into SQLite, the worker
into the Table store on Azurite, in one run, rounds interleaved; then each Table read path.

    python -m bench.drain [-n 2000] [--rounds 3] [--batch 32]

Per variant and round: wall-clock messages per second (the drain waits on the broker and on
Azurite, so wall time is what a queue sees) and this process's CPU per message (the client's
work: the SDK, the pipeline, the store client; the broker and Azurite run in their own
processes). Ratios are per round (variant / bare loop of the same round); the best round is
printed with the range over rounds. Sending the messages is not measured.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from azure.servicebus import ServiceBusClient

from bench.corpus import messages
from devtools.azurite import Azurite
from devtools.broker_process import BrokerProcess
from shared.envelope import InboundMessage
from shared.pipeline import Pipeline
from shared.servicebus import Source, Worker, send
from shared.stores.base import AuditStore
from shared.stores.sqlite import SqliteAuditStore
from shared.stores.table import TableAuditStore

QUEUES = ("bare", "sqlite", "table")
WAIT = 0.5  # every variant ends on one empty receive of this length


def phase(text: str) -> None:
    print(f"[drain] {text}", file=sys.stderr, flush=True)


def bare(client: ServiceBusClient, batch: int) -> int:
    """The floor: receive in batches and complete each message, nothing else."""
    done = 0
    with Source(queue="bare").receiver(client) as receiver:
        while True:
            got = receiver.receive_messages(max_message_count=batch, max_wait_time=WAIT)
            if not got:
                return done
            for message in got:
                receiver.complete_message(message)
            done += len(got)


def worker(client: ServiceBusClient, store: AuditStore, queue: str, batch: int) -> int:
    stats = Worker(
        client, Pipeline(store), Source(queue=queue), batch_size=batch, max_wait_time=WAIT
    ).run(until_idle=True)
    return len(stats.outcomes)


def measure(work: Callable[[], int]) -> tuple[int, float, float]:
    """(messages, wall seconds, CPU seconds of this process)."""
    wall, cpu = time.perf_counter(), time.process_time()
    count = work()
    return count, time.perf_counter() - wall, time.process_time() - cpu


def read_paths(store: TableAuditStore, corpus: Sequence[InboundMessage]) -> None:
    """Each read the API, the CLI and export make, timed on what the drain stored."""
    from shared.pipeline import evaluate

    entries = [e for m in corpus[:200] if (e := evaluate(m).entry) is not None]
    regarding = next(e.regarding_id for e in entries if e.regarding_id)
    session = entries[0].processsession_id
    reads: list[tuple[str, Callable[[], Any]]] = [
        ("by_regarding, page of 100", lambda: store.by_regarding(regarding, limit=100)),
        ("by_session, whole", lambda: store.by_session(session)),
        ("in_range, page of 100", lambda: store.in_range(limit=100)),
        ("in_range, everything", lambda: store.in_range()),
        ("count", store.count),
        ("check_views", store.check_views),
    ]
    for name, read in reads:
        best_wall, best_cpu = float("inf"), float("inf")
        for _ in range(3):
            wall, cpu = time.perf_counter(), time.process_time()
            result = read()
            best_wall = min(best_wall, time.perf_counter() - wall)
            best_cpu = min(best_cpu, time.process_time() - cpu)
        size = len(result.entries) if hasattr(result, "entries") else result
        size = len(size) if isinstance(size, list) else size
        print(
            f"  {name:<28} {best_wall * 1000:9.1f} ms wall {best_cpu * 1000:9.1f} ms CPU"
            f"  ({size} rows)"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=2000, help="messages per variant and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    results: dict[str, list[tuple[int, float, float]]] = {q: [] for q in QUEUES}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        azurite = Azurite(tmp)
        azurite.start()
        entities = [a for q in QUEUES for a in ("--queue", f"{q}:lock=60:max=10")]
        try:
            with (
                BrokerProcess(*entities, log=tmp / "broker.log") as broker,
                ServiceBusClient.from_connection_string(broker.connection_string) as client,
            ):
                table = TableAuditStore(
                    "drain" + uuid.uuid4().hex[:8], connection_string=azurite.connection_string
                )
                seed = 0
                for round_number in range(1, args.rounds + 1):
                    for queue in QUEUES:
                        seed += 1
                        corpus = list(messages(args.n, seed=seed))
                        send(client, Source(queue=queue), corpus)
                        phase(f"round {round_number}: {queue} ({args.n} messages)")
                        if queue == "bare":
                            work: Callable[[], int] = partial(bare, client, args.batch)
                        else:
                            store: AuditStore = (
                                SqliteAuditStore(tmp / f"drain-{seed}.sqlite3")
                                if queue == "sqlite"
                                else table
                            )
                            work = partial(worker, client, store, queue, args.batch)
                        results[queue].append(measure(work))
                report(results, args)
                phase("Table store read paths")
                print(f"Table store read paths ({table.count()} entries in the table):")
                read_paths(table, list(messages(200, seed=seed)))
                table.close()
        finally:
            azurite.stop()
    return 0


def report(results: dict[str, list[tuple[int, float, float]]], args: argparse.Namespace) -> None:
    print(
        f"\nDrain of {args.n} bench-corpus messages per variant, batch {args.batch}, "
        f"{args.rounds} rounds interleaved (best round; range over rounds):"
    )
    print(f"  {'variant':<26} {'msg/s':>8} {'÷ bare':>16} {'CPU ms/msg':>16}")
    bare_rates = [n / wall for n, wall, _ in results["bare"]]
    for queue in QUEUES:
        rates = [n / wall for n, wall, _ in results[queue]]
        ratios = [r / b for r, b in zip(rates, bare_rates, strict=True)]
        cpu = [c * 1000 / n for n, _, c in results[queue]]
        name = {
            "bare": "bare SDK loop",
            "sqlite": "worker, SQLite",
            "table": "worker, Table on Azurite",
        }[queue]
        spread = f"({min(ratios):.3f}..{max(ratios):.3f})"
        print(
            f"  {name:<26} {max(rates):8.0f} {max(ratios):6.3f} {spread}"
            f" {min(cpu):7.2f} (median {statistics.median(cpu):.2f})"
        )


if __name__ == "__main__":
    sys.exit(main())
