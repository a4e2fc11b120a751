"""A generated corpus of hostile and odd messages, each with the outcome it must get.

Run ``python -m tests.hostile_corpus`` to print the corpus by category. ``tests/test_hostile.py``
decides every case through the pipeline with time and memory ceilings.
"""

from __future__ import annotations

import functools
import json
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from shared.verdicts import Reason, Verdict
from tests.conftest import SAMPLES, kv_set, reference, sample_document, target_of

JSON, XML = "application/json", "application/xml"
MALFORMED = Verdict.MALFORMED
JSON_BODY = (SAMPLES / "json-create-bankaccount.body").read_bytes()
XML_BODY = (SAMPLES / "xml-create-bankaccount.body").read_bytes()
GUID_MEMBERS = (
    "PrimaryEntityId",
    "OrganizationId",
    "OperationId",
    "CorrelationId",
    "UserId",
    "InitiatingUserId",
)
STRING_MEMBERS = ("MessageName", "PrimaryEntityName")
INT_MEMBERS = ("Depth", "Stage", "Mode")
_EXACT_DATE = re.compile(r"/Date\(-?[0-9]+(?:[+-][0-9]{4})?\)/", re.ASCII)


@dataclass(frozen=True)
class Case:
    """One message and the outcome it must get."""

    name: str
    body: bytes
    content_type: str | None
    verdict: Verdict
    reason: Reason | None = None
    properties: dict[str, str] = field(default_factory=dict)


def _swap(body: bytes, old: bytes, new: bytes) -> bytes:
    """``body`` with the first ``old`` replaced; a corpus edit that misses is a corpus bug."""
    if old not in body:
        raise AssertionError(f"corpus edit found no {old[:60]!r}")
    return body.replace(old, new, 1)


def _swap_text(text: str, old: str, new: str) -> bytes:
    return _swap(text.encode(), old.encode(), new.encode())


def _dump(document: Any) -> bytes:
    return json.dumps(document, ensure_ascii=False).encode()


def _edit(change: Callable[[dict[str, Any]], object]) -> bytes:
    document = sample_document()
    change(document)
    return _dump(document)


def _with_member(member: str, value: Any) -> bytes:
    """The sample with one root member set to ``value``."""
    document = sample_document()
    document[member] = value
    return _dump(document)


def _without_member(member: str) -> bytes:
    document = sample_document()
    del document[member]
    return _dump(document)


def _with_attribute(value: Any) -> bytes:
    return _edit(lambda d: kv_set(target_of(d)["Attributes"], "probe", value))


def _malformed(name: str, body: bytes, reason: Reason, content_type: str | None = JSON) -> Case:
    return Case(name, body, content_type, MALFORMED, reason)


def truncations() -> Iterator[Case]:
    """Every strict prefix of a valid body that ends at a structural point."""
    for i, char in enumerate(JSON_BODY[:-1]):
        if chr(char) in "{}[],:":
            yield _malformed(f"json-truncated-at-{i}", JSON_BODY[: i + 1], Reason.MALFORMED_JSON)
    for i, char in enumerate(XML_BODY[:-1]):
        if chr(char) == ">":
            yield _malformed(f"xml-truncated-at-{i}", XML_BODY[: i + 1], Reason.MALFORMED_XML, XML)


def members() -> Iterator[Case]:
    """Each required member missing, null or of the wrong JSON type."""
    for member in (*GUID_MEMBERS, *STRING_MEMBERS, *INT_MEMBERS, "OperationCreatedOn"):
        missing = (
            Reason.NOT_EXECUTION_CONTEXT if member == "MessageName" else Reason.SCHEMA_VIOLATION
        )
        yield _malformed(f"{member}-missing", _without_member(member), missing)
        wrong: tuple[tuple[str, Any], ...] = (
            ("null", None),
            ("list", []),
            ("object", {}),
            ("bool", True),
        )
        for label, value in wrong:
            yield _malformed(
                f"{member}-{label}",
                _with_member(member, value),
                Reason.SCHEMA_VIOLATION,
            )
    for member in ("InputParameters", "PreEntityImages", "PostEntityImages", "SharedVariables"):
        collection_values: tuple[tuple[str, Any], ...] = (
            ("string", "x"),
            ("object", {"Target": 1}),
            ("number", 3),
            ("pair-without-key", [{"value": 1}]),
            ("not-a-pair", [1]),
        )
        for label, value in collection_values:
            yield _malformed(
                f"{member}-{label}",
                _with_member(member, value),
                Reason.SCHEMA_VIOLATION,
            )


def guids_and_dates() -> Iterator[Case]:
    """GUIDs that are not GUIDs; dates malformed or out of range."""
    for i, bad in enumerate(
        (
            "",
            "1234",
            "zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz",
            "7a2c31f5-8b1e-ef11-9f89-000d3a5c2b7",
            "7a2c31f5 8b1e ef11",
        )
    ):
        for member in ("OrganizationId", "OperationId"):
            yield _malformed(
                f"{member}-bad-guid-{i}",
                _with_member(member, bad),
                Reason.SCHEMA_VIOLATION,
            )
    for i, bad in enumerate(
        (
            "/Date()/",
            "/Date(abc)/",
            "2024-11-26T09:15:42Z",
            "/Date(1+01)/",
            "/Date(99999999999999999)/",
            "/Date(253402300800000)/",
            "/Date(-62135596800001)/",
            "/Date(1732600000000+0100)/x",
        )
    ):
        yield _malformed(
            f"OperationCreatedOn-bad-{i}",
            _with_member("OperationCreatedOn", bad),
            Reason.SCHEMA_VIOLATION,
        )
        if _EXACT_DATE.fullmatch(bad):  # the exact form, out of range: a broken date
            yield _malformed(
                f"attribute-date-bad-{i}", _with_attribute(bad), Reason.SCHEMA_VIOLATION
            )
        elif bad.startswith("/Date("):  # only looks like a date: it is text
            yield Case(
                f"attribute-date-like-text-{i}", _with_attribute(bad), JSON, Verdict.ACCEPTED
            )
    for i, text in enumerate(
        (
            "/Date(see notes) call back",
            "/Date(\uff11\uff12\uff13)/",
            "/Date(1732600000000+01)/",
            " /Date(1)/",
        )
    ):
        yield Case(f"text-looks-like-date-{i}", _with_attribute(text), JSON, Verdict.ACCEPTED)


def _with_literal(change: Callable[[dict[str, Any], str], None], literal: str) -> bytes:
    """The sample edited to hold a raw JSON number literal that Python cannot write."""
    document = sample_document()
    change(document, "__LITERAL__")
    return _swap(_dump(document), b'"__LITERAL__"', literal.encode())


def _set_member(document: dict[str, Any], value: Any, *, member: str = "Depth") -> None:
    document[member] = value


def _set_attribute(document: dict[str, Any], value: Any) -> None:
    kv_set(target_of(document)["Attributes"], "probe", value)


def _set_choice(document: dict[str, Any], value: Any) -> None:
    kv_set(
        target_of(document)["Attributes"],
        "statecode",
        {"__type": "OptionSetValue:x", "Value": value},
    )


def _set_money(document: dict[str, Any], value: Any) -> None:
    kv_set(target_of(document)["Attributes"], "probe", {"__type": "Money:x", "Value": value})


def numbers() -> Iterator[Case]:
    """Numbers as exact .NET types: Int32 members and choices, Decimal money, Int64/Decimal/
    Double values; huge literals refused before any conversion."""
    for member in ("Depth", "Stage", "Mode", "IsolationMode"):
        for i, literal in enumerate(
            ("1e4300", "1e3000000", "1.0", "2147483648", "-2147483649", "1" * 5000, "true")
        ):
            yield _malformed(
                f"{member}-number-{i}",
                _with_literal(functools.partial(_set_member, member=member), literal),
                Reason.SCHEMA_VIOLATION,
            )
    yield Case("Depth-int32-max", _with_literal(_set_member, "2147483647"), JSON, Verdict.ACCEPTED)
    for i, literal in enumerate(("1e4300", "1e3000000", "1" * 40, "1e309", "-1.5e400",
                                 "0." + "1" * 40, "9" * 30)):  # fmt: skip
        yield _malformed(
            f"attribute-number-out-of-range-{i}",
            _with_literal(_set_attribute, literal),
            Reason.SCHEMA_VIOLATION,
        )
    fitting = (
        "79228162514264337593543950335",
        "1e300",
        "-1.7976931348623157e308",
        "0.0000000000000000000000000001",
        "9223372036854775807",
        "2365.12",
    )
    for i, literal in enumerate(fitting):
        body = _with_literal(_set_attribute, literal)
        yield Case(f"attribute-number-ok-{i}", body, JSON, Verdict.ACCEPTED)
    for i, literal in enumerate(("2147483648", "1.5", "true", "1e10")):
        yield _malformed(
            f"choice-value-bad-{i}", _with_literal(_set_choice, literal), Reason.SCHEMA_VIOLATION
        )
    for i, literal in enumerate(("1e29", "79228162514264337593543950336", "0." + "1" * 30)):
        yield _malformed(
            f"money-value-bad-{i}", _with_literal(_set_money, literal), Reason.SCHEMA_VIOLATION
        )
    xml_choice = b'<a:value i:type="OptionSetValue"><Value>0</Value></a:value>'
    for i, text in enumerate(
        ("\uff11".encode().decode("unicode_escape"), "1_000", "2147483648", " 0x1", "")
    ):
        yield _malformed(
            f"xml-choice-bad-{i}",
            _swap(XML_BODY, xml_choice, xml_choice.replace(b">0<", f">{text}<".encode())),
            Reason.SCHEMA_VIOLATION,
            XML,
        )
    string_value = b'i:type="b:string" xmlns:b="http://www.w3.org/2001/XMLSchema">Card Replacement'
    for type_name, text in (("int", "\uff11\uff12"), ("long", "1_000"), ("decimal", "1e5"),
                            ("double", "sNaN"), ("double", "INF"), ("decimal", "NaN"),
                            ("int", "2147483648"), ("long", "9223372036854775808"),
                            ("decimal", "1" * 31), ("guid", "not-a-guid"),
                            ("guid", "\uff14" * 8 + "-2c3f-ef11-9f89-000d3a5c2b71"),
                            ("dateTime", "\uff12024-12-03T07:58:25Z")):  # fmt: skip
        shown = text.encode().decode("unicode_escape").encode()
        yield _malformed(
            f"xml-typed-{type_name}-{shown[:12].hex()}",
            _swap(
                XML_BODY,
                string_value,
                string_value.replace(b"b:string", f"b:{type_name}".encode()).replace(
                    b"Card Replacement", shown
                ),
            ),
            Reason.SCHEMA_VIOLATION,
            XML,
        )


def type_hints() -> Iterator[Case]:
    """``__type`` hints that are unknown, misplaced or lying."""
    ok = Case(
        "unknown-type-hint-kept",
        _with_attribute({"__type": "OptionSetValueCollection:http://x", "Values": [1, 2]}),
        JSON,
        Verdict.ACCEPTED,
    )
    yield ok
    yield Case(
        "hint-on-image-entity-ignored",
        _edit(lambda d: d["PostEntityImages"][0]["value"].update({"__type": "EntityReference:x"})),
        JSON,
        Verdict.ACCEPTED,
    )
    yield _malformed(
        "target-hinted-as-option-set",
        _edit(lambda d: target_of(d).update({"__type": "OptionSetValue:x", "Value": 1})),
        Reason.SCHEMA_VIOLATION,
    )
    yield _malformed(
        "target-hinted-as-reference",
        _edit(lambda d: target_of(d).update({"__type": "EntityReference:x"})),
        Reason.SCHEMA_VIOLATION,
    )
    yield _malformed(
        "money-with-text",
        _with_attribute({"__type": "Money:x", "Value": "lots"}),
        Reason.SCHEMA_VIOLATION,
    )
    yield _malformed(
        "option-set-with-list",
        _with_attribute({"__type": "OptionSetValue:x", "Value": [1]}),
        Reason.SCHEMA_VIOLATION,
    )
    yield _malformed(
        "type-hint-not-a-string", _with_attribute({"__type": 42}), Reason.SCHEMA_VIOLATION
    )
    yield _malformed(
        "reference-without-id",
        _with_attribute({"__type": "EntityReference:x", "LogicalName": "account"}),
        Reason.SCHEMA_VIOLATION,
    )
    yield _malformed(
        "regarding-is-an-entity",
        _edit(
            lambda d: kv_set(
                target_of(d)["Attributes"],
                "regardingobjectid",
                {"__type": "Entity:x", "Attributes": [], "LogicalName": "sample_bankaccount"},
            )
        ),
        Reason.SCHEMA_VIOLATION,
    )
    yield _malformed(
        "regarding-is-a-string",
        _edit(
            lambda d: kv_set(target_of(d)["Attributes"], "regardingobjectid", "sample_bankaccount")
        ),
        Reason.SCHEMA_VIOLATION,
    )


def duplicates() -> Iterator[Case]:
    """Duplicate members and keys."""
    text = JSON_BODY.decode()
    yield _malformed(
        "duplicate-root-member",
        _swap_text(text, '"MessageName":"Create"', '"MessageName":"Create","MessageName":"Delete"'),
        Reason.MALFORMED_JSON,
    )
    yield _malformed(
        "duplicate-attribute",
        _edit(
            lambda d: target_of(d)["Attributes"].append({"key": "regardingobjectid", "value": None})
        ),
        Reason.SCHEMA_VIOLATION,
    )
    yield _malformed(
        "duplicate-image-alias",
        _edit(lambda d: d["PostEntityImages"].append(d["PostEntityImages"][0])),
        Reason.SCHEMA_VIOLATION,
    )
    yield _malformed(
        "duplicate-parameter",
        _edit(lambda d: d["InputParameters"].append(d["InputParameters"][0])),
        Reason.SCHEMA_VIOLATION,
    )


def sizes_and_depths() -> Iterator[Case]:
    """Huge strings and arrays under and over the size limit; deep nesting."""
    yield Case("string-200k-under-limit", _with_attribute("x" * 200_000), JSON, Verdict.ACCEPTED)
    yield _malformed(
        "string-270k-over-limit", _with_attribute("x" * 270_000), Reason.BODY_TOO_LARGE
    )
    yield Case("array-30k-under-limit", _with_attribute([0] * 30_000), JSON, Verdict.ACCEPTED)
    yield _malformed("array-140k-over-limit", _with_attribute([0] * 140_000), Reason.BODY_TOO_LARGE)
    yield _malformed(
        "body-one-byte-over", JSON_BODY + b" " * (262_145 - len(JSON_BODY)), Reason.BODY_TOO_LARGE
    )
    yield Case(
        "body-at-the-limit", JSON_BODY + b" " * (262_144 - len(JSON_BODY)), JSON, Verdict.ACCEPTED
    )
    yield Case("arrays-40-deep", _with_attribute(_nest_list(40)), JSON, Verdict.ACCEPTED)
    yield _malformed("arrays-120-deep", _with_attribute(_nest_list(120)), Reason.NESTING_TOO_DEEP)
    yield _malformed("objects-150-deep", _with_attribute(_nest_dict(150)), Reason.NESTING_TOO_DEEP)
    yield _malformed("bare-140000-arrays", b"[" * 140_000 + b"]" * 140_000, Reason.BODY_TOO_LARGE)
    yield _malformed("bare-130000-arrays", b"[" * 130_000 + b"]" * 130_000, Reason.NESTING_TOO_DEEP)
    yield _malformed("bare-100000-arrays", b"[" * 100_000 + b"]" * 100_000, Reason.NESTING_TOO_DEEP)
    yield _malformed("bare-100000-open-braces", b"{" * 100_000, Reason.NESTING_TOO_DEEP)
    deep_xml = _swap(
        XML_BODY,
        b"</Attributes>",
        b"<KeyValuePairOfstringanyType><a:key>d</a:key>"
        b'<a:value i:type="Deep">'
        + b"<x>" * 150
        + b"</x>" * 150
        + b"</a:value></KeyValuePairOfstringanyType></Attributes>",
    )
    yield _malformed("xml-150-deep", deep_xml, Reason.NESTING_TOO_DEEP, XML)
    yield _malformed("xml-bare-60000-deep", b"<a>" * 60_000, Reason.NESTING_TOO_DEEP, XML)


def _nest_list(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def _nest_dict(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value


def encodings() -> Iterator[Case]:
    """Invalid UTF-8, lone surrogates, NUL bytes, other encodings, BOMs."""
    text = JSON_BODY.decode()
    for i, bad in enumerate((b"\xff", b"\xc0\xaf", b"\xe2\x82", b"\xed\xa0\x80", b"\xf8\x88\x80")):
        body = _swap(JSON_BODY, b"Bank Account Verification", b"Bank " + bad + b" Account")
        yield _malformed(f"invalid-utf8-{i}", body, Reason.MALFORMED_JSON)
        yield _malformed(
            f"xml-invalid-utf8-{i}",
            _swap(XML_BODY, b"Card Replacement", b"Card " + bad),
            Reason.MALFORMED_XML,
            XML,
        )
    yield _malformed(
        "lone-high-surrogate",
        _swap_text(text, "Bank Account Verification", "Bank \\ud83d Account"),
        Reason.MALFORMED_JSON,
    )
    yield _malformed(
        "lone-low-surrogate",
        _swap_text(text, "Bank Account Verification", "Bank \\udc4d"),
        Reason.MALFORMED_JSON,
    )
    yield Case(
        "escaped-surrogate-pair",
        _swap_text(text, "Bank Account Verification", "Bank \\ud83d\\udc4d"),
        JSON,
        Verdict.ACCEPTED,
    )
    yield Case(
        "escaped-nul-in-string",
        _swap_text(text, "Bank Account Verification", "Bank\\u0000Account"),
        JSON,
        Verdict.ACCEPTED,
    )
    yield _malformed(
        "raw-nul-in-string",
        _swap(JSON_BODY, b"Bank Account Verification", b"Bank\x00Account"),
        Reason.MALFORMED_JSON,
    )
    yield _malformed(
        "raw-nul-between-members", _swap(JSON_BODY, b",", b",\x00"), Reason.MALFORMED_JSON
    )
    yield _malformed("utf16-body", text.encode("utf-16"), Reason.MALFORMED_JSON)
    yield Case("utf8-bom", b"\xef\xbb\xbf" + JSON_BODY, JSON, Verdict.ACCEPTED)
    yield _malformed("two-boms", b"\xef\xbb\xbf" * 2 + JSON_BODY, Reason.MALFORMED_JSON)
    yield _malformed(
        "xml-nul-byte", _swap(XML_BODY, b"Card", b"Ca\x00rd"), Reason.MALFORMED_XML, XML
    )
    yield _malformed(
        "xml-latin1-declared",
        b'<?xml version="1.0" encoding="ISO-8859-1"?>'
        + _swap(XML_BODY, b"Card Replacement", "Carte é".encode("latin-1")),
        Reason.MALFORMED_XML,
        XML,
    )
    yield _malformed(
        "xml-control-char-reference",
        _swap(XML_BODY, b"Card Replacement", b"Card&#x1;"),
        Reason.MALFORMED_XML,
        XML,
    )


def content_types() -> Iterator[Case]:
    """Content type is the only format signal; odd spellings and lies."""
    for spelling in (
        "APPLICATION/JSON",
        "application/json; charset=utf-8",
        " application/json ",
        "Application/Json;Foo=Bar",
    ):
        yield Case(f"json-as-{spelling.strip()}", JSON_BODY, spelling, Verdict.ACCEPTED)
    yield Case("xml-upper-case", XML_BODY, "APPLICATION/XML; charset=utf-8", Verdict.ACCEPTED)
    odd_types: tuple[str | None, ...] = (
        None,
        "",
        "text/json",
        "text/xml",
        "application/octet-stream",
        "application/x-json",
        "json",
        "application/json-patch+json",
        ";application/json",
    )
    for i, ct in enumerate(odd_types):
        yield _malformed(f"content-type-{i}-{ct}", JSON_BODY, Reason.UNSUPPORTED_CONTENT_TYPE, ct)
    yield _malformed("json-labelled-xml", JSON_BODY, Reason.MALFORMED_XML, XML)
    yield _malformed("xml-labelled-json", XML_BODY, Reason.MALFORMED_JSON, JSON)
    yield _malformed("empty-json", b"", Reason.MALFORMED_JSON)
    yield _malformed("whitespace-json", b"  \n ", Reason.MALFORMED_JSON)
    yield _malformed("empty-xml", b"", Reason.MALFORMED_XML, XML)
    for i, root in enumerate((b"null", b"[]", b'"Create"', b"0", b'{"messageName":"Create"}')):
        yield _malformed(f"json-root-{i}", root, Reason.NOT_EXECUTION_CONTEXT)
    yield _malformed("json-trailing-garbage", JSON_BODY + b"}", Reason.MALFORMED_JSON)
    yield _malformed("json-two-documents", JSON_BODY + JSON_BODY, Reason.MALFORMED_JSON)
    yield _malformed(
        "json-nan", _swap(JSON_BODY, b'"Depth":1', b'"Depth":NaN'), Reason.MALFORMED_JSON
    )
    yield _malformed(
        "json-huge-int",
        _swap(JSON_BODY, b'"Depth":1', b'"Depth":' + b"9" * 5000),
        Reason.SCHEMA_VIOLATION,  # refused as out of Int32's range, never converted
    )


def xml_attacks() -> Iterator[Case]:
    """DTDs, entities, external references, processing instructions, namespaces, type lies."""
    root = b"<RemoteExecutionContext>&x;</RemoteExecutionContext>"
    for name, dtd in (
        ("internal-entity", b'<!DOCTYPE r [<!ENTITY x "y">]>'),
        (
            "billion-laughs",
            b'<!DOCTYPE r [<!ENTITY a "aaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;">'
            b'<!ENTITY x "&b;&b;&b;&b;&b;&b;&b;&b;&b;">]>',
        ),
        ("external-file", b'<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>'),
        ("external-http", b'<!DOCTYPE r [<!ENTITY x SYSTEM "http://127.0.0.1:9/x">]>'),
        ("parameter-entity", b'<!DOCTYPE r [<!ENTITY % p SYSTEM "http://127.0.0.1:9/p"> %p;]>'),
        ("dtd-only", b"<!DOCTYPE r>"),
        ("external-dtd", b'<!DOCTYPE r SYSTEM "http://127.0.0.1:9/r.dtd">'),
    ):
        yield _malformed(
            f"xml-{name}",
            b'<?xml version="1.0"?>' + dtd + root,
            Reason.XML_FORBIDDEN_CONSTRUCT,
            XML,
        )
    yield _malformed(
        "xml-dtd-before-real-body",
        b"<!DOCTYPE RemoteExecutionContext>" + XML_BODY,
        Reason.XML_FORBIDDEN_CONSTRUCT,
        XML,
    )
    yield Case(
        "xml-processing-instruction",
        b'<?xml-stylesheet href="x"?>' + XML_BODY,
        XML,
        Verdict.ACCEPTED,
    )
    yield Case(
        "xml-pi-inside", _swap(XML_BODY, b"<Depth>", b"<?evil data?><Depth>"), XML, Verdict.ACCEPTED
    )
    yield Case(
        "xml-comment", _swap(XML_BODY, b"<Depth>", b"<!-- hi --><Depth>"), XML, Verdict.ACCEPTED
    )
    yield Case(
        "xml-other-default-namespace",
        _swap(
            XML_BODY,
            b'xmlns="http://schemas.microsoft.com/xrm/2011/Contracts"',
            b'xmlns="urn:evil"',
        ),
        XML,
        Verdict.ACCEPTED,
    )
    yield _malformed(
        "xml-wrong-root", b"<Envelope><Body/></Envelope>", Reason.NOT_EXECUTION_CONTEXT, XML
    )
    yield _malformed(
        "xml-undeclared-prefix",
        _swap(XML_BODY, b"<Depth>", b"<q:Depth>"),
        Reason.MALFORMED_XML,
        XML,
    )
    yield _malformed(
        "xml-type-lie-int",
        _swap(
            XML_BODY,
            b'i:type="b:string" xmlns:b="http://www.w3.org/2001/XMLSchema">Card Replacement',
            b'i:type="b:int" xmlns:b="http://www.w3.org/2001/XMLSchema">Card Replacement',
        ),
        Reason.SCHEMA_VIOLATION,
        XML,
    )
    yield _malformed(
        "xml-type-lie-target-reference",
        _swap(XML_BODY, b'<a:value i:type="Entity">', b'<a:value i:type="EntityReference">'),
        Reason.SCHEMA_VIOLATION,
        XML,
    )
    yield _malformed(
        "xml-type-lie-boolean",
        _swap(
            XML_BODY,
            b'i:type="b:string" xmlns:b="http://www.w3.org/2001/XMLSchema">Card Replacement',
            b'i:type="b:boolean" xmlns:b="http://www.w3.org/2001/XMLSchema">Card Replacement',
        ),
        Reason.SCHEMA_VIOLATION,
        XML,
    )
    yield _malformed(
        "xml-type-lie-datetime",
        _swap(
            XML_BODY,
            b'i:type="b:string" xmlns:b="http://www.w3.org/2001/XMLSchema">Card Replacement',
            b'i:type="b:dateTime" xmlns:b="http://www.w3.org/2001/XMLSchema">Card Replacement',
        ),
        Reason.SCHEMA_VIOLATION,
        XML,
    )
    yield _malformed(
        "xml-member-twice",
        _swap(XML_BODY, b"<Depth>1</Depth>", b"<Depth>1</Depth><Depth>2</Depth>"),
        Reason.SCHEMA_VIOLATION,
        XML,
    )


def xml_strictness() -> Iterator[Case]:
    """The XML form held to JSON's strictness: no duplicate children, no nil with content,
    UTF-8 only."""
    logical = b"<LogicalName>processsession</LogicalName>"
    twice = {
        "logical-name": (logical, logical + b"<LogicalName>processsession</LogicalName>"),
        "attributes": (b"<Attributes>", b"<Attributes/><Attributes>"),
        "pair-key": (b"<a:key>name</a:key>", b"<a:key>name</a:key><a:key>other</a:key>"),
        "reference-id": (
            b"<Id>c3b1f0e2-7d4a-4e8b-9c1d-2a5f6e7b8c90</Id>",
            b"<Id>c3b1f0e2-7d4a-4e8b-9c1d-2a5f6e7b8c90</Id>"
            b"<Id>c3b1f0e2-7d4a-4e8b-9c1d-2a5f6e7b8c91</Id>",
        ),
        "choice-value": (b"<Value>0</Value>", b"<Value>0</Value><Value>1</Value>"),
    }
    for label, (old, new) in twice.items():
        yield _malformed(
            f"xml-child-twice-{label}", _swap(XML_BODY, old, new), Reason.SCHEMA_VIOLATION, XML
        )
    yield _malformed(
        "xml-nil-with-content",
        _swap(XML_BODY, b'<Name i:nil="true"/>', b'<Name i:nil="true">Workflow</Name>'),
        Reason.SCHEMA_VIOLATION,
        XML,
    )
    for encoding in (b"ISO-8859-1", b"windows-1252", b"UTF-16"):
        yield _malformed(
            f"xml-declares-{encoding.decode().lower()}",
            b'<?xml version="1.0" encoding="' + encoding + b'"?>' + XML_BODY,
            Reason.MALFORMED_XML,
            XML,
        )
    yield Case(
        "xml-declares-utf-8",
        b'<?xml version="1.0" encoding="utf-8"?>' + XML_BODY,
        XML,
        Verdict.ACCEPTED,
    )


BINARY_BODY = (SAMPLES / "binary-create-bankaccount.body").read_bytes()
MSBIN1 = "application/msbin1"


def binary_xml() -> Iterator[Case]:
    """.NET Binary XML (msbin1): truncations, hostile records inside a real body, label lies."""
    for cut in range(0, len(BINARY_BODY), 37):
        yield _malformed(
            f"msbin1-truncated-at-{cut}", BINARY_BODY[:cut], Reason.MALFORMED_BINARY_XML, MSBIN1
        )
    name_record = b"\x40\x0eBusinessUnitId"
    inserted = {
        "reserved-record": b"\x00",
        "dictionary-element": b"\x42\x02",
        "dictionary-text": b"\x40\x01x\xab\x02",
        "mb31-over-31-bits": b"\x40\xff\xff\xff\xff\x0f",
        "chars32-negative": b"\x40\x01x\x9d\xff\xff\xff\xff",
        "chars32-huge": b"\x40\x01x\x9d\xff\xff\xff\x7f",
        "array-huge-count": b"\x03\x40\x01a\x01\x8d\xff\xff\xff\xff\x07",
        "bad-utf8": b"\x40\x01x\x99\x02\xc3\x28\x01",
        "lone-surrogate-utf16": b"\x40\x01x\xb7\x02\x00\xd8",
        "undeclared-prefix": b"\x5f\x01x\x01",
        "datetime-kind-3": b"\x40\x01x\x97" + b"\xff" * 8,
    }
    for label, record in inserted.items():
        yield _malformed(
            f"msbin1-{label}",
            _swap(BINARY_BODY, name_record, record + name_record),
            Reason.MALFORMED_BINARY_XML,
            MSBIN1,
        )
    deep = b"".join(b"\x40\x01e" for _ in range(101)) + b"\x01" * 101
    yield _malformed("msbin1-101-levels", deep, Reason.NESTING_TOO_DEEP, MSBIN1)
    yield _malformed("msbin1-labelled-json", BINARY_BODY, Reason.MALFORMED_JSON, JSON)
    yield _malformed("msbin1-labelled-xml", BINARY_BODY, Reason.MALFORMED_XML, XML)
    yield _malformed("json-labelled-msbin1", JSON_BODY, Reason.MALFORMED_BINARY_XML, MSBIN1)
    yield _malformed("xml-labelled-msbin1", XML_BODY, Reason.MALFORMED_BINARY_XML, MSBIN1)
    yield Case("msbin1-upper-case", BINARY_BODY, "Application/MSBin1", Verdict.ACCEPTED)


def _other_table(d: dict[str, Any], table: str = "account", images: bool = True) -> None:
    """An event of another table: the primary name, the Target and (unless not) the images."""
    d.update(PrimaryEntityName=table)
    target_of(d).update(LogicalName=table)
    for member in ("PreEntityImages", "PostEntityImages"):
        for pair in d.get(member) or [] if images else []:
            pair["value"]["LogicalName"] = table


def verdict_edges() -> Iterator[Case]:
    """Well-formed messages at the rules' edges."""
    yield Case(
        "trimmed-context",
        _edit(lambda d: d.update(InputParameters=[], PostEntityImages=[], ParentContext=None)),
        JSON,
        Verdict.REJECTED,
        Reason.CONTEXT_TRUNCATED,
        {"MessageMaxSizeExceeded": "true"},
    )
    yield Case(
        "regarding-mixed-case",
        _edit(
            lambda d: kv_set(
                target_of(d)["Attributes"],
                "regardingobjectid",
                reference("SAMPLE_BANKACCOUNT", "8e5f1a2b-6c7d-ef11-bfe3-6045bd0c1a22"),
            )
        ),
        JSON,
        Verdict.ACCEPTED,
    )
    yield Case(
        "regarding-null",
        _edit(lambda d: kv_set(target_of(d)["Attributes"], "regardingobjectid", None)),
        JSON,
        Verdict.REJECTED,
        Reason.REGARDING_CLEARED,
    )

    yield Case("other-table", _edit(_other_table), JSON, Verdict.IGNORED, Reason.NOT_PROCESSSESSION)
    yield _malformed(  # 2026-12-02: an image is always of the primary table
        "image-of-another-table",
        _edit(lambda d: _other_table(d, images=False)),
        Reason.SCHEMA_VIOLATION,
    )
    yield _malformed(
        "target-table-differs-from-primary",
        _edit(lambda d: d.update(PrimaryEntityName="account")),
        Reason.SCHEMA_VIOLATION,
    )
    yield _malformed(
        "target-id-differs-from-primary",
        _edit(lambda d: target_of(d).update(Id="00000000-0000-0000-0000-0000000000aa")),
        Reason.SCHEMA_VIOLATION,
    )
    yield Case(
        "target-id-empty-guid",
        _edit(lambda d: target_of(d).update(Id="00000000-0000-0000-0000-000000000000")),
        JSON,
        Verdict.ACCEPTED,
    )
    yield Case(
        "regarding-kelvin-sign",
        _edit(
            lambda d: kv_set(
                target_of(d)["Attributes"],
                "regardingobjectid",
                reference("sample_ban\u212aaccount", "8e5f1a2b-6c7d-ef11-bfe3-6045bd0c1a22"),
            )
        ),
        JSON,
        Verdict.REJECTED,
        Reason.REGARDING_NOT_BANKACCOUNT,
    )
    yield Case(
        "primary-entity-dotless-i",
        _edit(lambda d: _other_table(d, "processsess\u0130on")),
        JSON,
        Verdict.IGNORED,
        Reason.NOT_PROCESSSESSION,
    )
    yield Case(
        "formatted-value-null",
        _edit(lambda d: kv_set(target_of(d)["FormattedValues"], "statecode", None)),
        JSON,
        Verdict.ACCEPTED,
    )
    yield _malformed(
        "formatted-value-number",
        _edit(lambda d: kv_set(target_of(d)["FormattedValues"], "statecode", 1)),
        Reason.SCHEMA_VIOLATION,
    )
    yield Case(
        "message-case", _edit(lambda d: d.update(MessageName="UPDATE")), JSON, Verdict.ACCEPTED
    )


SESSION_JSON = "1b9e7c4d-2a3f-ef11-9f89-000d3a5c2b71"
SESSION_XML = "44f6b8da-2c3f-ef11-9f89-000d3a5c2b71"
NIL = "00000000-0000-0000-0000-000000000000"


def _virtual_table_event(document: dict[str, Any]) -> None:
    """What Finance & Operations virtual tables post: the empty PrimaryEntityId."""
    document["PrimaryEntityId"] = NIL
    _other_table(document, "mserp_custtable")


def wire_strictness() -> Iterator[Case]:
    """What .NET's serializers refuse, refused (issue 23; DESIGN.md 2026-12-02)."""
    yield _malformed(
        "operationcreatedon-a-number",
        _with_member("OperationCreatedOn", 1733212706741),
        Reason.SCHEMA_VIOLATION,
    )
    yield _malformed(
        "operationcreatedon-iso-text",
        _with_member("OperationCreatedOn", "2024-12-03T07:58:26Z"),
        Reason.SCHEMA_VIOLATION,
    )
    for label, guid in (
        ("urn", f"urn:uuid:{SESSION_JSON}"),
        (
            "hyphens-moved",
            SESSION_JSON.replace("-", "")[:10] + "-" + SESSION_JSON.replace("-", "")[10:],
        ),
        ("fullwidth-digit", "\uff11" + SESSION_JSON[1:]),
        ("braces-and-parens", "{(" + SESSION_JSON + ")}"),
        ("uuid-prefix", f"uuid:{SESSION_JSON}"),
    ):
        yield _malformed(
            f"guid-{label}", _with_member("OrganizationId", guid), Reason.SCHEMA_VIOLATION
        )
        yield _malformed(
            f"xml-guid-{label}",
            _swap_text(
                XML_BODY.decode(),
                "<OrganizationId>7a2c31f5-8b1e-ef11-9f89-000d3a5c2b71<",
                f"<OrganizationId>{guid}<",
            ),
            Reason.SCHEMA_VIOLATION,
            XML,
        )
    compact = "7a2c31f58b1eef119f89000d3a5c2b71"
    for label, guid in (
        ("n", compact),
        ("b", "{7a2c31f5-8b1e-ef11-9f89-000d3a5c2b71}"),
        ("p", "(7A2C31F5-8B1E-EF11-9F89-000D3A5C2B71)"),
    ):
        yield Case(
            f"guid-form-{label}", _with_member("OrganizationId", guid), JSON, Verdict.ACCEPTED
        )
    yield _malformed(  # a member name that is not the contract's never stands in for it
        "snake-case-member",
        _edit(lambda d: d.update(primary_entity_name=d.pop("PrimaryEntityName"))),
        Reason.SCHEMA_VIOLATION,
    )
    yield Case(  # unknown members are ignored, as .NET ignores them
        "unknown-member-beside-the-real-one",
        _edit(lambda d: d.update(message_name="Delete", primary_entity_name="account")),
        JSON,
        Verdict.ACCEPTED,
    )
    yield _malformed(
        "xml-image-of-another-table",
        _swap_text(
            XML_BODY.decode(),
            '</Attributes><EntityState i:nil="true"/><FormattedValues/>'
            f'<Id>{SESSION_XML}</Id><KeyAttributes xmlns:b="http://schemas.microsoft.com/xrm/'
            '7.1/Contracts"/><LogicalName>processsession</LogicalName><RelatedEntities/>'
            '<RowVersion i:nil="true"/></a:value></KeyValuePairOfstringEntitygUGIFE1S>',
            '</Attributes><EntityState i:nil="true"/><FormattedValues/>'
            f'<Id>{SESSION_XML}</Id><KeyAttributes xmlns:b="http://schemas.microsoft.com/xrm/'
            '7.1/Contracts"/><LogicalName>account</LogicalName><RelatedEntities/>'
            '<RowVersion i:nil="true"/></a:value></KeyValuePairOfstringEntitygUGIFE1S>',
        ),
        Reason.SCHEMA_VIOLATION,
        XML,
    )
    # Virtual tables post the empty GUID as PrimaryEntityId, with the id in the Target
    yield Case(
        "nil-primary-id-target-has-it", _with_member("PrimaryEntityId", NIL), JSON, Verdict.ACCEPTED
    )
    yield Case(
        "nil-primary-id-other-table",
        _edit(_virtual_table_event),
        JSON,
        Verdict.IGNORED,
        Reason.NOT_PROCESSSESSION,
    )


CATEGORIES = (
    truncations,
    members,
    guids_and_dates,
    numbers,
    type_hints,
    duplicates,
    sizes_and_depths,
    encodings,
    content_types,
    xml_attacks,
    xml_strictness,
    binary_xml,
    verdict_edges,
    wire_strictness,
)


def cases() -> list[Case]:
    """The whole corpus, names unique."""
    corpus = [case for category in CATEGORIES for case in category()]
    names = Counter(c.name for c in corpus)
    assert max(names.values()) == 1, [n for n, k in names.items() if k > 1]
    return corpus


if __name__ == "__main__":
    for category in CATEGORIES:
        found = list(category())
        print(f"{category.__name__:18} {len(found):5} cases  ({category.__doc__})")
    print(f"{'total':18} {len(cases()):5} cases")
