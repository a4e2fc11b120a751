"""Adapters to InboundMessage from the SDK message, the Functions binding and files."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from azure.functions.servicebus import ServiceBusMessage as FunctionsMessage
from azure.servicebus import ServiceBusReceivedMessage
from azure.servicebus._pyamqp.message import Message, Properties  # private: SDK pinned <8

from shared.errors import MalformedMessage
from shared.events.envelope import (
    CLAIM_ORGANIZATION,
    from_functions_message,
    from_received_message,
)
from shared.pipeline import evaluate
from shared.verdicts import Verdict
from tests.conftest import SAMPLES


def _sdk_message(body, properties, **props):
    return ServiceBusReceivedMessage(
        Message(data=body, application_properties=properties, properties=Properties(**props)),
        receiver=None,
    )


def test_sdk_message_bytes_keys_and_sections_are_normalised():
    body = (SAMPLES / "json-create-bankaccount.body").read_bytes()
    message = _sdk_message(
        [body[:100], body[100:]],
        {CLAIM_ORGANIZATION.encode(): b"unq7a2c", b"MessageMaxSizeExceeded": True},
        message_id="m1",
        content_type="application/json",
        correlation_id="{abc}",
    )
    inbound = from_received_message(message)
    assert inbound.body == body
    assert inbound.message_id == "m1"
    assert inbound.content_type == "application/json"
    assert inbound.get_property(CLAIM_ORGANIZATION.lower()) == "unq7a2c"
    assert inbound.context_was_trimmed
    assert evaluate(inbound).verdict is Verdict.ACCEPTED


def test_sdk_message_with_a_value_body_is_refused():
    message = ServiceBusReceivedMessage(Message(value={"not": "data"}), receiver=None)
    with pytest.raises(MalformedMessage, match="not data bytes"):
        from_received_message(message)


def test_functions_message_is_adapted():
    enqueued = datetime(2024, 11, 26, 9, 15, 43)
    message = FunctionsMessage(
        body=(SAMPLES / "json-update-bankaccount.body").read_bytes(),
        message_id="m2",
        content_type="application/json",
        correlation_id="{c}",
        application_properties={
            "http://schemas.microsoft.com/xrm/2011/Claims/RequestName": "Update"
        },
        user_properties={},
        delivery_count=2,
        sequence_number=9,
        enqueued_time_utc=enqueued,
    )
    inbound = from_functions_message(message)
    assert (inbound.message_id, inbound.delivery_count, inbound.sequence_number) == ("m2", 2, 9)
    assert inbound.enqueued_time == enqueued.replace(tzinfo=UTC)
    entry = evaluate(inbound).entry
    assert entry is not None
    assert entry.delivery_count == 2
