"""The fast decode paths (msgspec for JSON, the C expat parser for XML) decide every message
exactly as the reference paths (the standard library's ``json`` with hooks, defusedxml) do:
same verdict, reason, description and entry, over the samples, the hostile corpus, the
published real-world messages, the benchmark corpus and generated messages.

The reference paths are selected by turning the fast ones off (``reference_only``); nothing is
mocked. Each source also asserts that the fast path really took some of its messages, so a
fast path that always gave up would fail here.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.corpus import messages as bench_messages
from shared.dataverse import json_format, xml_format
from shared.events.envelope import InboundMessage, from_files, properties_path_for
from shared.pipeline import Decision, evaluate
from tests.conftest import SAMPLES
from tests.hostile_corpus import cases
from tests.test_fuzz import mutated_contexts

REAL_WORLD = Path(__file__).resolve().parents[2] / "shared" / "real-world"
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
JSON = "application/json"


@contextlib.contextmanager
def reference_only() -> Iterator[None]:
    """Turn the fast paths off for the duration: every body takes the reference parsers."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(json_format, "fast_document", lambda raw, max_depth: None)
        patch.setattr(xml_format, "fast_tree", lambda body, max_depth: None)
        yield


def _outcome(decision: Decision) -> tuple[Any, ...]:
    entry = decision.entry.model_dump(mode="json") if decision.entry else None
    return decision.verdict, decision.reason, decision.description, entry


def assert_equivalent(message: InboundMessage) -> None:
    fast = _outcome(evaluate(message, clock=lambda: NOW))
    with reference_only():
        reference = _outcome(evaluate(message, clock=lambda: NOW))
    assert fast == reference, message.message_id


def _took_fast_path(message: InboundMessage) -> bool:
    body = message.body.removeprefix(b"\xef\xbb\xbf")
    if message.content_type == JSON:
        return json_format.fast_document(body, 100) is not None
    return xml_format.fast_tree(body, 100) is not None


def _files(folder: Path) -> list[InboundMessage]:
    return [from_files(body, properties_path_for(body)) for body in sorted(folder.glob("*.body"))]


def test_samples_decide_alike() -> None:
    samples = _files(SAMPLES)
    for message in samples:
        assert_equivalent(message)
    fast = [m for m in samples if m.content_type in (JSON, "application/xml")]
    assert sum(map(_took_fast_path, fast)) >= len(fast) - 1  # all but the truncated one


@pytest.mark.skipif(not REAL_WORLD.exists(), reason="../shared/real-world is not beside the repo")
def test_real_world_messages_decide_alike() -> None:
    real = _files(REAL_WORLD)
    for message in real:
        assert_equivalent(message)
    assert any(map(_took_fast_path, real))


def test_hostile_corpus_decides_alike() -> None:
    corpus = [
        InboundMessage(
            body=case.body,
            content_type=case.content_type,
            message_id=case.name,
            application_properties=case.properties,
        )
        for case in cases()
    ]
    for message in corpus:
        assert_equivalent(message)
    assert sum(1 for m in corpus if m.content_type == JSON and _took_fast_path(m)) >= 100


def test_benchmark_corpus_decides_alike() -> None:
    corpus = list(bench_messages(400, seed=7))
    for message in corpus:
        assert_equivalent(message)
    assert sum(map(_took_fast_path, corpus)) >= 390


def _json_message(document: Any) -> InboundMessage:
    return InboundMessage(body=json.dumps(document).encode(), content_type=JSON)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_contexts())
def test_generated_contexts_decide_alike(document: dict[str, Any]) -> None:
    assert_equivalent(_json_message(document))


SAMPLE_JSON = (SAMPLES / "json-create-bankaccount.body").read_bytes()


@pytest.mark.parametrize(
    "member",
    [
        # a duplicate that hides behind an escaped colon: the raw body and the re-encoded
        # document would hold as many '":' sequences, but not as many colons outside strings
        b'"Depth":1,"Depth":"\\u003a",',
        b'"Depth":1,"Depth":1,',
        b'"X":{"a":1,"a":1},',
        b'"X":[{"k":"\\"","k":"\\\\"}],',
        b'"X":{"\\u0061":1,"a":2},',
        b'"X":"\\ud800",',
        b'"X":12345678901234567890123456789012,',
        b'"X":1e400,',
        # an out-of-range literal would re-encode with a colon more, masking the duplicate
        b'"X":{"a":1,"a":1e400},',
        b'"X":{"a":1,"a":"\\u003a"},',
    ],
)
def test_bodies_the_fast_path_must_hand_over(member: bytes) -> None:
    body = SAMPLE_JSON.replace(b"{", b"{" + member, 1)
    message = InboundMessage(body=body, content_type=JSON)
    assert json_format.fast_document(body, 100) is None
    assert_equivalent(message)


@settings(max_examples=300)
@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers(-999, 999)
        | st.text(alphabet='a:"\\{}[]', max_size=6),
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.lists(st.tuples(st.sampled_from(["a", "b", ":", "a:"]), inner), max_size=3)
        ),
        max_leaves=10,
    ),
    st.booleans(),
)
def test_duplicate_members_are_found_exactly(value: Any, escape_colons: bool) -> None:
    """Objects written as member lists, duplicates allowed, colons in strings written as
    themselves or as ``\\u003a``: the fast path takes the body exactly when the standard
    library's duplicate-refusing parser does."""

    def text(string: str) -> str:
        written = json.dumps(string)
        return written.replace(":", "\\u003a") if escape_colons else written

    def write(node: Any) -> str:
        if isinstance(node, list) and node and isinstance(node[0], tuple):
            return "{" + ",".join(f"{text(k)}:{write(v)}" for k, v in node) + "}"
        if isinstance(node, list):
            return "[" + ",".join(write(v) for v in node) + "]"
        return text(node) if isinstance(node, str) else json.dumps(node)

    body = ("[" + write(value) + "]").encode()
    try:
        json.loads(body, object_pairs_hook=json_format._unique_members)
        unique = True
    except ValueError:
        unique = False
    assert (json_format.fast_document(body, 100) is not None) == unique


def test_a_body_with_colon_escapes_takes_the_fast_path() -> None:
    body = SAMPLE_JSON.replace(b"{", b'{"X":{"a\\u003a":"\\u003A\\\\u003a:"},', 1)
    assert json_format.fast_document(body, 100) is not None
    assert_equivalent(InboundMessage(body=body, content_type=JSON))


JSON_TEXT = SAMPLE_JSON.decode()
XML_TEXT = (SAMPLES / "xml-create-bankaccount.body").read_text()


@settings(max_examples=300)
@given(
    st.integers(0, len(JSON_TEXT) - 1),
    st.integers(0, 30),
    st.text(alphabet=st.sampled_from(list('{}[],:"\\/0123456789.eE+-aDtu\t\x0c ')), max_size=15),
)
def test_spliced_json_decides_alike(start: int, length: int, insert: str) -> None:
    """Broken and odd JSON: whatever msgspec accepts, the reference parser accepts alike."""
    body = (JSON_TEXT[:start] + insert + JSON_TEXT[start + length :]).encode()
    assert_equivalent(InboundMessage(body=body, content_type=JSON))


@settings(max_examples=200)
@given(
    st.integers(0, len(XML_TEXT) - 1),
    st.integers(0, 40),
    st.text(alphabet=st.sampled_from(list('<>/="&;#!?abi:xT1 ')), max_size=20),
)
def test_spliced_xml_decides_alike(start: int, length: int, insert: str) -> None:
    """Broken and odd XML (entity and character references, PIs, stray declarations)."""
    body = (XML_TEXT[:start] + insert + XML_TEXT[start + length :]).encode()
    assert_equivalent(InboundMessage(body=body, content_type="application/xml"))
