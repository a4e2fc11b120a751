"""``make bench``: throughput against the parse floor, memory and cold start, in one run.

Every figure is measured on the same corpus in the same process run, and reported as
messages per second and as a ratio to the floor (``json.loads`` of each JSON body plus an
``xml.etree`` parse of each XML body): these machines are noisy, so only ratios within one run
are compared.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench.corpus import messages
from shared.dataverse import decode
from shared.envelope import InboundMessage
from shared.pipeline import Pipeline, evaluate
from shared.stores.sqlite import SqliteAuditStore

ROOT = Path(__file__).resolve().parent.parent
BATCH = 100


def phase(text: str) -> None:
    """Say what is being measured now (a full run takes minutes)."""
    print(f"... {text}", file=sys.stderr, flush=True)


def timed(work: Callable[[], object], repeat: int = 3) -> float:
    """Best of ``repeat`` wall-clock runs (the least disturbed by the machine)."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - started)
    return best


def floor(corpus: Sequence[InboundMessage]) -> None:
    """The least any Python consumer must do: parse each body with the standard library."""
    for message in corpus:
        if message.content_type == "application/xml":
            ET.fromstring(message.body)
        else:
            with contextlib.suppress(ValueError):
                json.loads(message.body)


def naive(corpus: Sequence[InboundMessage], path: Path) -> None:
    """A typical hand-written function: json.loads, walk the dicts, one INSERT + commit each."""
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE IF NOT EXISTS audit (id TEXT PRIMARY KEY, session TEXT, "
        "regarding TEXT, logical TEXT, message TEXT, body TEXT)"
    )
    for message in corpus:
        if message.content_type != "application/json":
            continue
        try:
            context = json.loads(message.body)
        except ValueError:
            continue
        regarding = None
        for parameter in context.get("InputParameters", []):
            if parameter["key"] == "Target" and isinstance(parameter["value"], dict):
                for attribute in parameter["value"].get("Attributes", []):
                    if attribute["key"] == "regardingobjectid":
                        regarding = attribute["value"]
        db.execute(
            "INSERT OR IGNORE INTO audit VALUES (?, ?, ?, ?, ?, ?)",
            (
                context.get("OperationId"),
                context.get("PrimaryEntityId"),
                (regarding or {}).get("Id"),
                (regarding or {}).get("LogicalName"),
                context.get("MessageName"),
                json.dumps(context),
            ),
        )
        db.commit()
    db.close()


def decode_only(corpus: Sequence[InboundMessage]) -> None:
    for message in corpus:
        try:
            decode(message.body, message.content_type)
        except ValueError:
            pass
        except Exception:  # noqa: BLE001, S112 - malformed bodies are part of the corpus
            continue


def decide(corpus: Sequence[InboundMessage]) -> None:
    for message in corpus:
        evaluate(message)


def pipeline_run(corpus: Sequence[InboundMessage], pipeline: Pipeline) -> None:
    for start in range(0, len(corpus), BATCH):
        pipeline.handle(corpus[start : start + BATCH])


def _median_seconds(code: str, runs: int, env: dict[str, str] | None = None) -> float:
    """Median over fresh processes of the seconds ``code`` takes (it prints them last)."""
    times = []
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, **(env or {})},
        )
        times.append(float(out.stdout.strip().splitlines()[-1]))
    return statistics.median(times)


def _timed_import(modules: str) -> str:
    return f"import time; t=time.perf_counter(); import {modules}; print(time.perf_counter()-t)"


def cold_start(runs: int) -> tuple[float, float, float]:
    """Median import time of function_app, of azure.functions + pydantic alone, and of those
    plus the Service Bus SDK-type extension that explicit settlement requires."""
    app = _median_seconds(_timed_import("function_app"), runs)
    bare = _median_seconds(_timed_import("azure.functions, pydantic"), runs)
    extension = _median_seconds(
        _timed_import("azure.functions, pydantic, azurefunctions.extensions.bindings.servicebus"),
        runs,
    )
    return app, bare, extension


def first_invocation(runs: int) -> float:
    """Median of import + the first queue invocation (settings, store, one message)."""
    code = (
        "import time; t=time.perf_counter(); import function_app; "
        "from bench.cold import first_call; first_call(); print(time.perf_counter()-t)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        return _median_seconds(code, runs, {"AUDIT_SQLITE_PATH": f"{tmp}/a.sqlite3"})


def memory(count: int) -> list[tuple[int, float]]:
    """Peak RSS (MiB) after streaming 10%, 50% and 100% of ``count`` messages."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.memory", str(count)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return [
        (int(n), float(mib))
        for n, mib in (line.split() for line in out.stdout.strip().splitlines())
    ]


def table_store_rate(corpus: Sequence[InboundMessage], tmp: Path) -> float | None:
    """Messages per second through the pipeline into the Table store on Azurite."""
    from devtools.azurite import Azurite, AzuriteUnavailable
    from shared.stores.table import TableAuditStore

    try:
        server = Azurite(tmp)
        server.start()
    except AzuriteUnavailable as exc:
        print(f"(table store skipped: {exc})", file=sys.stderr)
        return None
    try:
        store = TableAuditStore("benchaudit", connection_string=server.connection_string)
        pipeline = Pipeline(store)
        seconds = timed(lambda: pipeline_run(corpus, pipeline), repeat=1)
        store.close()
        return len(corpus) / seconds
    finally:
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20_000, help="corpus size")
    parser.add_argument("--table-n", type=int, default=3_000, help="messages for the Table store")
    parser.add_argument("--memory-n", type=int, default=200_000)
    parser.add_argument("--cold-runs", type=int, default=7)
    args = parser.parse_args()
    import logging

    logging.disable(logging.WARNING)
    corpus = list(messages(args.n))
    n = len(corpus)
    rows: list[tuple[str, float, str]] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        phase(f"floor: json.loads / ET.fromstring of {n:,} bodies")
        floor_s = timed(lambda: floor(corpus))
        rate_floor = n / floor_s
        naive_n = min(n, 2_000)  # one fsync per message: measured on a slice
        phase("naive baseline (one fsync per message)")
        naive_rate = naive_n / timed(lambda: naive(corpus[:naive_n], tmp / "naive.sqlite3"), 1)
        rows.append(("floor: json.loads / xml.etree per body", rate_floor, ""))
        rows.append(
            (f"naive: json.loads + walk + INSERT/commit each (n={naive_n})", naive_rate, "")
        )
        phase("decode only")
        rows.append(("decode only", n / timed(lambda: decode_only(corpus)), ""))
        phase("decode + judge + record")
        decide_rate = n / timed(lambda: decide(corpus))
        rows.append(("decode + judge + record (no I/O)", decide_rate, "target >= 1.0x floor"))
        counter = iter(range(1_000_000))

        def sqlite_run() -> None:
            store = SqliteAuditStore(tmp / f"bench-{next(counter)}.sqlite3")
            pipeline_run(corpus, Pipeline(store))
            store.close()

        phase("full pipeline into SQLite")
        sqlite_rate = n / timed(sqlite_run)
        phase("full pipeline into the Table store on Azurite")
        rows.append(
            (
                f"full pipeline, SQLite, batches of {BATCH}",
                sqlite_rate,
                f"target >= 0.7x floor and >= 5x naive (is {sqlite_rate / naive_rate:.1f}x naive)",
            )
        )
        table_rate = table_store_rate(corpus[: args.table_n], tmp)
        if table_rate is not None:
            rows.append(
                (
                    f"full pipeline, Table store on Azurite (n={args.table_n})",
                    table_rate,
                    "local emulator over HTTP",
                )
            )

    console = Console(width=140)
    table = Table(
        title=f"throughput on {n:,} messages ({os.cpu_count()} cores, "
        f"Python {sys.version.split()[0]})"
    )
    for column in ("path", "messages/s", "x floor", "note"):
        table.add_column(column)
    for name, rate, note in rows:
        table.add_row(name, f"{rate:,.0f}", f"{rate / rate_floor:.2f}", note)
    console.print(table)

    phase(f"cold start ({args.cold_runs} fresh processes per variant)")
    app, bare, extension = cold_start(args.cold_runs)
    first = first_invocation(max(3, args.cold_runs // 2))
    cold = Table(title=f"cold start (median of {args.cold_runs} fresh processes)")
    for column in ("what", "seconds", "ratio", "note"):
        cold.add_column(column)
    cold.add_row("import azure.functions, pydantic", f"{bare:.3f}", "1.00", "the bare imports")
    cold.add_row(
        "... + the Service Bus extension",
        f"{extension:.3f}",
        f"{extension / bare:.2f}",
        "needed for explicit settlement",
    )
    cold.add_row(
        "import function_app",
        f"{app:.3f}",
        f"{app / bare:.2f}",
        f"target <= 1.3x; {app / extension:.2f}x the bare imports + extension",
    )
    cold.add_row(
        "import + first invocation",
        f"{first:.3f}",
        f"{first / bare:.2f}",
        "settings, SQLite store, one message",
    )
    console.print(cold)

    phase(f"memory while streaming {args.memory_n:,} messages")
    points = memory(args.memory_n)
    mem = Table(title=f"peak RSS while streaming {args.memory_n:,} messages through the pipeline")
    for column in ("messages", "peak RSS (MiB)", "x first point"):
        mem.add_column(column)
    for count, mib in points:
        mem.add_row(f"{count:,}", f"{mib:.1f}", f"{mib / points[0][1]:.2f}")
    console.print(mem)
    return 0


if __name__ == "__main__":
    sys.exit(main())
