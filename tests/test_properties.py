"""Property tests (hypothesis) for the dialect's dates and key/value collections."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.dataverse import decode
from shared.dataverse.json_format import (
    _QUOTING_ESCAPES,
    _deeper_than,
    _depth,
    date,
    nesting_depth,
    pairs,
)
from shared.errors import MalformedMessage
from tests.conftest import kv_set, sample_document, target_of

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MS = st.integers(min_value=-62_135_596_800_000, max_value=253_402_300_799_999)
#: Away from year 1 and 9999 by more than any offset, so that ms + offset stays in range.
MS_INNER = st.integers(
    min_value=-62_135_596_800_000 + 86_400_000, max_value=253_402_300_799_999 - 86_400_000
)
OFFSET = st.one_of(st.just(""), st.from_regex(r"[+-]([01][0-9]|2[0-3])[0-5][0-9]", fullmatch=True))
KEYS = st.text(min_size=1, max_size=12)
VALUES = st.one_of(st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.text(max_size=20))


@given(MS_INNER, OFFSET)
def test_date_is_utc_milliseconds_plus_the_offset(ms, offset):
    shift = timedelta(0)
    if offset:
        shift = timedelta(hours=int(offset[1:3]), minutes=int(offset[3:]))
        shift = shift if offset[0] == "+" else -shift
    assert date(f"/Date({ms}{offset})/", "$") == EPOCH + timedelta(milliseconds=ms) + shift


@given(MS)
def test_date_survives_a_full_decode(ms):
    document = sample_document()
    document["OperationCreatedOn"] = f"/Date({ms}+0000)/"
    assert decode(json.dumps(document).encode(), "application/json").operation_created_on == (
        EPOCH + timedelta(milliseconds=ms)
    )


@given(st.dictionaries(KEYS, VALUES, max_size=8))
def test_key_value_lists_keep_keys_values_and_order(mapping):
    raw = [{"key": k, "value": v} for k, v in mapping.items()]
    assert pairs(raw, "$") == list(mapping.items())


@given(st.lists(KEYS, min_size=1, max_size=6), st.data())
def test_a_repeated_key_is_always_refused(keys, data):
    repeated = data.draw(st.sampled_from(keys))
    raw = [{"key": k, "value": 1} for k in [*keys, repeated]]
    with pytest.raises(MalformedMessage, match="duplicate key"):
        pairs(raw, "$")


@given(st.dictionaries(KEYS.filter(lambda k: not k.startswith("/")), VALUES, max_size=6))
def test_target_attributes_round_trip_through_decode(mapping):
    document = sample_document()
    attributes = target_of(document)["Attributes"]
    for key, value in mapping.items():
        kv_set(attributes, "x_" + key, value)
    decoded = decode(json.dumps(document).encode(), "application/json").target.attributes
    for key, value in mapping.items():
        expected = value
        if isinstance(value, str) and value.startswith("/Date("):
            continue
        assert decoded["x_" + key] == expected


@given(
    st.recursive(
        st.integers() | st.text(max_size=5),
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
        ),
        max_leaves=20,
    )
)
def test_nesting_depth_matches_the_structure(value):
    def depth(v):
        if isinstance(v, list):
            return 1 + max((depth(x) for x in v), default=0)
        if isinstance(v, dict):
            return 1 + max((depth(x) for x in v.values()), default=0)
        return 0

    assert nesting_depth(json.dumps(value).encode()) == depth(value)


@given(
    st.text(alphabet="[]{}x ", max_size=80),
    st.integers(min_value=0, max_value=12),
)
def test_the_depth_is_the_deepest_running_count_of_brackets(text, limit):
    """On any mix of brackets, balanced or not: a closer with nothing open is ignored, an
    opener never closed counts, and the answer is capped at limit + 1 (the scan stops there)."""
    depth = deepest = 0
    for char in text:
        if char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth = max(0, depth - 1)
    unescaped = _QUOTING_ESCAPES.sub(b"", text.encode())
    assert _depth(unescaped, limit) == min(deepest, limit + 1)
    assert _deeper_than(unescaped, limit) == (deepest > limit)
