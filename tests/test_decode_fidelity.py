"""Faithful, strict decoding of real Dataverse messages (issue: dates with an offset, null labels,
text that looks like a date, exact numbers, ASCII names, one strictness for JSON and XML,
consistency). The hostile corpus (tests/hostile_corpus.py) holds the many variants; these tests
pin each rule with its reasoning, JSON and XML side by side where both apply."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from shared.dataverse import decode
from shared.dataverse.numbers import OutOfRange, parse_json_float, parse_json_int
from shared.errors import MalformedMessage
from shared.pipeline import evaluate
from shared.stores.sqlite import SqliteAuditStore
from shared.trail.reading import TrailView, read_trail
from shared.verdicts import Reason, Verdict
from tests.conftest import SAMPLES, json_message, kv_set, reference, sample_document, target_of

JSON, XML = "application/json", "application/xml"
XML_BODY = (SAMPLES / "xml-create-bankaccount.body").read_bytes()
XML_CREATED_ON = b"<OperationCreatedOn>2024-12-03T07:58:26.741Z</OperationCreatedOn>"

# reference §3.6: three real captures with a non-zero suffix; N + offset is the record's own
# modifiedon (to the second), N alone is off by exactly the offset.
REAL_DATES = [
    ("/Date(1506409448000-0700)/", "2017-09-26T00:04:08", datetime(2017, 9, 26, 0, 4, 8)),
    ("/Date(1724647396000+0300)/", "2024-08-26T07:43:16", datetime(2024, 8, 26, 7, 43, 16)),
    ("/Date(1737024736000+0200)/", "2025-01-16T12:52:16", datetime(2025, 1, 16, 12, 52, 16)),
]


@pytest.mark.parametrize(("wire", "xml_wall_clock", "instant"), REAL_DATES)
def test_a_suffixed_json_date_is_n_plus_offset_and_agrees_with_xml(wire, xml_wall_clock, instant):
    document = sample_document()
    document["OperationCreatedOn"] = wire
    from_json = decode(json.dumps(document).encode(), JSON).operation_created_on
    xml = XML_BODY.replace(
        XML_CREATED_ON, f"<OperationCreatedOn>{xml_wall_clock}</OperationCreatedOn>".encode()
    )
    from_xml = decode(xml, XML).operation_created_on
    assert from_json == from_xml == instant.replace(tzinfo=UTC)


def test_the_same_rule_applies_to_attribute_dates():
    document = sample_document()
    kv_set(target_of(document)["Attributes"], "completedon", "/Date(1724647396000+0300)/")
    target = decode(json.dumps(document).encode(), JSON).target
    assert target is not None
    assert target.attributes["completedon"] == datetime(2024, 8, 26, 7, 43, 16, tzinfo=UTC)


@pytest.mark.parametrize(
    "text",
    ["/Date(see notes) call back", "/Date(1)/ and more", "/Date(\uff11\uff12)/", "/Date(1+1)/"],
)
def test_text_that_only_looks_like_a_date_is_text_and_the_event_is_kept(text):
    document = sample_document()
    kv_set(target_of(document)["Attributes"], "comments", text)
    decision = evaluate(json_message(document))
    assert decision.verdict is Verdict.ACCEPTED, decision.description
    assert decision.entry is not None
    comments = next(c for c in decision.entry.changes if c.column == "comments")
    assert comments.new == text


def test_a_null_formatted_value_is_kept_as_null_in_json_and_xml():
    document = sample_document()
    kv_set(target_of(document)["FormattedValues"], "statecode", None)
    json_target = decode(json.dumps(document).encode(), JSON).target
    xml = XML_BODY.replace(
        b"<a:key>statecode</a:key><a:value>Incomplete</a:value>",
        b'<a:key>statecode</a:key><a:value i:nil="true"/>',
    )
    assert xml != XML_BODY
    xml_target = decode(xml, XML).target
    for target in (json_target, xml_target):
        assert target is not None
        assert target.formatted_values["statecode"] is None
    decision = evaluate(json_message(document))
    assert decision.entry is not None
    statecode = next(c for c in decision.entry.changes if c.column == "statecode")
    assert statecode.new == {"value": 0}


def test_huge_literals_are_never_converted():
    # The bound on work: a literal longer than any .NET number is not handed to int()/Decimal.
    assert isinstance(parse_json_int("9" * 5000), OutOfRange)
    assert isinstance(parse_json_float("1e3000000"), OutOfRange)
    assert isinstance(parse_json_float("1e4300"), OutOfRange)
    assert isinstance(parse_json_float("0." + "1" * 100), OutOfRange)
    assert parse_json_float("2365.12") == Decimal("2365.12")
    assert parse_json_int("-2147220891") == -2147220891


@pytest.mark.parametrize(
    ("member", "literal"),
    [("Depth", "1e4300"), ("Depth", "1e3000000"), ("Stage", "2147483648"), ("Mode", "true"),
     ("Depth", "1.0"), ("IsolationMode", "-2147483649")],
)  # fmt: skip
def test_int32_members_take_only_int32_literals(member, literal):
    document = sample_document()
    document[member] = "__LITERAL__"
    body = json.dumps(document).replace('"__LITERAL__"', literal).encode()
    with pytest.raises(MalformedMessage) as raised:
        decode(body, JSON)
    assert raised.value.reason is Reason.SCHEMA_VIOLATION
    assert member.lower() in raised.value.description.lower()


def test_a_body_full_of_the_worst_literals_is_refused_with_the_path():
    document = sample_document()
    attributes = target_of(document)["Attributes"]
    for n in range(3000):
        kv_set(attributes, f"probe{n}", "__LITERAL__")
    body = json.dumps(document).replace('"__LITERAL__"', "1e3000000").encode()
    assert len(body) < 262_144
    decision = evaluate(json_message(body))
    assert decision.reason is Reason.SCHEMA_VIOLATION
    assert "probe0" in (decision.description or "")


def test_logical_names_fold_ascii_only():
    document = sample_document()
    kv_set(
        target_of(document)["Attributes"],
        "regardingobjectid",
        reference("sample_ban\u212aaccount", "8e5f1a2b-6c7d-ef11-bfe3-6045bd0c1a22"),
    )
    decision = evaluate(json_message(document))
    assert (decision.verdict, decision.reason) == (
        Verdict.REJECTED,
        Reason.REGARDING_NOT_BANKACCOUNT,
    )
    assert decision.entry is not None
    assert decision.entry.regarding_logical_name == "sample_ban\u212aaccount"


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b"<LogicalName>processsession</LogicalName>",
         b"<LogicalName>processsession</LogicalName><LogicalName>account</LogicalName>"),
        (b"<Attributes>", b"<Attributes/><Attributes>"),
        (b'<Name i:nil="true"/>', b'<Name i:nil="true">x</Name>'),
    ],
)  # fmt: skip
def test_xml_is_as_strict_as_json(old, new):
    with pytest.raises(MalformedMessage) as raised:
        decode(XML_BODY.replace(old, new, 1), XML)
    assert raised.value.reason is Reason.SCHEMA_VIOLATION


def test_an_xml_declaration_of_another_encoding_is_refused():
    body = b'<?xml version="1.0" encoding="ISO-8859-1"?>' + XML_BODY
    with pytest.raises(MalformedMessage) as raised:
        decode(body, XML)
    assert raised.value.reason is Reason.MALFORMED_XML
    assert "ISO-8859-1" in raised.value.description


def test_a_target_that_is_not_the_primary_record_is_refused():
    document = sample_document()
    target_of(document)["Id"] = "00000000-0000-0000-0000-0000000000aa"
    with pytest.raises(MalformedMessage, match=r"Target'\]\.Id"):
        decode(json.dumps(document).encode(), JSON)
    document = sample_document()
    target_of(document)["LogicalName"] = "account"
    with pytest.raises(MalformedMessage, match=r"Target'\]\.LogicalName"):
        decode(json.dumps(document).encode(), JSON)


def test_a_row_that_cannot_be_read_is_reported_and_the_page_goes_on(tmp_path: Path):
    store = SqliteAuditStore(tmp_path / "audit.sqlite3")
    names = ("json-create-bankaccount", "json-update-bankaccount")
    decisions = [evaluate(json_message(sample_document(name))) for name in names]
    entries = [d.entry for d in decisions if d.entry is not None]
    store.write(entries)
    broken = entries[0].entry_id
    with sqlite3.connect(tmp_path / "audit.sqlite3") as db:
        row = db.execute("SELECT entry FROM audit_entries WHERE entry_id = ?", (broken,))
        document = json.loads(row.fetchone()[0])
        document["operation_created_on"] = "not a date"
        db.execute("DROP TRIGGER audit_entries_append_only_update")  # as a hand edit would
        db.execute(
            "UPDATE audit_entries SET entry = ? WHERE entry_id = ?", (json.dumps(document), broken)
        )
    page = store.in_range()
    assert [e.entry_id for e in page.entries] == [entries[1].entry_id]
    assert [(u.entry_id, u.column) for u in page.unreadable] == [(broken, "operation_created_on")]
    answer = read_trail(store, TrailView.BANK_ACCOUNT, entries[0].regarding_id or "", {})
    assert answer["entries"] == []
    assert answer["unreadable"][0]["entry_id"] == broken
    store.close()
