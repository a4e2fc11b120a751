"""The audit entry: deterministic entry_id, changes with old and new values, JSON shape."""

from __future__ import annotations

import json
from datetime import UTC

from hypothesis import given
from hypothesis import strategies as st

from shared.events.entry import REDACTED, Change
from shared.pipeline import Policy, evaluate
from shared.settings import load_settings
from shared.verdicts import Verdict
from tests.conftest import (
    image,
    json_message,
    kv_set,
    load_samples,
    reference,
    sample_document,
    target_of,
)


def _entry(document, **fields):
    decision = evaluate(json_message(document, **fields))
    assert decision.entry is not None, decision
    return decision.entry


def test_redelivery_and_repost_give_the_same_entry_id():
    document = sample_document()
    first = _entry(document, message_id="aaa", delivery_count=1)
    redelivered = _entry(document, message_id="aaa", delivery_count=2)
    reposted = _entry(document, message_id="bbb", delivery_count=1)
    assert first.entry_id == redelivered.entry_id == reposted.entry_id


def test_two_updates_of_one_session_give_two_entry_ids():
    document = sample_document("json-update-bankaccount")
    second = sample_document("json-update-bankaccount")
    second["OperationId"] = "0d1e2f3a-2b3f-ef11-9f89-000d3a5c2b71"
    assert _entry(document).entry_id != _entry(second).entry_id


def test_entry_id_ignores_guid_case():
    document = sample_document()
    upper = sample_document()
    upper["OperationId"] = upper["OperationId"].upper()
    assert _entry(document).entry_id == _entry(upper).entry_id


def test_changes_hold_new_from_target_and_old_from_pre_image():
    document = sample_document("json-update-bankaccount")
    document["PreEntityImages"] = [
        {
            "key": "PreImage",
            "value": image(
                {
                    "comments": "first call",
                    "statuscode": {"__type": "OptionSetValue:x", "Value": 2},
                    "regardingobjectid": reference(
                        "sample_bankaccount", "2d6b8f13-6c7d-ef11-bfe3-6045bd0c1a22"
                    ),
                }
            ),
        }
    ]
    document["PreEntityImages"][0]["value"]["FormattedValues"] = [
        {"key": "statuscode", "value": "In Progress"}
    ]
    changes = {c.column: c for c in _entry(document).changes}
    assert "processsessionid" not in changes
    assert changes["comments"].old == "first call"
    assert changes["comments"].new == "Customer identity confirmed by phone."
    assert changes["statuscode"].old == {"value": 2, "label": "In Progress"}
    assert changes["statuscode"].new == {"value": 4}
    assert changes["completedon"].new == "2024-11-27T14:03:10.000Z"
    assert changes["completedby"].new == {
        "logical_name": "systemuser",
        "id": "61aa0b7c-5a6b-ef11-9f89-000d3a5c2b71",
        "name": None,
    }


def test_money_is_recorded_as_a_decimal_string():
    document = sample_document()
    kv_set(target_of(document)["Attributes"], "amount", "MONEY")
    body = json.dumps(document).replace('"MONEY"', '{"__type":"Money:x","Value":1234.50}')
    entry = evaluate(json_message(body.encode())).entry
    assert {c.column: c.new for c in entry.changes}["amount"] == "1234.50"


def test_json_shape_is_lower_case_guids_and_utc_iso_dates():
    document = sample_document()
    document["OrganizationId"] = document["OrganizationId"].upper()
    data = _entry(document).to_json_dict()
    assert data["organization_id"] == "7a2c31f5-8b1e-ef11-9f89-000d3a5c2b71"
    assert data["operation_created_on"] == "2024-11-26T09:15:42.317Z"
    assert data["recorded_at"].endswith("Z")
    assert data["processsession_name"] == "Bank Account Verification"
    assert [data["depth"], data["stage"], data["mode"]] == [1, 40, 1]


def test_broker_metadata_is_recorded():
    entry = _entry(sample_document(), message_id="m-1", delivery_count=3, sequence_number=77)
    assert (entry.message_id, entry.delivery_count, entry.sequence_number) == ("m-1", 3, 77)


def test_redacted_columns_keep_their_row_but_not_their_values():
    document = sample_document("json-update-bankaccount")
    document["PreEntityImages"] = [{"key": "PreImage", "value": image({"comments": "old PII"})}]
    policy = Policy(redact_columns=frozenset({"comments", "inputarguments"}))
    entry = evaluate(json_message(document), policy).entry
    assert entry is not None
    changes = {c.column: c for c in entry.changes}
    assert (changes["comments"].old, changes["comments"].new) == (REDACTED, REDACTED)
    assert changes["statuscode"].new == {"value": 4}
    assert "PII" not in entry.model_dump_json()
    assert "identity confirmed" not in entry.model_dump_json()


def test_redact_setting_is_a_comma_list(monkeypatch):
    monkeypatch.setenv("AUDIT_REDACT_COLUMNS", " Comments, inputarguments ,")
    assert load_settings().audit_redact_columns == {"comments", "inputarguments"}


def test_organization_claim_is_recorded():
    claim = "http://schemas.microsoft.com/xrm/2011/Claims/Organization"
    entry = evaluate(json_message(sample_document(), {claim: "unq7a2c"})).entry
    assert entry is not None
    assert entry.organization_claim == "unq7a2c"


def _both_ways(entry):
    return json.loads(entry.json_text()), json.loads(entry.model_dump_json())


def test_json_text_is_pydantics_document_for_every_sample_and_bench_entry(monkeypatch):
    """The stores' fast serialiser writes what model_dump_json writes, and it really is the
    fast one that wrote it (pydantic's is made to fail while json_text runs)."""
    from bench.corpus import messages
    from shared.events.entry import AuditEntry
    from shared.events.envelope import from_files, properties_path_for
    from tests.conftest import SAMPLES

    corpus = [from_files(p, properties_path_for(p)) for p in sorted(SAMPLES.glob("*.body"))]
    corpus += list(messages(300, seed=15))
    entries = [d.entry for d in map(evaluate, corpus) if d.entry is not None]
    assert len(entries) > 200
    expected = [json.loads(e.model_dump_json()) for e in entries]

    def refuse(self, **kwargs):
        raise AssertionError("json_text fell back to pydantic")

    monkeypatch.setattr(AuditEntry, "model_dump_json", refuse)
    assert [json.loads(e.json_text()) for e in entries] == expected


#: Text as a decoded message holds it: no lone surrogate, which neither serialiser writes.
TEXT = st.text(st.characters(exclude_categories=["Cs"]))
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8,
)
OTHER_VALUES = (
    st.datetimes(timezones=st.just(UTC))
    | st.decimals(allow_nan=False)
    | TEXT.map(str.encode)  # bytes: pydantic writes them as UTF-8 text
    | st.uuids()
    | st.sets(st.integers(), max_size=3)
    | st.integers(min_value=2**64, max_value=2**80)
    | st.dictionaries(st.integers(), TEXT, min_size=1, max_size=2)
    | st.sampled_from(list(Verdict))
)


@given(st.lists(st.tuples(JSON_VALUES | OTHER_VALUES, JSON_VALUES | OTHER_VALUES), max_size=4))
def test_json_text_writes_any_change_as_pydantic_does(values):
    """Whatever a change holds, json_text's document is model_dump_json's: orjson's where it
    writes the same, pydantic's where it would not (datetimes, Decimals, bytes, sets...)."""
    from tests.entries import BASE

    changes = [Change(column=f"c{i}", old=old, new=new) for i, (old, new) in enumerate(values)]
    fast, reference = _both_ways(BASE.model_copy(update={"changes": changes}))
    assert fast == reference


def test_an_update_says_which_old_values_were_captured() -> None:
    """The sample Update's pre-image holds name, regardingobjectid and statuscode: comments'
    old value was never captured (old_known false, shown "(not captured)"), statuscode's was."""
    from shared.trail.timeline import change_line

    entry = evaluate(load_samples()["json-update-bankaccount"].message).entry
    assert entry is not None
    known = {c.column: c.old_known for c in entry.changes}
    assert known["statuscode"] is True
    assert known["comments"] is False
    comments = next(c for c in entry.changes if c.column == "comments")
    assert change_line(comments, "Update").startswith("comments: (not captured) \u2192")
    assert '"old_known":false' in entry.json_text()  # in the sealed document


def test_a_create_has_no_old_values_and_shows_none() -> None:
    from shared.trail.timeline import change_line

    entry = evaluate(load_samples()["json-create-bankaccount"].message).entry
    assert entry is not None
    assert {c.old_known for c in entry.changes} == {False}
    line = change_line(entry.changes[0], "Create")
    assert "\u2192" not in line
    assert "(empty)" not in line


def test_an_entry_stored_before_old_known_is_read_by_the_documented_rule() -> None:
    """A null old value of an Update stored without old_known reads as not captured; a
    non-null one as captured; and such an entry is the same event as its redelivery."""
    from shared.events.entry import AuditEntry

    entry = evaluate(load_samples()["json-update-bankaccount"].message).entry
    assert entry is not None
    document = json.loads(entry.json_text())
    for change in document["changes"]:
        del change["old_known"]
    old = AuditEntry.model_validate(document)
    by_column = {c.column: c for c in old.changes}
    assert by_column["comments"].captured("Update") is False
    assert by_column["statuscode"].captured("Update") is True
    assert old.event_content() == entry.event_content()  # no false conflicting_duplicate
