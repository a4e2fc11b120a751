"""Stream N generated messages through the pipeline into SQLite; print peak RSS at checkpoints."""

from __future__ import annotations

import logging
import resource
import sys
import tempfile
from itertools import islice
from pathlib import Path

from bench.corpus import messages
from shared.pipeline import Pipeline
from shared.stores.sqlite import SqliteAuditStore


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
                peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                print(done, peak_kib / 1024, flush=True)
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
