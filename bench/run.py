"""``make bench``: throughput against the parse floor, memory and cold start, in one run.

Throughput is CPU time (``process_time``) per path, every path run once per round and the
rounds interleaved, best of ``--rounds`` (the spread, worst over best, is printed beside each):
these machines are shared, so wall-clock figures moved 2x between runs. Each path is compared
with the floor of its own bodies (``json.loads`` of the JSON ones, ``ET.fromstring`` of the XML
ones, or both for the mixed corpus). Paths that wait on fsync (the naive baseline, the durable
SQLite pipeline) and the Table store are also shown in wall-clock time. Memory is the measuring
process's own VmHWM; cold start is the median over fresh processes.
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
from shared.events.envelope import InboundMessage
from shared.keys import KeyRing
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
    parser.add_argument("--rounds", type=int, default=3, help="interleaved throughput rounds")
    args = parser.parse_args()
    import logging

    logging.disable(logging.WARNING)
    corpus = list(messages(args.n))
    n = len(corpus)
    json_corpus = [m for m in corpus if m.content_type == "application/json"]
    xml_corpus = [m for m in corpus if m.content_type == "application/xml"]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        counter = iter(range(1_000_000))

        ring = KeyRing(bytes(range(32)))

        def sqlite_run(sealed: bool = False) -> None:
            path = tmp / f"bench-{next(counter)}.sqlite3"
            store = SqliteAuditStore(path, ring=ring if sealed else None)
            pipeline_run(corpus, Pipeline(store))
            store.close()

        # (name, corpus size, work, floor it is compared with, target note)
        variants: list[tuple[str, int, Callable[[], object], str, str]] = [
            ("floor, mixed: json.loads / ET.fromstring", n, lambda: floor(corpus), "mixed", ""),
            ("floor, JSON bodies only", len(json_corpus), lambda: floor(json_corpus), "json", ""),
            ("floor, XML bodies only", len(xml_corpus), lambda: floor(xml_corpus), "xml", ""),
            ("decode only, mixed", n, lambda: decode_only(corpus), "mixed", ""),
            ("decode + judge + record, mixed", n, lambda: decide(corpus), "mixed",
             "target >= 0.33x (issue 24)"),
            ("decode + judge + record, JSON only", len(json_corpus), lambda: decide(json_corpus),
             "json", "target >= 0.3x (issue 24; bench.typed_decode)"),
            ("decode + judge + record, XML only", len(xml_corpus), lambda: decide(xml_corpus),
             "xml", ""),
            (f"full pipeline, SQLite, batches of {BATCH} (CPU only)", n, sqlite_run, "mixed",
             "target >= 0.35x"),
            ("the same, every entry sealed (AUDIT_TRAIL_KEY)", n, lambda: sqlite_run(True),
             "mixed", "target: at most 5% slower than unsealed"),
        ]  # fmt: skip
        cpu: dict[str, list[float]] = {name: [] for name, *_ in variants}
        for round_number in range(1, args.rounds + 1):
            phase(f"throughput round {round_number}/{args.rounds} (every path, interleaved)")
            for name, _, work, _, _ in variants:
                started = time.process_time()
                work()
                cpu[name].append(time.process_time() - started)
        phase("naive baseline and the SQLite pipeline in wall-clock time (they wait on fsync)")
        naive_n = min(n, 2_000)  # one fsync per message: measured on a slice
        naive_wall = timed(lambda: naive(corpus[:naive_n], tmp / "naive.sqlite3"), 1)
        sqlite_wall = timed(sqlite_run, 1)
        phase("full pipeline into the Table store on Azurite")
        table_rate = table_store_rate(corpus[: args.table_n], tmp)

    floors = {kind: size / min(cpu[name]) for name, size, _, kind, _ in variants[:3]}
    console = Console(width=150)
    table = Table(
        title=f"throughput on {n:,} messages ({len(json_corpus):,} JSON, {len(xml_corpus):,} XML; "
        f"{os.cpu_count()} cores, Python {sys.version.split()[0]}): CPU time, best of "
        f"{args.rounds} interleaved rounds (spread = worst / best)"
    )
    for column in ("path", "messages per CPU-s", "x its floor", "spread", "note"):
        table.add_column(column)
    for name, size, _, kind, note in variants:
        best = min(cpu[name])
        rate = size / best
        table.add_row(
            name,
            f"{rate:,.0f}",
            f"{rate / floors[kind]:.2f} ({kind})",
            f"{max(cpu[name]) / best:.2f}",
            note,
        )
    sqlite_rate = n / sqlite_wall
    naive_rate = naive_n / naive_wall
    table.add_row(
        f"naive: json.loads + walk + INSERT/commit each (n={naive_n}), wall-clock",
        f"{naive_rate:,.0f}",
        "",
        "",
        "one fsync per message",
    )
    table.add_row(
        f"full pipeline, SQLite, batches of {BATCH}, wall-clock",
        f"{sqlite_rate:,.0f}",
        "",
        "",
        f"one fsync per batch; {sqlite_rate / naive_rate:.1f}x naive",
    )
    if table_rate is not None:
        table.add_row(
            f"full pipeline, Table store on Azurite (n={args.table_n}), wall-clock",
            f"{table_rate:,.0f}",
            "",
            "",
            "local emulator over HTTP",
        )
    console.print(table)
    unsealed = min(cpu[variants[-2][0]])
    sealed = min(cpu[variants[-1][0]])
    print(f"sealing every entry costs {sealed / unsealed - 1:+.1%} CPU in the SQLite pipeline")

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
        f"target <= 1.0x the bare imports + extension: {app / extension:.2f}x",
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
