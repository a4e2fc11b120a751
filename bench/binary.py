"""``make bench``: .NET Binary XML decode against the XML path on the same contexts.

Each .NETBinary body of ../shared/samples-msbin1 is decoded beside its XML twin (the same
context written by the text serializer): CPU time (process_time), the two variants interleaved
in one process, best of several rounds. The target is msbin1 within 1.5x of the XML path.
Runnable alone: ``python -m bench.binary``.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from shared.dataverse import decode
from shared.errors import MalformedMessage

TWINS = Path(__file__).resolve().parents[2] / "shared" / "samples-msbin1"
ROUNDS = 7
REPEAT = 20


def _pairs() -> list[tuple[str, bytes, bytes]]:
    bodies = sorted(list(TWINS.glob("*.body")) + list((TWINS / "twins-of-samples").glob("*.body")))
    pairs = []
    for body in bodies:
        if body.name.endswith(".xmltwin.body") or body.name.startswith(("b06", "b07")):
            continue  # b06/b07: the XML twin cannot be decoded, so there is nothing to compare
        twin = body.with_name(body.name.removesuffix(".body") + ".xmltwin.body")
        pairs.append((body.name.removesuffix(".body"), body.read_bytes(), twin.read_bytes()))
    return pairs


def _cpu(body: bytes, content_type: str) -> float:
    started = time.process_time()
    for _ in range(REPEAT):
        # b01 holds NaN doubles: both forms refuse it, after the full parse
        with contextlib.suppress(MalformedMessage):
            decode(body, content_type)
    return (time.process_time() - started) / REPEAT


def main() -> None:
    if not TWINS.exists():
        print(f"binary XML bench skipped: {TWINS} is not beside the repo")
        return
    pairs = _pairs()
    print(
        f"msbin1 vs XML decode on the same contexts ({len(pairs)} twins; CPU time, "
        f"interleaved, best of {ROUNDS} rounds x {REPEAT}; target msbin1 <= 1.5x XML)"
    )
    total_binary = total_xml = 0.0
    for name, binary, xml in pairs:
        best_binary = best_xml = float("inf")
        for _ in range(ROUNDS):
            best_binary = min(best_binary, _cpu(binary, "application/msbin1"))
            best_xml = min(best_xml, _cpu(xml, "application/xml"))
        total_binary += best_binary
        total_xml += best_xml
        print(
            f"  {name:40} msbin1 {best_binary * 1e6:8.0f} us ({len(binary):>6,} B)   "
            f"xml {best_xml * 1e6:8.0f} us ({len(xml):>6,} B)   {best_binary / best_xml:.2f}x"
        )
    print(f"  {'all twins':40} msbin1 / xml = {total_binary / total_xml:.2f}x")


if __name__ == "__main__":
    main()
