"""The verdict rules of samples/README.md, one test per rule and reason code, in order."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import pytest

from shared.pipeline import Policy, evaluate
from shared.verdicts import Reason, Verdict
from tests.conftest import (
    image,
    json_message,
    kv_del,
    kv_set,
    reference,
    sample_document,
    target_of,
)

BANK = "2d6b8f13-6c7d-ef11-bfe3-6045bd0c1a22"
OTHER_BANK = "9c1d2e3f-6c7d-ef11-bfe3-6045bd0c1a22"
ACCOUNT = "a1b2c3d4-6c7d-ef11-bfe3-6045bd0c1a22"
TRIMMED = {"MessageMaxSizeExceeded": "true"}


def _update(target_regarding=..., post=(), pre=()):
    """An Update of a processsession built from the update sample, with chosen images."""
    document = sample_document("json-update-bankaccount")
    target = target_of(document)
    if target_regarding is not ...:
        kv_set(target["Attributes"], "regardingobjectid", target_regarding)
    document["PostEntityImages"] = [{"key": alias, "value": image(a)} for alias, a in post]
    document["PreEntityImages"] = [{"key": alias, "value": image(a)} for alias, a in pre]
    return document


def _decide(document, properties=None):
    return evaluate(json_message(document, properties))


def test_rule4_other_table_is_ignored():
    decision = _decide(sample_document("json-other-entity"))
    assert (decision.verdict, decision.reason) == (Verdict.IGNORED, Reason.NOT_PROCESSSESSION)
    assert decision.entry is None


def test_rule4_table_name_compares_case_insensitively():
    document = sample_document()
    document["PrimaryEntityName"] = "ProcessSession"
    assert _decide(document).verdict is Verdict.ACCEPTED


@pytest.mark.parametrize("message", ["Assign", "SetState", "Retrieve"])
def test_rule5_other_messages_are_ignored(message):
    document = sample_document()
    document["MessageName"] = message
    decision = _decide(document)
    assert (decision.verdict, decision.reason) == (Verdict.IGNORED, Reason.MESSAGE_OUT_OF_SCOPE)


def test_rule6_target_value_wins_even_when_null():
    document = _update(
        None, post=[("PostImage", {"regardingobjectid": reference("sample_bankaccount", BANK)})]
    )
    decision = _decide(document)
    assert (decision.verdict, decision.reason) == (Verdict.REJECTED, Reason.REGARDING_CLEARED)
    assert decision.entry.regarding_source == "target"


def test_rule6_post_image_of_any_alias_is_used():
    document = _update(
        post=[
            ("AsynchronousStepPrimaryName", {"name": "x"}),
            ("Anything", {"regardingobjectid": reference("sample_bankaccount", BANK)}),
            ("Later", {"regardingobjectid": reference("account", ACCOUNT)}),
        ]
    )
    entry = _decide(document).entry
    assert entry.verdict is Verdict.ACCEPTED
    assert (entry.regarding_id, entry.regarding_source) == (BANK, "post_image")


def test_rule6_post_image_before_pre_image():
    document = _update(
        post=[("PostImage", {"regardingobjectid": reference("account", ACCOUNT)})],
        pre=[("PreImage", {"regardingobjectid": reference("sample_bankaccount", BANK)})],
    )
    decision = _decide(document)
    assert decision.reason is Reason.REGARDING_NOT_BANKACCOUNT


def test_rule6_pre_image_when_no_post_image_holds_it():
    document = _update(
        post=[("PostImage", {"name": "x"})],
        pre=[("PreImage", {"regardingobjectid": reference("sample_bankaccount", OTHER_BANK)})],
    )
    entry = _decide(document).entry
    assert (entry.verdict, entry.regarding_id, entry.regarding_source) == (
        Verdict.ACCEPTED,
        OTHER_BANK,
        "pre_image",
    )


def test_rule6_parent_context_is_never_read():
    document = _update()
    parent = document["ParentContext"]
    kv_set(
        target_of(parent)["Attributes"], "regardingobjectid", reference("sample_bankaccount", BANK)
    )
    decision = _decide(document)
    assert decision.reason is Reason.REGARDING_NOT_IN_MESSAGE


def test_rule7_trimmed_context_is_rejected_as_truncated():
    document = _update()
    document["InputParameters"] = []
    document["PostEntityImages"] = []
    document["ParentContext"] = None
    decision = _decide(document, TRIMMED)
    assert (decision.verdict, decision.reason) == (Verdict.REJECTED, Reason.CONTEXT_TRUNCATED)
    assert decision.entry.changes == []


def test_rule7_property_name_and_value_compare_case_insensitively():
    document = _update()
    document["InputParameters"] = []
    decision = _decide(document, {"messagemaxsizeexceeded": "True"})
    assert decision.reason is Reason.CONTEXT_TRUNCATED


def test_rule7_needs_empty_input_parameters():
    document = sample_document()
    assert _decide(document, TRIMMED).verdict is Verdict.ACCEPTED


def test_rule8_no_regarding_anywhere():
    decision = _decide(sample_document("json-update-no-regarding"))
    assert (decision.verdict, decision.reason) == (
        Verdict.REJECTED,
        Reason.REGARDING_NOT_IN_MESSAGE,
    )
    assert decision.entry.regarding_id is None


def test_rule8_create_without_regarding():
    document = sample_document()
    kv_del(target_of(document)["Attributes"], "regardingobjectid")
    assert _decide(document).reason is Reason.REGARDING_NOT_IN_MESSAGE


def test_rule9_other_regarding_table_is_rejected():
    decision = _decide(sample_document("json-create-account"))
    assert (decision.verdict, decision.reason) == (
        Verdict.REJECTED,
        Reason.REGARDING_NOT_BANKACCOUNT,
    )
    assert decision.entry.regarding_logical_name == "account"


def test_rule9_logical_name_case_is_ignored_and_recorded_lower_case():
    document = sample_document()
    kv_set(
        target_of(document)["Attributes"],
        "regardingobjectid",
        reference("Sample_BankAccount", BANK),
    )
    entry = _decide(document).entry
    assert entry.verdict is Verdict.ACCEPTED
    assert entry.regarding_logical_name == "sample_bankaccount"


def test_regarding_that_is_not_a_lookup_is_malformed():
    document = sample_document()
    kv_set(target_of(document)["Attributes"], "regardingobjectid", "sample_bankaccount")
    decision = _decide(document)
    assert (decision.verdict, decision.reason) == (Verdict.MALFORMED, Reason.SCHEMA_VIOLATION)


def test_untrusted_organization_is_malformed_and_trusted_one_passes():
    document = sample_document()
    other = Policy(
        allowed_organization_ids=frozenset({UUID("00000000-0000-0000-0000-000000000001")})
    )
    decision = evaluate(json_message(document), other)
    assert (decision.verdict, decision.reason) == (Verdict.MALFORMED, Reason.UNTRUSTED_ORGANIZATION)
    own = Policy(allowed_organization_ids=frozenset({UUID(document["OrganizationId"])}))
    assert evaluate(json_message(document), own).verdict is Verdict.ACCEPTED


def _delete(pre: list[tuple[str, dict[str, Any]]] | None) -> dict[str, Any]:
    document = sample_document()
    document["MessageName"] = "Delete"
    session = document["PrimaryEntityId"]
    for pair in document["InputParameters"]:
        if pair["key"] == "Target":
            pair["value"] = reference("processsession", session)
    document["PreEntityImages"] = [
        {"key": alias, "value": image(attributes)} for alias, attributes in (pre or [])
    ]
    document["PostEntityImages"] = []
    return document


def test_a_delete_is_recorded_by_its_pre_images_regarding():
    bank = {"regardingobjectid": reference("sample_bankaccount", BANK), "name": "dialog"}
    decision = _decide(_delete([("PreImage", bank)]))
    assert (decision.verdict, decision.reason) == (Verdict.ACCEPTED, None)
    assert decision.entry is not None
    assert decision.entry.message_name == "Delete"
    assert decision.entry.regarding_source == "pre_image"
    assert {c.column: c.new for c in decision.entry.changes} == {
        "name": None,
        "regardingobjectid": None,
    }
    other = {"regardingobjectid": reference("account", BANK)}
    assert _decide(_delete([("PreImage", other)])).reason is Reason.REGARDING_NOT_BANKACCOUNT
    assert _decide(_delete(None)).reason is Reason.REGARDING_NOT_IN_MESSAGE


def test_a_delete_whose_target_is_an_entity_is_a_schema_violation():
    document = sample_document()
    document["MessageName"] = "Delete"
    decision = _decide(document)
    assert (decision.verdict, decision.reason) == (Verdict.MALFORMED, Reason.SCHEMA_VIOLATION)
