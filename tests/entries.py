"""Audit entries and messages made from the samples, for store and stream tests."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.events.entry import AuditEntry, Change
from shared.events.envelope import InboundMessage
from shared.pipeline import evaluate
from tests.conftest import SAMPLES, kv_set, reference, sample_document, target_of

T0 = datetime(2024, 11, 26, 23, 0, tzinfo=UTC)


def _base() -> AuditEntry:
    body = (SAMPLES / "json-create-bankaccount.body").read_bytes()
    entry = evaluate(InboundMessage(body=body, content_type="application/json")).entry
    assert entry is not None
    return entry


BASE = _base()


def make_entry(
    n: int,
    *,
    regarding: str | None = None,
    session: str | None = None,
    when: datetime | None = None,
    **update: Any,
) -> AuditEntry:
    """Entry number ``n``: a distinct event, by default an hour after the previous one."""
    fields: dict[str, Any] = {
        "entry_id": str(uuid.uuid5(uuid.NAMESPACE_OID, f"entry-{n}")),
        "processsession_id": session or str(uuid.uuid5(uuid.NAMESPACE_OID, f"session-{n}")),
        "regarding_id": regarding,
        "regarding_logical_name": "sample_bankaccount" if regarding else None,
        "operation_created_on": when or T0 + timedelta(hours=n),
    }
    fields.update(update)
    return BASE.model_copy(update=fields)


def big_changes(size: int) -> list[Change]:
    return [Change(column="comments", old="é" * 10, new="x" * size)]


def synthetic_message(n: int, regarding: str | None = None) -> InboundMessage:
    """A Create of session ``n`` regarding a bank account: a new event per ``n``."""
    document = sample_document()
    document["OperationId"] = str(uuid.uuid5(uuid.NAMESPACE_OID, f"operation-{n}"))
    document["PrimaryEntityId"] = str(uuid.uuid5(uuid.NAMESPACE_OID, f"session-{n}"))
    target_of(document)["Id"] = document["PrimaryEntityId"]
    bank = regarding or str(uuid.uuid5(uuid.NAMESPACE_OID, f"bank-{n % 7}"))
    kv_set(
        target_of(document)["Attributes"],
        "regardingobjectid",
        reference("sample_bankaccount", bank),
    )
    return InboundMessage(
        body=json.dumps(document).encode(),
        content_type="application/json",
        message_id=uuid.uuid4().hex,
        delivery_count=1,
    )
