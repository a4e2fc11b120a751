"""decode() for application/json: the DataContract JSON dialect and every refusal."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from shared.dataverse import (
    AliasedValue,
    Entity,
    EntityCollection,
    EntityReference,
    Limits,
    Money,
    OpaqueValue,
    OptionSetValue,
    decode,
)
from shared.dataverse.json_format import nesting_depth
from shared.errors import MalformedMessage
from shared.verdicts import Reason
from tests.conftest import SAMPLES, kv_set, sample_document, target_of

JSON = "application/json"


def _decode_with_attribute(raw_value: object) -> object:
    document = sample_document()
    kv_set(target_of(document)["Attributes"], "probe", raw_value)
    target = decode(json.dumps(document).encode(), JSON).target
    assert target is not None
    return target.attributes["probe"]


def _refusal(body: bytes, content_type: str | None = JSON, limits: Limits = Limits()):
    with pytest.raises(MalformedMessage) as caught:
        decode(body, content_type, limits)
    return caught.value


def test_entity_reference_value():
    value = _decode_with_attribute(
        {
            "__type": "EntityReference:http://schemas.microsoft.com/xrm/2011/Contracts",
            "Id": "8E5F1A2B-6C7D-EF11-BFE3-6045BD0C1A22",
            "KeyAttributes": [],
            "LogicalName": "sample_bankaccount",
            "Name": "Main",
            "RowVersion": None,
        }
    )
    assert value == EntityReference(
        logical_name="sample_bankaccount", id="8e5f1a2b-6c7d-ef11-bfe3-6045bd0c1a22", name="Main"
    )


def test_option_set_value():
    value = _decode_with_attribute({"__type": "OptionSetValue:http://x", "Value": 4})
    assert value == OptionSetValue(value=4)


def test_money_keeps_decimal_scale():
    document = sample_document()
    kv_set(target_of(document)["Attributes"], "probe", "MONEY")
    # splice the raw literal in, so no float ever sees 750.50
    money = (
        '{"__type":"Money:http:\\/\\/schemas.microsoft.com\\/xrm\\/2011\\/Contracts",'
        '"Value":750.50}'
    )
    body = json.dumps(document).replace('"MONEY"', money).encode()
    value = decode(body, JSON).target.attributes["probe"]
    assert value == Money(value=Decimal("750.50"))
    assert str(value.value) == "750.50"


def test_plain_values_keep_their_json_types():
    assert _decode_with_attribute(True) is True
    assert _decode_with_attribute(-2147220891) == -2147220891
    assert _decode_with_attribute("a47d2f90-2a3f-ef11-9f89-000d3a5c2b71") == (
        "a47d2f90-2a3f-ef11-9f89-000d3a5c2b71"
    )
    assert _decode_with_attribute(None) is None


def test_date_value_is_utc_milliseconds_plus_its_offset():
    assert _decode_with_attribute("/Date(1732600000000)/") == datetime(
        2024, 11, 26, 5, 46, 40, tzinfo=UTC
    )
    assert _decode_with_attribute("/Date(1732600000000+0100)/") == datetime(
        2024, 11, 26, 6, 46, 40, tzinfo=UTC
    )
    assert _decode_with_attribute("/Date(-1000-0700)/") == datetime(
        1969, 12, 31, 16, 59, 59, tzinfo=UTC
    )


def test_escaped_slashes_in_dates_are_read():
    document = sample_document()
    text = json.dumps(document).replace("/Date(", "\\/Date(").replace(")/", ")\\/")
    context = decode(text.encode(), JSON)
    assert context.operation_created_on == datetime(2024, 11, 26, 9, 15, 42, 317000, tzinfo=UTC)


def test_entity_collection_and_aliased_value():
    collection = _decode_with_attribute(
        {
            "__type": "EntityCollection:http://x",
            "EntityName": "contact",
            "Entities": [
                {
                    "Attributes": [{"key": "fullname", "value": "Ana"}],
                    "LogicalName": "contact",
                    "Id": "61aa0b7c-5a6b-ef11-9f89-000d3a5c2b71",
                }
            ],
            "MoreRecords": False,
            "TotalRecordCount": 1,
        }
    )
    assert isinstance(collection, EntityCollection)
    assert collection.entities[0].attributes == {"fullname": "Ana"}
    aliased = _decode_with_attribute(
        {
            "__type": "AliasedValue:http://x",
            "AttributeLogicalName": "fullname",
            "EntityLogicalName": "systemuser",
            "Value": "Ana",
        }
    )
    assert aliased == AliasedValue(
        attribute_logical_name="fullname", entity_logical_name="systemuser", value="Ana"
    )


def test_entity_value_and_hintless_shapes():
    value = _decode_with_attribute(
        {"Attributes": [], "LogicalName": "task", "Id": "61aa0b7c-5a6b-ef11-9f89-000d3a5c2b71"}
    )
    assert isinstance(value, Entity)
    ref = _decode_with_attribute(
        {"Id": "61aa0b7c-5a6b-ef11-9f89-000d3a5c2b71", "LogicalName": "systemuser"}
    )
    assert isinstance(ref, EntityReference)


def test_unknown_type_hint_is_kept_verbatim():
    value = _decode_with_attribute(
        {"__type": "OptionSetValueCollection:http://x", "Values": [1, 2]}
    )
    assert value == OpaqueValue(type_name="OptionSetValueCollection", data={"Values": [1, 2]})


def test_nested_parent_context_is_decoded():
    context = decode((SAMPLES / "json-create-bankaccount.body").read_bytes(), JSON)
    assert context.parent_context is not None
    assert context.parent_context.stage == 30
    assert context.stage == 40


def test_utf8_bom_is_tolerated():
    body = b"\xef\xbb\xbf" + (SAMPLES / "json-create-bankaccount.body").read_bytes()
    assert decode(body, JSON).message_name == "Create"


@pytest.mark.parametrize("content_type", ["Application/JSON", "application/json; charset=utf-8"])
def test_content_type_parameters_and_case_are_ignored(content_type):
    body = (SAMPLES / "json-create-bankaccount.body").read_bytes()
    assert decode(body, content_type).message_name == "Create"


def test_msbin1_is_read_as_binary_xml_never_as_json():
    error = _refusal(b"@\x16RemoteExecutionContext", "application/msbin1")
    assert error.reason is Reason.MALFORMED_BINARY_XML
    assert "byte 24" in error.description


@pytest.mark.parametrize("content_type", [None, "", "text/plain", "application/octet-stream"])
def test_other_content_types_are_refused_and_the_body_is_never_sniffed(content_type):
    body = (SAMPLES / "json-create-bankaccount.body").read_bytes()
    assert _refusal(body, content_type).reason is Reason.UNSUPPORTED_CONTENT_TYPE


def test_json_body_labelled_xml_is_malformed_xml():
    body = (SAMPLES / "json-create-bankaccount.body").read_bytes()
    assert _refusal(body, "application/xml").reason is Reason.MALFORMED_XML


def test_body_over_the_limit_is_refused_before_parsing():
    error = _refusal(b" " * 262_145)
    assert error.reason is Reason.BODY_TOO_LARGE
    assert "262,145" in error.description


def test_140000_level_nesting_is_refused_cleanly():
    body = b"[" * 140_000 + b"]" * 140_000
    error = _refusal(body, limits=Limits(max_body_bytes=400_000))
    assert error.reason is Reason.NESTING_TOO_DEEP
    assert "more than 100 levels" in error.description


def test_brackets_inside_strings_do_not_count_as_nesting():
    assert nesting_depth(b'{"a": "[[[[[[[[{{{{\\"]]"}') == 1
    assert nesting_depth(b'[[{"x": [1]}]]') == 4


def test_truncated_json_reports_where():
    error = _refusal((SAMPLES / "malformed-truncated.body").read_bytes())
    assert error.reason is Reason.MALFORMED_JSON
    assert "line 1, column" in error.description


def test_invalid_utf8_is_malformed():
    error = _refusal(b'{"MessageName": "\xff"}')
    assert error.reason is Reason.MALFORMED_JSON
    assert "UTF-8" in error.description


def test_lone_surrogate_escape_is_malformed():
    document = json.dumps(sample_document()).replace('"Create"', '"Cr\\ud800eate"', 1)
    assert _refusal(document.encode()).reason is Reason.MALFORMED_JSON


def test_nan_is_not_json():
    assert _refusal(b'{"MessageName": NaN}').reason is Reason.MALFORMED_JSON


def test_duplicate_member_is_malformed():
    error = _refusal(b'{"MessageName": "Create", "MessageName": "Delete"}')
    assert error.reason is Reason.MALFORMED_JSON
    assert "duplicate member 'MessageName'" in error.description


def test_duplicate_key_in_a_collection_is_a_schema_violation():
    document = sample_document()
    target = target_of(document)
    target["Attributes"].append({"key": "regardingobjectid", "value": None})
    error = _refusal(json.dumps(document).encode())
    assert error.reason is Reason.SCHEMA_VIOLATION
    assert "duplicate key 'regardingobjectid'" in error.description


@pytest.mark.parametrize("body", [b"[]", b'"text"', b'{"Depth": 1}', b"42"])
def test_root_that_is_not_a_context(body):
    assert _refusal(body).reason is Reason.NOT_EXECUTION_CONTEXT


def test_empty_body_is_malformed():
    assert _refusal(b"").reason is Reason.MALFORMED_JSON


def test_bad_guid_is_a_schema_violation_that_names_the_member():
    document = sample_document()
    document["OperationId"] = "not-a-guid"
    error = _refusal(json.dumps(document).encode())
    assert error.reason is Reason.SCHEMA_VIOLATION
    assert "OperationId" in error.description


def test_missing_required_member_is_a_schema_violation():
    document = sample_document()
    del document["PrimaryEntityId"]
    error = _refusal(json.dumps(document).encode())
    assert error.reason is Reason.SCHEMA_VIOLATION
    assert "PrimaryEntityId" in error.description


def test_malformed_date_names_where():
    document = sample_document()
    document["OperationCreatedOn"] = "/Date(yesterday)/"
    error = _refusal(json.dumps(document).encode())
    assert error.reason is Reason.SCHEMA_VIOLATION
    assert "OperationCreatedOn" in error.description


def test_out_of_range_date_is_a_schema_violation():
    document = sample_document()
    document["OperationCreatedOn"] = "/Date(999999999999999)/"
    assert _refusal(json.dumps(document).encode()).reason is Reason.SCHEMA_VIOLATION


def test_collection_that_is_not_a_list_is_a_schema_violation():
    document = sample_document()
    document["InputParameters"] = {"Target": None}
    error = _refusal(json.dumps(document).encode())
    assert error.reason is Reason.SCHEMA_VIOLATION
    assert "InputParameters" in error.description


def test_unknown_members_are_ignored():
    document = sample_document()
    document["IsPortalsClientCall"] = False
    document["EnvironmentId"] = "x"
    assert decode(json.dumps(document).encode(), JSON).message_name == "Create"


def test_parent_context_is_decoded_when_read_and_a_bad_one_fails_then():
    document = sample_document()
    del document["ParentContext"]["OperationId"]
    context = decode(json.dumps(document).encode(), JSON)
    assert context.message_name == "Create"  # the verdict never needs the parent
    with pytest.raises(MalformedMessage, match="OperationId"):
        _ = context.parent_context
