"""decode() for application/xml: DataContractSerializer XML, by local names, hostile-safe."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from shared.dataverse import EntityReference, Limits, Money, OptionSetValue, decode
from shared.errors import MalformedMessage
from shared.verdicts import Reason
from tests.conftest import SAMPLES

XML = "application/xml"
SAMPLE = (SAMPLES / "xml-create-bankaccount.body").read_text(encoding="utf-8")
KV = "KeyValuePairOfstringanyType"
XS = 'xmlns:b="http://www.w3.org/2001/XMLSchema"'


def _with_attribute(key: str, value_xml: str) -> str:
    """The sample with one more Target attribute (spliced before the first </Attributes>)."""
    item = f"<{KV}><a:key>{key}</a:key>{value_xml}</{KV}>"
    return SAMPLE.replace("</Attributes>", item + "</Attributes>", 1)


def _attribute(key: str, value_xml: str) -> object:
    target = decode(_with_attribute(key, value_xml).encode(), XML).target
    assert target is not None
    return target.attributes[key]


def _refusal(body: str | bytes, limits: Limits = Limits()) -> MalformedMessage:
    with pytest.raises(MalformedMessage) as caught:
        decode(body.encode() if isinstance(body, str) else body, XML, limits)
    return caught.value


def test_sample_decodes_like_its_json_twin():
    context = decode(SAMPLE.encode(), XML)
    assert context.message_name == "Create"
    assert context.operation_created_on == datetime(2024, 12, 3, 7, 58, 26, 741000, tzinfo=UTC)
    assert context.target.attributes["regardingobjectid"] == EntityReference(
        logical_name="sample_bankaccount", id="5a7c9e1f-6c7d-ef11-bfe3-6045bd0c1a22"
    )
    assert context.target.formatted_values["statuscode"] == "In Progress"
    assert context.output_parameters == {"id": "44f6b8da-2c3f-ef11-9f89-000d3a5c2b71"}
    assert context.owning_extension.logical_name == "sdkmessageprocessingstep"


def test_typed_primitives():
    assert _attribute("p", f'<a:value {XS} i:type="b:string">x &amp; y</a:value>') == "x & y"
    assert _attribute("p", f'<a:value {XS} i:type="b:int">-7</a:value>') == -7
    assert _attribute("p", f'<a:value {XS} i:type="b:decimal">12.50</a:value>') == Decimal("12.50")
    assert _attribute("p", f'<a:value {XS} i:type="b:boolean">true</a:value>') is True
    assert _attribute("p", '<a:value i:nil="true"/>') is None
    guid = (
        '<a:value xmlns:b="http://schemas.microsoft.com/2003/10/Serialization/" '
        'i:type="b:guid">61AA0B7C-5A6B-EF11-9F89-000D3A5C2B71</a:value>'
    )
    assert _attribute("p", guid) == "61aa0b7c-5a6b-ef11-9f89-000d3a5c2b71"


def test_date_without_zone_is_utc_and_offsets_are_applied():
    plain = f'<a:value {XS} i:type="b:dateTime">2024-12-03T07:58:25.1234567</a:value>'
    assert _attribute("p", plain) == datetime(2024, 12, 3, 7, 58, 25, 123456, tzinfo=UTC)
    local = f'<a:value {XS} i:type="b:dateTime">2024-12-03T08:58:25+01:00</a:value>'
    assert _attribute("p", local) == datetime(2024, 12, 3, 7, 58, 25, tzinfo=UTC)


def test_money_and_option_set():
    assert _attribute("m", '<a:value i:type="Money"><Value>750.50</Value></a:value>') == Money(
        value=Decimal("750.50")
    )
    assert _attribute("o", '<a:value i:type="OptionSetValue"><Value>4</Value></a:value>') == (
        OptionSetValue(value=4)
    )


def test_namespace_prefixes_are_arbitrary():
    renamed = (
        SAMPLE.replace("xmlns:a=", "xmlns:zz=").replace("<a:", "<zz:").replace("</a:", "</zz:")
    )
    context = decode(renamed.encode(), XML)
    assert context.target.attributes["regardingobjectid"].logical_name == "sample_bankaccount"


def test_images_are_matched_by_local_name_whatever_the_item_name():
    context = decode(SAMPLE.encode(), XML)
    assert "AsynchronousStepPrimaryName" in context.post_entity_images


def test_bad_typed_value_is_a_schema_violation_with_its_path():
    error = _refusal(_with_attribute("n", f'<a:value {XS} i:type="b:int">twelve</a:value>'))
    assert error.reason is Reason.SCHEMA_VIOLATION
    assert "Attributes['n']" in error.description


def test_dtd_is_refused():
    body = '<?xml version="1.0"?><!DOCTYPE x [<!ELEMENT x ANY>]>' + SAMPLE
    assert _refusal(body).reason is Reason.XML_FORBIDDEN_CONSTRUCT


def test_billion_laughs_is_refused():
    body = (
        '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        '<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>'
        "<RemoteExecutionContext>&lol2;</RemoteExecutionContext>"
    )
    assert _refusal(body).reason is Reason.XML_FORBIDDEN_CONSTRUCT


def test_external_entity_is_refused():
    body = (
        '<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        "<RemoteExecutionContext>&x;</RemoteExecutionContext>"
    )
    assert _refusal(body).reason is Reason.XML_FORBIDDEN_CONSTRUCT


def test_deep_nesting_is_refused_while_parsing():
    body = "<a>" * 50_000 + "</a>" * 50_000
    assert _refusal(body, Limits(max_body_bytes=400_000)).reason is Reason.NESTING_TOO_DEEP


def test_wrong_root_element():
    assert _refusal("<Envelope/>").reason is Reason.NOT_EXECUTION_CONTEXT


def test_unparsable_xml_reports_the_position():
    error = _refusal(SAMPLE[:500])
    assert error.reason is Reason.MALFORMED_XML
    assert "line 1" in error.description


def test_control_character_reference_is_malformed():
    body = _with_attribute("c", f'<a:value {XS} i:type="b:string">&#x1;</a:value>')
    assert _refusal(body).reason is Reason.MALFORMED_XML


def test_parent_context_of_an_xml_body():
    context = decode(SAMPLE.encode(), XML)
    parent = context.parent_context
    assert parent is not None
    assert parent.stage == 30
    assert parent.primary_entity_id == context.primary_entity_id
