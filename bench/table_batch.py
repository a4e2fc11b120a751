"""Store CPU per entry: the Table store's lean transactions against the SDK's, and both against
the SQLite store, in one process, variants interleaved, best of several rounds.

    python -m bench.table_batch [-n 3200] [--rounds 5] [--batch 32]

Each round writes fresh entries (bench.corpus, decided before the clock starts) in batches of
``--batch`` through ``store.write``: the SQLite store, the Table store on Azurite with
``transactions="sdk"`` (azure-data-tables' ``submit_transaction``) and with ``"lean"``
(``shared.stores.table_batch``), both on the default 16 commit partitions, and lean on one;
then the same entries again (a redelivery: every commit meets its row, so the conflict path
runs). CPU is this process's (``time.process_time``: the write
threads included; Azurite runs in its own process), per entry written. Ratios are per round.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench.corpus import messages
from devtools.azurite import Azurite
from shared.events.entry import AuditEntry
from shared.pipeline import evaluate
from shared.stores.base import AuditStore
from shared.stores.sqlite import SqliteAuditStore
from shared.stores.table import TableAuditStore

VARIANTS = ("sqlite", "table-sdk", "table-lean", "table-lean-1")


def entries(count: int, seed: int) -> list[AuditEntry]:
    """``count`` entries decided from the bench corpus (the events that make one)."""
    found: list[AuditEntry] = []
    for message in messages(count * 2, seed=seed):
        entry = evaluate(message).entry
        if entry is not None:
            found.append(entry)
            if len(found) == count:
                break
    return found


def write_all(store: AuditStore, batch: Sequence[AuditEntry], size: int) -> float:
    """CPU seconds of this process to write ``batch`` in slices of ``size``."""
    start = time.process_time()
    for i in range(0, len(batch), size):
        store.write(batch[i : i + size])
    return time.process_time() - start


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=3_200, help="entries per variant and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args(argv)
    seeds = itertools.count(1)
    with tempfile.TemporaryDirectory() as tmp:
        server = Azurite(Path(tmp))
        server.start()
        try:
            stores: dict[str, AuditStore] = {
                "sqlite": SqliteAuditStore(Path(tmp) / "audit.sqlite3"),
                "table-sdk": TableAuditStore(
                    "benchsdk", connection_string=server.connection_string, transactions="sdk"
                ),
                "table-lean": TableAuditStore(
                    "benchlean", connection_string=server.connection_string, transactions="lean"
                ),
                "table-lean-1": TableAuditStore(
                    "benchleanone",
                    connection_string=server.connection_string,
                    transactions="lean",
                    partitions=1,
                ),
            }
            first: dict[str, list[float]] = {v: [] for v in VARIANTS}
            again: dict[str, list[float]] = {v: [] for v in VARIANTS}
            for round_number in range(1, args.rounds + 1):
                print(f"[table_batch] round {round_number}", file=sys.stderr, flush=True)
                for variant in VARIANTS:
                    batch = entries(args.n, next(seeds))
                    store = stores[variant]
                    first[variant].append(write_all(store, batch, args.batch) / len(batch))
                    again[variant].append(write_all(store, batch, args.batch) / len(batch))
            for store in stores.values():
                store.close()
        finally:
            server.stop()
    report(first, again, args)
    return 0


def report(
    first: dict[str, list[float]], again: dict[str, list[float]], args: argparse.Namespace
) -> None:
    def ratio(a: str, b: str, runs: dict[str, list[float]]) -> str:
        per_round = [x / y for x, y in zip(runs[a], runs[b], strict=True)]
        return f"{min(per_round):.2f}x ({min(per_round):.2f}-{max(per_round):.2f})"

    table = Table(
        title=f"store CPU per entry, batch {args.batch}, {args.n:,} entries a round, "
        f"best of {args.rounds} rounds (range)"
    )
    for column in ("variant", "new entries, ms", "redelivered, ms"):
        table.add_column(column, justify="right" if column != "variant" else "left")
    best: Callable[[list[float]], str] = lambda xs: (  # noqa: E731
        f"{min(xs) * 1000:.3f} ({min(xs) * 1000:.3f}-{max(xs) * 1000:.3f})"
    )
    for variant in VARIANTS:
        table.add_row(variant, best(first[variant]), best(again[variant]))
    table.add_row("lean / sdk", ratio("table-lean", "table-sdk", first), "")
    table.add_row("table-lean / sqlite", ratio("table-lean", "sqlite", first), "")
    table.add_row("table-sdk / sqlite", ratio("table-sdk", "sqlite", first), "")
    table.add_row("16 partitions / 1", ratio("table-lean", "table-lean-1", first), "")
    Console(width=110).print(table)
    lean = min(first["table-lean"]) * 1000
    print(
        f"target: Table store CPU per entry <= 0.5 ms: {lean:.3f} ms, "
        f"{'met' if lean <= 0.5 else 'NOT met'}"
    )


if __name__ == "__main__":
    raise SystemExit(main())
