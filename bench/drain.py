"""Drain the local Service Bus broker: the bare SDK loop, the worker into SQLite (completing
in ranges; one batch at a time; settling each message as the bare loop does), the worker into
the Table store on Azurite (overlapping, and one batch at a time), in one run, rounds
interleaved, at each batch size; then each Table read path.

    python -m bench.drain [-n 2000] [--rounds 3] [--batch 32 100] [--settle-latency-ms 0]
        [--receive-latency-ms 0] [--table-latency-ms 0]
        [--variants bare sqlite sqlite-serial sqlite-each table table-serial]

``--settle-latency-ms`` makes the broker wait that long before it applies and echoes each
settlement, ``--receive-latency-ms`` before it answers a receive's credit: stand-ins for the
network round trip each costs against a real namespace. ``--table-latency-ms`` puts a relay
process in front of Azurite that holds each request and its answer for half that each. Every
wait is a sleeping timer in another process: it costs the client no CPU, as a network's
latency does not.

Per variant and round: wall-clock messages per second (the drain waits on the broker and on
Azurite, so wall time is what a queue sees) and this process's CPU per message (the client's
work: the SDK, the pipeline, the store client; the broker, the relay and Azurite run in their
own processes). The wall time of a drain runs from its first batch's arrival to its last
settlement (``Window``); its CPU is measured less the same variant's drain of the then empty
queue, run right after it (opening and closing the receiver, one empty receive). Ratios are
per round (variant / bare loop of the same round); the best round is printed with the range
over rounds. The overlap limit of a worker is the longer of its two halves measured one batch
at a time in the same round: the pipeline (deciding and storing) and the rest (receiving and
settling). Sending the messages is not measured.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from azure.servicebus import ServiceBusClient

import shared.bus.standalone as servicebus_module
from bench.corpus import messages
from devtools.azurite import Azurite
from devtools.broker_process import BrokerProcess
from shared.bus.standalone import Source, Worker, send
from shared.events.envelope import InboundMessage
from shared.pipeline import Pipeline
from shared.stores.base import AuditStore
from shared.stores.sqlite import SqliteAuditStore
from shared.stores.table import TableAuditStore

QUEUES = ("bare", "sqlite", "sqlite-serial", "sqlite-each", "table", "table-serial")
WAIT = 0.5  # every variant ends on one empty receive of this length
#: Accepted or rejected processsession events of bench.corpus (the rest are ignored or
#: malformed and make no entry): 34 + 34 + 8 + 6 + 9 of its weights of 100.
ENTRY_SHARE = 0.91


def phase(text: str) -> None:
    print(f"[drain] {text}", file=sys.stderr, flush=True)


class Decide:
    """Wall seconds the pipeline spent deciding and storing during a drain (its thread)."""

    seconds = 0.0


_handle = Pipeline.handle


def _timed_handle(self: Pipeline, *args: Any, **kwargs: Any) -> Any:
    start = time.perf_counter()
    try:
        return _handle(self, *args, **kwargs)
    finally:
        Decide.seconds += time.perf_counter() - start


Pipeline.handle = _timed_handle  # type: ignore[method-assign]


class Window:
    """When a drain's first batch arrived and its last settlement returned: the wall time
    between them is the drain's. Opening and closing a receiver and the last, empty receive
    are left out: they cost the same whatever the messages, and closing ends on the SDK's
    whole seconds (a drain of 0, 640 or 2,000 messages took 2.00 or 3.00 s from open to
    close here), which would round every variant's time."""

    first: float | None = None
    last: float | None = None

    @classmethod
    def received(cls) -> None:
        if cls.first is None:
            cls.first = time.perf_counter()

    @classmethod
    def settled(cls) -> None:
        cls.last = time.perf_counter()

    @classmethod
    def reset(cls) -> None:
        cls.first = cls.last = None


def _marking(function: Callable[..., Any], mark: Callable[[], None]) -> Callable[..., Any]:
    def marked(*args: Any, **kwargs: Any) -> Any:
        result = function(*args, **kwargs)
        mark()
        return result

    return marked


# the worker's loop: a batch is adapted right after its receive, and settled last
for _name, _mark in (
    ("adapt_all", Window.received),
    ("settle_batch", Window.settled),
    ("settle_all", Window.settled),
):
    setattr(servicebus_module, _name, _marking(getattr(servicebus_module, _name), _mark))


def bare(client: ServiceBusClient, batch: int) -> int:
    """The floor: receive in batches and complete each message, nothing else."""
    done = 0
    with Source(queue="bare").receiver(client) as receiver:
        while True:
            got = receiver.receive_messages(max_message_count=batch, max_wait_time=WAIT)
            if not got:
                return done
            Window.received()
            for message in got:
                receiver.complete_message(message)
            Window.settled()
            done += len(got)


def worker(client: ServiceBusClient, store: AuditStore, queue: str, batch: int) -> int:
    stats = Worker(
        client,
        Pipeline(store),
        Source(queue=queue),
        batch_size=batch,
        max_wait_time=WAIT,
        settle_in_ranges=queue != "sqlite-each",
        overlap="never" if queue.endswith(("-serial", "-each")) else "measured",
    ).run(until_idle=True)
    return stats.messages


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Run:
    """One variant's drain: messages, wall seconds, CPU seconds of each process."""

    messages: int
    wall: float
    client_cpu: float
    broker_cpu: float
    azurite_cpu: float
    decide: float = 0.0

    def per_message_ms(self, seconds: float) -> float:
        return seconds * 1000 / self.messages

    def less(self, idle: Run) -> Run:
        """This drain's CPU less the same variant's drain of the empty queue (``idle``:
        opening and closing the receiver, one empty receive)."""
        return Run(
            self.messages,
            self.wall,
            self.client_cpu - idle.client_cpu,
            self.broker_cpu - idle.broker_cpu,
            self.azurite_cpu - idle.azurite_cpu,
            self.decide,
        )


def measure(work: Callable[[], int], broker: int, azurite: int) -> Run:
    """Drain once; CPU of this process (the client) and of the broker and Azurite."""
    broker_cpu, azurite_cpu = process_cpu(broker), process_cpu(azurite)
    Window.reset()
    Decide.seconds = 0.0
    cpu = time.process_time()
    count = work()
    cpu = time.process_time() - cpu
    wall = Window.last - Window.first if Window.first and Window.last else 0.0
    return Run(
        count,
        wall,
        cpu,
        process_cpu(broker) - broker_cpu,
        process_cpu(azurite) - azurite_cpu,
        Decide.seconds,
    )


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
    parser.add_argument("--batch", type=int, nargs="+", default=[32, 100])
    parser.add_argument("--settle-latency-ms", type=float, default=0.0)
    parser.add_argument("--receive-latency-ms", type=float, default=0.0)
    parser.add_argument(
        "--table-latency-ms",
        type=float,
        default=0.0,
        help="round trip added to each Table request (a relay process in front of Azurite)",
    )
    parser.add_argument("--variants", nargs="+", choices=QUEUES, default=list(QUEUES))
    args = parser.parse_args()
    if "bare" not in args.variants:
        parser.error("the bare loop is what every variant is compared with: keep it")
    logging.disable(logging.WARNING)
    results = {(b, q): list[Run]() for b in args.batch for q in args.variants}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        azurite = Azurite(tmp)
        azurite.start()
        entities = [a for q in QUEUES for a in ("--queue", f"{q}:lock=60:max=10")]
        try:
            with (
                BrokerProcess(
                    *entities,
                    f"--settle-latency-ms={args.settle_latency_ms}",
                    f"--receive-latency-ms={args.receive_latency_ms}",
                    log=tmp / "broker.log",
                ) as broker,
                ServiceBusClient.from_connection_string(broker.connection_string) as client,
            ):
                relay = (
                    RelayProcess(azurite.connection_string, args.table_latency_ms)
                    if args.table_latency_ms
                    else None
                )
                table = TableAuditStore(
                    "drain" + uuid.uuid4().hex[:8],
                    connection_string=relay.connection_string
                    if relay
                    else azurite.connection_string,
                )
                seed = 0
                for round_number in range(1, args.rounds + 1):
                    for batch, queue in results:
                        seed += 1
                        corpus = list(messages(args.n, seed=seed))
                        send(client, Source(queue=queue), corpus)
                        phase(f"round {round_number}: {queue}, batch {batch} ({args.n} messages)")
                        if queue == "bare":
                            work: Callable[[], int] = partial(bare, client, batch)
                        else:
                            store: AuditStore = (
                                table
                                if queue.startswith("table")
                                else SqliteAuditStore(tmp / f"drain-{seed}.sqlite3")
                            )
                            work = partial(worker, client, store, queue, batch)
                        assert broker.process is not None
                        assert azurite.process is not None
                        run = measure(work, broker.process.pid, azurite.process.pid)
                        idle = measure(work, broker.process.pid, azurite.process.pid)
                        results[batch, queue].append(run.less(idle))
                for batch in args.batch:
                    report({q: results[batch, q] for q in args.variants}, args, batch)
                if "table" in args.variants:
                    phase("Table store read paths")
                    print(f"Table store read paths ({table.count()} entries in the table):")
                    read_paths(table, list(messages(200, seed=seed)))
                table.close()
                if relay:
                    relay.stop()
        finally:
            azurite.stop()
    return 0


def report(results: dict[str, list[Run]], args: argparse.Namespace, batch: int) -> None:
    print(
        f"\nDrain of {args.n} bench-corpus messages per variant, batch {batch}, settlement "
        f"echo delayed {args.settle_latency_ms:g} ms, receive {args.receive_latency_ms:g} ms, "
        f"each Table request {args.table_latency_ms:g} ms, "
        f"{args.rounds} rounds interleaved (best round, range over rounds; CPU in ms per "
        "message, best round):"
    )
    print(
        f"  {'variant':<26} {'msg/s':>7} {'÷ bare loop':>21} {'client':>7} {'broker':>7}"
        f" {'Azurite':>8}"
    )
    bare_rates = [r.messages / r.wall for r in results["bare"]]
    names = {
        "bare": "bare SDK loop",
        "sqlite": "worker, SQLite",
        "sqlite-serial": "  the same, one batch at a time",
        "sqlite-each": "  the same, settling each",
        "table": "worker, Table (Azurite)",
        "table-serial": "  the same, one batch at a time",
    }
    for queue, runs in results.items():
        rates = [r.messages / r.wall for r in runs]
        ratios = [rate / bare for rate, bare in zip(rates, bare_rates, strict=True)]
        spread = f"({min(ratios):.3f}..{max(ratios):.3f})"
        client = min(r.per_message_ms(r.client_cpu) for r in runs)
        broker = min(r.per_message_ms(r.broker_cpu) for r in runs)
        azurite = min(r.per_message_ms(r.azurite_cpu) for r in runs)
        print(
            f"  {names[queue]:<26} {max(rates):7.0f} {max(ratios):6.3f} {spread:>14}"
            f" {client:7.2f} {broker:7.2f} {azurite:8.2f}"
        )
    for overlapped in ("sqlite", "table"):
        serial = results.get(f"{overlapped}-serial")
        if serial and overlapped in results:
            overlap_limit(overlapped, results[overlapped], serial)
    table = results.get("table")
    if not table:
        return
    entries = statistics.median(r.per_message_ms(r.client_cpu) / ENTRY_SHARE for r in table)
    print(
        f"  Table worker client CPU per entry (median; {ENTRY_SHARE:.0%} of the corpus's "
        f"messages make an entry): {entries:.2f} ms"
    )


def overlap_limit(name: str, overlapped: list[Run], serial: list[Run]) -> None:
    """How near the overlapping worker comes to its limit: one batch at a time, a drain takes
    the pipeline's time (deciding and storing) plus the rest (receiving and settling); the
    two overlapped, it can take no less than the longer of them. Per round, from the serial
    drain of the same round."""
    ratios = []
    for run, alone in zip(overlapped, serial, strict=True):
        rest = max(alone.wall - alone.decide, 0.0)
        limit = alone.messages / max(rest, alone.decide)
        ratios.append((run.messages / run.wall) / limit)
    gain = max(
        o.messages / o.wall / (s.messages / s.wall) for o, s in zip(overlapped, serial, strict=True)
    )
    print(
        f"  {name}: overlap {gain:.2f}x one batch at a time; {max(ratios):.2f} of its overlap "
        f"limit (range {min(ratios):.2f}..{max(ratios):.2f})"
    )


class RelayProcess:
    """``devtools.table_relay`` in a process of its own (its CPU is not the client's)."""

    def __init__(self, connection_string: str, delay_ms: float, stand_in: bool = False) -> None:
        import subprocess

        head, endpoint = connection_string.split("TableEndpoint=")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "devtools.table_relay",
                "--target",
                endpoint.rstrip(";"),
                "--delay-ms",
                str(delay_ms),
                *(["--stand-in"] if stand_in else []),
            ],
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.startswith("relaying on "):
            raise RuntimeError(f"the table relay did not start: {line!r}")
        self.connection_string = f"{head}TableEndpoint={line.split()[-1]};"

    def stop(self) -> None:
        from devtools.processes import stop_process_group

        stop_process_group(self.process)


if __name__ == "__main__":
    sys.exit(main())
