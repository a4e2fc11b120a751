"""The Service Bus trigger's input as the Functions host builds it for an SDK-type binding.

``ModelBindingData.content`` = the 16 lock-token bytes (``Guid.ToByteArray`` order, i.e.
``uuid.bytes_le``) followed by the raw AMQP message, sections in the standard order: header,
delivery-annotations (holding ``x-opt-lock-token``), message-annotations, properties,
application-properties, data. The extension (``azurefunctions.extensions.bindings.servicebus``)
finds the end of the lock token by searching for ``x-opt-lock-token`` and decodes what follows,
so a section placed before the delivery annotations would be silently dropped.

The sections are encoded with azure-servicebus's own AMQP encoder (``_pyamqp``); its
``encode_payload`` leaves delivery annotations out, so that one section is added here.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.servicebus._pyamqp._encode import (
    encode_annotations,
    encode_payload,
    encode_value,
)
from azure.servicebus._pyamqp.message import Header, Message, Properties
from azure.servicebus._pyamqp.types import TYPE, VALUE, AMQPTypes

LOCK_TOKEN_KEY = b"x-opt-lock-token"
DELIVERY_ANNOTATIONS = 0x71


@dataclass
class HostMessage:
    """One message as the host received it from Service Bus (PEEK_LOCK)."""

    body: bytes
    content_type: str | None = None
    message_id: str | None = None
    correlation_id: str | None = None
    application_properties: Mapping[str, Any] = field(default_factory=dict)
    delivery_count: int = 1
    sequence_number: int = 1
    enqueued_time: datetime = field(default_factory=lambda: datetime.now(UTC))
    lock_duration: timedelta = timedelta(minutes=1)
    lock_token: uuid.UUID = field(default_factory=uuid.uuid4)


def _timestamp(moment: datetime) -> dict[str, Any]:
    return {TYPE: AMQPTypes.timestamp, VALUE: int(moment.timestamp() * 1000)}


def raw_amqp(message: HostMessage) -> bytes:
    """The AMQP 1.0 encoding of the message, sections in standard order."""
    out = bytearray()
    encode_payload(out, Message(header=Header(durable=True, delivery_count=message.delivery_count)))
    encode_value(
        out,
        {
            TYPE: AMQPTypes.described,
            VALUE: (
                {TYPE: AMQPTypes.ulong, VALUE: DELIVERY_ANNOTATIONS},
                encode_annotations(
                    {LOCK_TOKEN_KEY: {TYPE: AMQPTypes.uuid, VALUE: message.lock_token}}
                ),
            ),
        },
    )
    annotations: dict[str | bytes, Any] = {
        b"x-opt-sequence-number": {TYPE: AMQPTypes.long, VALUE: message.sequence_number},
        b"x-opt-enqueued-time": _timestamp(message.enqueued_time),
        b"x-opt-locked-until": _timestamp(message.enqueued_time + message.lock_duration),
    }
    properties: dict[str | bytes, Any] = dict(message.application_properties.items())
    encode_payload(
        out,
        Message(
            message_annotations=annotations,
            properties=Properties(
                message_id=message.message_id,
                correlation_id=message.correlation_id,
                content_type=message.content_type,
            ),
            application_properties=properties or None,
            data=[message.body],
        ),
    )
    return bytes(out)


def binding_content(message: HostMessage) -> bytes:
    """``ModelBindingData.content`` for one message: lock token bytes + raw AMQP."""
    return message.lock_token.bytes_le + raw_amqp(message)
