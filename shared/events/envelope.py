"""The transport-neutral message, and the adapters that build it from each transport.

Transport quirks live here and only here: the SDK's bytes-keyed application properties, the
Functions binding's str-keyed ones, the sample files' JSON, and the Dataverse claim names.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from shared.errors import MalformedMessage
from shared.verdicts import Reason

CLAIMS = "http://schemas.microsoft.com/xrm/2011/Claims/"
CLAIM_ORGANIZATION = CLAIMS + "Organization"
CLAIM_ENTITY_LOGICAL_NAME = CLAIMS + "EntityLogicalName"
CLAIM_REQUEST_NAME = CLAIMS + "RequestName"
MESSAGE_MAX_SIZE_EXCEEDED = "MessageMaxSizeExceeded"


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """One brokered message as the service sees it, whatever carried it."""

    body: bytes
    content_type: str | None = None
    message_id: str | None = None
    correlation_id: str | None = None
    application_properties: Mapping[str, str] = field(default_factory=dict)
    delivery_count: int | None = None
    sequence_number: int | None = None
    enqueued_time: datetime | None = None

    def get_property(self, name: str) -> str | None:
        """Look an application property up case-insensitively, as the .NET SDK stores them."""
        value = self.application_properties.get(name)
        if value is not None:
            return value
        lowered = name.lower()
        for key, candidate in self.application_properties.items():
            if key.lower() == lowered:
                return candidate
        return None

    @property
    def context_was_trimmed(self) -> bool:
        """True when Dataverse emptied the context to fit the 192 KB limit."""
        return (self.get_property(MESSAGE_MAX_SIZE_EXCEEDED) or "").strip().lower() == "true"


def property_text(value: object) -> str:
    """Render an application property value as text (bools as ``true``/``false``)."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    return str(value)


def normalize_properties(properties: Mapping[Any, Any] | None) -> dict[str, str]:
    """Str keys and str values, whatever the transport handed over."""
    return {property_text(k): property_text(v) for k, v in (properties or {}).items()}


def _text_or_none(value: object) -> str | None:
    if value is None or value == "":
        return None
    return property_text(value)


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class BrokeredMessageLike(Protocol):
    """The metadata both Service Bus message types (SDK and Functions binding) expose."""

    @property
    def content_type(self) -> str | None: ...
    @property
    def message_id(self) -> str | None: ...
    @property
    def correlation_id(self) -> str | None: ...
    @property
    def application_properties(self) -> Mapping[Any, Any] | None: ...
    @property
    def delivery_count(self) -> int | None: ...
    @property
    def sequence_number(self) -> int | None: ...
    @property
    def enqueued_time_utc(self) -> datetime | None: ...


class ReceivedMessageLike(BrokeredMessageLike, Protocol):
    """``azure.servicebus.ServiceBusReceivedMessage``: the body is a generator of sections."""

    @property
    def body(self) -> Any: ...


class FunctionsMessageLike(BrokeredMessageLike, Protocol):
    """``azure.functions.ServiceBusMessage``: the body comes from ``get_body()``."""

    def get_body(self) -> bytes: ...


def _data_body(raw: object) -> bytes:
    """The bytes of an AMQP data body; Dataverse never sends value or sequence bodies."""
    if isinstance(raw, bytes):
        return raw
    if isinstance(raw, str):
        return raw.encode("utf-8")
    if isinstance(raw, Iterable) and not isinstance(raw, Mapping):
        parts = list(raw)
        if all(isinstance(part, bytes | bytearray) for part in parts):
            return b"".join(parts)
    raise MalformedMessage(
        Reason.UNSUPPORTED_CONTENT_TYPE,
        f"AMQP body is a {type(raw).__name__} value, not data bytes: not sent by Dataverse",
    )


def _from_brokered(body: bytes, message: BrokeredMessageLike) -> InboundMessage:
    return InboundMessage(
        body=body,
        content_type=_text_or_none(message.content_type),
        message_id=_text_or_none(message.message_id),
        correlation_id=_text_or_none(message.correlation_id),
        application_properties=normalize_properties(message.application_properties),
        delivery_count=message.delivery_count,
        sequence_number=message.sequence_number,
        enqueued_time=_aware(message.enqueued_time_utc),
    )


def from_received_message(message: ReceivedMessageLike) -> InboundMessage:
    """Adapt an azure-servicebus message (SDK receiver or the Functions SDK-type binding).

    Its application properties have bytes keys and values; they are normalised to str.
    """
    return _from_brokered(_data_body(message.body), message)


def from_functions_message(message: FunctionsMessageLike) -> InboundMessage:
    """Adapt the classic ``func.ServiceBusMessage`` binding (str-keyed properties)."""
    return _from_brokered(message.get_body(), message)


def properties_path_for(body_path: Path) -> Path:
    """``NAME.body`` -> ``NAME.properties.json``, the samples' pairing convention."""
    name = body_path.name.removesuffix(".body")
    return body_path.with_name(f"{name}.properties.json")


def from_files(body_path: Path, properties_path: Path | None = None) -> InboundMessage:
    """Build a message from a body file and its properties JSON (as in ``samples/``).

    The properties file holds ``content_type``, ``message_id``, ``correlation_id`` and
    ``application_properties``; without one, the message has no content type.
    """
    body = _read_regular(body_path, "message body").read_bytes()
    meta: dict[str, Any] = {}
    if properties_path is not None:
        text = _read_regular(properties_path, "properties file").read_bytes()
        try:
            meta = json.loads(text.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{properties_path}: not a JSON properties file ({exc})") from exc
        if not isinstance(meta, dict):
            raise ValueError(f"{properties_path}: expected a JSON object")
    properties = meta.get("application_properties")
    if properties is not None and not isinstance(properties, dict):
        raise ValueError(
            f"{properties_path}: application_properties must be a JSON object of names to values"
        )
    counts = {name: meta.get(name) for name in ("delivery_count", "sequence_number")}
    for name, value in counts.items():
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise ValueError(f"{properties_path}: {name} must be a whole number, not {value!r}")
    return InboundMessage(
        body=body,
        content_type=_text_or_none(meta.get("content_type")),
        message_id=_text_or_none(meta.get("message_id")),
        correlation_id=_text_or_none(meta.get("correlation_id")),
        application_properties=normalize_properties(properties),
        delivery_count=counts["delivery_count"],
        sequence_number=counts["sequence_number"],
    )


def _read_regular(path: Path, what: str) -> Path:
    """``path`` if it is a regular file; else one clear error (a folder, a device, a FIFO
    would hang or fail obscurely)."""
    if not path.exists():
        raise FileNotFoundError(f"no such {what}: {path}")
    if not path.is_file():
        kind = "a folder" if path.is_dir() else "not a regular file"
        raise ValueError(f"{what} {path} is {kind}")
    return path
