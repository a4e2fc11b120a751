"""Bodies of the worst number literals within the 256 KiB limit, decided with CPU time measured.

The decoder must refuse such literals without converting them (a 1e3000000 or a 5,000-digit
integer costs seconds of CPU in int()/Decimal arithmetic while holding the GIL). Printed by
``make bench`` and runnable alone: ``python -m bench.numbers``. CPU time (process_time), best of
five rounds, the variants interleaved in one process.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from functools import partial

from shared.events.envelope import InboundMessage
from shared.pipeline import evaluate
from tests.conftest import kv_set, sample_document, target_of

LIMIT = 262_144
KINDS: dict[str, Callable[[int], str]] = {
    "1e3000000 (huge exponent)": lambda _: "1e3000000",
    "5,000-digit integer": lambda _: "9" * 5000,
    "4,300-digit integer": lambda _: "9" * 4300,
    "0.<60 digits> (long fraction)": lambda _: "0." + "7" * 60,
    "-1.7976931348623157e308 (largest double)": lambda _: "-1.7976931348623157e308",
}


def body_of(kind: Callable[[int], str], place: str) -> bytes:
    """The sample with as many literals as fit under the limit, in attributes or in Depth."""
    document = sample_document()
    if place == "Depth":
        document["Depth"] = "__N0__"
        count = 1
    else:
        attributes = target_of(document)["Attributes"]
        literal_size = len(kind(0)) + 40
        count = max(1, (LIMIT - 10_000) // literal_size)
        for n in range(count):
            kv_set(attributes, f"probe{n}", f"__N{n}__")
    text = json.dumps(document)
    for n in range(count):
        text = text.replace(f'"__N{n}__"', kind(n), 1)
    body = text.encode()
    assert len(body) <= LIMIT, len(body)
    return body


def cpu_ms(work: Callable[[], object], rounds: int = 5) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.process_time()
        work()
        best = min(best, time.process_time() - started)
    return best * 1000


def measure() -> list[tuple[str, int, float, float, str]]:
    """(kind, body bytes, decide CPU ms, json.loads CPU ms, verdict) per kind and place."""
    rows = []
    for label, kind in KINDS.items():
        for place in ("Depth", "attributes"):
            body = body_of(kind, place)
            message = InboundMessage(body=body, content_type="application/json")
            decision = evaluate(message)
            floor = cpu_ms(partial(json.loads, body, parse_int=str, parse_float=str))
            decide = cpu_ms(partial(evaluate, message))
            outcome = decision.reason.value if decision.reason else decision.verdict.value
            rows.append((f"{label} in {place}", len(body), decide, floor, outcome))
    return rows


def main() -> None:
    print(
        "worst number literals (CPU ms, best of 5, one process; floor: json.loads keeping "
        "literals as text; target: each body decided in < 50 ms)"
    )
    for name, size, decide, floor, outcome in measure():
        print(
            f"  {name:55} {size:>8,} B  decide {decide:7.2f} ms  "
            f"json.loads {floor:7.2f} ms  {outcome}"
        )


if __name__ == "__main__":
    main()
