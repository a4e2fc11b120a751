"""``make bench``: decide each body of a folder against the standard library's parse of it.

For bodies that are not in the repo (the team's ../shared/real-world captures by default, or
any folder of ``*.body`` files with ``*.properties.json`` beside them): per body, the CPU time
of ``evaluate`` (decode + judge + record) and of its floor (``json.loads`` or
``ET.fromstring``), the two interleaved in one process, best of several rounds. Bodies of other
content types (msbin1) have no standard-library floor and are left out.
Runnable alone: ``python -m bench.bodies [folder ...]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from functools import partial
from pathlib import Path

from shared.dataverse.decode import JSON, XML, media_type
from shared.events.envelope import InboundMessage, from_files, properties_path_for
from shared.pipeline import evaluate

REAL_WORLD = Path(__file__).resolve().parents[2] / "shared" / "real-world"
ROUNDS = 7
REPEAT = 20


def _floor(message: InboundMessage) -> Callable[[], object] | None:
    kind = media_type(message.content_type)
    if kind == JSON:
        return lambda: json.loads(message.body)
    if kind == XML:
        return lambda: ET.fromstring(message.body)
    return None


def _cpu(work: Callable[[], object]) -> float:
    started = time.process_time()
    for _ in range(REPEAT):
        with contextlib.suppress(ValueError, ET.ParseError):  # a malformed body's floor
            work()
    return (time.process_time() - started) / REPEAT


def measure(folder: Path) -> None:
    """Print each body's decide time, its floor and their ratio, then the folder's total."""
    bodies = sorted(folder.glob("*.body"))
    print(
        f"decide vs the standard library's parse, {folder} ({len(bodies)} bodies; CPU time, "
        f"interleaved, best of {ROUNDS} rounds x {REPEAT})"
    )
    total_floor = total_decide = 0.0
    for path in bodies:
        message = from_files(path, properties_path_for(path))
        floor = _floor(message)
        if floor is None:
            print(f"  {path.stem:52} {message.content_type}: no standard-library floor, left out")
            continue
        best_floor = best_decide = float("inf")
        for _ in range(ROUNDS):
            best_floor = min(best_floor, _cpu(floor))
            best_decide = min(best_decide, _cpu(partial(evaluate, message)))
        total_floor += best_floor
        total_decide += best_decide
        print(
            f"  {path.stem:52} {len(message.body):>7,} B   floor {best_floor * 1e6:7.0f} us   "
            f"decide {best_decide * 1e6:7.0f} us   {best_floor / best_decide:.2f}x the floor"
        )
    if total_decide:
        print(f"  {'all bodies':52} {total_floor / total_decide:.2f}x the floor")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="*", type=Path, help="default: ../shared/real-world")
    folders = parser.parse_args().folders or [REAL_WORLD]
    for folder in folders:
        if not folder.is_dir():
            print(f"bodies bench skipped: {folder} is not a folder")
            continue
        measure(folder)


if __name__ == "__main__":
    main()
