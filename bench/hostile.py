"""The worst hostile bodies, at the body limit (256 KiB) and at its maximum (1 MiB): CPU time
to decide each, so that work stays linear in what a sender controls.

    python -m bench.hostile [--rounds 3]

Bodies: every case of the hostile corpus (tests/hostile_corpus.py, all within 256 KiB), and
the shapes that once grew faster than the body, generated to fill each limit: a run of
one-byte .NET Binary text records, an xmlns declaration on every element under a root that
declares thousands, many Target columns against many empty pre-images, and empty elements.
Target (issue 23): every body decided in at most 50 ms of CPU at 256 KiB, 200 ms at 1 MiB.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterator

from shared.dataverse import Limits
from shared.events.envelope import InboundMessage
from shared.pipeline import Policy, evaluate
from tests.conftest import image, sample_document, target_of
from tests.msbin1_writer import string

KIB = 1024
LIMITS = (256 * KIB, 1024 * KIB)
MSBIN1 = "application/msbin1"


def _fill(limit: int, head: bytes, unit: bytes, tail: bytes) -> bytes:
    """``head`` + as many ``unit`` as fit + ``tail``, within ``limit`` bytes."""
    return head + unit * ((limit - len(head) - len(tail)) // len(unit)) + tail


def false_text_run(limit: int) -> bytes:
    """One element holding a run of one-byte FalseText records (text appended per record)."""
    return _fill(limit, b"\x40" + string("a"), b"\x84", b"\x01")


def xmlns_per_element(limit: int) -> bytes:
    """A root declaring thousands of prefixes, then children each declaring one more."""
    root = (
        b"\x40"
        + string("a")
        + b"".join(b"\x09" + string(f"p{n}") + string("u") for n in range(limit // 64))
    )
    child = b"\x40" + string("b") + b"\x09" + string("q") + string("v") + b"\x01"
    return _fill(limit, root, child, b"\x01")


def empty_elements(limit: int) -> bytes:
    return _fill(limit, b"\x40" + string("a"), b"\x40" + string("b") + b"\x01", b"\x01")


def columns_by_images(limit: int) -> bytes:
    """A Target of many columns and as many empty pre-images as fit beside them."""
    document = sample_document("json-update-bankaccount")
    attributes = target_of(document)["Attributes"]
    base = len(json.dumps(document).encode())
    room = (limit - base) // 2
    column = len(json.dumps({"key": "c00000", "value": 1})) + 1
    empty = len(json.dumps({"key": "i00000", "value": image({})})) + 1
    count = min(room // column, room // empty)
    attributes += [{"key": f"c{n:05d}", "value": n} for n in range(count)]
    document["PreEntityImages"] = [{"key": f"i{n:05d}", "value": image({})} for n in range(count)]
    body = json.dumps(document).encode()
    return body if len(body) <= limit else body[:limit]


GENERATED: dict[str, tuple[Callable[[int], bytes], str]] = {
    "msbin1: one-byte text records in a row": (false_text_run, MSBIN1),
    "msbin1: an xmlns on every element": (xmlns_per_element, MSBIN1),
    "msbin1: empty elements": (empty_elements, MSBIN1),
    "JSON: columns x empty pre-images": (columns_by_images, "application/json"),
}


def bodies() -> Iterator[tuple[str, int, InboundMessage]]:
    from tests.hostile_corpus import cases

    for case in cases():
        message = InboundMessage(body=case.body, content_type=case.content_type)
        yield f"corpus: {case.name}", LIMITS[0], message
    for name, (make, content_type) in GENERATED.items():
        for limit in LIMITS:
            body = make(limit)
            assert len(body) <= limit, (name, len(body))
            yield name, limit, InboundMessage(body=body, content_type=content_type)


def cpu_ms(message: InboundMessage, limit: int, rounds: int) -> float:
    policy = Policy(Limits(max_body_bytes=limit))
    best = float("inf")
    for _ in range(rounds):
        started = time.process_time()
        evaluate(message, policy)
        best = min(best, time.process_time() - started)
    return best * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    import logging

    logging.disable(logging.WARNING)
    worst: dict[int, tuple[float, str]] = {limit: (0.0, "") for limit in LIMITS}
    generated: list[tuple[str, int, float]] = []
    for name, limit, message in bodies():
        ms = cpu_ms(message, limit, args.rounds)
        if ms > worst[limit][0]:
            worst[limit] = (ms, name)
        if not name.startswith("corpus:"):
            generated.append((name, limit, ms))
    print("hostile bodies: CPU to decide, best of", args.rounds)
    for name, limit, ms in generated:
        print(f"  {name:<42} {limit // KIB:>5} KiB {ms:8.1f} ms")
    for limit, target in zip(LIMITS, (50.0, 200.0), strict=True):
        ms, name = worst[limit]
        verdict = "met" if ms <= target else "MISSED"
        print(
            f"worst at {limit // KIB} KiB: {ms:.1f} ms ({name}); target <= {target:.0f} ms: "
            f"{verdict}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
