"""One contract, run unchanged against every AuditStore: SQLite on a file, Table on Azurite."""

from __future__ import annotations

from datetime import timedelta

import pytest

from shared.events.entry import Change
from shared.stores import all_pages
from tests.entries import T0, big_changes, make_entry

BANK_A = "8e5f1a2b-6c7d-ef11-bfe3-6045bd0c1a22"
BANK_B = "2d6b8f13-6c7d-ef11-bfe3-6045bd0c1a22"


def _json(entries):
    return [e.to_json_dict() for e in entries]


def test_write_then_rewrite_changes_nothing(any_store):
    entries = [make_entry(i, regarding=BANK_A) for i in range(5)]
    assert any_store.write(entries) == 5
    changed = [e.model_copy(update={"delivery_count": 9}) for e in entries]
    assert any_store.write(changed) == 0
    assert any_store.count() == 5
    stored = any_store.by_regarding(BANK_A).entries
    assert {e.delivery_count for e in stored} == {entries[0].delivery_count}


def test_batch_of_250_across_partitions(any_store):
    entries = [make_entry(i, regarding=(BANK_A, BANK_B, None)[i % 3]) for i in range(250)]
    assert any_store.write(entries) == 250
    assert any_store.count() == 250
    trail = any_store.by_regarding(BANK_A).entries
    assert len(trail) == 84
    assert [e.operation_created_on for e in trail] == sorted(e.operation_created_on for e in trail)


def test_the_three_reads(any_store):
    session = "a47d2f90-2a3f-ef11-9f89-000d3a5c2b71"
    entries = [
        make_entry(1, regarding=BANK_A, session=session),
        make_entry(2, regarding=BANK_B),
        make_entry(3, regarding=BANK_A, session=session),
        make_entry(4, regarding=BANK_A, when=T0 + timedelta(days=3)),
    ]
    any_store.write(list(reversed(entries)))
    assert _json(any_store.by_regarding(BANK_A.upper()).entries) == _json(
        [entries[0], entries[2], entries[3]]
    )
    assert _json(any_store.by_session("{" + session + "}").entries) == _json(
        [entries[0], entries[2]]
    )
    window = any_store.in_range(T0 + timedelta(hours=2), T0 + timedelta(hours=4)).entries
    assert _json(window) == _json([entries[1], entries[2]])
    later = any_store.in_range(T0 + timedelta(days=1)).entries
    assert _json(later) == _json([entries[3]])
    assert len(any_store.in_range().entries) == 4


def test_same_time_orders_by_entry_id(any_store):
    entries = [make_entry(i, regarding=BANK_A, when=T0) for i in range(6)]
    any_store.write(entries)
    got = [e.entry_id for e in any_store.by_regarding(BANK_A).entries]
    assert got == sorted(e.entry_id for e in entries)


def test_paging_with_continuation_tokens(any_store):
    entries = [make_entry(i, regarding=BANK_A) for i in range(23)]
    any_store.write(entries)
    first = any_store.by_regarding(BANK_A, limit=10)
    assert len(first.entries) == 10
    assert first.continuation is not None
    everything = list(all_pages(lambda c: any_store.by_regarding(BANK_A, limit=10, continuation=c)))
    assert _json(everything) == _json(entries)
    ranged = list(all_pages(lambda c: any_store.in_range(limit=4, continuation=c)))
    assert len(ranged) == 23


def test_a_foreign_continuation_token_is_refused(any_store):
    with pytest.raises(ValueError, match="continuation"):
        any_store.by_regarding(BANK_A, limit=5, continuation="not-a-token!")


def test_unicode_round_trips(any_store):
    name = "Vérification 口座 ✅ حساب \U0001f3e6"
    entry = make_entry(
        1,
        regarding=BANK_A,
        processsession_name=name,
        changes=[Change(column="comments", old="ancien é", new="新しい ✅ \U0001f3e6")],
    )
    any_store.write([entry])
    assert _json(any_store.by_regarding(BANK_A).entries) == _json([entry])


def test_large_values_are_stored_whole(any_store):
    entry = make_entry(1, regarding=BANK_A, changes=big_changes(200_000))
    any_store.write([entry])
    stored = any_store.by_regarding(BANK_A).entries
    assert stored[0].changes[0].new == "x" * 200_000


def test_astral_text_over_the_property_limit_is_stored_whole(any_store):
    entry = make_entry(1, regarding=BANK_A, processsession_name="\U0001f3e6" * 40_000)
    any_store.write([entry])
    assert any_store.by_regarding(BANK_A).entries[0].processsession_name == "\U0001f3e6" * 40_000


def test_other_content_under_a_stored_entry_id_is_refused_and_the_first_kept(any_store):
    from shared.stores.base import ConflictingDuplicates

    genuine = make_entry(1, regarding=BANK_A)
    any_store.write([genuine, make_entry(2, regarding=BANK_A)])
    forged = genuine.model_copy(
        update={"regarding_id": BANK_B, "operation_created_on": T0 + timedelta(days=3)}
    )
    newcomer = make_entry(3, regarding=BANK_B)
    with pytest.raises(ConflictingDuplicates) as raised:
        any_store.write([forged, newcomer])
    assert set(raised.value.stored) == {genuine.entry_id}
    assert raised.value.stored[genuine.entry_id].regarding_id == BANK_A
    assert any_store.count() == 3  # the newcomer is stored; the forged copy is not
    assert [e.entry_id for e in any_store.by_regarding(BANK_B).entries] == [newcomer.entry_id]
    redelivered = genuine.model_copy(update={"message_id": "other", "delivery_count": 4})
    assert any_store.write([redelivered]) == 0  # the same event again: silent and idempotent


def test_a_conflict_inside_one_batch_keeps_the_first(any_store):
    from shared.stores.base import ConflictingDuplicates

    first = make_entry(7, regarding=BANK_A)
    second = first.model_copy(update={"regarding_id": BANK_B})
    with pytest.raises(ConflictingDuplicates) as raised:
        any_store.write([first, second, first])
    assert raised.value.stored[first.entry_id] == first
    assert [e.regarding_id for e in all_pages(lambda c: any_store.in_range(continuation=c))] == [
        BANK_A
    ]


def _body_at_the_limit(limit: int, seed: int) -> bytes:
    """The worst layout of a JSON body of ``limit`` bytes for a store: the session's name and
    the regarding record's name (each of which the entry holds twice) of random astral text,
    which compresses least, filling the body."""
    import json
    import random

    from tests.conftest import kv_set, reference, sample_document, target_of

    rng = random.Random(seed)
    document = sample_document()
    target = target_of(document)["Attributes"]
    kv_set(target, "name", "")
    kv_set(target, "regardingobjectid", reference("sample_bankaccount", BANK_A, ""))
    room = (limit - len(json.dumps(document, ensure_ascii=False).encode()) - 16) // 8
    noise = ["".join(chr(rng.randrange(0x10000, 0x10FFFF)) for _ in range(room)) for _ in "ab"]
    kv_set(target, "name", noise[0])
    kv_set(target, "regardingobjectid", reference("sample_bankaccount", BANK_A, noise[1]))
    body = json.dumps(document, ensure_ascii=False).encode()
    assert limit - 64 < len(body) <= limit
    return body


@pytest.mark.parametrize("limit", [262_144, 1_048_576])
def test_whatever_a_body_within_the_limit_yields_every_store_stores(any_store, limit):
    from shared.dataverse import Limits
    from shared.events.envelope import InboundMessage
    from shared.pipeline import Pipeline, Policy

    body = _body_at_the_limit(limit, seed=limit)
    message = InboundMessage(body=body, content_type="application/json", message_id="big")
    [outcome] = Pipeline(any_store, Policy(Limits(max_body_bytes=limit))).handle([message])
    assert outcome.settlement.value == "complete", outcome.description
    entry = outcome.decision.entry
    assert entry is not None
    assert len(entry.json_text().encode()) > 1.9 * limit
    assert _json(any_store.by_regarding(BANK_A).entries) == _json([entry])
    assert _json(any_store.by_session(entry.processsession_id).entries) == _json([entry])
    assert any_store.check_views() == []


def test_a_page_is_cut_by_characters_and_continues(any_store):
    any_store.page_chars = 600_000
    entries = [
        make_entry(n, regarding=BANK_A, processsession_name=str(n) * 250_000) for n in range(1, 6)
    ]
    any_store.write(entries)
    pages = []
    continuation = None
    while True:
        page = any_store.by_regarding(BANK_A, limit=1000, continuation=continuation)
        pages.append([e.processsession_name[:1] for e in page.entries if e.processsession_name])
        continuation = page.continuation
        if continuation is None:
            break
    assert [name for page in pages for name in page] == ["1", "2", "3", "4", "5"]
    assert all(len(page) <= 2 for page in pages)  # the Table service may also send empty pages
    any_store.page_chars = 100  # smaller than any entry: each still comes whole, one a page
    assert len(any_store.in_range(limit=10).entries) == 1
