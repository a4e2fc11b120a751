"""What a typed msgspec decode could save (issue 24, item 4, not built): a probe, not the decoder.

On the JSON bodies of the bench corpus, the CPU time of: the floor (``json.loads``), the
generic msgspec parse the service does today (``fast_document``'s decoder), a typed decode
straight into msgspec Structs shaped like the DataContract JSON (tagged union on ``__type``,
key/value lists as lists), and the service's whole decide path (``evaluate``), interleaved,
best of several rounds. The typed decode here checks nothing of what the service checks
(duplicate members, the exact depth limit, .NET GUID forms, Int32 ranges, dates, Decimal
money), so it is the floor of that design, not a result.

    python -m bench.typed_decode [-n 3000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from bench.corpus import messages
from shared.dataverse.decode import JSON, media_type
from shared.pipeline import evaluate

CONTRACTS = ":http://schemas.microsoft.com/xrm/2011/Contracts"


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
    bodies, by_body = [], {}
    for message in corpus:
        try:  # the probe's Structs cover the well-formed bodies of the corpus only
            typed.decode(message.body)
        except msgspec.DecodeError:
            continue
        bodies.append(message.body)
        by_body[message.body] = message
    variants: dict[str, Callable[[bytes], object]] = {
        "json.loads (the floor)": json.loads,
        "msgspec, generic (today's parse)": generic.decode,
        "msgspec, typed Structs (probe)": typed.decode,
        "evaluate: decode + judge + record": lambda body: evaluate(by_body[body]),
    }
    results: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):  # interleaved: one round of each, then again
        for name, work in variants.items():
            results[name] += _best_us(work, bodies, 1)
    floor = min(results["json.loads (the floor)"])
    print(f"{len(bodies)} JSON bodies of the bench corpus, CPU µs per body, best of {args.rounds}:")
    for name, times in results.items():
        best = min(times)
        print(f"  {name:<36} {best:8.1f} µs  {floor / best:5.2f}x the floor")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
