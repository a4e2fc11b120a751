"""The worker's own peak RSS after draining N messages from the local broker into SQLite.

    python -m bench.worker_memory [-n 20000] [--also 100000]

The bench process starts the broker and sends the bench corpus; the worker runs in a process
of its own (``psaudit worker --until-idle``, as an operator runs it), whose high-water mark
(``VmHWM`` of /proc/<pid>/status, read just before it exits) is printed. Each phase is said
as it runs. Target (issue 24): <= 80 MiB after 20,000 messages, the same +-10% after 100,000.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from azure.servicebus import ServiceBusClient

from bench.corpus import messages
from devtools.broker_process import BrokerProcess
from shared.bus.standalone import Source, send

ROOT = Path(__file__).resolve().parent.parent
#: run inside the worker's own process: drain, then print VmHWM in KiB
CHILD = (
    "import sys, runpy\n"
    "sys.argv = ['psaudit'] + sys.argv[1:]\n"
    "try:\n"
    "    runpy.run_module('shared.cli', run_name='__main__')\n"
    "except SystemExit:\n"
    "    pass\n"
    "for line in open('/proc/self/status'):\n"
    "    if line.startswith('VmHWM:'):\n"
    "        print('VmHWM', line.split()[1], file=sys.stderr, flush=True)\n"
)


def phase(text: str) -> None:
    print(f"[worker-memory] {text}", file=sys.stderr, flush=True)


def drain(connection: str, queue: str, count: int, tmp: Path) -> float:
    """Run the worker over ``count`` queued messages; its peak RSS in MiB."""
    env = {
        **os.environ,
        "SERVICEBUS_CONNECTION_STRING": connection,
        "AUDIT_SQLITE_PATH": str(tmp / f"{queue}.sqlite3"),
    }
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", CHILD, "worker", "--queue", queue, "--until-idle"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    kib = next(
        int(line.split()[1]) for line in done.stderr.splitlines() if line.startswith("VmHWM")
    )
    phase(f"{queue}: {count} messages drained in {time.perf_counter() - started:.0f} s")
    return kib / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20_000, help="messages (default 20,000)")
    parser.add_argument("--also", type=int, default=0, help="a second, larger drain")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    sizes = [args.n] + ([args.also] if args.also else [])
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        queues = [a for n in sizes for a in ("--queue", f"memory{n}:lock=60:max=10")]
        with (
            BrokerProcess(*queues, log=tmp / "broker.log") as broker,
            ServiceBusClient.from_connection_string(broker.connection_string) as client,
        ):
            results = []
            for size in sizes:
                queue = f"memory{size}"
                phase(f"sending {size} bench-corpus messages to {queue}")
                send(client, Source(queue=queue), messages(size, seed=size))
                phase(f"draining {queue} with psaudit worker")
                results.append((size, drain(broker.connection_string, queue, size, tmp)))
    print("\nWorker peak RSS (VmHWM of its own process), SQLite store, batch 32:")
    for size, mib in results:
        print(f"  after {size:>7,} messages: {mib:6.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
