"""What a typed msgspec decode could reach (issue 24, item 4, not built): a probe and a bound.

On the JSON bodies of the bench corpus that make an entry, the CPU time of: the floor
(``json.loads``), the generic msgspec parse the service does today, a typed decode straight
into msgspec Structs shaped like the DataContract JSON (tagged union on ``__type``, key/value
lists as lists; it checks nothing), the whole decide path (``evaluate``), and each part of
today's path that a typed design keeps with every guarantee:

- the checked parse (``fast_document``): the depth and 29-digit scans, and the generic parse
  and its re-encoding that find duplicate members exactly. A typed decode drops the members
  it does not name, so it cannot count them; newer Dataverse builds add members, so they
  cannot be refused either;
- ``judge`` and ``build_entry`` (the entry keeps its pydantic schema), on contexts decoded
  beforehand.

Their sum, with the typed decode, is a floor for that design: it leaves out everything the
design still has to add (dates, .NET GUID forms, Int32 ranges, Decimal money, the key/value
lists as dicts, the consistency checks). Interleaved rounds, best of each:

    python -m bench.typed_decode [-n 3000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec

from bench.corpus import messages
from shared.dataverse.decode import JSON, decode, media_type
from shared.dataverse.json_format import fast_document
from shared.dataverse.model import RemoteExecutionContext
from shared.events.entry import build_entry
from shared.events.envelope import InboundMessage
from shared.events.rules import Judgement, judge
from shared.pipeline import evaluate
from shared.settings import DEFAULT_MAX_NESTING_DEPTH

CONTRACTS = ":http://schemas.microsoft.com/xrm/2011/Contracts"
FLOOR = "json.loads (the floor)"
TYPED = "msgspec, typed Structs (the probe: checks nothing)"
CHECKED = "checked parse: depth, digits, duplicates (kept)"
JUDGE = "judge, on a decoded context (kept)"
ENTRY = "build_entry, on a decoded context (kept)"


class _Typed(msgspec.Struct, rename="pascal", frozen=True, tag_field="__type"):
    pass


class EntityReference(_Typed, frozen=True, tag="EntityReference" + CONTRACTS):
    logical_name: str
    id: str
    name: str | None = None


class OptionSetValue(_Typed, frozen=True, tag="OptionSetValue" + CONTRACTS):
    value: int


class Money(_Typed, frozen=True, tag="Money" + CONTRACTS):
    value: Any


class Pair(msgspec.Struct, frozen=True):
    key: str
    value: str | int | float | bool | EntityReference | OptionSetValue | Money | Entity | None


class Label(msgspec.Struct, frozen=True):
    key: str
    value: str | None


class Entity(_Typed, frozen=True, tag="Entity" + CONTRACTS):
    logical_name: str
    id: str | None = None
    attributes: list[Pair] = []
    formatted_values: list[Label] = []


class Image(msgspec.Struct, frozen=True):
    key: str
    value: Entity


class Context(msgspec.Struct, rename="pascal", frozen=True):
    message_name: str
    primary_entity_name: str
    primary_entity_id: str
    organization_id: str
    operation_id: str
    operation_created_on: str
    correlation_id: str
    user_id: str
    initiating_user_id: str
    depth: int
    stage: int
    mode: int
    input_parameters: list[Pair] = []
    output_parameters: list[Pair] = []
    shared_variables: list[Pair] = []
    pre_entity_images: list[Image] = []
    post_entity_images: list[Image] = []
    organization_name: str | None = None
    request_id: str | None = None
    business_unit_id: str | None = None
    owning_extension: EntityReference | None = None
    parent_context: Any = None


def _best_us(work: Callable[[bytes], object], bodies: Sequence[bytes], rounds: int) -> list[float]:
    times = []
    for _ in range(rounds):
        started = time.process_time()
        for body in bodies:
            work(body)
        times.append((time.process_time() - started) / len(bodies) * 1e6)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    typed = msgspec.json.Decoder(Context)
    generic = msgspec.json.Decoder()
    corpus = [m for m in messages(args.n, seed=3) if media_type(m.content_type) == JSON]
    bodies: list[bytes] = []
    by_body: dict[bytes, tuple[InboundMessage, RemoteExecutionContext, Judgement]] = {}
    for message in corpus:
        try:  # the probe's Structs cover the well-formed bodies of the corpus only
            typed.decode(message.body)
        except msgspec.DecodeError:
            continue
        if evaluate(message).entry is None:  # only bodies that make an entry: every part runs
            continue
        context = decode(message.body, message.content_type)
        bodies.append(message.body)
        by_body[message.body] = (message, context, judge(context, message.context_was_trimmed))
    now = datetime.now(UTC)
    variants: dict[str, Callable[[bytes], object]] = {
        FLOOR: json.loads,
        "msgspec, generic (today's parse)": generic.decode,
        TYPED: typed.decode,
        "evaluate: decode + judge + record": lambda body: evaluate(by_body[body][0]),
        CHECKED: lambda body: fast_document(body, DEFAULT_MAX_NESTING_DEPTH),
        JUDGE: lambda body: judge(by_body[body][1], by_body[body][0].context_was_trimmed),
        ENTRY: lambda body: build_entry(by_body[body][1], by_body[body][2], by_body[body][0], now),
    }
    results: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):  # interleaved: one round of each, then again
        for name, work in variants.items():
            results[name] += _best_us(work, bodies, 1)
    best = {name: min(times) for name, times in results.items()}
    floor = best[FLOOR]
    print(
        f"{len(bodies)} JSON bodies of the bench corpus that make an entry, CPU µs per body, "
        f"best of {args.rounds} interleaved rounds:"
    )
    for name, us in best.items():
        print(f"  {name:<52} {us:8.1f} µs  {floor / us:5.2f}x the floor")
    kept = best[CHECKED] + best[TYPED] + best[JUDGE] + best[ENTRY]
    print(
        f"A typed design keeps the checked parse, the typed decode, judge and the entry: "
        f"{kept:.1f} µs, so its decide path is at most {floor / kept:.2f}x the floor before it "
        f"converts a single date or GUID (target: 0.30x, {floor / 0.3:.1f} µs)."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
