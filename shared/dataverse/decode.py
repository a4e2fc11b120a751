"""decode(): one brokered message -> RemoteExecutionContext, or MalformedMessage.

Order (samples/README.md rules 1-3): the content type picks the parser (never the body);
then the size limit; for JSON and XML one UTF-8 BOM is dropped and the body must be strict
UTF-8 (binary XML carries its own encodings); then the format's own depth check and parse; then
the model's schema. Binary XML becomes the same element tree as XML and is walked by the same
code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from pydantic import ValidationError

from shared.dataverse import json_format
from shared.dataverse.model import RemoteExecutionContext, ascii_lower
from shared.errors import MalformedMessage
from shared.settings import DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_NESTING_DEPTH
from shared.verdicts import Reason

JSON = "application/json"
XML = "application/xml"
BINARY_XML = "application/msbin1"
_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds checked before a body is fully parsed."""

    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_nesting_depth: int = DEFAULT_MAX_NESTING_DEPTH


def media_type(content_type: str | None) -> str:
    """``Application/JSON; charset=utf-8`` -> ``application/json``."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def check_content_type(content_type: str | None) -> str:
    """Return the media type if this service can parse it; else raise with what to fix."""
    kind = media_type(content_type)
    if kind in (JSON, XML, BINARY_XML):
        return kind
    if not kind:
        description = (
            "message has no content type; Dataverse always sets one (application/json, "
            "application/xml or application/msbin1), so this was not sent by a Dataverse "
            "service endpoint"
        )
    else:
        description = (
            f"content type {kind!r} is not supported; expected application/json "
            "(or application/xml, application/msbin1)"
        )
    raise MalformedMessage(Reason.UNSUPPORTED_CONTENT_TYPE, description)


def decode(
    body: bytes, content_type: str | None, limits: Limits = Limits()
) -> RemoteExecutionContext:
    """Decode a message body faithfully, or raise MalformedMessage with a reason code."""
    kind = check_content_type(content_type)
    if len(body) > limits.max_body_bytes:
        raise MalformedMessage(
            Reason.BODY_TOO_LARGE,
            f"body is {len(body):,} bytes; the limit is {limits.max_body_bytes:,} "
            "(Service Bus Standard's 256 KiB; Dataverse trims contexts above 192 KB)",
        )
    if kind == BINARY_XML:  # binary records: no BOM, no text decoding of the whole body
        from shared.dataverse import binary_xml, xml_format

        root = binary_xml.parse(body, limits.max_nesting_depth)
        return _context(xml_format.root_members(root), xml_format.context_members)
    if body.startswith(_BOM):
        body = body[len(_BOM) :]
    malformed = Reason.MALFORMED_JSON if kind == JSON else Reason.MALFORMED_XML
    if not body.strip():
        raise MalformedMessage(malformed, "body is empty")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedMessage(
            malformed, f"body is not valid UTF-8: {exc.reason} at byte {exc.start}"
        ) from exc
    if kind == JSON:
        members = json_format.parse(text, body, limits.max_nesting_depth)
        return _context(members, json_format.context_members)
    from shared.dataverse import xml_format  # defusedxml loads only when XML arrives

    return _context(xml_format.parse(body, limits.max_nesting_depth), xml_format.context_members)


def _context(
    members: dict[str, Any], to_members: Callable[[Any, str], dict[str, Any]]
) -> RemoteExecutionContext:
    """Validate one context's members; its ParentContext is loaded by the same format later."""
    try:
        # members by their contract names only: a snake_case look-alike never stands in
        context = RemoteExecutionContext.model_validate(members, by_alias=True, by_name=False)
    except ValidationError as exc:
        raise MalformedMessage(
            Reason.SCHEMA_VIOLATION,
            "not a valid RemoteExecutionContext: " + json_format.describe_validation(exc),
        ) from exc
    check_consistency(context)
    parent = members.get(json_format.PARENT)
    if parent is not None:
        raw, path = parent
        context._parent_loader = lambda: _context(to_members(raw, path), to_members)
    return context


_NIL_GUID = UUID(int=0)


def check_consistency(context: RemoteExecutionContext) -> None:
    """The Target and the images describe the primary record, as Dataverse always sends them;
    a message where they disagree is forged or broken, and no verdict about it can be trusted.

    The empty GUID as PrimaryEntityId means "unknown" (virtual tables post it, with the id in
    the Target), never a conflict.
    """
    primary = ascii_lower(context.primary_entity_name)
    target = context.target
    if target is not None:
        if ascii_lower(target.logical_name) != primary:
            json_format.schema_violation(
                "InputParameters['Target'].LogicalName",
                f"{target.logical_name!r} is not the PrimaryEntityName "
                f"{context.primary_entity_name!r}",
            )
        if context.primary_entity_id != _NIL_GUID and target.id not in (
            None,
            _NIL_GUID,
            context.primary_entity_id,
        ):
            json_format.schema_violation(
                "InputParameters['Target'].Id",
                f"{target.id} is not the PrimaryEntityId {context.primary_entity_id}",
            )
    for member, images in (
        ("PreEntityImages", context.pre_entity_images),
        ("PostEntityImages", context.post_entity_images),
    ):
        for alias, image in images.items():
            if ascii_lower(image.logical_name) != primary:
                json_format.schema_violation(
                    f"{member}[{alias!r}].LogicalName",
                    f"{image.logical_name!r} is not the PrimaryEntityName "
                    f"{context.primary_entity_name!r}: an image is always of the primary table",
                )
