"""The Functions path, before and after issue 36, in one run: batches of host messages through
the real Functions Python worker (``tests/functions_host``: azure-functions-runtime, the app's
trigger, the extension's Settlement gRPC service) into the Table store: a stand-in that
answers every write as Table Storage would at next to no CPU (``devtools.table_relay
--stand-in``: on this 2-core machine Azurite's own CPU, about a millisecond a message, would
otherwise set the pace), or Azurite itself (``--azurite``).

    python -m bench.functions_path [--batches 6] [--batch 100] [--rounds 3]
        [--settle-latency-ms 2] [--table-latency-ms 8]

Each settlement is answered after ``--settle-latency-ms`` (the host's round trip to Service
Bus) and each Table request waits ``--table-latency-ms`` in a relay process in front of
Azurite: sleeping timers in other processes, so they cost the worker no CPU, as a network's
latency does not. Two workers run side by side, rounds interleaved:

* ``before``: what the app did before issue 36, by its settings: settlements one after another
  (``AUDIT_SETTLE_CONCURRENCY=1``), the SDK's transactions (``AUDIT_TABLE_TRANSACTIONS=sdk``),
  one commit partition, the libraries' loggers at INFO (``AUDIT_LIBRARY_LOG_LEVEL=INFO``, as
  the Functions worker sets its root logger);
* ``now``: the defaults.

Per variant: messages per second per instance (wall), the worker process's CPU per message
(its /proc counters: decoding the host's input, the pipeline, the store client, settling),
and the bytes of log lines the worker wrote per message (what the host would export as
telemetry; Application Insights' own envelope is not counted). Not reproduced here: the
one-message-per-line INFO record the app wrote before (now DEBUG), which the code no longer
has, so ``before`` understates what it cost.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from bench.corpus import messages
from bench.drain import RelayProcess, process_cpu
from devtools.azurite import Azurite
from tests.functions_host.amqp import HostMessage
from tests.functions_host.host import FunctionsHost

ENTITIES = {
    "PROCESS_SESSION_QUEUE": "processsessions",
    "PROCESS_SESSION_TOPIC": "dataverse",
    "PROCESS_SESSION_SUBSCRIPTION": "audit",
}
VARIANTS = {
    "before": {
        "AUDIT_SETTLE_CONCURRENCY": "1",
        "AUDIT_TABLE_TRANSACTIONS": "sdk",
        "AUDIT_TABLE_PARTITIONS": "1",
        "AUDIT_LIBRARY_LOG_LEVEL": "INFO",
    },
    "now": {},
}


@dataclass
class Round:
    messages: int
    wall: float
    cpu: float
    log_bytes: int


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=6, help="batches per variant and round")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--settle-latency-ms", type=float, default=2.0)
    parser.add_argument("--table-latency-ms", type=float, default=8.0)
    parser.add_argument(
        "--azurite",
        action="store_true",
        help="Azurite behind the relay instead of the stand-in (Azurite's CPU then competes "
        "with the worker's on this machine)",
    )
    args = parser.parse_args()
    results: dict[str, list[Round]] = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        azurite = Azurite(tmp)
        azurite.start()
        relay = RelayProcess(
            azurite.connection_string, args.table_latency_ms, stand_in=not args.azurite
        )
        hosts: dict[str, FunctionsHost] = {}
        try:
            for name, extra in VARIANTS.items():
                table = f"fn{name}{uuid.uuid4().hex[:8]}"
                env = {
                    **ENTITIES,
                    "AUDIT_STORE": "table",
                    "AUDIT_TABLE_NAME": table,
                    "AUDIT_TABLE_CONNECTION_STRING": relay.connection_string,
                    **extra,
                }
                host = FunctionsHost(env, tmp / f"worker-{name}.log").__enter__()
                host.index()
                host.settlement.delay = args.settle_latency_ms / 1000
                hosts[name] = host
            seed = 0
            for round_number in range(1, args.rounds + 1):
                for name, host in hosts.items():
                    seed += 1
                    print(f"[functions_path] round {round_number}: {name}", file=sys.stderr)
                    results[name].append(run(host, args, seed))
        finally:
            for host in hosts.values():
                host.__exit__(None, None, None)
            relay.stop()
            azurite.stop()
    report(results, args)
    return 0


def run(host: FunctionsHost, args: argparse.Namespace, seed: int) -> Round:
    corpus = list(messages(args.batch * args.batches, seed=seed))
    batches = [
        [
            HostMessage(
                body=m.body,
                content_type=m.content_type,
                message_id=m.message_id,
                correlation_id=m.correlation_id,
                application_properties=m.application_properties,
            )
            for m in corpus[i : i + args.batch]
        ]
        for i in range(0, len(corpus), args.batch)
    ]
    pid = host._process.pid
    log_before = os.path.getsize(host.log_path)
    cpu = process_cpu(pid)
    start = time.perf_counter()
    for batch in batches:
        invocation = host.service_bus_batch("process_session_queue", batch)
        if not invocation.succeeded:
            raise RuntimeError(invocation.exception)
    wall = time.perf_counter() - start
    cpu = process_cpu(pid) - cpu
    calls = host.settlement.taken()
    settled = [c for c in calls if c.method in ("complete", "deadletter", "abandon")]
    if len(settled) != len(corpus):
        raise RuntimeError(f"{len(settled)} settlements for {len(corpus)} messages")
    return Round(len(corpus), wall, cpu, os.path.getsize(host.log_path) - log_before)


def report(results: dict[str, list[Round]], args: argparse.Namespace) -> None:
    print(
        f"\nFunctions path: {args.batches} batches of {args.batch} per variant and round, "
        f"settlement {args.settle_latency_ms:g} ms, each Table request "
        f"{args.table_latency_ms:g} ms, best of {args.rounds} rounds (range):"
    )
    print(f"  {'variant':<8} {'msg/s':>16} {'CPU ms/msg':>18} {'log bytes/msg':>14}")
    for name, rounds in results.items():
        rates = [r.messages / r.wall for r in rounds]
        cpus = [r.cpu * 1000 / r.messages for r in rounds]
        logs = [r.log_bytes / r.messages for r in rounds]
        print(
            f"  {name:<8} {max(rates):6.0f} ({min(rates):.0f}..{max(rates):.0f})"
            f" {min(cpus):6.2f} ({min(cpus):.2f}..{max(cpus):.2f}) {min(logs):14.0f}"
        )
    ratios = [
        (n.messages / n.wall) / (b.messages / b.wall)
        for n, b in zip(results["now"], results["before"], strict=True)
    ]
    print(
        f"  now / before: {max(ratios):.2f}x msg/s (per round {min(ratios):.2f}..{max(ratios):.2f}"
        "; target >= 3x)"
    )


if __name__ == "__main__":
    sys.exit(main())
