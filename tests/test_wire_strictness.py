"""Wire strictness beyond the corpus' verdicts: what a virtual table's empty PrimaryEntityId
makes of the entry, and the .NET GUID forms read to the same value."""

from __future__ import annotations

from shared.pipeline import evaluate
from tests.conftest import json_message, sample_document, target_of

NIL = "00000000-0000-0000-0000-000000000000"


def test_an_empty_primary_id_takes_the_targets_id_for_the_session():
    document = sample_document()
    session = target_of(document)["Id"]
    document["PrimaryEntityId"] = NIL
    decision = evaluate(json_message(document))
    assert decision.entry is not None
    assert decision.entry.processsession_id == session
    ordinary = evaluate(json_message(sample_document())).entry
    assert ordinary is not None
    assert decision.entry.entry_id == ordinary.entry_id  # the same event either way


def test_every_dotnet_guid_form_reads_to_the_same_id():
    ids = set()
    base = "7a2c31f5-8b1e-ef11-9f89-000d3a5c2b71"
    for form in (
        base,
        base.replace("-", ""),
        "{" + base + "}",
        "(" + base.upper() + ")",
        f" {base} ",
    ):
        document = sample_document()
        document["OrganizationId"] = form
        entry = evaluate(json_message(document)).entry
        assert entry is not None, form
        ids.add(entry.organization_id)
    assert ids == {base}
