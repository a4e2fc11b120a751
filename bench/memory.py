"""Stream N generated messages through the pipeline into SQLite; print peak RSS at checkpoints.

Peak RSS is this process's own high-water mark, ``VmHWM`` in /proc/self/status. Not
``ru_maxrss``: on Linux that carries the parent's high-water mark over fork/exec, so a child
of a big benchmark process reported the parent's 219 MiB instead of its own.
"""

from __future__ import annotations

import logging
import sys
import tempfile
from itertools import islice
from pathlib import Path

from bench.corpus import messages
from shared.pipeline import Pipeline
from shared.stores.sqlite import SqliteAuditStore


def peak_rss_mib() -> float:
    """This process's peak resident set size (VmHWM), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status (not Linux?)")


def main() -> int:
    logging.disable(logging.WARNING)
    count = int(sys.argv[1])
    checkpoints = {count // 10, count // 2, count}
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteAuditStore(Path(tmp) / "memory.sqlite3")
        pipeline = Pipeline(store)
        stream = messages(count)
        done = 0
        while done < count:
            batch = list(islice(stream, 100))
            pipeline.handle(batch)
            done += len(batch)
            if done in checkpoints:
                print(done, peak_rss_mib(), flush=True)
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
